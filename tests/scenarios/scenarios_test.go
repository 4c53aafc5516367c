package scenarios

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// Unit names of the charm application.
var (
	u0 = App + "/0"
	u1 = App + "/1"
	u2 = App + "/2"
	u3 = App + "/3"
	u4 = App + "/4"
)

// TestScenarios runs the whole charm through the bed. The fixture (charms, releases, one
// PostgreSQL cluster) is built once and shared; every scenario has its own bed and release
// server, so they run in parallel (bounded by -parallel; -scenarios.serial runs one at a time).
func TestScenarios(t *testing.T) {
	f := NewFixture(t, FixtureOptions{CharmPath: *charmFlag, ToolsDir: *toolsFlag, RefreshCharm: true})
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *Fixture)
	}{
		{"1+2-seed-then-postgresql", testSeedThenPostgres},
		{"3-add-units", testAddUnits},
		{"4-upgrade", testUpgrade},
		{"5-refresh", testRefresh},
		{"6-leader-change", testLeaderChange},
		{"7-kill-mid-download", testKillMidDownload},
		{"8-remove-postgresql", testRemovePostgres},
		{"9-web-and-worker-apps", testSeparateApps},
		{"10-bad-inputs", testBadInputs},
		{"11-fresh-machines-default-options", testFreshDefaults},
	} {
		t.Run(sc.name, func(t *testing.T) {
			if !*serialFlag {
				t.Parallel()
			}
			start := time.Now()
			t.Cleanup(func() { t.Logf("%s took %s", sc.name, time.Since(start).Round(time.Millisecond)) })
			sc.run(t, f)
		})
	}
}

// step runs one step of a scenario as a subtest and stops the scenario when it fails: later
// steps build on its state.
func step(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, fn) {
		t.FailNow()
	}
}

// running is the state after scenario 2, reached directly: the marker is in place before the
// deploy, and postgresql is integrated at once. It returns the postgresql relation id.
func running(t *testing.T, f *Fixture, n int) (*Scenario, int) {
	t.Helper()
	s := f.NewScenario(t)
	s.MarkShared(t)
	s.DeployPostgres(t)
	s.Deploy(t, App, n, s.Config(nil), bed.StorageShared)
	id := s.IntegratePostgres(t, App)
	checks := []Check{s.WebReady(u0, V1), s.Downloads(V1, 1)}
	for i := 1; i < n; i++ {
		checks = append(checks, s.WorkerReady(fmt.Sprintf("%s/%d", App, i), V1))
	}
	s.Settle(t, checks...)
	if t.Failed() {
		t.FailNow()
	}
	return s, id
}

func units(names ...string) []string { return names }

// 1. The seed report, reproduced; 2. then PostgreSQL.
func testSeedThenPostgres(t *testing.T, f *Fixture) {
	s := f.NewScenario(t)
	step(t, "deploy-before-the-marker", func(t *testing.T) {
		s.Deploy(t, App, 2, s.Config(nil), bed.StorageShared)
		waiting := "Waiting for shared storage: /var/lib/concourse/.lxc_shared_storage is missing"
		s.Settle(t,
			s.StatusHas(u0, "waiting", waiting),
			s.StatusHas(u1, "waiting", waiting),
			s.Downloads(V1, 0),
			s.Absent(u0, Root+"/.installed_version"),
		)
	})
	step(t, "seed", func(t *testing.T) {
		// The operator's setup: the marker once every unit mounts the share, then a hook.
		s.MarkShared(t)
		s.C.UpdateStatus()
		s.Settle(t,
			s.HasStatus(u0, "waiting", "Waiting for PostgreSQL database..."),
			s.WorkerReady(u1, V1),
			s.Downloads(V1, 1),
			s.FileIs(u0, Root+"/.installed_version", V1),
			s.FileIs(u1, Root+"/.installed_version", V1),
			s.ShareHas(".installed_version", ".install.lock", ".lxc_shared_storage", "bin", "current", "versions"),
			s.Exists(u1, Root+"/bin/"),
			s.SameInode(Root+"/bin/concourse", u0, u1),
			s.Versions(V1),
			s.ServiceIs(u1, WorkerService, "active"),
			s.ServiceIs(u0, WebService, "inactive"),
		)
		// Only the leader ever held the install lock (its content names the last holder).
		lock, err := os.ReadFile(filepath.Join(s.Shared, ".install.lock"))
		if err != nil || !strings.Contains(string(lock), "unit="+u0) {
			t.Errorf(".install.lock = %q, %v; want the leader %s as its last holder", lock, err, u0)
		}
		if st, err := os.Stat(filepath.Join(s.Shared, ".installed_version")); err != nil || st.Size() != 6 {
			t.Errorf(".installed_version: %v, %v; want 6 bytes", st, err)
		}
	})
	step(t, "postgresql", func(t *testing.T) {
		s.DeployPostgres(t)
		s.IntegratePostgres(t, App)
		s.Settle(t,
			s.WebReady(u0, V1),
			s.WorkerReady(u1, V1),
			s.ServiceIs(u0, WebService, "active"),
			s.WebVersion(u0, V1),
			s.Registered(u0, u1),
			s.Downloads(V1, 1),
		)
	})
	// A port below 1024 works although the web runs unprivileged: its unit grants
	// CAP_NET_BIND_SERVICE. The worker is not touched by web-only options.
	step(t, "web-port-80-and-metrics", func(t *testing.T) {
		before, err := s.Snap(u1)
		if err != nil {
			t.Fatal(err)
		}
		s.C.Config(App, map[string]any{"web-port": 80, "enable-metrics": true})
		ip := s.C.Model.Address(u0)
		s.Settle(t,
			s.HasStatus(u0, "active", fmt.Sprintf("Web server ready (v%s) http://%s:80", V1, ip)),
			webAnswers(ip+":80", V1),
			metricsAnswer(ip+":9391"),
			runsAs(s, u0, WebService, "concourse"),
			s.Unrestarted(before),
		)
	})
}

// webAnswers: /api/v1/info at addr reports version.
func webAnswers(addr, version string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := concourse.Info(ctx, apiClient, "http://"+addr)
		if err != nil || info.Version != version {
			return fmt.Errorf("http://%s/api/v1/info version = %q, %v; want %q", addr, info.Version, err, version)
		}
		return nil
	}
}

// metricsAnswer: the Prometheus listener at addr serves /metrics.
func metricsAnswer(addr string) Check {
	return func() error {
		resp, err := apiClient.Get("http://" + addr + "/metrics")
		if err != nil {
			return fmt.Errorf("GET http://%s/metrics: %v", addr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET http://%s/metrics: %s; want 200", addr, resp.Status)
		}
		return nil
	}
}

// runsAs: the service's main process runs as user (read from /proc inside the container).
func runsAs(s *Scenario, unit, svc, user string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m := s.C.Unit(unit)
		out, err := m.Systemctl(ctx, "show", "-p", "MainPID", "--value", svc)
		if err != nil {
			return err
		}
		status, err := m.ReadFile("/proc/" + strings.TrimSpace(out) + "/status")
		if err != nil {
			return fmt.Errorf("%s main process of %s: %v", unit, svc, err)
		}
		passwd, err := m.ReadFile("/etc/passwd")
		if err != nil {
			return err
		}
		uid := ""
		for _, line := range strings.Split(string(passwd), "\n") {
			if f := strings.Split(line, ":"); len(f) > 2 && f[0] == user {
				uid = f[2]
			}
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
				if uid == "" || f[1] != uid {
					return fmt.Errorf("%s %s runs as uid %s; want %s (uid %q)", unit, svc, f[1], user, uid)
				}
				return nil
			}
		}
		return fmt.Errorf("%s: no Uid line in the process status", unit)
	}
}

// 3. add-unit ×3: no download, every new worker registers, nothing else restarts.
func testAddUnits(t *testing.T, f *Fixture) {
	s, _ := running(t, f, 2)
	before, err := s.Snap(u0, u1)
	if err != nil {
		t.Fatal(err)
	}
	s.AddUnit(t, App, 3)
	s.Settle(t,
		s.WorkerReady(u2, V1), s.WorkerReady(u3, V1), s.WorkerReady(u4, V1),
		s.WebReady(u0, V1), s.WorkerReady(u1, V1),
		s.Downloads(V1, 1),
		s.SameInode(Root+"/bin/concourse", u0, u2, u3, u4),
		// The new workers' keys reached the web without a restart (it reloads them on SIGHUP).
		s.Registered(u0, u1, u2, u3, u4),
		s.Unrestarted(before),
	)
}

// 4. version=8.2.5: one download, the database migrated and the web restarted before the
// workers, everyone on the new version, the old one kept for rollback.
func testUpgrade(t *testing.T, f *Fixture) {
	s, _ := running(t, f, 3)
	before, err := s.Snap(u0, u1, u2)
	if err != nil {
		t.Fatal(err)
	}
	s.C.Config(App, map[string]any{"version": V2, "allow-major-upgrade": "8"})
	s.Settle(t,
		s.Downloads(V2, 1), s.Downloads(V1, 1),
		s.WebReady(u0, V2), s.WorkerReady(u1, V2), s.WorkerReady(u2, V2),
		s.WebVersion(u0, V2),
		s.FileIs(u1, Root+"/.installed_version", V2),
		s.LinkTo("current", V2), s.LinkTo("previous", V1),
		s.Versions(V1, V2),
		s.migratedBeforeStart(u0, schema82),
		s.webFirst(before, u0, u1, u2),
		s.Registered(u0, u1, u2),
	)
}

// schema82 is the newest migration of Concourse 8.2 (concourse-contract §5).
const schema82 = 1776182280

// migratedBeforeStart: the database is at schema, and the migration to it was recorded before
// the web service (re)started: the charm ran `concourse migrate` first (the web would otherwise
// migrate by itself at start, after it).
func (s *Scenario) migratedBeforeStart(web string, schema int64) Check {
	return func() error {
		var latest int64
		if err := s.QueryDB(`SELECT max(version) FROM migrations_history WHERE status = 'passed'`, &latest); err != nil || latest != schema {
			return fmt.Errorf("database schema = %d, %v; want %d", latest, err, schema)
		}
		var migrated float64 // unix seconds, from the host clock the containers share
		q := fmt.Sprintf(`SELECT extract(epoch FROM min(tstamp)) FROM migrations_history WHERE version = %d AND direction = 'up'`, schema)
		if err := s.QueryDB(q, &migrated); err != nil {
			return err
		}
		snap, err := s.Snap(web)
		if err != nil {
			return err
		}
		started := RealtimeOf(snap[web+" "+WebService].ActiveSince)
		at := time.Unix(0, int64(migrated*1e9))
		if !at.Before(started) {
			return fmt.Errorf("migration to %d recorded at %s, %s started at %s; want the migration first",
				schema, at.Format(time.StampMicro), WebService, started.Format(time.StampMicro))
		}
		return nil
	}
}

// webFirst: every service restarted, the web's start before every worker's.
func (s *Scenario) webFirst(before Snapshot, web string, workers ...string) Check {
	return func() error {
		now, err := s.Snap(append([]string{web}, workers...)...)
		if err != nil {
			return err
		}
		w := now[web+" "+WebService]
		if w.InvocationID == before[web+" "+WebService].InvocationID {
			return fmt.Errorf("%s %s was not restarted (invocation %s)", web, WebService, w.InvocationID)
		}
		for _, u := range workers {
			k := now[u+" "+WorkerService]
			if k.InvocationID == before[u+" "+WorkerService].InvocationID {
				return fmt.Errorf("%s %s was not restarted (invocation %s)", u, WorkerService, k.InvocationID)
			}
			if k.ActiveSince <= w.ActiveSince {
				return fmt.Errorf("%s %s started at %dµs, web at %dµs; want the web first", u, WorkerService, k.ActiveSince, w.ActiveSince)
			}
		}
		return nil
	}
}

// 5. refresh with a newly built charm: services keep running, nothing downloaded.
func testRefresh(t *testing.T, f *Fixture) {
	s, _ := running(t, f, 2)
	before, err := s.Snap(u0, u1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.C.Refresh(App, f.RefreshCharm); err != nil {
		t.Fatal(err)
	}
	s.Settle(t,
		s.dispatchVersion(u0, "scenario-2"), s.dispatchVersion(u1, "scenario-2"),
		s.WebReady(u0, V1), s.WorkerReady(u1, V1),
		s.Unrestarted(before),
		s.Downloads(V1, 1),
	)
	for _, u := range units(u0, u1) {
		if h := strings.Join(s.C.Unit(u).HookNames(), " "); !strings.Contains(h, "(charm refreshed) upgrade-charm") {
			t.Errorf("%s hooks: %s; want (charm refreshed) then upgrade-charm", u, h)
		}
	}
}

func (s *Scenario) dispatchVersion(unit, want string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u := s.C.Unit(unit)
		out, stderr, code, err := u.Exec(ctx, nil, u.CharmDir+"/dispatch", "version")
		if err != nil || code != 0 || strings.TrimSpace(string(out)) != want {
			return fmt.Errorf("%s dispatch version = %q (exit %d, %v, %s); want %q", unit, out, code, err, stderr, want)
		}
		return nil
	}
}

// 6. Leadership moves in auto mode: the old web stops and loses its unit file, the new leader
// serves the web, and every worker follows the new TSA.
func testLeaderChange(t *testing.T, f *Fixture) {
	s, _ := running(t, f, 3)
	ip0, ip1 := s.C.Model.Address(u0), s.C.Model.Address(u1)
	s.C.SetLeader(App, u1)
	s.Settle(t,
		s.WebReady(u1, V1), s.WorkerReady(u0, V1), s.WorkerReady(u2, V1),
		s.ServiceIs(u0, WebService, "inactive"),
		s.Absent(u0, SystemdDir+"/"+WebService),
		s.Absent(u0, "/etc/concourse/web.env"),
		s.ServiceIs(u1, WorkerService, "inactive"),
		s.Absent(u1, SystemdDir+"/"+WorkerService),
		s.ServiceIs(u1, WebService, "active"),
		s.ServiceIs(u0, WorkerService, "active"),
		s.FileHas(u2, "/etc/concourse/worker.env", ip1+":2222"),
		s.FileLacks(u2, "/etc/concourse/worker.env", ip0+":2222"),
		s.FileHas(u0, "/etc/concourse/worker.env", ip1+":2222"),
		s.WebVersion(u1, V1),
		s.Registered(u1, u0, u2),
		s.Downloads(V1, 1),
	)
	if ports := s.C.Model.OpenedPorts(u0); len(ports) != 0 {
		t.Errorf("%s opened ports %q; want none once it is a worker", u0, ports)
	}
}

// 7. The installing hook is SIGKILLed mid-download; its retry completes, and the share holds
// exactly one complete version.
func testKillMidDownload(t *testing.T, f *Fixture) {
	s := f.NewScenario(t)
	s.HookFailuresExpected = true // the killed one
	s.MarkShared(t)
	asset := f.Assets[V1]
	// About eight seconds for the whole tarball: long enough to be killed in the middle.
	s.Rel.SetFault(asset.Name, release.Fault{BytesPerSecond: asset.Size/8 + 1})
	s.Deploy(t, App, 2, s.Config(nil), bed.StorageShared)
	deadline := time.Now().Add(2 * time.Minute)
	for s.Rel.Requests(asset.Name) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s never started the download: %+v, status %+v", u0, s.Rel.Stats(asset.Name), s.C.Model.UnitStatus(u0))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a quarter of the body
	pid, err := KillDispatch(s.Unit(t, u0))
	if err != nil {
		t.Fatal(err)
	}
	status := s.C.Model.UnitStatus(u0)
	t.Logf("killed %s's hook (host pid %d) at %q", u0, pid, status.Message)
	s.Rel.SetFault(asset.Name, release.Fault{})
	s.Settle(t,
		s.HasStatus(u0, "waiting", "Waiting for PostgreSQL database..."),
		s.WorkerReady(u1, V1),
		s.Versions(V1),
		s.FileIs(u1, Root+"/.installed_version", V1),
		s.SameInode(Root+"/bin/concourse", u0, u1),
		s.storageVerify(u1),
	)
	st := s.Rel.Stats(asset.Name)
	if st.Full+st.Partial != 1 || st.Failed < 1 {
		t.Errorf("transfers of %s = %+v; want the killed one failed and exactly one completed (full or resumed)", asset.Name, st)
	}
	for unit, want := range map[string]int{u0: 1, u1: 0} {
		failed := 0
		for _, h := range s.C.Unit(unit).HookNames() {
			if strings.HasSuffix(h, "!") {
				failed++
			}
		}
		if failed != want {
			t.Errorf("%s hooks %q: %d failed; want %d (only the killed one)", unit, s.C.Unit(unit).HookNames(), failed, want)
		}
	}
}

// storageVerify runs the operator's `storage verify --full` on the unit.
func (s *Scenario) storageVerify(unit string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		u := s.C.Unit(unit)
		out, stderr, code, err := u.Exec(ctx, []string{"JUJU_UNIT_NAME=" + unit}, u.CharmDir+"/dispatch", "storage", "verify", "--full")
		if err != nil || code != 0 {
			return fmt.Errorf("%s storage verify --full: exit %d, %v: %s%s; want success", unit, code, err, out, stderr)
		}
		return nil
	}
}

// 8. remove-relation postgresql stops the web; integrating again brings it back.
func testRemovePostgres(t *testing.T, f *Fixture) {
	s, id := running(t, f, 2)
	step(t, "remove", func(t *testing.T) {
		s.C.RemoveRelation(id)
		s.Settle(t,
			s.HasStatus(u0, "blocked", "PostgreSQL database required"),
			s.ServiceIs(u0, WebService, "inactive"),
			s.Absent(u0, "/etc/concourse/web.env"),
			s.WorkerReady(u1, V1),
		)
	})
	step(t, "integrate-again", func(t *testing.T) {
		s.IntegratePostgres(t, App)
		s.Settle(t,
			s.WebReady(u0, V1),
			s.ServiceIs(u0, WebService, "active"),
			s.Registered(u0, u1),
			s.Downloads(V1, 1),
		)
	})
}

// 9. Separate web and worker applications over tsa/flight, one share: the worker application's
// first unit mounts it read-write, the second read-only (what the bed offers:
// StorageSharedROWorkers makes every unit of an application but its first read-only).
func testSeparateApps(t *testing.T, f *Fixture) {
	s := f.NewScenario(t)
	s.MarkShared(t)
	s.DeployPostgres(t)
	s.Deploy(t, "web", 1, s.Config(map[string]any{"mode": "web"}), bed.StorageShared)
	// No version on the worker application: it follows the web application's choice (flight).
	s.Deploy(t, "worker", 2, s.Config(map[string]any{"mode": "worker", "version": ""}), bed.StorageSharedROWorkers)
	s.IntegratePostgres(t, "web")
	if _, err := s.C.Integrate("web:tsa", "worker:flight"); err != nil {
		t.Fatal(err)
	}
	s.Settle(t,
		s.WebReady("web/0", V1),
		s.WorkerReady("worker/0", V1),
		s.WorkerReady("worker/1", V1),
		s.Downloads(V1, 1),
		s.SameInode(Root+"/bin/concourse", "web/0", "worker/0", "worker/1"),
		s.FileIs("web/0", Root+"/worker/worker-0/version", V1),
		// The read-only unit keeps its record on its own disk.
		s.FileIs("worker/1", "/var/lib/concourse-charm/version", V1),
		s.Registered("web/0", "worker/0", "worker/1"),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, stderr, code, _ := s.Unit(t, "worker/1").Exec(ctx, nil, "touch", Root+"/probe"); code == 0 || !strings.Contains(string(stderr), "Read-only file system") {
		t.Errorf("worker/1 touch %s/probe: exit %d %s; want a read-only share", Root, code, stderr)
	}
}

// 10. Bad inputs: the right status, nothing changed, and recovery once fixed.
func testBadInputs(t *testing.T, f *Fixture) {
	s := f.NewScenario(t)
	s.MarkShared(t)
	s.Deploy(t, App, 2, s.Config(nil), bed.StorageShared)
	s.Settle(t, s.HasStatus(u0, "waiting", "Waiting for PostgreSQL database..."), s.WorkerReady(u1, V1))
	if t.Failed() {
		t.FailNow()
	}
	before, err := s.Snap(u0, u1)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func() []Check {
		return []Check{s.Unrestarted(before), s.FileIs(u0, Root+"/.installed_version", V1), s.LinkTo("current", V1),
			s.Versions(V1), s.Downloads(V1, 1), s.FileHas(u1, "/etc/concourse/worker.env", s.C.Model.Address(u0)+":2222"),
			// The running worker stays known to the web: keys and TSA address stay published.
			s.PeerBagHas(u0, "tsa-host", "tsa-public-key"), s.PeerBagHas(u1, "worker-public-key")}
	}
	for _, bad := range []struct {
		option string
		value  any
		shown  string
		reset  any
	}{
		{"mode", "bogus", `invalid mode "bogus"`, "auto"},
		{"web-port", 70000, `invalid web-port "70000"`, 8080},
		{"version", "7.14.x", `invalid version "7.14.x"`, V1},
	} {
		step(t, "invalid-"+bad.option, func(t *testing.T) {
			s.C.Config(App, map[string]any{bad.option: bad.value})
			s.Settle(t, append(unchanged(), s.StatusHas(u0, "blocked", bad.shown), s.StatusHas(u1, "blocked", bad.shown))...)
			s.C.Config(App, map[string]any{bad.option: bad.reset})
			s.Settle(t, append(unchanged(), s.HasStatus(u0, "waiting", "Waiting for PostgreSQL database..."), s.WorkerReady(u1, V1))...)
		})
	}
	good := f.Assets[V2]
	step(t, "corrupt-tarball", func(t *testing.T) {
		s.Rel.Add(truncated(t, good))
		s.C.Config(App, map[string]any{"version": V2})
		s.Settle(t, append(unchanged(),
			s.StatusHas(u0, "blocked", "v"+V2),
			s.StatusHas(u1, "waiting", "Waiting for leader to install Concourse "+V2),
		)...)
		t.Logf("%s: %s", u0, s.C.Model.UnitStatus(u0).Message)
	})
	step(t, "release-server-down", func(t *testing.T) {
		s.Rel.Add(good)
		if err := s.Rel.SetDown(true); err != nil {
			t.Fatal(err)
		}
		s.C.UpdateStatus()
		s.Settle(t, append(unchanged(),
			s.StatusHas(u0, "blocked", "Cannot download Concourse v"+V2, s.ReleaseURL()),
			s.StatusHas(u1, "waiting", "Waiting for leader to install Concourse "+V2),
		)...)
	})
	step(t, "recovery", func(t *testing.T) {
		if err := s.Rel.SetDown(false); err != nil {
			t.Fatal(err)
		}
		s.C.UpdateStatus()
		s.Settle(t,
			s.HasStatus(u0, "waiting", "Waiting for PostgreSQL database..."),
			s.WorkerReady(u1, V2),
			s.Downloads(V2, 1),
			s.LinkTo("current", V2), s.LinkTo("previous", V1),
			s.Versions(V1, V2),
			s.storageVerify(u1),
		)
	})
}

// truncated is a copy of a release cut at two thirds, published with its own (matching)
// checksums: a damaged tarball that verifies, so only its extraction can find out.
func truncated(t *testing.T, a release.Asset) release.Asset {
	t.Helper()
	data, err := os.ReadFile(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	data = data[:len(data)*2/3]
	p := filepath.Join(t.TempDir(), a.Name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s1, s256 := sha1.Sum(data), sha256.Sum256(data)
	a.Path, a.Size, a.SHA1, a.SHA256 = p, int64(len(data)), hex.EncodeToString(s1[:]), hex.EncodeToString(s256[:])
	return a
}
