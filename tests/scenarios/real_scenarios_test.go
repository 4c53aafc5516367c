package scenarios

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/hooks"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// schema714 is the schema 7.14.3 supports (`concourse migrate --supported-db-version`).
const schema714 = 1746768931

// TestRealConcourse runs the charm with the real Concourse 7.14.3 and 8.2.5 under real systemd,
// on one deployment whose steps build on each other (a few minutes in all): a web and two
// workers registered over the TSA with the charm's keys, fly execute, a pipeline job, the upgrade
// to 8.2.5 with its real migrations, and a removed worker retiring.
func TestRealConcourse(t *testing.T) {
	// Its own fixture, bed machines and cluster: it runs beside the other scenarios (most of a
	// real scenario is waiting for Concourse: landing, heartbeats).
	t.Parallel()
	f := NewRealFixture(t)
	s := f.NewRealScenario(t)
	rt := RealRuntime()
	s.MarkShared(t)
	// The database comes as the postgresql charm (16/stable) hands it out: owned by
	// charmed_<db>_owner, the relation user a member that may SET ROLE to it but owns nothing and
	// cannot create in schema public, with no login hook escalating its sessions (the case the
	// Python charm's users hit: dex could not INSERT into auth_request).
	charmed := f.PG.CreateCharmedDatabase(t, s.DB, pgtest.CharmedOptions{})
	s.Charmed = &charmed
	s.DeployPostgres(t)
	cfg := map[string]any{}
	if rt != "containerd" {
		cfg["worker-runtime"] = rt // containerd is the charm's default: left unset, as operators do
	}
	// The upgrade step uses version=8.2 (a line the leader resolves through the model's HTTPS
	// proxy, answering for api.github.com) and upgrade-backup (pg_dump, provisioned).
	provision := upgradeProvision(t, s)
	deployCtx, cancelDeploy := context.WithTimeout(context.Background(), 3*time.Minute)
	if _, err := s.C.Deploy(deployCtx, App, s.F.Charm, 3, s.Config(cfg), bed.DeployOptions{Storage: bed.StorageShared, SharedDir: s.Shared, Provision: provision}); err != nil {
		t.Fatalf("deploying %s: %v", App, err)
	}
	cancelDeploy()
	s.IntegratePostgres(t, App)
	webURL := func() string { return fmt.Sprintf("http://%s:8080", s.C.Model.Address(u0)) }
	// fly keeps its target in $HOME/.flyrc: made here, so it outlives the steps.
	fly := f.NewFly(t, V1)
	flyV2 := f.NewFly(t, V2)

	step(t, "deploy", func(t *testing.T) {
		s.Settle(t,
			s.WebReady(u0, V1), s.WorkerReady(u1, V1), s.WorkerReady(u2, V1),
			s.WebVersion(u0, V1),
			s.FileHas(u1, "/etc/concourse/worker.env", `CONCOURSE_RUNTIME="`+rt+`"`),
			s.Registered(u0, u1, u2),
		)
	})
	if rt == "containerd" {
		for _, u := range []string{u1, u2} {
			prepareTaskRootfs(t, s, u)
		}
	}
	step(t, "fly-login-workers-execute", func(t *testing.T) {
		flyLogin(t, s, fly, u0)
		waitFlyWorkers(t, fly, map[string]string{UnitTag(u1): "running", UnitTag(u2): "running"})
		task := writeTask(t, rt, "hello-from-fly-execute")
		out, err := fly.Run(3*time.Minute, "execute", "-c", task)
		t.Logf("fly execute (%s):\n%s", rt, out)
		if err != nil || !strings.Contains(out, "succeeded") {
			t.Fatalf("fly execute: %v; want succeeded", err)
		}
		taskRan(t, s, rt, out, "hello-from-fly-execute", u1, u2)
	})
	step(t, "pipeline-job", func(t *testing.T) {
		pipeline := writePipeline(t, rt, "hello-from-the-pipeline")
		for _, args := range [][]string{
			{"set-pipeline", "-n", "-p", "real", "-c", pipeline},
			{"unpause-pipeline", "-p", "real"},
		} {
			if out, err := fly.Run(time.Minute, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		}
		out, err := fly.Run(3*time.Minute, "trigger-job", "-j", "real/hello", "-w")
		t.Logf("fly trigger-job -w:\n%s", out)
		if err != nil || !strings.Contains(out, "succeeded") {
			t.Fatalf("trigger-job: %v; want succeeded", err)
		}
		taskRan(t, s, rt, out, "hello-from-the-pipeline", u1, u2)
	})
	step(t, "upgrade", func(t *testing.T) {
		before, err := s.Snap(u0, u1, u2)
		if err != nil {
			t.Fatal(err)
		}
		// A release line across a major version is held until confirmed: nothing moves.
		s.C.Config(App, map[string]any{"version": "8.2", "upgrade-backup": true})
		s.Settle(t,
			s.StatusHas(u0, "blocked", "Upgrade 7.14.3 → 8.2.5 crosses a major version (7 → 8)", "allow-major-upgrade=8"),
			s.WebVersion(u0, V1), s.Unrestarted(before),
		)
		poll := pollWeb(webURL()+"/api/v1/info", 100*time.Millisecond, 15*time.Minute)
		s.C.Config(App, map[string]any{"allow-major-upgrade": "8"})
		// The workers drain before they restart on the new release, without holding a hook
		// (lifecycle.go): their status follows in the next update-status, as Juju's timer runs it.
		for _, u := range []string{u1, u2} {
			waitUpdateStatus(t, s, u, s.WorkerReady(u, V2))
		}
		s.Settle(t,
			s.WebReady(u0, V2), s.WorkerReady(u1, V2), s.WorkerReady(u2, V2),
			s.WebVersion(u0, V2),
			s.migratedBeforeStart(u0, schema82),
			s.oldWebStoppedBeforeMigration(u0, schema82, RealtimeOf(before[u0+" "+WebService].ActiveSince)),
			s.webNeverSawNewerSchema(u0),
			s.webFirst(before, u0, u1, u2),
			s.Registered(u0, u1, u2),
		)
		r := poll.stop()
		t.Logf("web downtime of the upgrade %s → %s: %s (longest gap between answers; %d polls, %d failed, versions seen %v)",
			V1, V2, r.downtime.Round(time.Millisecond), r.polls, r.failed, r.versions)
		if len(r.versions) == 0 || r.versions[len(r.versions)-1] != V2 {
			t.Errorf("versions the web reported during the upgrade: %v; want %s last", r.versions, V2)
		}
		checkUpgradeBackup(t, f, s)
		fly = flyV2
		flyLogin(t, s, fly, u0)
		waitFlyWorkers(t, fly, map[string]string{UnitTag(u1): "running", UnitTag(u2): "running"})
		out, err := fly.Run(3*time.Minute, "execute", "-c", writeTask(t, rt, "hello-after-the-upgrade"))
		t.Logf("fly execute after the upgrade:\n%s", out)
		if err != nil || !strings.Contains(out, "succeeded") {
			t.Errorf("fly execute after the upgrade: %v; want succeeded", err)
		}
		taskRan(t, s, rt, out, "hello-after-the-upgrade", u1, u2)
	})
	step(t, "postgresql-16-role-model", func(t *testing.T) {
		// Everything the real migrations of both versions and the running webs created belongs to
		// the owner role, so any later relation user (or session) of the charm's model can use it.
		var foreign int
		q := `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> ` + pq.QuoteLiteral(charmed.Owner)
		if err := s.QueryDB(q, &foreign); err != nil || foreign != 0 {
			t.Errorf("%d public tables not owned by %s (%v)", foreign, charmed.Owner, err)
		}
		var tables int
		if err := s.QueryDB(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`, &tables); err != nil || tables < 50 {
			t.Errorf("%d public tables (%v); want Concourse's schema", tables, err)
		}
		t.Logf("%d tables, all owned by %s; login, set-pipeline and builds ran on this database", tables, charmed.Owner)
	})
	step(t, "remove-worker-retires", func(t *testing.T) {
		if err := s.C.RemoveUnit(u2); err != nil {
			t.Fatal(err)
		}
		s.Settle(t, s.WebReady(u0, V2), s.WorkerReady(u1, V2))
		// Retiring is asynchronous on the web's side (the TSA deletes the row once the worker
		// has drained): give it a bounded while, then it must be gone, not stalled or landed.
		waitFlyWorkers(t, fly, map[string]string{UnitTag(u1): "running", UnitTag(u2): ""})
	})
}

// flyLogin logs fly in to the web unit with the admin password from its get-admin-password
// action.
func flyLogin(t *testing.T, s *Scenario, fly *Fly, web string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := fmt.Sprintf("http://%s:8080", s.C.Model.Address(web))
	rec, err := s.C.RunAction(ctx, web, "get-admin-password", nil)
	if err != nil || rec.Status != "completed" || rec.Results["password"] == "" {
		t.Fatalf("get-admin-password: %v %s %q", err, rec.Status, rec.Message)
	}
	if out, err := fly.Run(time.Minute, "login", "-c", url, "-u", rec.Results["username"], "--password="+rec.Results["password"]); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// waitFlyWorkers polls `fly workers --json` (bounded, 2 minutes) until every named worker is in
// its state; state "" means absent.
func waitFlyWorkers(t *testing.T, fly *Fly, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last map[string]string
	for {
		out, err := fly.Run(30*time.Second, "workers", "--json")
		if err == nil {
			var list []struct {
				Name  string `json:"name"`
				State string `json:"state"`
			}
			if err = json.Unmarshal([]byte(out), &list); err == nil {
				last = map[string]string{}
				for _, w := range list {
					last[w.Name] = w.State
				}
				ok := true
				for name, state := range want {
					if last[name] != state {
						ok = false
					}
				}
				if ok {
					t.Logf("fly workers: %v", last)
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fly workers = %v (last error %v); want %v (\"\" = absent)", last, err, want)
		}
		time.Sleep(time.Second)
	}
}

// taskConfig is a task that prints msg. On containerd it runs in a busybox root file system the
// workers carry (see RealRuntime); houdini runs it as a process on the worker machine.
func taskConfig(runtime, msg string) string {
	rootfs := ""
	if runtime == "containerd" {
		rootfs = "rootfs_uri: raw://" + taskRootfs + "\n"
	}
	// The printed line is computed, so finding it proves the task ran (the command line that
	// fly echoes does not contain it).
	script := fmt.Sprintf("echo %s-$((6*7)); echo stderr-$((6*7)) >&2; uname -n", msg)
	if runtime == "houdini" {
		// houdini runs the task on the worker machine itself: the task leaves a mark there,
		// evidence that it ran when fly shows none of its output (see taskRan).
		script += fmt.Sprintf("; mkdir -p %[1]s && echo %[2]s-$((6*7)) > %[1]s/%[2]s", taskMarks, msg)
	}
	return fmt.Sprintf("platform: linux\n%srun:\n  path: /bin/sh\n  args: [-c, %s]\n", rootfs, strconv.Quote(script))
}

// taskRootfs is where a containerd worker's busybox root file system is expected; taskMarks is
// where a houdini task leaves its mark on the worker.
const (
	taskRootfs = "/var/lib/ccm-task-rootfs"
	taskMarks  = "/var/lib/ccm-task-marks"
)

// taskRan checks that a task printing msg ran, from fly's output. houdini sometimes loses a
// task's output (seen on 3 of about 10 builds here: "running /bin/sh …", then "succeeded" and no
// line in between; the worker logged "garden-server.attach.failed: unknown process: task"), so
// there the task's mark on a worker is accepted instead, and the loss is logged.
func taskRan(t *testing.T, s *Scenario, runtime, out, msg string, workers ...string) {
	t.Helper()
	want := msg + "-42"
	if strings.Contains(out, "\n"+want+"\n") || strings.Contains(out, "\n"+want+"\r\n") {
		return
	}
	if runtime == "houdini" {
		for _, w := range workers {
			if b, err := s.Unit(t, w).ReadFile(taskMarks + "/" + msg); err == nil && strings.TrimSpace(string(b)) == want {
				t.Logf("houdini lost the output of the task that printed %q; it ran on %s (its mark is there)", want, w)
				return
			}
		}
	}
	t.Errorf("no %q in the output and no mark of the task on %v", want, workers)
}

// prepareTaskRootfs makes a busybox root file system at taskRootfs on a worker, from the host's
// /bin/busybox (Debian's busybox-static, installed by .ci/run): task data the scenario brings, not
// something the machine has. An unprivileged containerd task runs in a user namespace whose root
// is not the host's, so runc can create its mount points (/tmp/gdn-init, /scratch, /etc/hosts…)
// only where that root may write: the directories are world-writable.
func prepareTaskRootfs(t *testing.T, s *Scenario, unit string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("the task rootfs needs a static busybox on the host (apt-get install busybox-static): %v", err)
	}
	m := s.Unit(t, unit).Machine
	if _, _, code, err := m.Exec(ctx, nil, "mkdir", "-p", taskRootfs+"/bin"); err != nil || code != 0 {
		t.Fatalf("mkdir %s on %s: exit %d, %v", taskRootfs, unit, code, err)
	}
	if err := m.WriteFile(taskRootfs+"/bin/busybox", bb, 0o755); err != nil {
		t.Fatalf("copying busybox to %s: %v", unit, err)
	}
	script := `set -e
R=` + taskRootfs + `
mkdir -p $R/tmp $R/etc $R/proc $R/sys $R/dev
for a in sh echo cat ls uname id sleep; do ln -sf busybox $R/bin/$a; done
touch $R/etc/hosts $R/etc/resolv.conf $R/etc/hostname
chmod 1777 $R $R/tmp $R/etc $R/proc $R/sys $R/dev
chmod 666 $R/etc/hosts $R/etc/resolv.conf $R/etc/hostname`
	out, stderr, code, err := m.Exec(ctx, nil, "/bin/sh", "-c", script)
	if err != nil || code != 0 {
		t.Fatalf("preparing the task rootfs on %s: exit %d, %v: %s%s", unit, code, err, out, stderr)
	}
}

func writeTask(t *testing.T, runtime, msg string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "task.yml")
	if err := os.WriteFile(p, []byte(taskConfig(runtime, msg)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writePipeline(t *testing.T, runtime, msg string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("jobs:\n- name: hello\n  plan:\n  - task: say\n    config:\n")
	for _, line := range strings.Split(strings.TrimRight(taskConfig(runtime, msg), "\n"), "\n") {
		b.WriteString("      " + line + "\n")
	}
	p := filepath.Join(t.TempDir(), "pipeline.yml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// webPoll polls a web's /api/v1/info in the background to measure how long it does not answer.
type webPoll struct {
	done   chan struct{}
	result chan pollResult
}

type pollResult struct {
	downtime      time.Duration // longest time from a failed poll after an answer to the next answer
	polls, failed int
	versions      []string // distinct versions in the order seen
}

// pollWeb polls url every interval for at most limit, until stop.
func pollWeb(url string, interval, limit time.Duration) *webPoll {
	p := &webPoll{done: make(chan struct{}), result: make(chan pollResult, 1)}
	client := &http.Client{Timeout: time.Second}
	go func() {
		var r pollResult
		var lastOK, downSince time.Time
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			r.polls++
			v, err := infoVersion(client, url)
			now := time.Now()
			if err != nil {
				r.failed++
				if downSince.IsZero() {
					downSince = lastOK
				}
			} else {
				if !downSince.IsZero() && now.Sub(downSince) > r.downtime {
					r.downtime = now.Sub(downSince)
				}
				downSince, lastOK = time.Time{}, now
				if len(r.versions) == 0 || r.versions[len(r.versions)-1] != v {
					r.versions = append(r.versions, v)
				}
			}
			select {
			case <-p.done:
				if !downSince.IsZero() {
					r.downtime = max(r.downtime, time.Since(downSince))
				}
				p.result <- r
				return
			case <-time.After(interval):
			}
		}
		p.result <- r
	}()
	return p
}

// stop ends the polling (call it once) and returns what it saw.
func (p *webPoll) stop() pollResult {
	close(p.done)
	return <-p.result
}

func infoVersion(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	var info struct {
		Version string `json:"version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return "", err
	}
	return info.Version, nil
}

// oldWebStoppedBeforeMigration: the web service that started at oldStart stopped before the
// migration to schema was recorded, so the old web never ran on the new schema.
func (s *Scenario) oldWebStoppedBeforeMigration(web string, schema int64, oldStart time.Time) Check {
	return func() error {
		var migrated float64
		q := fmt.Sprintf(`SELECT extract(epoch FROM min(tstamp)) FROM migrations_history WHERE version = %d AND direction = 'up'`, schema)
		if err := s.QueryDB(q, &migrated); err != nil {
			return err
		}
		at := time.Unix(0, int64(migrated*1e9))
		stops, err := s.journalTimes(web, WebService, func(msg string) bool {
			return strings.HasPrefix(msg, "Stopped ") || strings.HasSuffix(msg, "Deactivated successfully.")
		})
		if err != nil {
			return err
		}
		for _, st := range stops {
			if st.After(oldStart) && st.Before(at) {
				return nil
			}
		}
		return fmt.Errorf("%s: migration to %d recorded at %s, but %s stopped only at %v; want the old web stopped first",
			web, schema, at.Format(time.StampMicro), WebService, stops)
	}
}

// webNeverSawNewerSchema: the web's journal has none of the errors an old web logs on a schema
// migrated past it (the 7.14.3 web: "column nbi.version_md5 does not exist (SQLSTATE 42703)").
func (s *Scenario) webNeverSawNewerSchema(web string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, _, _, err := s.C.Unit(web).Exec(ctx, nil, "journalctl", "-u", WebService, "--no-pager", "-o", "cat")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "SQLSTATE 42703") || strings.Contains(line, "does not exist (SQLSTATE") {
				return fmt.Errorf("%s %s ran on a schema newer than its binary: %s", web, WebService, cut(line, 300))
			}
		}
		return nil
	}
}

// journalTimes returns when the unit's systemd journal logged a message about svc that match.
func (s *Scenario) journalTimes(unit, svc string, match func(string) bool) ([]time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _, _, err := s.C.Unit(unit).Exec(ctx, nil, "journalctl", "-u", svc, "--no-pager", "-o", "json", "--output-fields=MESSAGE")
	if err != nil {
		return nil, err
	}
	var times []time.Time
	for _, line := range strings.Split(string(out), "\n") {
		var e struct {
			Message string `json:"MESSAGE"`
			Time    string `json:"__REALTIME_TIMESTAMP"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || !match(e.Message) {
			continue
		}
		us, err := strconv.ParseInt(e.Time, 10, 64)
		if err == nil {
			times = append(times, time.UnixMicro(us))
		}
	}
	return times, nil
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// upgradeProvision prepares each machine as an operator would for the upgrade step, from local
// files only: it trusts the bed's TLS-inspecting HTTPS proxy (which answers for api.github.com
// from the scenario's release server, so version=8.2 resolves), and installs the host's own
// pg_dump (the PostgreSQL of the test cluster, so never older than the server) with the shared
// libraries the fresh Debian lacks, where Debian's postgresql-client puts it
// (/usr/lib/postgresql/<major>/bin).
func upgradeProvision(t *testing.T, s *Scenario) func(ctx context.Context, m *bed.Machine) error {
	t.Helper()
	proxy, err := release.ListenProxy(s.C.Bed.HostIP()+":0", s.Rel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	// HTTPS only: release-url (plain http on the bed's bridge) stays direct.
	s.C.Model.SetProxy(jujutest.ProxySettings{HTTPS: proxy.URL()})
	pgDump, err := hooks.FindPGDump(func(string) (string, error) { return "", errors.New("not in PATH: use the versioned one") }, filepath.Glob)
	if err != nil {
		t.Skipf("the upgrade step needs the host's pg_dump to provision the units: %v", err)
	}
	libs, err := sharedLibs(pgDump)
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, m *bed.Machine) error {
		if err := m.WriteFile("/usr/local/share/ca-certificates/ccm-bed-proxy.crt", proxy.CAPEM, 0o644); err != nil {
			return err
		}
		if _, stderr, code, err := m.Exec(ctx, nil, "update-ca-certificates"); err != nil || code != 0 {
			return fmt.Errorf("update-ca-certificates: exit %d: %v %s", code, err, stderr)
		}
		files := map[string]string{pgDump: pgDump}
		for name, host := range libs {
			if _, err := m.Stat(name); err != nil { // only what the machine lacks
				files[name] = host
			}
		}
		for dst, src := range files {
			b, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			if _, _, _, err := m.Exec(ctx, nil, "mkdir", "-p", filepath.Dir(dst)); err != nil {
				return err
			}
			if err := m.WriteFile(dst, b, 0o755); err != nil {
				return fmt.Errorf("copying %s: %w", dst, err)
			}
		}
		if _, _, _, err := m.Exec(ctx, nil, "ldconfig"); err != nil {
			return err
		}
		out, stderr, code, err := m.Exec(ctx, nil, pgDump, "--version")
		if err != nil || code != 0 {
			return fmt.Errorf("%s --version on %s: exit %d: %v %s", pgDump, m.Name, code, err, stderr)
		}
		t.Logf("%s: %s (%d files copied)", m.Name, strings.TrimSpace(string(out)), len(files))
		return nil
	}
}

// sharedLibs maps each library ldd resolves for bin (by the path it resolved to) to the file.
func sharedLibs(bin string) (map[string]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	libs := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		_, after, ok := strings.Cut(line, "=> ")
		if !ok {
			continue
		}
		path, _, _ := strings.Cut(strings.TrimSpace(after), " (")
		if filepath.IsAbs(path) {
			libs[path] = path
		}
	}
	return libs, nil
}

// checkUpgradeBackup: check-status records the upgrade's six steps with the backup; the dump,
// copied out of the unit and restored into a fresh database, holds 7.14.3's schema, which the
// real 7.14.3 reads back (migrate --current-db-version) and supports.
func checkUpgradeBackup(t *testing.T, f *RealFixture, s *Scenario) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, err := s.C.RunAction(ctx, u0, "check-status", map[string]any{"verbose": false})
	if err != nil {
		t.Fatalf("check-status: %v", err)
	}
	t.Logf("last-upgrade: %s\nlast-upgrade-steps: %s\nversion-line: %s", a.Results["last-upgrade"], a.Results["last-upgrade-steps"], a.Results["version-line"])
	if !strings.HasPrefix(a.Results["last-upgrade"], V1+" → "+V2) || !strings.HasSuffix(a.Results["last-upgrade"], ": completed") {
		t.Errorf("check-status last-upgrade = %q; want %s → %s completed", a.Results["last-upgrade"], V1, V2)
	}
	steps := a.Results["last-upgrade-steps"]
	last := -1
	for _, name := range []string{"pause ", "stop ", "backup ", "migrate ", "start ", "resume "} {
		i := strings.Index(steps, name)
		if i <= last {
			t.Errorf("check-status last-upgrade-steps = %q; want %q after the steps before it", steps, name)
		}
		last = i
	}
	if !strings.Contains(steps, "no component API") {
		t.Errorf("last-upgrade-steps = %q; want the pause skipped on 7.14.3", steps)
	}
	dump := a.Results["last-upgrade-backup"]
	if !strings.HasPrefix(dump, "/var/lib/concourse-charm/backups/concourse-"+strconv.FormatInt(schema714, 10)+"-") {
		t.Fatalf("last-upgrade-backup = %q; want a dump of schema %d under /var/lib/concourse-charm/backups", dump, schema714)
	}
	st, err := s.Unit(t, u0).Machine.Stat(dump)
	if err != nil || st.Mode.Perm() != 0o600 || st.UID != 0 {
		t.Errorf("dump %s: %+v %v; want 0600 root", dump, st, err)
	}
	b, err := s.Unit(t, u0).Machine.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), filepath.Base(dump))
	if err := os.WriteFile(local, b, 0o644); err != nil { // the postgres user's pg_restore reads it
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(local), 0o755); err != nil {
		t.Fatal(err)
	}
	// A fresh database, owned by a new role, restored from the dump as that role with the very
	// command a failed upgrade's status prints (concourse.RestoreCommand).
	name := s.DB + "_restored"
	role, pass := "restorer_"+s.C.Bed.ID(), "restore-pw"
	f.PG.CreateRole(t, role, pass)
	f.PG.CreateDatabase(t, name, role)
	db := concourse.DBConfig{Host: f.PG.Host(), Port: f.PG.Port(), User: role, Password: pass, Database: name}
	restore := exec.CommandContext(ctx, "sh", "-c", concourse.RestoreCommand(local, db))
	restore.Env = []string{"PGPASSWORD=" + pass, "PATH=/usr/bin:/bin"}
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("restoring %s (%d bytes): %v\n%s", dump, len(b), err, cut(string(out), 2000))
	}
	var env []string
	for _, v := range db.Env() {
		env = append(env, v.Name+"="+v.Value)
	}
	m := concourse.Migrator{Binary: f.Set.Concourse(V1), Env: env}
	current, err := m.CurrentVersion(ctx)
	if err != nil {
		t.Fatalf("real %s migrate --current-db-version on the restored dump: %v", V1, err)
	}
	supported, err := m.SupportedVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if current != schema714 || supported != current {
		t.Errorf("restored dump: real %s says schema %d (supports %d); want %d", V1, current, supported, schema714)
	}
	t.Logf("dump %s (%d bytes) restored into %s: real %s reads schema %d, the one it supports", dump, len(b), name, V1, current)
}
