package hooks

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

const (
	u0 = app + "/0"
	u1 = app + "/1"
	u2 = app + "/2"
)

var pinned = map[string]any{"version": "7.14.3", "shared-storage": "lxc"}

// The seed report (seed-shared-storage-test.md), in the model: the leader installs once, the
// worker waits for it and becomes ready, the leader waits for PostgreSQL.
func TestSeedSharedStorage(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.wantStatus(u0, "waiting: Waiting for PostgreSQL database...")
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	st := w.store(w.paths(u0).Root)
	if st.installs != 1 {
		t.Errorf("downloads = %d; want 1", st.installs)
	}
	peers := w.m.RelationID(app, "peers")
	if got := w.m.AppData(peers, app)[keyInstalledVersion]; got != "7.14.3" {
		t.Errorf("published installed-version = %q", got)
	}
	// The worker registers with the leader's TSA: its env names the leader's address.
	env := w.readFile(u1, fileWorkerEnv)
	if !strings.Contains(env, `CONCOURSE_TSA_HOST="127.0.2.10:2222"`) {
		t.Errorf("worker env lacks the leader's TSA:\n%s", env)
	}
	pub := w.readFile(u1, keyTSAPublicForWkr)
	if !strings.HasPrefix(pub, "ssh-rsa ") {
		t.Errorf("worker's TSA public key file = %q", pub)
	}
	if w.svcs[u0].active[webService] {
		t.Error("web started without a database")
	}
}

// A worker whose install is not there yet says what it waits for, and is woken by the leader's
// publication (a peers-relation-changed), not by update-status.
func TestWorkerWaitsForLeaderInstall(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.mustHook(u1, "install")
	w.wantStatus(u1, "waiting: Waiting for leader to install Concourse 7.14.3")
	w.deploy()
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	for _, c := range w.m.Logs(u1) {
		if strings.Contains(c.Hook, "update-status") {
			t.Errorf("worker needed update-status to become ready: %v", c)
		}
	}
}

func TestSharedStorageMarkerMissing(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.store(w.paths(u0).Root).marker = false
	w.deploy()
	got := w.status(u0)
	if !strings.HasPrefix(got, "waiting: Waiting for shared storage: ") || !strings.Contains(got, ".lxc_shared_storage is missing") {
		t.Errorf("status = %q", got)
	}
	if w.store(w.paths(u0).Root).installs != 0 {
		t.Error("installed without the marker")
	}
}

func TestInvalidConfigBlocksAndWritesNothing(t *testing.T) {
	for _, c := range []struct{ key, value, want string }{
		{"mode", "both", `blocked: invalid mode "both": allowed values are auto, web, worker, all`},
		{"shared-storage", "nfs", `blocked: invalid shared-storage "nfs": allowed values are none, lxc`},
		{"version", "7.14.x", `blocked: invalid version "7.14.x": expected X.Y.Z such as 7.14.3 (a leading v is accepted), a release line X or X.Y such as 8 or 8.2 (its newest release), or empty for the latest release`},
	} {
		t.Run(c.key, func(t *testing.T) {
			w := newWorld(t, 1, map[string]any{c.key: c.value})
			w.deploy()
			w.wantStatus(u0, c.want)
			assertNothingWritten(t, w)
		})
	}
}

func TestWebWithDatabase(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	env := w.readFile(u0, fileWebEnv)
	for _, want := range []string{`CONCOURSE_POSTGRES_HOST="127.0.2.99"`, `CONCOURSE_POSTGRES_PASSWORD="s3cret-pw"`, `CONCOURSE_MAIN_TEAM_LOCAL_USER="admin"`, `CONCOURSE_ADD_LOCAL_USER="admin:`} {
		if !strings.Contains(env, want) {
			t.Errorf("web.env lacks %s:\n%s", want, env)
		}
	}
	if strings.Contains(env, "CONCOURSE_VERSION") {
		t.Error("web.env renders CONCOURSE_VERSION")
	}
	peers := w.m.RelationID(app, "peers")
	if auth := w.readFile(u0, keyAuthorized); !strings.Contains(auth, strings.TrimSpace(w.m.UnitData(peers, u1)[keyWorkerKey])) {
		t.Errorf("authorized_worker_keys lacks the worker key:\n%s", auth)
	}
	if got := strings.Join(w.m.OpenedPorts(u0), ","); got != "2222/tcp,8080/tcp" {
		t.Errorf("opened ports = %s", got)
	}
	if w.current != w.schema["7.14.3"] {
		t.Errorf("database not migrated before start: schema %d", w.current)
	}
	// The admin password lives in a secret, not in relation data.
	for k, v := range w.m.AppData(peers, app) {
		if strings.Contains(env, "admin:"+v) {
			t.Errorf("admin password in peer data key %s", k)
		}
	}
}

// Converging twice changes nothing the second time: no restarts, no writes that matter.
func TestConvergeIsIdempotent(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	before0, before1 := len(w.svcs[u0].calls), len(w.svcs[u1].calls)
	for _, u := range []string{u0, u1} {
		w.mustHook(u, "update-status")
		w.mustHook(u, "config-changed")
	}
	w.settle()
	if got := w.svcs[u0].calls[before0:]; len(got) != 0 {
		t.Errorf("web unit service calls on a no-op convergence: %v", got)
	}
	if got := w.svcs[u1].calls[before1:]; len(got) != 0 {
		t.Errorf("worker unit service calls on a no-op convergence: %v", got)
	}
}

func TestWebPortChangeRestartsOnlyTheWeb(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	before := len(w.svcs[u1].calls)
	w.m.SetConfig(app, map[string]any{"web-port": 9090})
	w.mustHook(u0, "config-changed")
	w.mustHook(u1, "config-changed")
	w.settle()
	if got := w.svcs[u1].calls[before:]; len(got) != 0 {
		t.Errorf("worker touched by a web-only option: %v", got)
	}
	if w.svcs[u0].count("restart "+webService) != 1 {
		t.Errorf("web restarts: %v", w.svcs[u0].calls)
	}
	// The step says why, in the unit log.
	if !strings.Contains(w.stderr.String(), "Restart concourse-server.service with Concourse 7.14.3: environment changed\n") {
		t.Errorf("restart reason not logged:\n%s", w.stderr.String())
	}
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:9090")
	if got := strings.Join(w.m.OpenedPorts(u0), ","); got != "2222/tcp,9090/tcp" {
		t.Errorf("opened ports after web-port change = %s", got)
	}
}

// Adding a worker restarts no other unit: the web reloads its authorized keys with SIGHUP.
func TestAddWorkerReloadsKeysWithoutRestart(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	web, wk := len(w.svcs[u0].calls), len(w.svcs[u1].calls)
	u := w.addUnit("127.0.2.12")
	peers := w.m.RelationID(app, "peers")
	w.wantStatus(u, "active: Worker ready (v7.14.3)")
	if got := w.svcs[u0].calls[web:]; len(got) != 1 || got[0] != "kill SIGHUP "+webService {
		t.Errorf("web calls when a worker joined = %v; want one SIGHUP", got)
	}
	if got := w.svcs[u1].calls[wk:]; len(got) != 0 {
		t.Errorf("existing worker touched when another joined: %v", got)
	}
	if n := w.store(w.paths(u0).Root).installs; n != 1 {
		t.Errorf("downloads = %d; want 1", n)
	}
	// The new worker departs: its key is revoked at once, again by SIGHUP.
	key := strings.TrimSpace(w.m.UnitData(peers, u)[keyWorkerKey])
	w.mustHook(u0, "update-status")
	web = len(w.svcs[u0].calls)
	if err := w.hook(u0, jujutest.HookInfo{Hook: "peers-relation-departed", RelationID: peers, RemoteUnit: u, DepartingUnit: u}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(w.readFile(u0, keyAuthorized), key) {
		t.Error("departed worker's key still authorized")
	}
	if got := w.svcs[u0].calls[web:]; len(got) != 1 || got[0] != "kill SIGHUP "+webService {
		t.Errorf("web calls when a worker departed = %v; want one SIGHUP", got)
	}
}

func TestLeadershipMoves(t *testing.T) {
	w := newWorld(t, 3, pinned)
	w.deploy()
	w.addPostgres()
	w.m.SetLeader(app, u1)
	w.mustHook(u1, "leader-elected")
	w.mustHook(u0, "leader-settings-changed")
	w.mustHook(u2, "leader-settings-changed")
	w.settle()
	w.wantStatus(u1, "active: Web server ready (v7.14.3) http://127.0.2.11:8080")
	w.wantStatus(u0, "active: Worker ready (v7.14.3)")
	w.wantStatus(u2, "active: Worker ready (v7.14.3)")
	if w.svcs[u0].active[webService] {
		t.Error("old leader still runs the web")
	}
	if _, err := os.Stat(filepath.Join(w.paths(u0).SystemdDir, webService)); !os.IsNotExist(err) {
		t.Error("old leader kept the web unit file")
	}
	if w.svcs[u1].active[workerSvc] {
		t.Error("new leader still runs a worker")
	}
	if len(w.m.OpenedPorts(u0)) != 0 {
		t.Errorf("old leader keeps ports open: %v", w.m.OpenedPorts(u0))
	}
	for _, u := range []string{u0, u2} {
		if env := w.readFile(u, fileWorkerEnv); !strings.Contains(env, `CONCOURSE_TSA_HOST="127.0.2.11:2222"`) {
			t.Errorf("%s does not follow the new TSA:\n%s", u, env)
		}
	}
	peers := w.m.RelationID(app, "peers")
	if d := w.m.UnitData(peers, u0); d[keyTSAHost] != "" || d[keyTSAPublicKey] != "" {
		t.Errorf("old leader still advertises a TSA: %v", d)
	}
}

func TestDatabaseRemovedAndRestored(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.deploy()
	id := w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	w.queue = append(w.queue, w.m.RemoveRelation(id)...)
	w.settle()
	w.wantStatus(u0, "blocked: PostgreSQL database required")
	if w.svcs[u0].active[webService] {
		t.Error("web still running without its database")
	}
	if _, err := os.Stat(filepath.Join(w.paths(u0).ConfigDir, fileWebEnv)); !os.IsNotExist(err) {
		t.Error("database settings left in web.env")
	}
	w.mustHook(u0, "update-status")
	w.wantStatus(u0, "blocked: PostgreSQL database required")
	w.addPostgresAgain()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
}

func (w *world) addPostgresAgain() {
	id := w.m.Relate(app, "postgresql", "postgresql", "database")
	w.mustHookRel(u0, "postgresql-relation-created", id, "")
	uri := w.m.AddSecret("postgresql", map[string]string{"username": "relation-9", "password": "pw2"}, "")
	w.m.GrantSecret(uri, id, "")
	w.queue = append(w.queue, w.m.SetAppData(id, "postgresql", map[string]string{"endpoints": "127.0.2.99:5432", "secret-user": uri})...)
	w.settle()
}

func TestDatabaseCheckFailureBlocks(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.dbErr = errString(`cannot connect to PostgreSQL at 127.0.2.99:5432 (database "concourse", user "relation-4"): password authentication failed`)
	w.deploy()
	w.addPostgres()
	got := w.status(u0)
	if !strings.HasPrefix(got, "blocked: PostgreSQL check failed: ") || !strings.Contains(got, "127.0.2.99:5432") || strings.Contains(got, "s3cret-pw") {
		t.Errorf("status = %q", got)
	}
	if w.svcs[u0].active[webService] {
		t.Error("web started with bad credentials")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// Upgrades: one download, the web migrates and restarts first, each worker follows once the web
// runs the new version; the old release stays as previous.
func TestUpgradeWebFirst(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	// The worker's config-changed runs first: the release is not there yet.
	w.mustHook(u1, "config-changed")
	w.wantStatus(u1, "waiting: Waiting for leader to install Concourse 8.2.5")
	if w.svcs[u1].count("restart") != 0 {
		t.Error("worker restarted before the web")
	}
	w.mustHook(u0, "config-changed")
	if w.current != w.schema["8.2.5"] {
		t.Errorf("schema = %d; want 8.2.5's", w.current)
	}
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v8.2.5) http://127.0.2.10:8080")
	w.wantStatus(u1, "active: Worker ready (v8.2.5)")
	if n := w.store(w.paths(u0).Root).installs; n != 2 {
		t.Errorf("downloads = %d; want 2 (one per version)", n)
	}
}

// A worker that sees the new release on the share before the web restarted keeps its old process.
func TestWorkerHoldsUntilWebUpgraded(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	w.store(w.paths(u0).Root).installed = "8.2.5" // another path installed it already
	w.mustHook(u1, "config-changed")
	if w.svcs[u1].count("restart") != 0 {
		t.Errorf("worker restarted while the web still runs 7.14.3: %v", w.svcs[u1].calls)
	}
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	w.mustHook(u0, "config-changed")
	w.settle()
	w.wantStatus(u1, "active: Worker ready (v8.2.5)")
}

func TestDowngradeBelowSchemaRefused(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"version": "8.2.5"})
	w.deploy()
	w.addPostgres()
	w.m.SetConfig(app, map[string]any{"version": "7.14.3"})
	w.mustHook(u0, "config-changed")
	got := w.status(u0)
	if !strings.HasPrefix(got, "blocked: Refusing to run Concourse v7.14.3: the database schema is at 1776182280, newer than the 1746768931 it supports") {
		t.Errorf("status = %q", got)
	}
	if w.svcs[u0].count("restart") != 0 {
		t.Errorf("web restarted on a refused downgrade: %v", w.svcs[u0].calls)
	}
}

func TestActions(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	if err := w.hook(u0, jujutest.HookInfo{ActionName: "get-admin-password"}); err != nil {
		t.Fatal(err)
	}
	acts := w.m.Actions()
	last := acts[len(acts)-1]
	if last.Results["username"] != "admin" || len(last.Results["password"]) < 24 || last.Status == "failed" {
		t.Errorf("get-admin-password on the web = %+v", last)
	}
	if !webEnvHasLocalUser(t, w.readFile(u0, fileWebEnv), "admin", last.Results["password"]) {
		t.Error("the action's password is not the one the web uses")
	}
	if err := w.hook(u1, jujutest.HookInfo{ActionName: "get-admin-password"}); err != nil {
		t.Fatal(err)
	}
	acts = w.m.Actions()
	if f := acts[len(acts)-1].Message; !strings.Contains(f, "run it on the leader unit") {
		t.Errorf("get-admin-password on a worker: failed = %q", f)
	}
}

func TestUnknownHookIgnored(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.mustHook(u0, "pre-series-upgrade") // vault-kv converges since issue 10
	if s := w.m.UnitStatus(u0); s.Status != "" && s.Status != "unknown" {
		t.Errorf("unknown hook set status %v", s)
	}
}

// Separate web and worker applications joined by tsa/flight and sharing storage: the worker
// application never downloads and follows the web application's version choice.
func TestSeparateWorkerApplication(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"mode": "web", "version": "7.14.3", "shared-storage": "lxc"})
	w.m.AddApp("concourse-worker", charmMeta(t), map[string]any{"mode": "worker", "shared-storage": "lxc"})
	for i := 0; i < 2; i++ {
		w.m.SetAddress(w.m.AddUnit("concourse-worker"), "127.0.3."+string(rune('1'+i)))
	}
	w.deploy()
	w.deployApp("concourse-worker")
	w.wantStatus("concourse-worker/0", "blocked: Relate to a Concourse web application: juju integrate concourse-worker:flight <web-app>:tsa")
	id := w.m.Relate(app, "tsa", "concourse-worker", "flight")
	for _, u := range append(w.m.Units(app), w.m.Units("concourse-worker")...) {
		ep := "tsa"
		if strings.HasPrefix(u, "concourse-worker/") {
			ep = "flight"
		}
		w.mustHookRel(u, ep+"-relation-created", id, "")
	}
	for _, u := range append(w.m.Units(app), w.m.Units("concourse-worker")...) {
		w.queue = append(w.queue, w.m.JoinEvents(id, u)...)
	}
	w.settle()
	w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	for _, u := range w.m.Units("concourse-worker") {
		w.wantStatus(u, "active: Worker ready (v7.14.3)")
		if env := w.readFile(u, fileWorkerEnv); !strings.Contains(env, `CONCOURSE_TSA_HOST="127.0.2.10:2222"`) {
			t.Errorf("%s worker env:\n%s", u, env)
		}
	}
	if n := w.store(w.paths(u0).Root).installs; n != 1 {
		t.Errorf("downloads = %d; want 1", n)
	}
	auth := w.readFile(u0, keyAuthorized)
	if n := strings.Count(auth, "ssh-rsa "); n != 2 {
		t.Errorf("authorized worker keys = %d; want 2:\n%s", n, auth)
	}
}

// Every way an install can fail ends in a status that names the problem and the fix, and leaves
// the services alone.
func TestInstallFailureStatuses(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"download", &storage.DownloadError{URL: "http://mirror/v7.14.3/concourse-7.14.3-linux-amd64.tgz", Attempts: 5, Err: errString("connection refused")},
			"blocked: Cannot download Concourse v7.14.3 ("},
		{"checksum", &storage.ChecksumError{URL: "http://mirror/x.tgz", Algo: "sha1", Want: "aa", Got: "bb"},
			"blocked: Concourse v7.14.3 failed verification ("},
		{"unsafe tarball", &storage.UnsafePathError{Name: "../x", Reason: "escapes the install root"},
			"blocked: Concourse v7.14.3 tarball rejected ("},
		{"disk full", &storage.NotWritableError{Path: "/var/lib/concourse", Err: errString("no space left on device")},
			"blocked: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 1, pinned)
			w.store(w.paths(u0).Root).failWith = c.err
			w.deploy()
			if got := w.status(u0); !strings.HasPrefix(got, c.want) {
				t.Errorf("status = %q; want prefix %q", got, c.want)
			}
			if len(w.services(u0).calls) != 0 {
				t.Errorf("services touched after a failed install: %v", w.services(u0).calls)
			}
			// Fixed (the mirror is back): the next hook installs and carries on.
			w.store(w.paths(u0).Root).failWith = nil
			w.mustHook(u0, "update-status")
			w.wantStatus(u0, "waiting: Waiting for PostgreSQL database...")
		})
	}
}

func TestDamagedInstall(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	st := w.store(w.paths(u0).Root)
	st.damaged = true
	w.mustHook(u1, "update-status")
	if got := w.status(u1); !strings.HasPrefix(got, "blocked: Concourse v7.14.3 in ") || !strings.Contains(got, "damaged") {
		t.Errorf("worker status on a damaged install = %q", got)
	}
	w.mustHook(u0, "update-status")
	if st.installs != 2 || st.damaged {
		t.Errorf("installer did not reinstall: installs=%d damaged=%t", st.installs, st.damaged)
	}
	w.mustHook(u1, "update-status")
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
}

func TestWorkerWithoutWeb(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"mode": "worker", "version": "7.14.3"})
	w.deploy()
	w.wantStatus(u0, "blocked: Relate to a Concourse web application: juju integrate concourse-ci-machine:flight <web-app>:tsa")
	if w.svcs[u0].active[workerSvc] {
		t.Error("worker started with no TSA to register with")
	}
}

func TestUnpinnedVersionResolvedOnceByTheLeader(t *testing.T) {
	gh := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprint(rw, `{"tag_name":"v7.14.3"}`)
	}))
	defer gh.Close()
	w := newWorld(t, 2, map[string]any{"shared-storage": "lxc"})
	w.githubAPI = gh.URL
	w.deploy()
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	peers := w.m.RelationID(app, "peers")
	if got := w.m.AppData(peers, app)[keyTargetVersion]; got != "7.14.3" {
		t.Errorf("target-version = %q", got)
	}
	// GitHub unreachable later: the unit keeps the version it has instead of blocking.
	gh.Close()
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "waiting: Waiting for PostgreSQL database...")
}

// A refresh from the Python charm keeps its admin password but moves it out of plaintext peer data.
func TestRefreshFromReferenceMovesAdminPassword(t *testing.T) {
	w := newWorld(t, 1, pinned)
	peers := w.m.RelationID(app, "peers")
	w.m.SetAppData(peers, app, map[string]string{"admin-password": "Legacy-Passw0rd"})
	w.mustHook(u0, "upgrade-charm")
	w.addPostgres()
	if got := w.m.AppData(peers, app)["admin-password"]; got != "" {
		t.Errorf("plaintext password still in peer data: %q", got)
	}
	if env := w.readFile(u0, fileWebEnv); !webEnvHasLocalUser(t, env, "admin", "Legacy-Passw0rd") {
		t.Errorf("web.env does not keep the reference's password:\n%s", env)
	}
}

// A downgrade the operator prepared with run-migrations: the web stops, the schema goes down, and
// only the release that supports exactly that schema starts again.
func TestRunMigrationsThenDowngrade(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"version": "8.2.5"})
	w.deploy()
	w.addPostgres()
	target := fmt.Sprint(w.schema["7.14.3"])
	if err := w.hook(u0, jujutest.HookInfo{ActionName: "run-migrations", ActionParams: map[string]any{"target-version": target}}); err != nil {
		t.Fatal(err)
	}
	acts := w.m.Actions()
	if a := acts[len(acts)-1]; a.Status == "failed" || a.Results["current-version"] != target {
		t.Fatalf("run-migrations = %+v", a)
	}
	if w.svcs[u0].active[webService] {
		t.Error("web left running on a schema it would migrate back up")
	}
	w.mustHook(u0, "update-status")
	if got := w.status(u0); !strings.Contains(got, "migrated to schema "+target) {
		t.Errorf("status while the release does not match the schema = %q", got)
	}
	if w.svcs[u0].active[webService] {
		t.Error("newer web restarted on the migrated-down schema")
	}
	w.m.SetConfig(app, map[string]any{"version": "7.14.3"})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	if w.current != w.schema["7.14.3"] {
		t.Errorf("schema after the downgrade = %d", w.current)
	}
}

func TestRestartServicesAndCheckStatus(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"mode": "all", "version": "7.14.3"})
	w.deploy()
	w.addPostgres()
	w.wantStatus(u0, "active: Ready (v7.14.3) http://127.0.2.10:8080")
	run := func(name string, params map[string]any) jujutest.ActionRecord {
		t.Helper()
		if err := w.hook(u0, jujutest.HookInfo{ActionName: name, ActionParams: params}); err != nil {
			t.Fatal(err)
		}
		acts := w.m.Actions()
		return acts[len(acts)-1]
	}
	before := w.svcs[u0].count("restart")
	if a := run("restart-services", map[string]any{"force": false}); !strings.HasPrefix(a.Results["actions"], "none") {
		t.Errorf("restart-services without force = %+v", a)
	}
	if got := w.svcs[u0].count("restart"); got != before {
		t.Errorf("restarts without force: %d", got-before)
	}
	a := run("restart-services", map[string]any{"force": true})
	if got := w.svcs[u0].count("restart"); got != before+2 {
		t.Errorf("forced restart restarted %d services; want 2 (%+v)", got-before, a)
	}
	if !strings.Contains(a.Results["actions"], "Restart concourse-worker.service with Concourse 7.14.3: restart requested") {
		t.Errorf("forced restart actions = %q", a.Results["actions"])
	}
	a = run("check-status", map[string]any{"verbose": true})
	for k, want := range map[string]string{"role": "all", "web-service": "active", "worker-service": "active", "web-version": "7.14.3", "installed-version": "7.14.3"} {
		if a.Results[k] != want {
			t.Errorf("check-status %s = %q; want %q (%v)", k, a.Results[k], want, a.Results)
		}
	}
	// Nothing answers on the web port in this test: the action says so instead of claiming health.
	if a.Results["healthy"] != "false" || !strings.Contains(a.Results["problems"], "web API") {
		t.Errorf("check-status health = %q, problems %q", a.Results["healthy"], a.Results["problems"])
	}
	if strings.Contains(a.Results["web-env"], "s3cret") || !strings.Contains(a.Results["web-env"], "CONCOURSE_POSTGRES_PASSWORD") {
		t.Errorf("verbose web-env = %q; want names only", a.Results["web-env"])
	}
}

// Scenario 10's finding: a failing upgrade must not withdraw what the running services published
// (TSA address and key, worker keys), or running workers lose their authorization.
func TestFailingUpgradeKeepsPublishedKeys(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	peers := w.m.RelationID(app, "peers")
	web0, wk1 := w.m.UnitData(peers, u0), w.m.UnitData(peers, u1)
	st := w.store(w.paths(u0).Root)
	st.failWith = &storage.ArchiveError{URL: "http://mirror/x.tgz", Err: errString("gzip: invalid checksum")}
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	w.mustHook(u0, "config-changed")
	w.mustHook(u1, "config-changed")
	w.settle()
	if got := w.status(u0); !strings.HasPrefix(got, "blocked: Concourse v8.2.5 is broken as published") {
		t.Errorf("leader status = %q", got)
	}
	w.wantStatus(u1, "waiting: Waiting for leader to install Concourse 8.2.5")
	for k, want := range map[string]string{keyTSAHost: web0[keyTSAHost], keyTSAPublicKey: web0[keyTSAPublicKey], keyWebVersion: "7.14.3"} {
		if got := w.m.UnitData(peers, u0)[k]; got != want || got == "" {
			t.Errorf("web's %s = %q; want %q kept", k, got, want)
		}
	}
	if got := w.m.UnitData(peers, u1)[keyWorkerKey]; got != wk1[keyWorkerKey] || got == "" {
		t.Errorf("worker key = %q; want it kept", got)
	}
	if !w.svcs[u0].active[webService] || !w.svcs[u1].active[workerSvc] {
		t.Error("a failing upgrade stopped a running service")
	}
}

// Storage that goes away under running services is blocked, within one hook, with the fix;
// before anything ran from it, the same missing marker only means "not mounted yet".
func TestSharedStorageGoneIsBlocked(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.store(w.paths(u0).Root).marker = false
	w.mustHook(u1, "update-status")
	got := w.status(u1)
	if !strings.HasPrefix(got, "blocked: Shared storage unavailable: ") || !strings.Contains(got, ".lxc_shared_storage is gone") || !strings.Contains(got, "re-add it") {
		t.Errorf("status = %q", got)
	}
	if !w.svcs[u1].active[workerSvc] {
		t.Error("the worker was stopped; its process keeps its own files open")
	}
}

func TestUnwritableRootFoundByUpdateStatus(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.deploy()
	w.store(w.paths(u0).Root).notWritable = &storage.NotWritableError{Path: w.paths(u0).Root, Err: errString("no space left on device")}
	w.mustHook(u0, "update-status")
	if got := w.status(u0); !strings.HasPrefix(got, "blocked: ") || !strings.Contains(got, w.paths(u0).Root) {
		t.Errorf("status = %q", got)
	}
}

// Where a release comes from: a mirror laid out like GitHub's (its .sha1 checked), the operator's
// sha256 instead of the sidecar, or an attached resource for offline installs.
func TestReleaseSources(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	cases := []struct {
		name     string
		config   map[string]any
		resource bool
		want     storage.Source
	}{
		{"github", map[string]any{"version": "7.14.3"}, false, storage.Source{
			URL:     "https://github.com/concourse/concourse/releases/download/v7.14.3/concourse-7.14.3-linux-amd64.tgz",
			SHA1URL: "https://github.com/concourse/concourse/releases/download/v7.14.3/concourse-7.14.3-linux-amd64.tgz.sha1"}},
		{"mirror", map[string]any{"version": "7.14.3", "release-url": "http://mirror.internal/concourse/"}, false, storage.Source{
			URL:     "http://mirror.internal/concourse/v7.14.3/concourse-7.14.3-linux-amd64.tgz",
			SHA1URL: "http://mirror.internal/concourse/v7.14.3/concourse-7.14.3-linux-amd64.tgz.sha1"}},
		{"mirror-sha256", map[string]any{"version": "7.14.3", "release-url": "http://mirror.internal/c", "release-sha256": sum}, false, storage.Source{
			URL: "http://mirror.internal/c/v7.14.3/concourse-7.14.3-linux-amd64.tgz", SHA256: sum}},
		{"resource", map[string]any{"version": "7.14.3", "release-sha256": sum}, true, storage.Source{SHA256: sum}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 1, c.config)
			if c.resource {
				tgz := filepath.Join(t.TempDir(), "concourse.tgz")
				os.WriteFile(tgz, []byte("a tarball"), 0o644)
				w.m.AttachResource(app, "concourse-release", tgz)
				c.want.LocalPath = tgz
			}
			w.mustHook(u0, "install")
			if got := w.store(w.paths(u0).Root).lastSource; got != c.want {
				t.Errorf("source = %+v\nwant     %+v", got, c.want)
			}
		})
	}
}

// "Active" means the web answers, not merely that systemd started it.
func TestWebNotAnsweringIsNotReady(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.webDown = true
	w.deploy()
	w.addPostgres()
	got := w.status(u0)
	if !strings.HasPrefix(got, "maintenance: Web server starting: http://127.0.0.1:8080/api/v1/info does not answer yet") {
		t.Errorf("status while the web does not answer = %q", got)
	}
	w.webDown = false
	w.mustHook(u0, "update-status")
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	if n := w.svcs[u0].count("restart"); n != 0 {
		t.Errorf("a slow web was restarted %d times", n)
	}
}

// A unit that leaves retires its worker (so it does not linger as a stalled ghost), removes its
// services and files, and stops protecting the release it ran from garbage collection.
func TestStopTearsDown(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	others := len(w.services(u0).calls)
	w.mustHook(u1, "stop")
	calls := strings.Join(w.svcs[u1].calls, ",")
	if !strings.Contains(calls, "kill SIGUSR2 "+workerSvc+",stop "+workerSvc) {
		t.Errorf("worker not retired before stopping: %s", calls)
	}
	for _, p := range []string{filepath.Join(w.paths(u1).SystemdDir, workerSvc), filepath.Join(w.paths(u1).ConfigDir, fileWorkerEnv)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind", p)
		}
	}
	if w.store(w.paths(u1).Root).forgotten != 1 {
		t.Error("the unit's running-version record was not removed")
	}
	if got := w.services(u0).calls[others:]; len(got) != 0 {
		t.Errorf("another unit's services were touched: %v", got)
	}
}

// After a refresh from the Python charm, its web environment and keys (passwords and the TSA
// private key, on the shared root) are removed once this charm's services run.
func TestRefreshRemovesReferenceSecrets(t *testing.T) {
	w := newWorld(t, 2, pinned)
	leftovers := map[string][]string{
		u0: {filepath.Join(w.paths(u0).Root, "config.env"), filepath.Join(w.paths(u0).Root, "keys", "tsa_host_key")},
		u1: {filepath.Join(filepath.Dir(w.paths(u1).WorkDir), "worker-config.env"), filepath.Join(filepath.Dir(w.paths(u1).WorkDir), "keys", "worker_key")},
	}
	for _, files := range leftovers {
		for _, f := range files {
			os.MkdirAll(filepath.Dir(f), 0o755)
			os.WriteFile(f, []byte("CONCOURSE_POSTGRES_PASSWORD=old\n"), 0o600)
		}
	}
	w.mustHook(u0, "upgrade-charm") // before anything of ours runs: the old services may still use them
	if _, err := os.Stat(leftovers[u0][0]); err != nil {
		t.Errorf("removed %s before this charm's services ran", leftovers[u0][0])
	}
	w.deploy()
	w.addPostgres()
	for _, u := range []string{u0, u1} {
		w.mustHook(u, "upgrade-charm")
		for _, f := range leftovers[u] {
			if _, err := os.Stat(f); !os.IsNotExist(err) {
				t.Errorf("%s: %s still there", u, f)
			}
		}
	}
}

// A PostgreSQL with TLS hands over its CA in the secret-tls secret: the web verifies the server
// with it, and a new CA restarts the web.
func TestDatabaseTLS(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.deploy()
	id := w.addPostgres()
	tlsURI := w.m.AddSecret("postgresql", map[string]string{"tls": "True", "tls-ca": "-----BEGIN CERTIFICATE-----\nCA1\n-----END CERTIFICATE-----"}, "")
	w.m.GrantSecret(tlsURI, id, "")
	w.queue = append(w.queue, w.m.SetAppData(id, "postgresql", map[string]string{"secret-tls": tlsURI})...)
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	ca := filepath.Join(w.paths(u0).ConfigDir, fileDBCA)
	env := w.readFile(u0, fileWebEnv)
	for _, want := range []string{`CONCOURSE_POSTGRES_SSLMODE="verify-ca"`, `CONCOURSE_POSTGRES_CA_CERT="` + ca + `"`} {
		if !strings.Contains(env, want) {
			t.Errorf("web.env lacks %s:\n%s", want, env)
		}
	}
	if got := w.readFile(u0, fileDBCA); !strings.Contains(got, "CA1") {
		t.Errorf("CA file = %q", got)
	}
	restarts := w.svcs[u0].count("restart")
	w.queue = append(w.queue, w.m.UpdateSecret(tlsURI, map[string]string{"tls": "True", "tls-ca": "-----BEGIN CERTIFICATE-----\nCA2\n-----END CERTIFICATE-----"})...)
	w.settle()
	if got := w.readFile(u0, fileDBCA); !strings.Contains(got, "CA2") {
		t.Errorf("CA file after rotation = %q", got)
	}
	if w.svcs[u0].count("restart") != restarts+1 {
		t.Errorf("web not restarted once for a new CA: %v", w.svcs[u0].calls)
	}
}

// The monitoring relation (prometheus_scrape): a scrape job for the web nodes' metrics port while
// enable-metrics is on, nothing advertised while it is off.
func TestMetrics(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	w.m.AddApp("prometheus", jujutest.AppMeta{Requires: map[string]string{"metrics-endpoint": "prometheus_scrape"}}, nil)
	prom := w.m.AddUnit("prometheus")
	id := w.m.Relate(app, "monitoring", "prometheus", "metrics-endpoint")
	for _, u := range []string{u0, u1} {
		w.mustHookRel(u, "monitoring-relation-created", id, "")
	}
	w.queue = append(w.queue, w.m.JoinEvents(id, prom)...)
	w.settle()
	if got := w.m.AppData(id, app)["scrape_jobs"]; got != "[]" {
		t.Errorf("scrape_jobs with metrics off = %q; want []", got)
	}
	w.m.SetConfig(app, map[string]any{"enable-metrics": true})
	w.mustHook(u0, "config-changed")
	w.mustHook(u1, "config-changed")
	w.settle()
	if got := w.m.AppData(id, app)["scrape_jobs"]; got != `[{"metrics_path":"/metrics","static_configs":[{"targets":["*:9391"]}]}]` {
		t.Errorf("scrape_jobs = %s", got)
	}
	var meta map[string]string
	if err := json.Unmarshal([]byte(w.m.AppData(id, app)["scrape_metadata"]), &meta); err != nil || meta["application"] != app || meta["charm_name"] != "concourse-ci-machine" || meta["model_uuid"] == "" {
		t.Errorf("scrape_metadata = %v, %v", meta, err)
	}
	if d := w.m.UnitData(id, u0); d["prometheus_scrape_unit_address"] != "127.0.2.10" || d["prometheus_scrape_unit_name"] != u0 {
		t.Errorf("web unit data = %v", d)
	}
	if d := w.m.UnitData(id, u1); d["prometheus_scrape_unit_address"] != "" {
		t.Errorf("a worker advertises metrics: %v", d)
	}
	env := w.readFile(u0, fileWebEnv)
	if !strings.Contains(env, `CONCOURSE_PROMETHEUS_BIND_PORT="9391"`) || !strings.Contains(env, `CONCOURSE_PROMETHEUS_BIND_IP="0.0.0.0"`) {
		t.Errorf("web.env lacks the Prometheus listener:\n%s", env)
	}
	if got := strings.Join(w.m.OpenedPorts(u0), ","); got != "2222/tcp,8080/tcp,9391/tcp" {
		t.Errorf("ports = %s", got)
	}
	w.m.SetConfig(app, map[string]any{"enable-metrics": false})
	w.mustHook(u0, "config-changed")
	if got := w.m.AppData(id, app)["scrape_jobs"]; got != "[]" {
		t.Errorf("scrape_jobs after turning metrics off = %q", got)
	}
	if strings.Contains(w.readFile(u0, fileWebEnv), "PROMETHEUS") {
		t.Error("the Prometheus listener stays configured after turning metrics off")
	}
	if got := strings.Join(w.m.OpenedPorts(u0), ","); got != "2222/tcp,8080/tcp" {
		t.Errorf("ports after turning metrics off = %s", got)
	}
}

// Workers never read the database credentials: only a web needs them.
func TestWorkersDoNotReadDatabaseSecrets(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	id := w.addPostgres()
	uri := w.m.AppData(id, "postgresql")["secret-user"]
	if _, _, ok := w.m.SecretConsumer(uri, u0); !ok {
		t.Fatal("the web did not read the credentials (the check below would prove nothing)")
	}
	if _, _, ok := w.m.SecretConsumer(uri, u1); ok {
		t.Error("a worker read the database credentials")
	}
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
}

// Issue 8 §3: on the postgresql charm's role model the web prepares the database (its sessions
// run as the owner role) before it migrates, and a failure to do so blocks with the reason
// instead of starting a web that cannot write.
func TestDatabasePreparedBeforeMigrating(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.deploy()
	w.addPostgres()
	if len(w.prepared) < 2 || w.prepared[0] != "prepare" || !slices.Contains(w.prepared, "migrate") ||
		slices.Index(w.prepared, "migrate") < slices.Index(w.prepared, "prepare") {
		t.Errorf("order = %q; want prepare before the first migrate", w.prepared)
	}
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")

	w2 := newWorld(t, 1, pinned)
	w2.prepErr = errString(`cannot prepare database "concourse" for user "relation-4": it may not SET ROLE charmed_concourse_owner: relate the charm to PostgreSQL again`)
	w2.deploy()
	w2.addPostgres()
	if got := w2.status(u0); !strings.HasPrefix(got, "blocked: Preparing PostgreSQL for Concourse failed: ") || !strings.Contains(got, "SET ROLE charmed_concourse_owner") {
		t.Errorf("status = %q", got)
	}
	if w2.svcs[u0].active[webService] || slices.Contains(w2.prepared, "migrate") {
		t.Errorf("web started or migrated (%q) on a database it could not prepare", w2.prepared)
	}
}

// Generated passwords never start with '-' (fly login -p would take one for a flag) and use only
// the alphabet.
func TestRandomPasswordNeverLooksLikeAFlag(t *testing.T) {
	for i := 0; i < 2000; i++ {
		pw, err := randomPassword(rand.Reader, 32)
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 32 || strings.HasPrefix(pw, "-") || strings.Trim(pw, passwordAlphabet) != "" {
			t.Fatalf("password %q: want 32 characters of the alphabet, not starting with '-'", pw)
		}
	}
}
