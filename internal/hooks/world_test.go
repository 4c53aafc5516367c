package hooks

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

const app = "concourse-ci-machine"

// world is a whole deployment for handler tests: the in-memory Juju model, and per unit its own
// directories, service manager and (unless shared) install root. Hooks run through the real
// juju.Client over jujutest's hook-tool interpreter: state in, state out.
type world struct {
	t         *testing.T
	m         *jujutest.Model
	dir       string
	shared    bool
	stores    map[string]*fakeStore // by install root
	svcs      map[string]*fakeServices
	dbErr     error
	prepErr   error            // what PrepareDB answers
	prepared  []string         // "prepare" and "migrate" in the order the charm did them
	schema    map[string]int64 // version → supported schema
	current   int64            // database schema
	undone    int64            // newest migration rolled back by run-migrations, 0 if none
	latest    string
	githubAPI string
	webDown   bool
	queue     []jujutest.Event
	stderr    bytes.Buffer
	// wrap, when set, stands between the handler and the model's hook tools (to record the
	// calls, or to answer some like another Juju would).
	wrap func(unit string, r juju.Runner) juju.Runner
	// migrated records, per MigrateToLatest, the units whose web was running at that moment.
	migrated [][]string
	// retired lists the workers retired through the web's API (Deps.RetireWorker), in order.
	retired []string
	// The upgrade steps' world (upgrade_steps_test.go): where pg_dump is ("" = not installed),
	// what Backup and MigrateToLatest answer, the schema a failed migration leaves behind.
	pgDump                string
	migrateLeaves         int64
	backupErr, migrateErr error
	// gardenAddr is the workers' Garden API (lifecycle_test.go serves one); "" → nothing listens.
	gardenAddr string
	// host is Paths.Host (GPU and task-folder discovery); charmDir, when set, is JUJU_CHARM_DIR.
	host, charmDir string
}

func newWorld(t *testing.T, n int, config map[string]any) *world {
	t.Helper()
	w := &world{
		t: t, m: jujutest.NewModel("test", "1b9e6e3c-0000-4000-8000-000000000001"), dir: t.TempDir(),
		stores: map[string]*fakeStore{}, svcs: map[string]*fakeServices{},
		schema:    map[string]int64{"7.14.3": 1746768931, "8.2.5": 1776182280},
		latest:    "7.14.3",
		githubAPI: "http://127.0.0.1:1", // nothing listens: the lookup fails unless a test serves it
	}
	w.shared = config["shared-storage"] == "lxc"
	w.m.AddApp(app, charmMeta(t), config)
	for i := 0; i < n; i++ {
		u := w.m.AddUnit(app)
		w.m.SetAddress(u, fmt.Sprintf("127.0.2.%d", 10+i))
	}
	return w
}

// charmMeta reads the real metadata.yaml and config.yaml, so the tests see the options, defaults
// and endpoints operators get.
func charmMeta(t *testing.T) jujutest.AppMeta {
	t.Helper()
	var md struct {
		Peers, Provides, Requires map[string]struct{ Interface string }
	}
	var cf struct {
		Options map[string]jujutest.Option
	}
	for file, v := range map[string]any{"../../metadata.yaml": &md, "../../config.yaml": &cf} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	flat := func(m map[string]struct{ Interface string }) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v.Interface
		}
		return out
	}
	return jujutest.AppMeta{Peers: flat(md.Peers), Provides: flat(md.Provides), Requires: flat(md.Requires), Options: cf.Options}
}

func (w *world) paths(unit string) Paths {
	base := filepath.Join(w.dir, storage.UnitTag(unit))
	p := Paths{
		Root:       filepath.Join(base, "var/lib/concourse"),
		ConfigDir:  filepath.Join(base, "etc/concourse"),
		WorkDir:    filepath.Join(base, "var/lib/concourse-worker/work"),
		StateDir:   filepath.Join(base, "var/lib/concourse-charm"),
		SystemdDir: filepath.Join(base, "etc/systemd/system"),
	}
	if w.shared {
		p.Root = filepath.Join(w.dir, "shared")
	}
	return p
}

func (w *world) store(root string) *fakeStore {
	if w.stores[root] == nil {
		w.stores[root] = &fakeStore{root: root, shared: w.shared, marker: true}
	}
	return w.stores[root]
}

func (w *world) services(unit string) *fakeServices {
	if w.svcs[unit] == nil {
		w.svcs[unit] = &fakeServices{active: map[string]bool{}, enabled: map[string]bool{}}
	}
	return w.svcs[unit]
}

// hook runs one hook or action on a unit like Juju: commit on success, discard on failure, and
// queue the hooks the committed changes cause on other units.
func (w *world) hook(unit string, info jujutest.HookInfo) error {
	w.t.Helper()
	if info.RelationID == 0 && !strings.Contains(info.Hook, "relation") {
		info.RelationID = -1
	}
	hc := w.m.NewHookContext(unit, info)
	if w.charmDir != "" {
		hc.CharmDir = w.charmDir
	}
	env := juju.ParseEnv(lookup(hc.Env()), "dispatch")
	var runner juju.Runner = jujutest.Runner{Ctx: hc}
	if w.wrap != nil {
		runner = w.wrap(unit, runner)
	}
	client := juju.NewClient(runner, env)
	paths := w.paths(unit)
	paths.Host = w.host
	svcs := w.services(unit)
	deps := Deps{
		Juju: client, Env: env, Paths: paths, GOARCH: "amd64",
		Services: svcs,
		NewStore: func(root, _ string, _ func(int64, int64)) Store { return w.store(root) },
		NewMigrator: func(binary string, env []string) Migrator {
			return &fakeMigrator{w: w, binary: binary}
		},
		CheckDB: func(context.Context, concourse.DBConfig, time.Duration) error { return w.dbErr },
		PrepareDB: func(context.Context, concourse.DBConfig, time.Duration) (concourse.RoleModel, error) {
			w.prepared = append(w.prepared, "prepare")
			return concourse.RoleModel{}, w.prepErr
		},
		SchemaVersion: func(context.Context, concourse.DBConfig) (int64, error) { return w.current, w.dbErr },
		WebInfo: func(context.Context, string) (string, error) {
			// A running web answers with the version of the binary its unit starts.
			if w.webDown || !svcs.active[webService] {
				return "", errString("connection refused")
			}
			unit, err := os.ReadFile(filepath.Join(paths.SystemdDir, webService))
			if err != nil {
				return "", err
			}
			_, after, _ := strings.Cut(string(unit), "/versions/")
			v, _, _ := strings.Cut(after, "/")
			return v, nil
		},
		RetireWorker: func(_ context.Context, _, _, _, worker string) (bool, error) {
			w.retired = append(w.retired, worker)
			return true, nil
		},
		WebStartWait: 50 * time.Millisecond,
		ProbeVersion: nil,
		EnsureUser:   func(string) (int, int, error) { return os.Getuid(), os.Getgid(), nil },
		Stderr:       &w.stderr,
		KeyBits:      2048,
		InstallWait:  10 * time.Millisecond,
		GitHubAPI:    w.githubAPI,
		Upgrade:      w.upgradeDeps(paths),
		GardenAddr:   cmp.Or(w.gardenAddr, "127.0.0.1:1"),
	}
	err := Run(context.Background(), deps)
	if err != nil {
		hc.Discard()
		return err
	}
	w.queue = append(w.queue, hc.Commit()...)
	return nil
}

func (w *world) mustHook(unit, hook string) {
	w.t.Helper()
	if err := w.hook(unit, jujutest.HookInfo{Hook: hook}); err != nil {
		w.t.Fatalf("%s %s: %v\n%s", unit, hook, err, w.stderr.String())
	}
}

// settle runs queued hooks until none is left (bounded: a loop of relation changes is a bug).
func (w *world) settle() {
	w.t.Helper()
	for i := 0; len(w.queue) > 0; i++ {
		if i > 200 {
			w.t.Fatalf("hooks do not settle; still queued: %v", w.queue)
		}
		ev := w.queue[0]
		w.queue = w.queue[1:]
		if strings.HasPrefix(ev.Unit, "postgresql/") {
			continue // the stand-in provider has no charm code in these tests
		}
		if err := w.hook(ev.Unit, ev.HookInfo); err != nil {
			w.t.Fatalf("%s: %v\n%s", ev, err, w.stderr.String())
		}
	}
}

// deploy runs juju-contract §4.1's sequence on every unit, then settles.
func (w *world) deploy() { w.deployApp(app) }

func (w *world) deployApp(app string) {
	w.t.Helper()
	units := w.m.Units(app)
	leader := w.m.Leader(app)
	peers := w.m.RelationID(app, "peers")
	for _, u := range units {
		w.mustHook(u, "install")
		if err := w.hook(u, jujutest.HookInfo{Hook: "peers-relation-created", RelationID: peers}); err != nil {
			w.t.Fatal(err)
		}
		if u == leader {
			w.mustHook(u, "leader-elected")
		} else {
			w.mustHook(u, "leader-settings-changed")
		}
		w.mustHook(u, "config-changed")
		w.mustHook(u, "start")
	}
	for _, u := range units {
		w.queue = append(w.queue, w.m.JoinEvents(peers, u)...)
	}
	w.settle()
}

// addPostgres relates a stand-in PostgreSQL provider that answers like the real charm
// (juju-contract §7.2): endpoints, database, and a secret-user secret granted to the relation.
func (w *world) addPostgres() int {
	w.t.Helper()
	w.m.AddApp("postgresql", jujutest.AppMeta{Provides: map[string]string{"database": "postgresql_client"}}, nil)
	pg := w.m.AddUnit("postgresql")
	id := w.m.Relate(app, "postgresql", "postgresql", "database")
	for _, u := range w.m.Units(app) {
		w.mustHookRel(u, "postgresql-relation-created", id, "")
	}
	w.queue = append(w.queue, w.m.JoinEvents(id, pg)...)
	w.settle()
	if got := w.m.AppData(id, app)["database"]; got != "concourse" {
		w.t.Fatalf("requested database = %q; want concourse", got)
	}
	uri := w.m.AddSecret("postgresql", map[string]string{"username": fmt.Sprintf("relation-%d", id), "password": "s3cret-pw"}, "")
	w.m.GrantSecret(uri, id, "")
	w.queue = append(w.queue, w.m.SetAppData(id, "postgresql", map[string]string{
		"endpoints": "127.0.2.99:5432", "database": "concourse", "version": "16.6", "secret-user": uri,
	})...)
	w.settle()
	return id
}

func (w *world) mustHookRel(unit, hook string, id int, remote string) {
	w.t.Helper()
	if err := w.hook(unit, jujutest.HookInfo{Hook: hook, RelationID: id, RemoteUnit: remote}); err != nil {
		w.t.Fatalf("%s %s: %v\n%s", unit, hook, err, w.stderr.String())
	}
}

func (w *world) status(unit string) string {
	s := w.m.UnitStatus(unit)
	return s.Status + ": " + s.Message
}

func (w *world) wantStatus(unit, want string) {
	w.t.Helper()
	if got := w.status(unit); got != want {
		w.t.Errorf("%s status = %q; want %q\n%s", unit, got, want, w.stderr.String())
	}
}

func (w *world) readFile(unit, rel string) string {
	w.t.Helper()
	b, err := os.ReadFile(filepath.Join(w.paths(unit).ConfigDir, rel))
	if err != nil {
		w.t.Fatal(err)
	}
	return string(b)
}

func lookup(env []string) func(string) string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// fakeStore is an install root: what is installed, and how often a release was downloaded.
type fakeStore struct {
	mu          sync.Mutex
	root        string
	shared      bool
	marker      bool
	installed   string
	installs    int
	damaged     bool
	failWith    error
	notWritable error
	lastSource  storage.Source
	forgotten   int
	records     map[string]string
}

func (s *fakeStore) CheckShared() error {
	if !s.marker {
		return &storage.MarkerMissingError{Path: filepath.Join(s.root, ".lxc_shared_storage")}
	}
	return nil
}
func (s *fakeStore) CheckWritable() error { return s.notWritable }
func (s *fakeStore) Installed() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.installed, nil
}

// BinaryPath names the version in the path, as the resolved versions/<v>-<id> path of the real
// store does, so the fake migrator knows which release it runs.
func (s *fakeStore) BinaryPath() string {
	return filepath.Join(s.root, "versions", s.installed, "bin", "concourse")
}
func (s *fakeStore) Install(_ context.Context, v string, src storage.Source) (storage.InstallResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSource = src
	if s.failWith != nil {
		return storage.InstallResult{}, s.failWith
	}
	if s.installed == v && !s.damaged {
		return storage.InstallResult{Version: v}, nil
	}
	s.installed, s.damaged = v, false
	s.installs++
	return storage.InstallResult{Version: v, Downloaded: true, Bytes: 1 << 20}, nil
}
func (s *fakeStore) WaitInstalled(_ context.Context, v string, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.installed == v && !s.damaged, nil
}
func (s *fakeStore) VerifyQuick(func(string) error) error {
	if s.damaged {
		return &storage.CorruptError{Path: s.BinaryPath(), Reason: "size mismatch"}
	}
	return nil
}
func (s *fakeStore) ForgetRunning() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgotten++
	return nil
}

func (s *fakeStore) RecordRunning(v, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.records == nil {
		s.records = map[string]string{}
	}
	s.records[v] = v
	return nil
}

// fakeServices is systemd as far as the charm can see it.
type fakeServices struct {
	active, enabled map[string]bool
	calls           []string
	failStart       error
	// lifecycle_test.go: busy units drain (deactivating) on a non-blocking stop or restart until
	// the test lets them exit; pending is the job systemd finishes then ("restart" or "stop").
	busy      map[string]bool
	pending   map[string]string
	onRestart func(unit string) // called before a restart takes effect
}

func (f *fakeServices) log(s string)                       { f.calls = append(f.calls, s) }
func (f *fakeServices) DaemonReload(context.Context) error { f.log("daemon-reload"); return nil }
func (f *fakeServices) Enable(_ context.Context, u string) error {
	f.enabled[u] = true
	return nil
}
func (f *fakeServices) Disable(_ context.Context, u string) error {
	f.enabled[u] = false
	f.log("disable " + u)
	return nil
}
func (f *fakeServices) Start(_ context.Context, u string) error {
	if f.failStart != nil {
		return f.failStart
	}
	f.active[u] = true
	f.log("start " + u)
	return nil
}
func (f *fakeServices) Stop(_ context.Context, u string) error {
	f.active[u] = false
	f.log("stop " + u)
	return nil
}
func (f *fakeServices) Restart(_ context.Context, u string) error {
	if f.onRestart != nil {
		f.onRestart(u)
	}
	f.active[u] = true
	f.log("restart " + u)
	return nil
}
func (f *fakeServices) IsActive(_ context.Context, u string) (bool, error) { return f.active[u], nil }
func (f *fakeServices) Kill(_ context.Context, u, sig string) error {
	f.log("kill " + sig + " " + u)
	if sig == "SIGUSR2" {
		f.active[u] = false // a worker told to retire exits once retired
	}
	return nil
}

// count reports how many recorded calls start with prefix.
func (f *fakeServices) count(prefix string) int {
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// fakeMigrator is `concourse migrate` against the world's database schema.
type fakeMigrator struct {
	w      *world
	binary string
}

func (m *fakeMigrator) version() string {
	for v := range m.w.schema {
		if strings.Contains(m.binary, v) {
			return v
		}
	}
	return ""
}
func (m *fakeMigrator) SupportedVersion(context.Context) (int64, error) {
	v, ok := m.w.schema[m.version()]
	if !ok {
		return 0, errors.New("unknown binary")
	}
	return v, nil
}

// CurrentVersion answers like the real binaries: after a migration down, a release that lacks
// the newest undone migration reports that migration's id, not the schema it stands at (real
// 7.14.3 says 1747084615 where 8.2.5 says 1746768931, on the same database).
func (m *fakeMigrator) CurrentVersion(ctx context.Context) (int64, error) {
	if supported, err := m.SupportedVersion(ctx); err == nil && m.w.undone > supported {
		return m.w.undone, nil
	}
	return m.w.current, nil
}
func (m *fakeMigrator) MigrateToLatest(ctx context.Context) error {
	m.w.prepared = append(m.w.prepared, "migrate")
	var running []string
	for unit, svcs := range m.w.svcs {
		if svcs.active[webService] {
			running = append(running, unit)
		}
	}
	sort.Strings(running)
	m.w.migrated = append(m.w.migrated, running)
	if m.w.migrateErr != nil {
		if m.w.migrateLeaves != 0 {
			m.w.current = m.w.migrateLeaves
		}
		return m.w.migrateErr
	}
	v, err := m.SupportedVersion(ctx)
	m.w.current, m.w.undone = v, 0
	return err
}
func (m *fakeMigrator) MigrateTo(_ context.Context, v int64) error {
	if v < m.w.current {
		m.w.undone = v + 1 // the id of the first migration rolled back
	}
	m.w.current = v
	return nil
}

// action runs an action on unit and returns its record (a failed action is not a hook error).
func (w *world) action(unit, name string, params map[string]any) jujutest.ActionRecord {
	w.t.Helper()
	if err := w.hook(unit, jujutest.HookInfo{ActionName: name, ActionParams: params}); err != nil {
		w.t.Fatalf("%s %s: %v", unit, name, err)
	}
	acts := w.m.Actions()
	return acts[len(acts)-1]
}

// relateWorkerApp deploys a separate worker application with one unit and relates its flight
// endpoint to our tsa endpoint; it returns the relation.
func (w *world) relateWorkerApp() int {
	w.t.Helper()
	w.m.AddApp("concourse-worker", charmMeta(w.t), map[string]any{"mode": "worker", "shared-storage": "lxc"})
	w.m.SetAddress(w.m.AddUnit("concourse-worker"), "127.0.3.1")
	w.deployApp("concourse-worker")
	id := w.m.Relate(app, "tsa", "concourse-worker", "flight")
	units := append(w.m.Units(app), w.m.Units("concourse-worker")...)
	for _, u := range units {
		ep := "tsa"
		if strings.HasPrefix(u, "concourse-worker/") {
			ep = "flight"
		}
		w.mustHookRel(u, ep+"-relation-created", id, "")
	}
	for _, u := range units {
		w.queue = append(w.queue, w.m.JoinEvents(id, u)...)
	}
	w.settle()
	return id
}

// addUnit adds a unit at addr to a deployed application related to PostgreSQL and runs what
// Juju runs for it: install, the relations' -created, leader-settings-changed, config-changed,
// start, then its peer joins; it returns the unit.
func (w *world) addUnit(addr string) string {
	w.t.Helper()
	u := w.m.AddUnit(app)
	w.m.SetAddress(u, addr)
	peers := w.m.RelationID(app, "peers")
	pg := w.m.RelationID(app, "postgresql")
	w.mustHook(u, "install")
	w.mustHookRel(u, "peers-relation-created", peers, "")
	w.mustHookRel(u, "postgresql-relation-created", pg, "")
	w.mustHook(u, "leader-settings-changed")
	w.mustHook(u, "config-changed")
	w.mustHook(u, "start")
	w.queue = append(w.queue, w.m.JoinEvents(peers, u)...)
	w.settle()
	return u
}
