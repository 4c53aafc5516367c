package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
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
		// The session signing key and the TSA host key are the application's, shared by every
		// web unit through the leader's secret (webkeys.go).
		if err := u.ensureSharedWebKeys(ctx); err != nil {
			return err
		}
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

// webURL is what users reach: the external-url option, else the tsa binding's address (see
// Addresses.Web), over https with tls-enabled.
func (u *unitRun) webURL() string {
	if u.cfg.ExternalURL != "" {
		return u.cfg.ExternalURL
	}
	return fmt.Sprintf("%s://%s:%d", tlsOf(u.cfg).scheme(), hostForURL(u.f.Addr.Web), u.cfg.WebPort)
}

func hostForURL(addr string) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]"
	}
	return addr
}

// tsaHost is the host:port workers dial for the TSA at addr (IPv6 in brackets).
func tsaHost(addr string) string { return net.JoinHostPort(addr, strconv.Itoa(tsaPort)) }

// ensureWeb converges the web service: published TSA identity, authorized worker keys, the
// environment file and unit, and a (re)start only when their inputs changed.
func (u *unitRun) ensureWeb(ctx context.Context) (ready bool, err error) {
	if !u.role.Web {
		return false, u.removeService(ctx, webService, &u.state.Web, u.path(fileWebEnv))
	}
	if u.tsaPub != "" {
		// The peer relation's values; each tsa relation gets its own address (publish).
		u.unitData[keyTSAHost] = tsaHost(u.f.Addr.Peers)
		u.unitData[keyWebIP] = u.f.Addr.Peers
		u.unitData[keyTSAPublicKey] = u.tsaPub
	}
	if u.state.Web != nil {
		u.unitData[keyWebVersion] = u.state.Web.Version
	}
	if u.installed == "" {
		return false, nil // the install step has set the status
	}
	if u.webKeysWait != "" {
		if u.webKeysBlocked {
			u.status.blocked(u.webKeysWait)
		} else {
			u.status.waiting(u.webKeysWait)
		}
		return false, nil // a running web keeps its keys until the shared ones are readable
	}
	// A failed upgrade's web runs the release it went back to (upgrade.go), or stays stopped;
	// so do the other webs of the application, following the leader's.
	swapBack, hold, err := u.heldRelease(ctx)
	defer swapBack()
	if err != nil || hold {
		return false, err
	}

	db, ok := u.dbConfig(ctx)
	if !ok {
		return false, u.stopWebForDatabase(ctx)
	}
	password, err := u.webAdminPassword(ctx) // reads the secret only when web.env lacks it (relcache.go)
	if err != nil {
		return false, err
	}
	if password == "" {
		u.status.waiting("Waiting for the leader to create the admin password")
		return false, nil
	}
	// The URL users reach comes from the tsa binding, the address web nodes reach each other
	// on (CONCOURSE_PEER_ADDRESS) from peers.
	webCfg := u.cfg
	webCfg.ExternalURL = u.webURL()
	if webCfg, err = u.resolveOptionSecrets(ctx, webCfg); err != nil {
		u.status.blocked(err.Error())
		return false, nil
	}
	webCfg.vaultKV = u.vaultFromRelation() // vault.go: the relation's Vault wins over the options
	env, envFile, unitFile, err := renderWeb(webCfg, u.deps.Paths, u.f.Addr.Peers, u.binary, password, db)
	if err != nil {
		u.status.blocked(fmt.Sprintf("Invalid web configuration: %v", err))
		return false, nil
	}
	// Rebuilt from the relation data of this hook, so departed workers lose access at once
	// (reference weakness #28); a change is applied with SIGHUP, never a restart.
	keys, refused := workerKeys(u.f)
	if len(refused) > 0 {
		// The web keeps serving the workers whose keys are valid; the refused ones are named
		// in the status (see keyRefusal) and in juju-log, and their values are not written.
		u.logRefusals(refused)
		for _, r := range refused {
			u.status.note(r.status())
		}
	}
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
	optFiles := webOptionFiles(webCfg.Opts, u.deps.Paths) // CA certificates of the login providers
	files = append(files, optFiles...)
	tlsFiles := webTLSFiles(webCfg, u.deps.Paths, u.webGID) // the web's certificate and key
	files = append(files, tlsFiles...)
	vaultFiles, err := u.webVaultFiles(webCfg) // Vault's CA and client certificate (vault.go)
	if err != nil {
		return false, err
	}
	files = append(files, vaultFiles...)
	if webCfg.hashes != nil {
		files = append(files, fileSpec{Path: u.path(fileHashChecks), Data: webCfg.hashes.file(), Mode: 0o600, UID: 0, GID: 0})
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
	u.webKeysInputs(spec.Inputs)
	if len(optFiles) > 0 {
		spec.Inputs["login CAs"] = hashOfFiles(optFiles) // absent before, so no restart without them
	}
	if len(tlsFiles) > 0 {
		spec.Inputs["TLS certificate"] = hashOfFiles(tlsFiles) // likewise; Concourse reads them only at start
	}
	if len(vaultFiles) > 0 {
		spec.Inputs["Vault files"] = hashOfFiles(vaultFiles) // likewise
	}
	if note := tlsExpiryNote(webCfg, u.now()); note != "" {
		u.status.note(note)
	}
	envList := envListOf(env)
	if msg := u.encryptionRefusal(ctx, webCfg, db, envFile); msg != "" {
		u.status.blocked(msg) // nothing written: the running web keeps its keys
		return false, nil
	}
	var preStart []step
	if u.state.MigrationHold != 0 {
		preStart = append(preStart, step{Summary: fmt.Sprintf("Check that Concourse %s supports schema %d, where run-migrations left the database", u.installed, u.state.MigrationHold),
			Do: func(ctx context.Context) error { return u.checkMigrationHold(ctx, envList) }})
	}
	// A web moving to another release stops before anything migrates (see stopForUpgrade).
	if proceed, err := u.stopForUpgrade(ctx, db, envList); err != nil || !proceed {
		return false, err
	}
	plan, err := u.planService(ctx, spec, append(preStart,
		// Prove the credentials before touching a running web (reference weakness #29: the
		// Python charm found out from a crash loop).
		step{Summary: fmt.Sprintf("Check PostgreSQL at %s:%d", db.Host, db.Port), Do: func(ctx context.Context) error {
			if err := u.deps.CheckDB(ctx, db, 10*time.Second); err != nil {
				return blocked("PostgreSQL check failed: %v", err)
			}
			// The postgresql charm's role model: Concourse's sessions must run as the database's
			// owner role. Before migrating, and at every start so a new release's tables are covered.
			if u.deps.PrepareDB != nil {
				m, err := u.deps.PrepareDB(ctx, db, 30*time.Second)
				if err != nil {
					return blocked("Preparing PostgreSQL for Concourse failed: %v", err)
				}
				if m.Changed() {
					u.logf("database roles: %s", m)
				}
			}
			return nil
		}},
		step{Summary: "Migrate the database to Concourse " + u.installed, Do: func(ctx context.Context) error { return u.migrateStep(ctx, db, envList) }},
	))
	if err != nil {
		return false, err
	}
	ok, err = u.applyService(ctx, spec, plan)
	if err == nil && len(tlsFiles) == 0 {
		err = u.removeTLSFiles()
	}
	if err == nil && ok {
		err = u.removeStaleOptionFiles(optFiles)
	}
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
	u.webStarted(ctx) // the end of an upgrade's steps (upgrade.go)
	u.retireDeparted(ctx, password)
	return true, nil
}

// retireDeparted retires, through the API, the worker of a unit that is leaving a relation this
// web serves. Its key has just left the TSA's authorized keys (above), so the worker can neither
// retire nor land by itself any more (the TSA refuses its handshake) and would stay in
// `fly workers` as stalled. A failure is logged: the worker would only stall, as before.
func (u *unitRun) retireDeparted(ctx context.Context, password string) {
	ev := u.f.Event
	if ev.RelationEvent != "departed" || (ev.Endpoint != epPeers && ev.Endpoint != epTSA) || u.deps.RetireWorker == nil {
		return
	}
	unit := u.f.Env.DepartingUnit
	if unit == "" {
		unit = u.f.Env.RemoteUnit
	}
	if unit == "" || unit == u.f.Env.UnitName {
		return // this unit is the one leaving: its own teardown retires its worker
	}
	name := storage.UnitTag(unit)
	base := u.localWebURL()
	found, err := u.deps.RetireWorker(ctx, base, u.cfg.AdminUser, password, name)
	switch {
	case err != nil:
		u.jlog(juju.LogWarning, fmt.Sprintf("retiring worker %s of departed unit %s: %v", name, unit, err))
	case found:
		u.act("Retire worker %s: %s left the %s relation", name, unit, ev.Endpoint)
	}
}

// waitWeb polls the web's /api/v1/info on loopback until it reports the version it was started
// with, for at most wait.
func (u *unitRun) waitWeb(ctx context.Context, wait time.Duration) error {
	if u.deps.WebInfo == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	base := u.localWebURL()
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
	if hold := u.state.MigrationHold; hold != 0 && hold == supported {
		// run-migrations moved the schema down to exactly what this release supports (the hold
		// check before this step made sure). Nothing to migrate, and --current-db-version cannot
		// tell: an older release reports the newest migration it lacks that was rolled back
		// (real 7.14.3 says 1747084615 on a database 8.2.5 migrated down to 1746768931).
		u.state.MigrationHold = 0
		u.changed = true
		u.logf("the database is at schema %d, where run-migrations left it for Concourse %s", hold, u.installed)
		return nil
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

// stopForUpgrade keeps every web of the application off a schema newer than its binary: an old
// web left running while the new release migrates fails on the tables it no longer knows (the
// 7.14.3 web on 8.2.5's schema logs "column nbi.version_md5 does not exist"). A web whose
// release changes stops first; when the schema moves, the leader migrates once no other web of
// the application still publishes an older running version, and the other webs wait, stopped,
// until the leader's web runs the new release (its peers publication wakes them), or its
// upgrade fails and they follow its rollback (followLeaderHold, upgrade.go). proceed is
// false while this unit must wait; the status says for what.
func (u *unitRun) stopForUpgrade(ctx context.Context, db concourse.DBConfig, env []string) (proceed bool, err error) {
	rec := u.state.Web
	if rec == nil && !u.f.Leader {
		return u.joinAfterLeader(ctx, env)
	}
	if rec == nil || rec.Version == u.installed {
		return true, nil
	}
	active, err := u.deps.Services.IsActive(ctx, webService)
	if err != nil {
		return false, err
	}
	// The leader's upgrade is recorded step by step (upgrade.go); the other webs only stop.
	upg := u.activeUpgrade()
	if active {
		// Prove the credentials before taking the running web down (the plan checks again).
		if err := u.deps.CheckDB(ctx, db, 10*time.Second); err != nil {
			u.status.blocked(fmt.Sprintf("PostgreSQL check failed: %v", err))
			return false, nil
		}
		if u.f.Leader {
			var msg string
			if upg, msg = u.beginUpgrade(ctx, db); msg != "" {
				u.status.blocked(msg) // nothing stopped
				return false, nil
			}
		}
		if err := u.deps.Services.Stop(ctx, webService); err != nil {
			return false, fmt.Errorf("stopping %s before the upgrade: %w", webService, err)
		}
		u.act("Stop %s (Concourse %s) before the database moves to Concourse %s", webService, rec.Version, u.installed)
		if upg != nil {
			u.endStep(upg, "")
		}
	} else if u.f.Leader && upg == nil {
		upg = u.upgrading() // a web stopped before the upgrade: nothing to pause or stop
	}
	// Stopped: the other webs must not wait for this one.
	u.unitData[keyWebVersion] = ""
	m := u.deps.NewMigrator(u.binary, env)
	supported, err := m.SupportedVersion(ctx)
	if err != nil {
		return true, nil // the migrate step reports it
	}
	current, err := m.CurrentVersion(ctx)
	if err != nil || current >= supported {
		if upg != nil && err == nil {
			return u.backupStep(ctx, upg, db, false), nil
		}
		return true, nil // nothing to migrate, or the migrate step reports why not
	}
	if !u.f.Leader {
		u.status.waiting(fmt.Sprintf("Waiting for the leader to migrate the database to Concourse %s (schema %d → %d)", u.installed, current, supported))
		return false, nil
	}
	if old := u.oldWebs(); len(old) > 0 {
		u.status.waiting(fmt.Sprintf("Waiting for %s to stop before migrating the database to Concourse %s", strings.Join(old, ", "), u.installed))
		return false, nil
	}
	if upg != nil {
		return u.backupStep(ctx, upg, db, true), nil
	}
	return true, nil
}

// joinAfterLeader keeps a web unit that has never run (a new unit of mode=web or mode=all)
// from moving the schema: that is the leader's, once. Without it, a unit added while the
// leader's upgrade is held after a failure (upgrade.go) would migrate to the failed target under
// the leader's old web, and the first units of a fresh deployment would all migrate at once. It
// waits, stopped, until the leader's web runs the release (its peers publication wakes it).
func (u *unitRun) joinAfterLeader(ctx context.Context, env []string) (proceed bool, err error) {
	m := u.deps.NewMigrator(u.binary, env)
	supported, err := m.SupportedVersion(ctx)
	if err != nil {
		return true, nil // the migrate step reports it
	}
	current, err := m.CurrentVersion(ctx)
	if err != nil || current >= supported {
		return true, nil
	}
	u.status.waiting(fmt.Sprintf("Waiting for the leader to migrate the database to Concourse %s (schema %d → %d) before this web starts", u.installed, current, supported))
	return false, nil
}

// oldWebs names the other web units of the application that publish a running version other
// than the installed one.
func (u *unitRun) oldWebs() []string {
	if u.f.Peers == nil {
		return nil
	}
	var out []string
	for unit, bag := range u.f.Peers.Units {
		if v := bag[keyWebVersion]; bag[keyTSAHost] != "" && v != "" && v != u.installed {
			out = append(out, fmt.Sprintf("%s (running %s)", unit, v))
		}
	}
	sort.Strings(out)
	return out
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
	// The hold is cleared by the migrate step that follows: it needs to know the schema was put
	// here on purpose.
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
			u.awaitRetired(ctx, name)
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

// retireWait bounds how long a leaving worker gets to retire through the TSA and exit.
const retireWait = 15 * time.Second

// awaitRetired waits (bounded) for a worker told to retire to exit by itself. One that is still
// running by then cannot reach the TSA, usually because the web already dropped its key when
// this unit departed (the web retires it through the API then: retireDeparted): it is killed,
// since a plain stop would land it (the unit's KillSignal) and wait TimeoutStopSec (300 s) for a
// TSA that refuses it, past the hook's own deadline.
func (u *unitRun) awaitRetired(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(ctx, retireWait)
	defer cancel()
	for {
		if active, err := u.deps.Services.IsActive(ctx, name); err == nil && !active {
			return
		}
		select {
		case <-ctx.Done():
			u.logf("%s did not retire within %s; killing it", name, retireWait)
			if err := u.deps.Services.Kill(context.WithoutCancel(ctx), name, "SIGKILL"); err != nil {
				u.logf("killing %s: %v", name, err)
			}
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
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
	if err := tlsConfigError(cfg); err != nil {
		return nil, nil, nil, err
	}
	ext := cfg.ExternalURL
	if ext == "" {
		ext = fmt.Sprintf("%s://%s:%d", tlsOf(cfg).scheme(), hostForURL(address), cfg.WebPort)
	}
	// With TLS, web-port serves HTTPS and Concourse's plain listener moves to the redirect port.
	bindPort := cfg.WebPort
	if tlsOf(cfg).On {
		bindPort = tlsOf(cfg).RedirectPort
	}
	// Local users' passwords go to web.env bcrypt-hashed (Concourse accepts a hash of cost ≥ 10).
	adminHash, extraUsers, err := webLocalUsers(cfg, password)
	if err != nil {
		return nil, nil, nil, err
	}
	vaultEnv, _, _, err := webVault(cfg, p) // Vault and the secret cache (vault.go)
	if err != nil {
		return nil, nil, nil, err
	}
	env, err := concourse.WebEnv(concourse.WebConfig{
		BindPort:                   bindPort,
		ExternalURL:                ext,
		LogLevel:                   cfg.LogLevel,
		SessionSigningKeyPath:      path(keySession),
		TSAHostKeyPath:             path(keyTSAHostKey),
		TSAAuthorizedKeysPath:      path(keyAuthorized),
		TSABindPort:                tsaPort,
		AdminUser:                  cfg.AdminUser,
		AdminPassword:              adminHash,
		ExtraLocalUsers:            extraUsers,
		MainTeamLocalUsers:         splitList(cfg.Opts["main-team-local-user"]),
		Postgres:                   &db,
		ContainerPlacementStrategy: cfg.ContainerPlacementStrategy,
		PeerAddress:                address,
		Extra:                      append(append(append(tlsEnv(cfg, p), metricsEnv(cfg)...), optionEnv(cfg.Opts, roleWeb, p)...), vaultEnv...),
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

// charmWebFlags maps every `concourse web` flag the charm renders itself to its variable in
// web.env. It is derived from renderWeb with every optional setting on (external URL, database
// TLS with a CA, metrics, placement, peer address, the web's TLS), so a variable the charm starts rendering is
// refused in extra-web-flags without a second list to keep in step: Concourse names each
// CONCOURSE_X variable after its flag --x.
func charmWebFlags() (map[string]string, error) {
	cfg := Config{
		WebPort: 8080, ExternalURL: "https://ci.example.com", AdminUser: "admin", LogLevel: "info",
		ContainerPlacementStrategy: "volume-locality", EnableMetrics: true, hashPassword: placeholderHash,
		// Presence is all renderWeb needs of the TLS options (their values are checked at parse).
		Opts: map[string]string{"tls-enabled": "true", "tls-certificate": "<pem>", "tls-key": "<pem>"},
	}
	p := Paths{ConfigDir: "/etc/concourse"}
	db := concourse.DBConfig{
		Host: "192.0.2.1", Port: 5432, User: "concourse", Password: "password", Database: databaseName,
		SSLMode: "verify-ca", CACert: filepath.Join(p.ConfigDir, fileDBCA),
	}
	env, _, _, err := renderWeb(cfg, p, "192.0.2.1", "/var/lib/concourse/bin/concourse", "password", db)
	if err != nil {
		return nil, fmt.Errorf("listing the flags the charm renders for the web: %w", err)
	}
	out := make(map[string]string, len(env))
	for _, v := range env {
		if strings.HasPrefix(v.Name, "CONCOURSE_") {
			out[flagOfEnv(v.Name)] = v.Name
		}
	}
	for _, name := range append(concourse.VaultEnvNames(), concourse.SecretCacheEnvNames()...) {
		out[flagOfEnv(name)] = name // rendered only when configured: refused in extra-web-flags always
	}
	return out, nil
}

// managedFlagHint says where the setting behind a web.env variable comes from, so an operator
// refused a flag knows what to use instead.
func managedFlagHint(env string) string {
	switch {
	case strings.HasPrefix(env, "CONCOURSE_POSTGRES_"):
		return "the database settings come from the postgresql relation (juju integrate <app> postgresql)"
	case env == "CONCOURSE_BIND_PORT":
		return "use the web-port option"
	case strings.HasPrefix(env, "CONCOURSE_TLS_"):
		return "use the tls-enabled, tls-certificate and tls-key options; HTTPS is served on web-port"
	case strings.HasPrefix(env, "CONCOURSE_VAULT_"):
		return "use the vault-* options or the vault-kv relation (juju integrate <app> vault:vault-kv)"
	case strings.HasPrefix(env, "CONCOURSE_SECRET_CACHE_"):
		return "use the secret-cache-* options"
	case env == "CONCOURSE_EXTERNAL_URL":
		return "use the external-url option"
	case env == "CONCOURSE_LOG_LEVEL":
		return "use the log-level option"
	case env == "CONCOURSE_CONTAINER_PLACEMENT_STRATEGY":
		return "use the container-placement-strategy option"
	case env == "CONCOURSE_ADD_LOCAL_USER" || env == "CONCOURSE_MAIN_TEAM_LOCAL_USER":
		return "use the initial-admin-username option; the password is generated (action get-admin-password)"
	case strings.HasPrefix(env, "CONCOURSE_PROMETHEUS_"):
		return "use the enable-metrics option"
	case env == "CONCOURSE_PEER_ADDRESS":
		return "it is the unit's own address"
	case env == "CONCOURSE_SESSION_SIGNING_KEY" || strings.HasPrefix(env, "CONCOURSE_TSA_"):
		return "the charm generates these keys and exchanges them over relations"
	}
	return "remove it from extra-web-flags"
}

// keyRefusal is a public key from another unit's relation data that the charm would not write.
type keyRefusal struct {
	Unit   string
	Key    string // the relation key: worker-public-key or tsa-public-key
	Reason string // from concourse.CanonicalPublicKey; never contains the value
	Value  string // for the log only, cut there
}

func (r keyRefusal) status() string {
	return fmt.Sprintf("refused the %s of %s: %s", r.Key, r.Unit, r.Reason)
}

// logRefusals tells juju-log what was refused and what it looked like: the first word and the
// size of the value, never the value (it may be a private key, or megabytes of anything).
func (u *unitRun) logRefusals(refused []keyRefusal) {
	for _, r := range refused {
		first := ""
		if f := strings.Fields(r.Value); len(f) > 0 {
			first = f[0]
		}
		if strings.Contains(r.Value, "PRIVATE KEY") {
			first = "(a private key)"
		}
		u.jlog(juju.LogWarning, fmt.Sprintf("%s; the value (%d bytes) begins %q; not written", r.status(), len(r.Value), cut(first, 24)))
	}
}

// checkedKey canonicalises one unit's published key, or records why it is refused.
func checkedKey(unit, key, value string, refused *[]keyRefusal) (string, bool) {
	k, err := concourse.CanonicalPublicKey(value)
	if err != nil {
		*refused = append(*refused, keyRefusal{Unit: unit, Key: key, Reason: err.Error(), Value: value})
		return "", false
	}
	return k, true
}

func sortRefusals(r []keyRefusal) {
	sort.Slice(r, func(i, j int) bool { return r[i].Unit < r[j].Unit })
}
