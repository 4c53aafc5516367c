package hooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// The worker's lifecycle (issue 13 §3) is plain data: what the operator asked for
// (LocalState.WorkerHold: nothing, landed or retired) and what systemd reports for the unit
// (ActiveState; "deactivating" while the worker lands and waits for its builds). Each hook
// diffs the two and applies named steps, like every other service change (service.go):
//
//	hold     systemd        step                              status
//	-        active         (config changed) restart --no-block  Draining: N containers
//	-        deactivating   none (systemd starts it once drained) Draining: N containers
//	landed   active         stop --no-block, disable          Landing: N containers …
//	landed   deactivating   none                              Landing: N containers …
//	landed   inactive       none                              Landed: … resume-worker
//	retired  active         SIGUSR2 once, disable             Retiring: N containers …
//	retired  inactive       none                              Retired: … resume-worker
//
// A config change never waits in the hook for the drain: systemd's restart job lands the worker
// (KillSignal=SIGUSR1), waits for it to exit or for TimeoutStopSec (drain-timeout, then SIGKILL),
// and starts it again with the files the hook wrote; later hooks (update-status) only report.

// WorkerHold is an operator's land-worker or retire-worker, kept until resume-worker.
type WorkerHold struct {
	Kind  string    `json:"kind"` // holdLanded or holdRetired
	Since time.Time `json:"since"`
	// Signalled: the worker was told to land (a stop queued) or to retire (SIGUSR2), once; a
	// second retire signal is not sent.
	Signalled bool `json:"signalled,omitempty"`
}

const (
	holdLanded  = "landed"
	holdRetired = "retired"
)

// drainControl is what the worker's lifecycle needs from systemd beyond Services
// (concourse.Systemd has it): the unit's one-word state and jobs that do not wait for a drain.
// Without it (a Services that lacks them) the worker restarts the blocking way, as before.
type drainControl interface {
	ActiveState(ctx context.Context, unit string) (string, error)
	RestartNoBlock(ctx context.Context, unit string) error
	StopNoBlock(ctx context.Context, unit string) error
}

func (u *unitRun) drainer() (drainControl, bool) {
	d, ok := u.deps.Services.(drainControl)
	return d, ok
}

// drainGrace is how long a hook that has just queued a worker restart watches it: an idle
// worker lands within a few seconds, and its status should then say ready, not Draining, until
// the next update-status.
const drainGrace = 8 * time.Second

// lifecycleOptions are the lifecycle's settings. Concourse 7.14.3 and 8.2.5 have no drain-timeout
// flag and no stalled-worker timeout flag, so the drain is bounded by systemd (TimeoutStopSec) and
// there is no option for stalled workers: prune-workers removes them.
func lifecycleOptions() []option {
	return []option{
		{Name: "drain-timeout", Type: "string", Default: "1h", Role: roleWorker, Check: checkDrainTimeout,
			Doc: "How long a worker restart or stop waits for running builds to finish before they are killed (systemd's TimeoutStopSec for the worker), as a duration such as 1h, 90m or 300s; 1s to 24h. The default, 1h, is the BOSH release's: builds up to an hour survive an upgrade or a config change. Hooks do not wait for the drain; the status says Draining: N containers meanwhile. Not in the Python charm, which killed builds after 5 minutes."},
	}
}

// maxDrainTimeout bounds drain-timeout: a longer drain keeps a worker in limbo past any
// maintenance window, and a typo (1000h) should be refused, not obeyed.
const maxDrainTimeout = 24 * time.Hour

func checkDrainTimeout(v string) (string, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return "", errors.New("expected a duration such as 1h, 90m or 300s")
	}
	if d < time.Second || d > maxDrainTimeout {
		return "", fmt.Errorf("must be between 1s and %s", maxDrainTimeout)
	}
	if d%time.Second != 0 {
		return "", errors.New("must be whole seconds (systemd's TimeoutStopSec)")
	}
	return strconv.FormatInt(int64(d/time.Second), 10), nil
}

func (u *unitRun) drainTimeout() time.Duration { return drainTimeoutOf(u.cfg) }

// drainTimeoutOf is the checked drain-timeout; the table's default when the option is unset.
func drainTimeoutOf(cfg Config) time.Duration {
	v := cfg.Opts["drain-timeout"]
	if v == "" {
		v, _ = checkDrainTimeout("1h")
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return time.Duration(n) * time.Second
}

// workerState is the unit's ActiveState, or "active"/"inactive" from IsActive without drainControl.
func (u *unitRun) workerState(ctx context.Context) (string, error) {
	if d, ok := u.drainer(); ok {
		return d.ActiveState(ctx, workerSvc)
	}
	active, err := u.deps.Services.IsActive(ctx, workerSvc)
	if active {
		return "active", err
	}
	return "inactive", err
}

// serviceRunning is planService's view of a service: for the worker a drain under way counts as
// running, with the record saying what systemd will start next; another restart is queued only
// when the inputs changed again.
func (u *unitRun) serviceRunning(ctx context.Context, spec serviceSpec) (bool, error) {
	if !spec.NoBlock {
		return u.deps.Services.IsActive(ctx, spec.Name)
	}
	state, err := u.workerState(ctx)
	return state == "active" || state == "deactivating" || state == "reloading", err
}

// restartNoBlock is the worker's restart when it is running: queued, not waited for, with the
// words its step summary adds.
func (u *unitRun) restartNoBlock(spec serviceSpec) (func(context.Context, string) error, string, bool) {
	d, ok := u.drainer()
	if !spec.NoBlock || !ok {
		return nil, "", false
	}
	return d.RestartNoBlock, fmt.Sprintf(" (lands first: running builds get up to %s)", u.drainTimeout()), true
}

// containers asks the worker's own Garden how many containers it still holds; "?" when it does
// not answer (a worker already past its Garden shutdown, or not started).
func (u *unitRun) containers(ctx context.Context) string {
	addr := u.deps.GardenAddr
	if addr == "" {
		addr = concourse.DefaultGardenAddr
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	n, err := concourse.GardenContainers(ctx, &http.Client{Transport: &http.Transport{Proxy: nil}}, addr)
	if err != nil {
		u.logf("counting the worker's containers: %v", err)
		return "?"
	}
	return strconv.Itoa(n)
}

// reportDrain runs after the worker's plan: while systemd's restart job drains the worker it
// says so and the worker is not ready. justQueued: this hook queued the restart, so an idle
// worker gets drainGrace to come back before the status says Draining.
func (u *unitRun) reportDrain(ctx context.Context, justQueued bool) (draining bool, err error) {
	if _, ok := u.drainer(); !ok {
		return false, nil
	}
	state, err := u.workerState(ctx)
	if err != nil {
		return false, err
	}
	if state != "deactivating" {
		return false, nil
	}
	// An idle worker (no containers, or a Garden that no longer answers because the worker is
	// already going) is watched briefly, so its status is ready at once rather than at the next
	// update-status.
	n := u.containers(ctx)
	if justQueued && (n == "0" || n == "?") {
		for deadline := time.Now().Add(drainGrace); state == "deactivating" && time.Now().Before(deadline); {
			time.Sleep(250 * time.Millisecond)
			if state, err = u.workerState(ctx); err != nil {
				return false, err
			}
		}
		if state != "deactivating" {
			return false, nil
		}
		n = u.containers(ctx)
	}
	u.status.add(juju.StatusMaintenance, fmt.Sprintf("Draining: %s containers (restarting with the new configuration once they finish, at most %s)", n, u.drainTimeout()))
	return true, nil
}

// ensureHold converges a landed or retired worker: it is stopped the non-blocking way, disabled
// so a reboot does not start it, and never started by a hook. held is false when there is no hold.
func (u *unitRun) ensureHold(ctx context.Context) (held bool, err error) {
	h := u.state.WorkerHold
	if h == nil {
		return false, nil
	}
	state, err := u.workerState(ctx)
	if err != nil {
		return true, err
	}
	resume := fmt.Sprintf("resume with: juju run %s resume-worker", u.f.Env.UnitName)
	switch {
	case h.Kind == holdLanded && (state == "active" || state == "deactivating" && !h.Signalled):
		// Also when something outside the charm started it again: a landed worker stays landed.
		// While a config change's restart drains it, the stop replaces that restart job, so
		// systemd does not start it again once drained.
		if err := u.stopNoBlock(ctx); err != nil {
			return true, err
		}
		h.Signalled = true
		u.changed = true
		u.act("Land %s: stop it (SIGUSR1), running builds get up to %s", workerSvc, u.drainTimeout())
		if state, err = u.workerState(ctx); err != nil {
			return true, err
		}
	case h.Kind == holdRetired && state == "active" && !h.Signalled:
		if err := u.deps.Services.Kill(ctx, workerSvc, "SIGUSR2"); err != nil {
			return true, fmt.Errorf("retiring %s: %w", workerSvc, err)
		}
		h.Signalled = true
		u.changed = true
		u.act("Retire %s (SIGUSR2): it leaves Concourse once its builds finish", workerSvc)
		if state, err = u.workerState(ctx); err != nil { // an idle worker may be gone already
			return true, err
		}
	}
	if err := u.deps.Services.Disable(ctx, workerSvc); err != nil {
		return true, fmt.Errorf("disabling %s: %w", workerSvc, err)
	}
	running := state == "active" || state == "deactivating"
	switch {
	case h.Kind == holdLanded && running:
		u.status.add(juju.StatusMaintenance, fmt.Sprintf("Landing: %s containers still running, then the worker stays landed; %s", u.containers(ctx), resume))
	case h.Kind == holdLanded:
		u.status.add(juju.StatusMaintenance, "Landed: takes no new builds; "+resume)
	case running:
		u.status.add(juju.StatusMaintenance, fmt.Sprintf("Retiring: %s containers still running, then the worker leaves Concourse; %s", u.containers(ctx), resume))
	default:
		u.status.add(juju.StatusMaintenance, "Retired: left Concourse; rejoin with: juju run "+u.f.Env.UnitName+" resume-worker")
	}
	return true, nil
}

func (u *unitRun) stopNoBlock(ctx context.Context) error {
	if d, ok := u.drainer(); ok {
		return d.StopNoBlock(ctx, workerSvc)
	}
	return u.deps.Services.Stop(ctx, workerSvc)
}

func (u *unitRun) requireWorker(action string) error {
	if u.role.Worker {
		return nil
	}
	return fmt.Errorf("%s needs a worker, and %s is a %s: run it on a worker unit", action, u.f.Env.UnitName, u.role)
}

// holdWorker is land-worker and retire-worker: record the hold, then converge (ensureHold stops
// the worker without waiting for its builds).
func (u *unitRun) holdWorker(ctx context.Context, action, kind string) (map[string]string, error) {
	if err := u.requireWorker(action); err != nil {
		return nil, err
	}
	if h := u.state.WorkerHold; h == nil || h.Kind != kind {
		u.state.WorkerHold = &WorkerHold{Kind: kind, Since: u.now()}
		u.changed = true
	}
	if err := u.run(ctx); err != nil {
		return nil, err
	}
	return map[string]string{"worker": workerName(u.f.Env.UnitName), "status": u.status.best.Message}, nil
}

// resumeWorker drops the hold and starts the worker: a landed one registers as running again, a
// retired one registers anew. A worker still draining from the land is restarted once it exits.
func (u *unitRun) resumeWorker(ctx context.Context) (map[string]string, error) {
	if err := u.requireWorker("resume-worker"); err != nil {
		return nil, err
	}
	was := "running (nothing to resume)"
	if h := u.state.WorkerHold; h != nil {
		was = h.Kind + " since " + h.Since.UTC().Format(time.RFC3339)
		u.state.WorkerHold = nil
		// A restart, also when it is still draining from the land: systemd starts it when it exits.
		u.state.Worker = forgetInputs(u.state.Worker)
		u.changed = true
	}
	if err := u.run(ctx); err != nil {
		return nil, err
	}
	return map[string]string{"worker": workerName(u.f.Env.UnitName), "was": was, "status": u.status.best.Message}, nil
}

// workerName is the name the worker registers under (renderWorker's CONCOURSE_NAME).
func workerName(unit string) string { return storage.UnitTag(unit) }

// pruneWorkers removes stalled workers (their machine is gone: they stay stalled for ever, as
// neither 7.14.3 nor 8.2.5 has a stalled-worker timeout) through the web's API, as the admin.
// With worker= it prunes that one, and refuses a running one.
func (u *unitRun) pruneWorkers(ctx context.Context) (map[string]string, error) {
	if err := u.requireWeb("prune-workers"); err != nil {
		return nil, err
	}
	var p struct {
		Worker string `json:"worker"`
	}
	if err := u.juju.ActionParams(ctx, &p); err != nil {
		return nil, err
	}
	api, err := u.adminAPI(ctx, 10*time.Second)
	if err != nil {
		return nil, err
	}
	client, base, token := api.client, api.base, api.token
	workers, err := concourse.Workers(ctx, client, base, token)
	if err != nil {
		return nil, fmt.Errorf("listing the workers: %w", err)
	}
	names := concourse.StalledWorkers(workers)
	if p.Worker != "" {
		w, ok := concourse.FindWorker(workers, p.Worker)
		if !ok {
			return nil, fmt.Errorf("the web knows no worker %q: juju run %s check-status, or fly workers, lists them", p.Worker, u.f.Env.UnitName)
		}
		if w.State == concourse.WorkerRunning {
			return nil, fmt.Errorf("worker %s is running: prune-workers removes only workers that are not (land or retire it first)", p.Worker)
		}
		names = []string{p.Worker}
	}
	var pruned []string
	for _, n := range names {
		if _, err := concourse.PruneWorker(ctx, client, base, token, n); err != nil {
			return map[string]string{"pruned": strings.Join(pruned, ",")}, err
		}
		pruned = append(pruned, n)
	}
	var kept []string
	for _, w := range workers {
		if !contains(pruned, w.Name) {
			kept = append(kept, w.Name+" ("+w.State+")")
		}
	}
	r := map[string]string{"pruned": strings.Join(pruned, ","), "kept": strings.Join(kept, ", ")}
	if len(pruned) == 0 {
		r["pruned"] = "none: no worker is stalled"
	}
	return r, nil
}

// lifecycleReport adds the worker's lifecycle to check-status.
func (u *unitRun) lifecycleReport(ctx context.Context, r map[string]string) {
	if !u.role.Worker {
		return
	}
	r["drain-timeout"] = u.drainTimeout().String()
	if h := u.state.WorkerHold; h != nil {
		r["worker-hold"] = h.Kind + " since " + h.Since.UTC().Format(time.RFC3339) + "; resume with the resume-worker action"
	}
	if state, err := u.workerState(ctx); err == nil && state == "deactivating" {
		r["worker-draining"] = u.containers(ctx) + " containers"
	}
}
