package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// action runs a Juju action. Failures the operator can act on go through action-fail with a
// sentence saying why; only broken tooling makes the process exit non-zero.
func (h *handler) action(ctx context.Context, name string) error {
	u, err := h.prepare(ctx)
	if err != nil {
		return h.juju.FailAction(ctx, err.Error())
	}
	var results map[string]string
	switch name {
	case "get-admin-password":
		results, err = u.getAdminPassword(ctx)
	case "check-status":
		results, err = u.checkStatus(ctx)
	case "restart-services":
		results, err = u.restartServices(ctx)
	case "run-migrations":
		results, err = u.runMigrations(ctx)
	case "rotate-web-keys":
		results, err = u.rotateWebKeys(ctx)
	case "land-worker":
		results, err = u.holdWorker(ctx, name, holdLanded)
	case "retire-worker":
		results, err = u.holdWorker(ctx, name, holdRetired)
	case "resume-worker":
		results, err = u.resumeWorker(ctx)
	case "prune-workers":
		results, err = u.pruneWorkers(ctx)
	default:
		err = fmt.Errorf("unknown action %q", name)
	}
	if len(results) > 0 {
		if serr := h.juju.SetActionResults(ctx, results); serr != nil {
			return serr
		}
	}
	if err != nil {
		return h.juju.FailAction(ctx, err.Error())
	}
	return nil
}

// prepare gathers the facts and validates the configuration, like a hook, without applying.
func (h *handler) prepare(ctx context.Context) (*unitRun, error) {
	f, err := h.gather(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(f.RawConfig)
	if err != nil {
		return nil, fmt.Errorf("the configuration is invalid: %w", err)
	}
	return &unitRun{
		handler: h, f: f, cfg: cfg, role: decideRole(cfg.Mode, f.Leader),
		peerApp: map[string]string{}, tsaApp: map[string]string{}, unitData: map[string]string{},
		state: f.State,
	}, nil
}

func (u *unitRun) requireWeb(action string) error {
	if u.role.Web {
		return nil
	}
	hint := "a unit of the web application"
	if u.cfg.Mode == "auto" {
		hint = "the leader unit (mode=auto makes it the web node)"
	}
	return fmt.Errorf("%s needs the web node, and %s is a %s: run it on %s", action, u.f.Env.UnitName, u.role, hint)
}

func (u *unitRun) getAdminPassword(ctx context.Context) (map[string]string, error) {
	if err := u.requireWeb("get-admin-password"); err != nil {
		return nil, err
	}
	pw, err := u.adminPassword(ctx)
	if err != nil {
		return nil, err
	}
	if pw == "" {
		return nil, errors.New("the admin password does not exist yet: the leader creates it in its next hook")
	}
	return map[string]string{
		"username": u.cfg.AdminUser,
		"password": pw,
		"url":      u.webURL(),
		"message":  "Use these credentials to log in to the Concourse web UI or with fly",
	}, nil
}

func (u *unitRun) restartServices(ctx context.Context) (map[string]string, error) {
	var p struct {
		Force bool `json:"force"`
	}
	if err := u.juju.ActionParams(ctx, &p); err != nil {
		return nil, err
	}
	if p.Force {
		// Forget what the services were started with: the convergence below restarts them.
		u.state.Web, u.state.Worker = forgetInputs(u.state.Web), forgetInputs(u.state.Worker)
		u.changed = true
	}
	if err := u.run(ctx); err != nil {
		return nil, err
	}
	r := map[string]string{"status": string(u.status.best.Name) + ": " + u.status.best.Message}
	if len(u.actions) == 0 {
		r["actions"] = "none: the services were running with their current configuration"
	} else {
		r["actions"] = strings.Join(u.actions, "; ")
	}
	if u.status.best.Name == juju.StatusBlocked {
		return r, errors.New(u.status.best.Message)
	}
	return r, nil
}

func forgetInputs(r *ServiceRecord) *ServiceRecord {
	if r == nil {
		return nil
	}
	c := *r
	c.Inputs = nil
	return &c
}

func (u *unitRun) runMigrations(ctx context.Context) (map[string]string, error) {
	if err := u.requireWeb("run-migrations"); err != nil {
		return nil, err
	}
	var p struct {
		Target string `json:"target-version"`
	}
	if err := u.juju.ActionParams(ctx, &p); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(u.path(fileWebEnv))
	if err != nil {
		return nil, fmt.Errorf("the web node is not configured yet (%v): relate a PostgreSQL database first", err)
	}
	vars, err := concourse.ParseEnvFile(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u.path(fileWebEnv), err)
	}
	var env []string
	for _, k := range sortedKeys(vars) {
		env = append(env, k+"="+vars[k])
	}
	// Migrations create tables: on the postgresql charm's role model they must run as the
	// database's owner role, as the web's own start arranges (PrepareRoleModel is idempotent).
	if db, ok := u.dbConfig(ctx); ok && u.deps.PrepareDB != nil {
		if _, err := u.deps.PrepareDB(ctx, db, 30*time.Second); err != nil {
			return nil, fmt.Errorf("preparing PostgreSQL for the migration: %w", err)
		}
	}
	store := u.deps.NewStore(u.deps.Paths.Root, u.f.Env.UnitName, nil)
	m := u.deps.NewMigrator(store.BinaryPath(), env)
	supported, err := m.SupportedVersion(ctx)
	if err != nil {
		return nil, err
	}
	before, err := m.CurrentVersion(ctx)
	if err != nil {
		return nil, err
	}
	r := map[string]string{"supported-version": strconv.FormatInt(supported, 10), "previous-version": strconv.FormatInt(before, 10)}
	if p.Target == "" {
		if err := m.MigrateToLatest(ctx); err != nil {
			return r, err
		}
		r["current-version"] = strconv.FormatInt(supported, 10)
		return r, u.setHold(0)
	}
	target, err := strconv.ParseInt(strings.TrimSpace(p.Target), 10, 64)
	if err != nil || target <= 0 {
		return r, fmt.Errorf("target-version %q is not a schema number (as printed by `concourse migrate --supported-db-version`)", p.Target)
	}
	if target > supported {
		return r, fmt.Errorf("target-version %d is newer than the %d the installed Concourse supports", target, supported)
	}
	// The running web would migrate the schema straight back up when it restarts, so it is
	// stopped first; the next convergence starts the release that matches the schema.
	if target < supported {
		if err := u.deps.Services.Stop(ctx, webService); err != nil {
			return r, err
		}
		r["web-service"] = "stopped: set the version option to the release whose schema is " + p.Target
	}
	if err := m.MigrateTo(ctx, target); err != nil {
		return r, err
	}
	r["current-version"] = strconv.FormatInt(target, 10)
	hold := target
	if target == supported {
		hold = 0
	}
	return r, u.setHold(hold)
}

func (u *unitRun) setHold(v int64) error {
	u.state.MigrationHold = v
	return saveState(u.deps.Paths.StateDir, u.state)
}
