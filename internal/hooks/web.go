package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Files the charm owns on each unit, relative to Paths.ConfigDir / Paths.SystemdDir.
const (
	fileWebEnv         = "web.env"
	fileWorkerEnv      = "worker.env"
	keySession         = "keys/session_signing_key"
	keyTSAHostKey      = "keys/tsa_host_key"
	keyAuthorized      = "keys/authorized_worker_keys"
	keyWorker          = "keys/worker_key"
	keyTSAPublicForWkr = "keys/tsa_host_key.pub.workers" // every web's TSA public key, for the worker
	fileDBCA           = "postgresql-ca.pem"             // the database's TLS CA, from the relation
)

func (u *unitRun) path(rel string) string { return filepath.Join(u.deps.Paths.ConfigDir, rel) }

func (u *unitRun) unitPath(name string) string { return filepath.Join(u.deps.Paths.SystemdDir, name) }

// ensureKeys generates the keys this unit's roles need, once; existing keys are never replaced.
// Private keys stay on this unit; only the public halves are published.
func (u *unitRun) ensureKeys(ctx context.Context) error {
	if err := os.MkdirAll(u.path("keys"), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", u.path("keys"), err)
	}
	if u.role.Web {
		uid, gid, err := u.deps.EnsureUser(webUser)
		if err != nil {
			return fmt.Errorf("creating the %s system user: %w", webUser, err)
		}
		u.webUID, u.webGID = uid, gid
		if _, created, err := concourse.EnsureKey(u.path(keySession), u.keyBits(), uid, gid); err != nil {
			return err
		} else if created {
			u.act("Generate session signing key %s", u.path(keySession))
		}
		pub, created, err := concourse.EnsureKey(u.path(keyTSAHostKey), u.keyBits(), uid, gid)
		if err != nil {
			return err
		}
		if created {
			u.act("Generate TSA host key %s", u.path(keyTSAHostKey))
		}
		u.tsaPub = pub
	}
	if u.role.Worker {
		pub, created, err := concourse.EnsureKey(u.path(keyWorker), u.keyBits(), 0, 0)
		if err != nil {
			return err
		}
		if created {
			u.act("Generate worker key %s", u.path(keyWorker))
		}
		u.workerPub = pub
	}
	return nil
}

// loadKeys reads the public keys generated in earlier hooks, without generating any.
func (u *unitRun) loadKeys() {
	read := func(rel string) string {
		b, err := os.ReadFile(u.path(rel) + ".pub")
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if u.role.Web {
		u.tsaPub = read(keyTSAHostKey)
	}
	if u.role.Worker {
		u.workerPub = read(keyWorker)
	}
}

func (u *unitRun) keyBits() int {
	if u.deps.KeyBits > 0 {
		return u.deps.KeyBits
	}
	return concourse.DefaultKeyBits
}

// webURL is what users reach: the external-url option, else the unit's address.
func (u *unitRun) webURL() string {
	if u.cfg.ExternalURL != "" {
		return u.cfg.ExternalURL
	}
	return fmt.Sprintf("http://%s:%d", hostForURL(u.f.Address), u.cfg.WebPort)
}

func hostForURL(addr string) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]"
	}
	return addr
}

// ensureWeb converges the web service: published TSA identity, authorized worker keys, the
// environment file and unit, and a (re)start only when their inputs changed.
func (u *unitRun) ensureWeb(ctx context.Context) (ready bool, err error) {
	if !u.role.Web {
		return false, u.removeService(ctx, webService, &u.state.Web, u.path(fileWebEnv))
	}
	if u.tsaPub != "" {
		u.unitData[keyTSAHost] = fmt.Sprintf("%s:%d", u.f.Address, tsaPort)
		u.unitData[keyWebIP] = u.f.Address
		u.unitData[keyTSAPublicKey] = u.tsaPub
	}
	if u.state.Web != nil {
		u.unitData[keyWebVersion] = u.state.Web.Version
	}
	if u.installed == "" {
		return false, nil // the install step has set the status
	}

	db, ok := u.dbConfig(ctx)
	if !ok {
		return false, u.stopWebForDatabase(ctx)
	}
	password, err := u.adminPassword(ctx)
	if err != nil {
		return false, err
	}
	if password == "" {
		u.status.waiting("Waiting for the leader to create the admin password")
		return false, nil
	}
	env, envFile, unitFile, err := renderWeb(u.cfg, u.deps.Paths, u.f.Address, u.binary, password, db)
	if err != nil {
		u.status.blocked(fmt.Sprintf("Invalid web configuration: %v", err))
		return false, nil
	}
	// Rebuilt from the relation data of this hook, so departed workers lose access at once
	// (reference weakness #28); a change is applied with SIGHUP, never a restart.
	keys := workerKeys(u.f)
	if u.role.Worker && u.workerPub != "" && !contains(keys, u.workerPub) {
		keys = append(keys, u.workerPub)
	}
	authorized := []byte(strings.Join(keys, "\n"))
	if len(keys) > 0 {
		authorized = append(authorized, '\n')
	}
	files := []fileSpec{
		{Path: u.path(keyAuthorized), Data: authorized, Mode: 0o640, UID: 0, GID: u.webGID},
		{Path: u.path(fileWebEnv), Data: envFile, Mode: 0o640, UID: 0, GID: u.webGID},
	}
	var caPEM []byte
	if db.CACert != "" {
		// Written before the database check and the start: Concourse opens it when it parses
		// its flags (concourse-contract §2.3).
		caPEM = []byte(u.f.DB.TLSCA + "\n")
		files = append(files, fileSpec{Path: db.CACert, Data: caPEM, Mode: 0o644, UID: 0, GID: 0})
	}
	spec := serviceSpec{
		Name:     webService,
		Files:    files,
		UnitFile: fileSpec{Path: u.unitPath(webService), Data: unitFile, Mode: 0o644, UID: -1, GID: -1},
		Inputs: map[string]string{
			"environment":  hashOf(envFile),
			"unit file":    hashOf(unitFile),
			"TSA host key": hashOf([]byte(u.tsaPub)),
			"database CA":  hashOf(caPEM),
			"release":      u.installed + " " + u.binary,
		},
		Reload:  map[string]string{"authorized worker keys": hashOf(authorized)},
		Version: u.installed,
		Binary:  u.binary,
	}
	envList := envListOf(env)
	var preStart []step
	if u.state.MigrationHold != 0 {
		preStart = append(preStart, step{Summary: fmt.Sprintf("Check that Concourse %s supports schema %d, where run-migrations left the database", u.installed, u.state.MigrationHold),
			Do: func(ctx context.Context) error { return u.checkMigrationHold(ctx, envList) }})
	}
	plan, err := u.planService(ctx, spec, append(preStart,
		// Prove the credentials before touching a running web (reference weakness #29: the
		// Python charm found out from a crash loop).
		step{Summary: fmt.Sprintf("Check PostgreSQL at %s:%d", db.Host, db.Port), Do: func(ctx context.Context) error {
			if err := u.deps.CheckDB(ctx, db, 10*time.Second); err != nil {
				return blocked("PostgreSQL check failed: %v", err)
			}
			return nil
		}},
		step{Summary: "Migrate the database to Concourse " + u.installed, Do: func(ctx context.Context) error { return u.migrate(ctx, envList) }},
	))
	if err != nil {
		return false, err
	}
	ok, err = u.applyService(ctx, spec, plan)
	if err != nil || !ok {
		return false, err
	}
	if plan.restart {
		u.state.HadDatabase = true
		u.jlog(juju.LogInfo, fmt.Sprintf("started %s with Concourse %s", webService, u.installed))
	}
	// systemd says "active" as soon as the process runs; the web is ready when its API answers
	// (concourse-contract §8.12). Right after a start it gets a bounded wait; later hooks probe once.
	wait := 2 * time.Second
	if plan.restart {
		wait = u.webStartWait()
	}
	if err := u.waitWeb(ctx, wait); err != nil {
		u.status.add(juju.StatusMaintenance, fmt.Sprintf("Web server starting: %v", err))
		return false, nil
	}
	u.unitData[keyWebVersion] = u.state.Web.Version
	u.setPeerApp(keyWebVersion, u.state.Web.Version)
	u.tsaApp[keyWebVersion] = u.state.Web.Version
	return true, nil
}

// waitWeb polls the web's /api/v1/info on loopback until it reports the version it was started
// with, for at most wait.
func (u *unitRun) waitWeb(ctx context.Context, wait time.Duration) error {
	if u.deps.WebInfo == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	base := fmt.Sprintf("http://127.0.0.1:%d", u.cfg.WebPort)
	for {
		v, err := u.deps.WebInfo(ctx, base)
		if err == nil && v == u.state.Web.Version {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%s/api/v1/info reports %s, want %s", base, v, u.state.Web.Version)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/api/v1/info does not answer yet (%v)", base, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (u *unitRun) webStartWait() time.Duration {
	if u.deps.WebStartWait > 0 {
		return u.deps.WebStartWait
	}
	return time.Minute
}

// migrate runs the new binary's migrations before the web starts on a new release, and refuses
// a downgrade below the schema the database already has (concourse-contract §8.3). On an
// unchanged schema it does nothing.
func (u *unitRun) migrate(ctx context.Context, env []string) error {
	m := u.deps.NewMigrator(u.binary, env)
	supported, err := m.SupportedVersion(ctx)
	if err != nil {
		return blocked("Cannot read the schema version Concourse v%s supports: %v", u.installed, err)
	}
	current, err := m.CurrentVersion(ctx)
	if err != nil {
		return blocked("Cannot read the database schema version: %v", err)
	}
	if current > supported {
		return blocked("Refusing to run Concourse v%s: the database schema is at %d, newer than the %d it supports. Run the run-migrations action with target-version=%d while the newer release is installed, then set version again", u.installed, current, supported, supported)
	}
	if current == supported {
		return nil
	}
	_ = u.juju.SetStatus(ctx, juju.Status{Name: juju.StatusMaintenance, Message: fmt.Sprintf("Migrating the database to Concourse v%s (schema %d → %d)...", u.installed, current, supported)})
	if err := m.MigrateToLatest(ctx); err != nil {
		return blocked("Database migration to schema %d failed: %v", supported, err)
	}
	u.logf("migrated the database from schema %d to %d", current, supported)
	return nil
}

// checkMigrationHold keeps a web from starting on a schema that run-migrations moved down,
// until the installed release supports exactly that schema (it would migrate straight back up).
func (u *unitRun) checkMigrationHold(ctx context.Context, env []string) error {
	hold := u.state.MigrationHold
	if hold == 0 {
		return nil
	}
	supported, err := u.deps.NewMigrator(u.binary, env).SupportedVersion(ctx)
	if err != nil || supported != hold {
		return blocked("The database was migrated to schema %d by run-migrations; set version to the release that supports it (Concourse v%s supports %d), or run run-migrations without target-version to undo", hold, u.installed, supported)
	}
	u.state.MigrationHold = 0
	u.changed = true
	return nil
}

// dbConfig returns the database settings when the relation is complete, else records why not.
func (u *unitRun) dbConfig(ctx context.Context) (concourse.DBConfig, bool) {
	db := u.f.DB
	if db == nil {
		if u.state.HadDatabase {
			u.status.blocked("PostgreSQL database required")
		} else {
			u.status.waiting("Waiting for PostgreSQL database...")
		}
		return concourse.DBConfig{}, false
	}
	if db.SecretErr != nil {
		u.status.waiting(fmt.Sprintf("Waiting for PostgreSQL database... (credentials unreadable: %v)", db.SecretErr))
		return concourse.DBConfig{}, false
	}
	if db.Endpoints == "" || db.Username == "" || db.Password == "" {
		u.status.waiting("Waiting for PostgreSQL database...")
		return concourse.DBConfig{}, false
	}
	host, port, err := concourse.ParseEndpoints(db.Endpoints)
	if err != nil {
		u.status.blocked(fmt.Sprintf("PostgreSQL endpoints %q unusable: %v", db.Endpoints, err))
		return concourse.DBConfig{}, false
	}
	name := db.Database
	if name == "" {
		name = databaseName
	}
	c := concourse.DBConfig{Host: host, Port: port, User: db.Username, Password: db.Password, Database: name}
	if db.TLS {
		// With a CA the server is verified; without one the connection is at least encrypted.
		c.SSLMode = "require"
		if db.TLSCA != "" {
			c.SSLMode, c.CACert = "verify-ca", u.path(fileDBCA)
		}
	}
	return c, true
}

// stopWebForDatabase stops a web whose database went away and removes its settings (the
// reference left them in config.env: weakness #11).
func (u *unitRun) stopWebForDatabase(ctx context.Context) error {
	if u.state.Web == nil {
		return nil
	}
	if err := u.deps.Services.Stop(ctx, webService); err != nil {
		return err
	}
	if err := u.deps.Services.Disable(ctx, webService); err != nil {
		return err
	}
	if err := os.Remove(u.path(fileWebEnv)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", u.path(fileWebEnv), err)
	}
	u.act("Stop %s: no database", webService)
	u.state.Web = nil
	u.changed = true
	return nil
}

// adminPassword reads the application's admin password secret (created by the leader).
func (u *unitRun) adminPassword(ctx context.Context) (string, error) {
	if u.newAdminPassword != "" {
		return u.newAdminPassword, nil
	}
	id := ""
	if u.f.Peers != nil {
		id = u.f.Peers.AppData[keyAdminSecret]
	}
	if id == "" {
		return "", nil
	}
	content, err := u.juju.GetSecret(ctx, juju.SecretGetOptions{ID: id})
	if errors.Is(err, juju.ErrSecretNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the admin password secret: %w", err)
	}
	return content["password"], nil
}

// removeService stops and disables a service whose role this unit no longer has, and removes its
// unit and environment files, so no unit keeps running a role it lost.
func (u *unitRun) removeService(ctx context.Context, name string, rec **ServiceRecord, envFile string) error {
	unitFile := u.unitPath(name)
	_, statErr := os.Stat(unitFile)
	if *rec == nil && errors.Is(statErr, os.ErrNotExist) {
		return nil
	}
	if name == workerSvc {
		// The unit's KillSignal lands the worker (kept registered across restarts); a worker
		// that goes away for good retires instead, or it lingers as a stalled ghost.
		if active, _ := u.deps.Services.IsActive(ctx, name); active {
			if err := u.deps.Services.Kill(ctx, name, "SIGUSR2"); err != nil {
				u.logf("retiring %s: %v", name, err)
			}
		}
	}
	if err := u.deps.Services.Stop(ctx, name); err != nil {
		return err
	}
	if err := u.deps.Services.Disable(ctx, name); err != nil {
		return err
	}
	for _, p := range []string{unitFile, envFile} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", p, err)
		}
	}
	if err := u.deps.Services.DaemonReload(ctx); err != nil {
		return err
	}
	u.act("Stop and remove %s: this unit's role is now %s", name, u.role)
	*rec = nil
	u.changed = true
	return nil
}

func envListOf(vars []concourse.EnvVar) []string {
	out := make([]string, 0, len(vars))
	for _, v := range vars {
		out = append(out, v.Name+"="+v.Value)
	}
	return out
}

// renderWeb builds the web's environment and unit file from plain values; the hooks and the
// render command share it, so what `render` prints is what a unit writes.
func renderWeb(cfg Config, p Paths, address, binary, password string, db concourse.DBConfig) ([]concourse.EnvVar, []byte, []byte, error) {
	path := func(rel string) string { return filepath.Join(p.ConfigDir, rel) }
	ext := cfg.ExternalURL
	if ext == "" {
		ext = fmt.Sprintf("http://%s:%d", hostForURL(address), cfg.WebPort)
	}
	env, err := concourse.WebEnv(concourse.WebConfig{
		BindPort:                   cfg.WebPort,
		ExternalURL:                ext,
		LogLevel:                   cfg.LogLevel,
		SessionSigningKeyPath:      path(keySession),
		TSAHostKeyPath:             path(keyTSAHostKey),
		TSAAuthorizedKeysPath:      path(keyAuthorized),
		TSABindPort:                tsaPort,
		AdminUser:                  cfg.AdminUser,
		AdminPassword:              password,
		Postgres:                   &db,
		ContainerPlacementStrategy: cfg.ContainerPlacementStrategy,
		PeerAddress:                address,
		Extra:                      metricsEnv(cfg),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	unit := concourse.WebUnit(concourse.UnitOptions{
		Description: "Concourse CI web node (managed by the concourse-ci-machine charm)",
		Binary:      binary,
		Subcommand:  "web",
		EnvFile:     path(fileWebEnv),
		User:        webUser,
		Group:       webUser,
		ExtraArgs:   cfg.ExtraWebFlags,
	})
	return env, concourse.RenderEnv(env), unit, nil
}

// metricsEnv turns on Concourse's Prometheus listener; it serves every path, /metrics included
// (concourse-contract §2.3). Both variables or neither.
func metricsEnv(cfg Config) []concourse.EnvVar {
	if !cfg.EnableMetrics {
		return nil
	}
	return []concourse.EnvVar{
		{Name: "CONCOURSE_PROMETHEUS_BIND_IP", Value: "0.0.0.0"},
		{Name: "CONCOURSE_PROMETHEUS_BIND_PORT", Value: strconv.Itoa(metricsPort)},
	}
}
