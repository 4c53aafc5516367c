package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
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

func (u *unitRun) checkStatus(ctx context.Context) (map[string]string, error) {
	var verbose struct {
		Verbose bool `json:"verbose"`
	}
	if err := u.juju.ActionParams(ctx, &verbose); err != nil {
		return nil, err
	}
	r := map[string]string{"role": u.role.String(), "mode": u.cfg.Mode, "shared-storage": u.cfg.SharedStorage}
	for name, what := range noEffectOptions(u.cfg.Opts) {
		r["option-"+name] = what // options Concourse has no setting for (options.go)
	}
	store := u.deps.NewStore(u.deps.Paths.Root, u.f.Env.UnitName, nil)
	inst, err := store.Installed()
	r["installed-version"] = inst
	if err != nil {
		r["installed-version-error"] = err.Error()
	}
	if u.cfg.SharedStorage == "lxc" {
		r["shared-storage-ready"] = strconv.FormatBool(store.CheckShared() == nil)
	}
	var problems []string
	check := func(name, svc string, rec *ServiceRecord, want bool) {
		active, err := u.deps.Services.IsActive(ctx, svc)
		switch {
		case err != nil:
			r[name+"-service"] = "unknown: " + err.Error()
			problems = append(problems, err.Error())
		case active:
			r[name+"-service"] = "active"
		default:
			r[name+"-service"] = "inactive"
			if want {
				problems = append(problems, svc+" is not running")
			}
		}
		if rec != nil {
			r[name+"-version"] = rec.Version
		}
	}
	check("web", webService, u.state.Web, u.role.Web)
	check("worker", workerSvc, u.state.Worker, u.role.Worker)
	if u.role.Web {
		// Loopback, no proxy; with TLS over HTTPS, trusting only the configured certificate.
		base := u.localWebURL()
		client, err := LocalWebClient(u.deps.Paths, base, 5*time.Second)
		var info concourse.InfoResponse
		if err == nil {
			info, err = concourse.Info(ctx, client, base)
		}
		if err == nil {
			r["web-api-version"] = info.Version
		} else {
			r["web-api"] = err.Error()
			problems = append(problems, "web API: "+err.Error())
		}
		if t := tlsOf(u.cfg); t.On {
			r["tls"] = fmt.Sprintf("https on port %d, plain HTTP on %d redirects to it", u.cfg.WebPort, t.RedirectPort)
			if leaf, err := firstCertificate([]byte(t.Cert)); err == nil {
				r["tls-certificate"] = describeCert(leaf)
			}
		}
		if db, ok := u.dbConfig(ctx); ok {
			if err := u.deps.CheckDB(ctx, db, 5*time.Second); err != nil {
				r["database"] = err.Error()
				problems = append(problems, "database: "+err.Error())
			} else {
				r["database"] = fmt.Sprintf("reachable (%s:%d)", db.Host, db.Port)
			}
		} else {
			r["database"] = "not related"
		}
	}
	if u.role.Worker {
		hosts, _, _ := webUnits(u.f)
		var reach []string
		for _, h := range hosts {
			c, err := net.DialTimeout("tcp", h, 3*time.Second)
			if err != nil {
				reach = append(reach, h+" unreachable")
				problems = append(problems, "TSA "+h+" unreachable")
				continue
			}
			c.Close()
			reach = append(reach, h+" reachable")
		}
		r["tsa"] = strings.Join(reach, ", ")
		if len(hosts) == 0 {
			r["tsa"] = "no web unit known"
		}
	}
	u.lifecycleReport(ctx, r)
	if verbose.Verbose {
		r["install-root"] = u.deps.Paths.Root
		r["config-dir"] = u.deps.Paths.ConfigDir
		r["binary"] = store.BinaryPath()
		if names, err := envNames(u.path(fileWebEnv)); err == nil {
			r["web-env"] = names
		}
		if names, err := envNames(u.path(fileWorkerEnv)); err == nil {
			r["worker-env"] = names
		}
	}
	r["healthy"] = strconv.FormatBool(len(problems) == 0)
	if len(problems) > 0 {
		r["problems"] = strings.Join(problems, "; ")
	}
	return r, nil
}

// envNames lists the variable names of an env file, never their values (they hold passwords).
func envNames(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	m, err := concourse.ParseEnvFile(b)
	if err != nil {
		return "", err
	}
	return strings.Join(sortedKeys(m), ","), nil
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
