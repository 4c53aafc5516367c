// Package hooks is the only place that joins Juju, the install root and Concourse: every event
// gathers the facts, decides the desired state, applies only what differs and sets one status.
package hooks

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

type handler struct {
	deps Deps
	juju Juju
	hook string
	// broken are the relations this unit saw break (relationCache.Broken), set by gather.
	broken []int
}

// convergingHooks are the events that can change what this unit should run. Every one of them runs
// the same convergence; none has special logic of its own (juju-contract §9.2 "holistic hooks").
var convergingHooks = map[string]bool{
	"install": true, "start": true, "config-changed": true, "upgrade-charm": true,
	"update-status": true, "leader-elected": true, "leader-settings-changed": true,
	"secret-changed": true, "post-series-upgrade": true,
}

// convergingEndpoints are the relations whose data feeds the convergence.
var convergingEndpoints = map[string]bool{epPeers: true, epTSA: true, epFlight: true, epPostgres: true, epMetrics: true, epVault: true, epDashboards: true}

// Run handles one dispatch: a hook or an action. It returns an error only when the hook really
// failed, so that Juju retries it; "not ready yet" is a status, not an error.
func Run(ctx context.Context, deps Deps) error {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Random == nil {
		deps.Random = rand.Reader
	}
	if deps.Stderr == nil {
		deps.Stderr = io.Discard
	}
	ev := deps.Env.Event()
	h := &handler{deps: deps, juju: deps.Juju, hook: ev.Name}
	if ev.Kind == juju.KindAction {
		return h.action(ctx, ev.Name)
	}
	switch {
	case ev.Name == "stop" || ev.Name == "remove":
		return h.teardown(ctx)
	case convergingHooks[ev.Name], convergingEndpoints[ev.Endpoint] && ev.RelationEvent != "":
		err := h.converge(ctx)
		if err != nil {
			h.jlog(juju.LogError, fmt.Sprintf("hook %s failed: %v", ev.Name, err))
		}
		return err
	default:
		// With a dispatch file nothing is ever "missing" (juju-contract §1.1): unknown hooks
		// (monitoring, vault-kv, storage…) are logged and succeed.
		h.logf("ignoring hook %q: nothing in this charm depends on it", ev.Name)
		return nil
	}
}

// logf is the trace of a hook: Juju records stderr in the unit log at WARNING level. It costs no
// process, unlike juju-log, which is kept for the few lines operators need (jlog).
func (h *handler) logf(format string, args ...any) {
	fmt.Fprintf(h.deps.Stderr, "%s %s: %s\n", h.deps.Env.UnitName, h.hook, fmt.Sprintf(format, args...))
}

func (h *handler) jlog(level juju.LogLevel, msg string) {
	h.logf("%s", msg)
	if err := h.juju.Log(context.Background(), level, msg); err != nil {
		h.logf("juju-log failed: %v", err)
	}
}

func (h *handler) now() time.Time { return h.deps.Now() }

// teardown runs on stop/remove: the unit is leaving, so its services go, with their files.
// The shared install root is left alone: other units use it (reference FR-010).
func (h *handler) teardown(ctx context.Context) error {
	st, err := loadState(h.deps.Paths.StateDir)
	if err != nil {
		return err
	}
	u := &unitRun{handler: h, f: &Facts{Env: h.deps.Env}, state: st}
	// The worker first: with mode=all it may retire through this unit's own TSA.
	if err := u.removeService(ctx, workerSvc, &u.state.Worker, u.path(fileWorkerEnv)); err != nil {
		return err
	}
	if err := u.removeService(ctx, webService, &u.state.Web, u.path(fileWebEnv)); err != nil {
		return err
	}
	// This unit no longer runs a release: garbage collection may drop the one it ran.
	if err := h.deps.NewStore(h.deps.Paths.Root, h.deps.Env.UnitName, nil).ForgetRunning(); err != nil {
		h.logf("forgetting the running version: %v", err)
	}
	return saveState(h.deps.Paths.StateDir, u.state)
}

// passwordAlphabet has no ',' (CONCOURSE_ADD_LOCAL_USER is comma-split: concourse-contract §2.1),
// no quotes and no shell metacharacters.
const passwordAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_"

func randomPassword(r io.Reader, n int) (string, error) {
	var b strings.Builder
	max := big.NewInt(int64(len(passwordAlphabet)))
	for i := 0; i < n; i++ {
		if i == 0 {
			// Never a leading '-': operators paste it after `fly login -p`, which would take it
			// for a flag (a scenario hit one in 64 generated passwords).
			max = big.NewInt(int64(len(passwordAlphabet) - 2))
		} else {
			max = big.NewInt(int64(len(passwordAlphabet)))
		}
		k, err := rand.Int(r, max)
		if err != nil {
			return "", fmt.Errorf("generating a password: %w", err)
		}
		b.WriteByte(passwordAlphabet[k.Int64()])
	}
	return b.String(), nil
}
