package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// upgradeDeps are the upgrade steps' fakes: pg_dump where w.pgDump says, a Backup that writes a
// dump file and records "backup" in w.prepared, and a component API that answers like the web
// the unit's systemd unit starts (7.x has none) and records "pause"/"unpause".
func (w *world) upgradeDeps(paths Paths) UpgradeDeps {
	return UpgradeDeps{
		LookPGDump: func() (string, error) {
			if w.pgDump == "" {
				return "", errors.New("pg_dump is not installed (looked in PATH and /usr/lib/postgresql/*/bin)")
			}
			return w.pgDump, nil
		},
		Backup: func(_ context.Context, db concourse.DBConfig, dir string, keep int, pgDump string) (string, error) {
			w.prepared = append(w.prepared, "backup")
			if w.backupErr != nil {
				return "", w.backupErr
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return "", err
			}
			p := filepath.Join(dir, fmt.Sprintf("concourse-%d-20261202T050000Z.dump", w.current))
			return p, os.WriteFile(p, []byte("PGDMP"), 0o600)
		},
		Components: func(_ context.Context, _, user, password string, pause bool) error {
			unit, err := os.ReadFile(filepath.Join(paths.SystemdDir, webService))
			if err != nil {
				return err
			}
			if strings.Contains(string(unit), "/versions/7.") {
				return concourse.ErrComponentsUnsupported
			}
			if user != "admin" || password == "" {
				return fmt.Errorf("login as %q refused", user)
			}
			op := "unpause"
			if pause {
				op = "pause"
			}
			w.prepared = append(w.prepared, op)
			return nil
		},
	}
}

// releaseList serves GitHub's release list with versions (newest first) and counts requests.
func releaseList(t *testing.T, versions ...string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	gh := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n.Add(1)
		var out []map[string]any
		for _, v := range versions {
			out = append(out, map[string]any{"tag_name": "v" + v})
		}
		if !strings.HasSuffix(r.URL.Path, "/releases") {
			http.NotFound(rw, r)
			return
		}
		_ = json.NewEncoder(rw).Encode(out)
	}))
	t.Cleanup(gh.Close)
	return gh, &n
}

// oldBinary makes the release's binary exist in the fake install root, as the real store keeps
// `previous` on disk, so a rollback finds it.
func oldBinary(t *testing.T, w *world, unit, v string) {
	t.Helper()
	p := filepath.Join(w.paths(unit).Root, "versions", v, "bin", "concourse")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (w *world) target() string {
	return w.m.AppData(w.m.RelationID(app, "peers"), app)[keyTargetVersion]
}

func (w *world) upgradeRecord(unit string) *UpgradeRecord {
	w.t.Helper()
	st, err := loadState(w.paths(unit).StateDir)
	if err != nil {
		w.t.Fatal(err)
	}
	return st.Upgrade
}

func stepNames(rec *UpgradeRecord) []string {
	var out []string
	for _, s := range rec.Steps {
		out = append(out, s.Name)
	}
	return out
}

// A release line is resolved by the leader, in the events that reconsider it, into the exact
// target every unit follows; steady hooks (and the other units) ask GitHub nothing, and an exact
// version asks nothing at all.
func TestVersionLineResolvedOnceByTheLeader(t *testing.T) {
	cases := []struct {
		name, version, want string
		calls               bool
	}{
		{"minor-line", "8.2", "8.2.5", true},
		{"major-line", "7", "7.14.3", true},
		{"exact", "8.2.4", "8.2.4", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gh, calls := releaseList(t, "8.2.5", "7.14.3", "8.2.4", "8.1.0")
			w := newWorld(t, 2, map[string]any{"version": c.version, "shared-storage": "lxc"})
			w.schema["8.2.4"] = 1776000000
			w.githubAPI = gh.URL
			w.deploy()
			if got := w.target(); got != c.want {
				t.Fatalf("target-version = %q; want %q", got, c.want)
			}
			if c.calls != (calls.Load() > 0) {
				t.Errorf("GitHub requests during the deploy: %d; want some: %t", calls.Load(), c.calls)
			}
			w.wantStatus(u1, fmt.Sprintf("active: Worker ready (v%s)", c.want))
			if r := checkStatusOf(t, w, u0); c.calls != (r["version-line"] == c.version+" resolves to "+c.want) {
				t.Errorf("check-status version-line = %q", r["version-line"])
			}
			before := calls.Load()
			for _, u := range []string{u0, u1, u0} {
				w.mustHook(u, "update-status")
			}
			if got := calls.Load() - before; got != 0 {
				t.Errorf("GitHub requests in steady update-status hooks: %d; want 0", got)
			}
		})
	}
}

// 7.14.3 → 8.x waits for allow-major-upgrade naming the target's major (or the exact target);
// until then nothing is installed, stopped or migrated, and the status says what to run. A
// confirmation left from that jump does not approve the next one.
func TestMajorUpgradeHeldUntilConfirmed(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.schema["9.0.0"] = 1800000000
	w.deploy()
	w.addPostgres()
	old := w.current
	held := "blocked: Upgrade 7.14.3 → 8.2.5 crosses a major version (7 → 8) and is held: run `juju config concourse-ci-machine allow-major-upgrade=8` to go ahead (consider upgrade-backup=true first)"
	for _, c := range []struct{ name, approval string }{
		{"unconfirmed", ""},
		{"wrong-major", "9"},
		{"other-exact", "8.2.4"},
	} {
		w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": c.approval})
		w.mustHook(u0, "config-changed")
		w.mustHook(u1, "config-changed")
		w.settle()
		w.wantStatus(u0, held)
		w.wantStatus(u1, held)
		if w.current != old || w.store(w.paths(u0).Root).installed != "7.14.3" || !w.svcs[u0].active[webService] {
			t.Fatalf("%s: schema %d, installed %q, web active %t; want nothing touched", c.name, w.current,
				w.store(w.paths(u0).Root).installed, w.svcs[u0].active[webService])
		}
	}
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	w.mustHook(u0, "config-changed")
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v8.2.5) http://127.0.2.10:8080")
	w.wantStatus(u1, "active: Worker ready (v8.2.5)")

	// allow-major-upgrade=8 still set: 9.0.0 is held again.
	w.m.SetConfig(app, map[string]any{"version": "9.0.0"})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "blocked: Upgrade 8.2.5 → 9.0.0 crosses a major version (8 → 9) and is held: run `juju config concourse-ci-machine allow-major-upgrade=9` to go ahead (consider upgrade-backup=true first)")
	if w.current != w.schema["8.2.5"] {
		t.Errorf("schema %d after a held 9.0.0; want 8.2.5's", w.current)
	}
}

// The steps of an upgrade run in order (pause, stop, backup, migrate, start, resume), each shown
// in the status while it runs and recorded with its times for check-status.
func TestUpgradeStepsInOrder(t *testing.T) {
	cases := []struct {
		name, from, to string
		approval       string
		// wantOrder is w.prepared from the upgrade on: pause/unpause on 8.2+, backup before the
		// migration, the database preparation of the start.
		wantOrder []string
		pauseNote string
	}{
		{"7-to-8", "7.14.3", "8.2.5", "8", []string{"backup", "prepare", "migrate"}, "skipped: Concourse 7.14.3 has no component API (8.2 and later pause)"},
		{"8.2-patch", "8.2.4", "8.2.5", "", []string{"pause", "backup", "prepare", "migrate", "unpause"}, "paused tracker, scanner, scheduler"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 2, map[string]any{"version": c.from, "shared-storage": "lxc", "upgrade-backup": true})
			w.schema["8.2.4"] = 1776000000
			w.pgDump = "/usr/lib/postgresql/16/bin/pg_dump"
			var seen []string
			w.wrap = func(unit string, r juju.Runner) juju.Runner {
				return statusRecorder{r, &seen}
			}
			w.deploy()
			w.addPostgres()
			w.wantStatus(u0, fmt.Sprintf("active: Web server ready (v%s) http://127.0.2.10:8080", c.from))
			w.prepared, seen = nil, nil
			w.m.SetConfig(app, map[string]any{"version": c.to, "allow-major-upgrade": c.approval})
			w.mustHook(u0, "config-changed")
			w.settle()
			w.wantStatus(u0, fmt.Sprintf("active: Web server ready (v%s) http://127.0.2.10:8080", c.to))
			w.wantStatus(u1, fmt.Sprintf("active: Worker ready (v%s)", c.to))
			if !slices.Equal(w.prepared, c.wantOrder) {
				t.Errorf("order = %v; want %v", w.prepared, c.wantOrder)
			}
			var steps []string
			for _, m := range seen {
				if strings.HasPrefix(m, "Upgrading ") {
					steps = append(steps, m)
				}
			}
			wantSeen := []string{
				fmt.Sprintf("Upgrading %s → %s: stopping the web (2/6)", c.from, c.to),
				fmt.Sprintf("Upgrading %s → %s: backing up the database (3/6)", c.from, c.to),
				fmt.Sprintf("Upgrading %s → %s: migrating the database (4/6)", c.from, c.to),
				fmt.Sprintf("Upgrading %s → %s: starting the web (5/6)", c.from, c.to),
			}
			if c.name == "8.2-patch" {
				wantSeen = append([]string{fmt.Sprintf("Upgrading %s → %s: pausing the build components (1/6)", c.from, c.to)}, wantSeen...)
				wantSeen = append(wantSeen, fmt.Sprintf("Upgrading %s → %s: resuming the build components (6/6)", c.from, c.to))
			} else {
				wantSeen = append([]string{fmt.Sprintf("Upgrading %s → %s: pausing the build components (1/6)", c.from, c.to)}, wantSeen...)
			}
			if !slices.Equal(steps, wantSeen) {
				t.Errorf("upgrade statuses seen:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(wantSeen, "\n"))
			}
			rec := w.upgradeRecord(u0)
			if rec == nil || rec.Result != "completed" || rec.From != c.from || rec.To != c.to {
				t.Fatalf("recorded upgrade = %+v; want %s → %s completed", rec, c.from, c.to)
			}
			if got, want := stepNames(rec), upgradeSteps; !slices.Equal(got, want) {
				t.Errorf("recorded steps %v; want %v", got, want)
			}
			for i, s := range rec.Steps {
				if s.Start.IsZero() || s.End.Before(s.Start) || (i > 0 && s.Start.Before(rec.Steps[i-1].Start)) {
					t.Errorf("step %s: start %v, end %v; want ordered times", s.Name, s.Start, s.End)
				}
			}
			if rec.Steps[0].Note != c.pauseNote {
				t.Errorf("pause step note %q; want %q", rec.Steps[0].Note, c.pauseNote)
			}
			if !strings.HasPrefix(filepath.Base(rec.Backup), "concourse-") || !strings.HasPrefix(rec.Backup, w.paths(u0).StateDir) {
				t.Errorf("backup %q; want a dump under the unit's state dir %s", rec.Backup, w.paths(u0).StateDir)
			}
			r := checkStatusOf(t, w, u0)
			if !strings.Contains(r["last-upgrade"], c.from+" → "+c.to) || !strings.HasSuffix(r["last-upgrade"], ": completed") ||
				!strings.Contains(r["last-upgrade-steps"], "backup ") || r["last-upgrade-backup"] != rec.Backup {
				t.Errorf("check-status last-upgrade = %q, steps = %q, backup = %q", r["last-upgrade"], r["last-upgrade-steps"], r["last-upgrade-backup"])
			}
		})
	}
}

// With upgrade-backup on and no pg_dump on the unit, the upgrade is held with nothing stopped and
// the status says how to install it; once it is there, the upgrade goes on.
func TestUpgradeBackupNeedsPGDump(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"version": "7.14.3", "mode": "web", "upgrade-backup": true})
	w.deploy()
	w.addPostgres()
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8.2.5"})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "blocked: Upgrade to Concourse 8.2.5 held: upgrade-backup is on and pg_dump is not installed (looked in PATH and /usr/lib/postgresql/*/bin): install it with `juju exec --unit concourse-ci-machine/0 -- apt-get install -y postgresql-client` (at least the server's major version), or set upgrade-backup=false")
	if !w.svcs[u0].active[webService] || w.current != w.schema["7.14.3"] || slices.Contains(w.prepared, "backup") {
		t.Fatalf("web active %t, schema %d, order %v; want the old web running, nothing migrated or dumped", w.svcs[u0].active[webService], w.current, w.prepared)
	}
	w.pgDump = "/usr/bin/pg_dump"
	w.mustHook(u0, "update-status")
	w.wantStatus(u0, "active: Web server ready (v8.2.5) http://127.0.2.10:8080")
	if i, j := slices.Index(w.prepared, "backup"), slices.Index(w.prepared[max(0, slices.Index(w.prepared, "backup")):], "migrate"); i < 0 || j < 0 {
		t.Errorf("order %v; want a backup, then the migration", w.prepared)
	}
}

// A failing migration brings the previous release back when the schema is still one it
// supports, else keeps the web stopped; the status names the dump and the restore command in
// both cases, and the failed target is not retried until the next config-changed.
func TestFailedMigrationRestoresThePreviousRelease(t *testing.T) {
	cases := []struct {
		name     string
		leaves   int64 // schema the failed migration leaves (0: unchanged)
		restored bool
	}{
		{"schema-unchanged", 0, true},
		{"schema-moved", 1770000000, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 1, map[string]any{"version": "7.14.3", "mode": "web", "upgrade-backup": true})
			w.pgDump = "/usr/bin/pg_dump"
			w.deploy()
			db := w.addPostgres()
			oldBinary(t, w, u0, "7.14.3")
			w.migrateErr, w.migrateLeaves = errors.New("migration 1770000001 failed: deadlock detected"), c.leaves
			w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
			w.mustHook(u0, "config-changed")
			rec := w.upgradeRecord(u0)
			if rec == nil || !rec.Failed || rec.Backup == "" {
				t.Fatalf("record %+v; want a failed upgrade with its backup", rec)
			}
			restore := concourse.RestoreCommand(rec.Backup, concourse.DBConfig{Host: "127.0.2.99", Port: 5432, User: fmt.Sprintf("relation-%d", db), Database: "concourse"})
			s := w.status(u0)
			for _, want := range []string{"blocked: Upgrade to Concourse 8.2.5 failed: Database migration to schema 1776182280 failed: migration 1770000001 failed: deadlock detected",
				"restore " + rec.Backup, restore, "any `juju config` change retries"} {
				if !strings.Contains(s, want) {
					t.Errorf("status %q\nlacks %q", s, want)
				}
			}
			if strings.Contains(s, "s3cret-pw") {
				t.Errorf("status shows the database password: %q", s)
			}
			unit := w.readFileAt(w.paths(u0).SystemdDir, webService)
			if c.restored {
				if !strings.Contains(s, "Concourse 7.14.3 runs again") || !w.svcs[u0].active[webService] || !strings.Contains(unit, "/versions/7.14.3/") {
					t.Errorf("web active %t, unit %q; want 7.14.3 running again (status %q)", w.svcs[u0].active[webService], unit, s)
				}
			} else if !strings.Contains(s, "the web stays stopped") || w.svcs[u0].active[webService] {
				t.Errorf("web active %t; want it stopped on a schema 7.14.3 does not know (status %q)", w.svcs[u0].active[webService], s)
			}
			// Steady hooks neither retry nor touch the web; the status stays.
			migrations := len(w.migrated)
			w.mustHook(u0, "update-status")
			if len(w.migrated) != migrations || w.svcs[u0].active[webService] != c.restored {
				t.Errorf("update-status: %d migrations more, web active %t", len(w.migrated)-migrations, w.svcs[u0].active[webService])
			}
			if got := w.status(u0); got != s {
				t.Errorf("status after update-status %q; want it unchanged", got)
			}
			// Fixed: a config change retries.
			w.migrateErr = nil
			w.m.SetConfig(app, map[string]any{"log-level": "debug"})
			w.mustHook(u0, "config-changed")
			w.wantStatus(u0, "active: Web server ready (v8.2.5) http://127.0.2.10:8080")
			// The retry is a new upgrade: the old web took writes since the first dump, so it
			// dumps again, and its steps are its own.
			if again := w.upgradeRecord(u0); again == nil || again.Backup == "" || again.Result != "completed" || countSteps(again, stepBackup) != 1 || countSteps(again, stepMigrate) != 1 {
				t.Errorf("retry record %+v; want a completed upgrade with its own backup and migrate steps", again)
			}
		})
	}
}

func countSteps(rec *UpgradeRecord, name string) int {
	n := 0
	for _, s := range rec.Steps {
		if s.Name == name {
			n++
		}
	}
	return n
}

// readFileAt reads a file of the world, failing the test when it is missing.
func (w *world) readFileAt(dir, name string) string {
	w.t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		w.t.Fatal(err)
	}
	return string(b)
}

// checkStatusOf runs the check-status action on unit and returns its results.
func checkStatusOf(t *testing.T, w *world, unit string) map[string]string {
	t.Helper()
	if err := w.hook(unit, jujutest.HookInfo{ActionName: "check-status", ActionParams: map[string]any{"verbose": false}}); err != nil {
		t.Fatal(err)
	}
	acts := w.m.Actions()
	return acts[len(acts)-1].Results
}

// statusRecorder records every status-set message a hook sends (the mid-hook ones included).
type statusRecorder struct {
	juju.Runner
	seen *[]string
}

func (s statusRecorder) Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	if tool == "status-set" && len(args) > 0 {
		*s.seen = append(*s.seen, args[len(args)-1])
	}
	return s.Runner.Run(ctx, tool, args, stdin)
}

// A failed backup (after the stop, before anything migrated) starts the old web again and holds
// the upgrade; nothing is migrated.
func TestFailedBackupStartsTheOldWebAgain(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"version": "7.14.3", "mode": "web", "upgrade-backup": true})
	w.pgDump = "/usr/bin/pg_dump"
	w.deploy()
	w.addPostgres()
	oldBinary(t, w, u0, "7.14.3")
	migrations := len(w.migrated)
	w.backupErr = errors.New(`pg_dump: error: server version: 16.6; pg_dump version: 15.14; aborting because of server version mismatch`)
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "blocked: Upgrade to Concourse 8.2.5 stopped: the backup failed (pg_dump: error: server version: 16.6; pg_dump version: 15.14; aborting because of server version mismatch); Concourse 7.14.3 runs again; fixed? any `juju config` change retries")
	if w.current != w.schema["7.14.3"] || len(w.migrated) != migrations {
		t.Errorf("schema %d, %d migrations; want 7.14.3's, nothing migrated", w.current, len(w.migrated)-migrations)
	}
	if calls := webCalls(w, u0); !w.svcs[u0].active[webService] || calls[len(calls)-1] != "start" {
		t.Errorf("web calls %v; want the old web started again", calls)
	}
	rec := w.upgradeRecord(u0)
	if got := stepNames(rec); !slices.Equal(got, []string{stepPause, stepStop, stepBackup}) {
		t.Errorf("recorded steps %v; want pause, stop, backup", got)
	}
	w.mustHook(u0, "update-status")
	if w.current != w.schema["7.14.3"] || !w.svcs[u0].active[webService] {
		t.Errorf("update-status: schema %d, web active %t; want no retry", w.current, w.svcs[u0].active[webService])
	}
}

// With several webs (mode=web -n 3, shared web keys), every web stops for an upgrade and the
// leader migrates. When the leader's migration fails, the other webs do as the leader's: run the
// old release again when the leader's does (one start each), stay stopped when it cannot, or
// when their own old binary is gone; their status names the failed upgrade and points at the
// leader's. A config change retries, and all three end on the new release, the leader first.
func TestFailedMigrationOnTheLeaderHoldsTheOtherWebs(t *testing.T) {
	const (
		failed  = "blocked: Upgrade 7.14.3 → 8.2.5 failed on the leader concourse-ci-machine/0"
		see     = "; see concourse-ci-machine/0's status for the cause and the restore instructions; fixed? any `juju config` change retries"
		runs    = failed + ": Concourse 7.14.3 runs again here" + see
		stopped = failed + ", whose web could not run Concourse 7.14.3 again: this web stays stopped too (the database schema may be past what 7.14.3 supports)" + see
	)
	cases := []struct {
		name     string
		leaves   int64 // schema the failed migration leaves (0: unchanged)
		noBinary bool  // u2's 7.14.3 binary is gone
		want     map[string]string
		running  map[string]bool // webs running 7.14.3 again
	}{
		{name: "restored", want: map[string]string{u1: runs, u2: runs}, running: map[string]bool{u0: true, u1: true, u2: true}},
		{name: "schema-moved", leaves: 1770000000, want: map[string]string{u1: stopped, u2: stopped}, running: map[string]bool{}},
		{name: "binary-gone", noBinary: true, running: map[string]bool{u0: true, u1: true}, want: map[string]string{u1: runs,
			u2: failed + ": Concourse 7.14.3 cannot run again here, its binary " + filepath.Join("UNIT2", "versions/7.14.3/bin/concourse") +
				" is gone: this web stays stopped; `juju config concourse-ci-machine version=7.14.3` goes back to it everywhere" + see}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 3, map[string]any{"version": "7.14.3", "mode": "web", "upgrade-backup": true})
			w.pgDump = "/usr/bin/pg_dump"
			w.deploy()
			w.addPostgres()
			w.settle()
			units := []string{u0, u1, u2}
			for _, u := range units {
				if !c.noBinary || u != u2 {
					oldBinary(t, w, u, "7.14.3")
				}
				w.wantStatus(u, fmt.Sprintf("active: Web server ready (v7.14.3) http://127.0.2.%d:8080", 10+slices.Index(units, u)))
			}
			if want, ok := c.want[u2]; ok {
				c.want[u2] = strings.Replace(want, "UNIT2", w.paths(u2).Root, 1)
			}
			before := map[string]int{}
			for _, u := range units {
				before[u] = len(webCalls(w, u))
			}
			migrations := len(w.migrated)
			w.failUpgradeOfWebs(c.leaves, units...)
			if got := w.migrated[migrations:]; len(got) != 1 || len(got[0]) != 0 {
				t.Fatalf("migrations %v; want one failed migration, with every web stopped", got)
			}
			rec := w.upgradeRecord(u0)
			if rec == nil || !rec.Failed || rec.Restored != (c.leaves == 0) {
				t.Fatalf("leader's record %+v; want failed, restored %t", rec, c.leaves == 0)
			}
			if s := w.status(u0); !strings.Contains(s, "restore "+rec.Backup) {
				t.Errorf("leader status %q; want the restore instructions", s)
			}
			check := func(when string) {
				t.Helper()
				for _, u := range units[1:] {
					w.wantStatus(u, c.want[u])
				}
				for _, u := range units {
					calls := webCalls(w, u)[before[u]:]
					starts := 0
					for _, call := range calls {
						if call == "start" || call == "restart" {
							starts++
						}
					}
					want := 0
					if c.running[u] {
						want = 1
					}
					if w.svcs[u].active[webService] != c.running[u] || starts != want {
						t.Errorf("%s: %s web active %t, calls %v; want running 7.14.3 %t after %d start(s)", when, u, w.svcs[u].active[webService], calls, c.running[u], want)
					}
					if c.running[u] && !strings.Contains(w.readFileAt(w.paths(u).SystemdDir, webService), "/versions/7.14.3/") {
						t.Errorf("%s: %s web unit does not run 7.14.3", when, u)
					}
				}
			}
			check("after the failure")
			if got := w.m.AppData(w.m.RelationID(app, "peers"), app)[keyUpgradeHeld]; !strings.HasPrefix(got, "7.14.3 8.2.5 ") {
				t.Errorf("upgrade-held = %q; want the failed upgrade published", got)
			}
			// Steady hooks change nothing: no retry, no start, the same statuses.
			for _, u := range units {
				w.mustHook(u, "update-status")
			}
			w.settle()
			check("after update-status")
			if len(w.migrated) != migrations+1 {
				t.Errorf("%d migrations in steady hooks; want none", len(w.migrated)-migrations-1)
			}

			// Fixed: a config change retries. The others' config-changed may come first; they
			// keep following the leader's hold until its own retries it.
			w.migrateErr = nil
			oldBinary(t, w, u2, "7.14.3")
			w.m.SetConfig(app, map[string]any{"log-level": "debug"})
			for _, u := range []string{u1, u2, u0} {
				w.mustHook(u, "config-changed")
			}
			w.settle()
			if got := w.migrated[migrations+1:]; len(got) != 1 || len(got[0]) != 0 {
				t.Errorf("migrations of the retry %v; want one, with every web stopped (the leader's first, then the others start)", got)
			}
			for i, u := range units {
				w.wantStatus(u, fmt.Sprintf("active: Web server ready (v8.2.5) http://127.0.2.%d:8080", 10+i))
			}
			if got := w.m.AppData(w.m.RelationID(app, "peers"), app)[keyUpgradeHeld]; got != "" {
				t.Errorf("upgrade-held = %q after the retry; want it removed", got)
			}
		})
	}
}

// failUpgradeOfWebs starts 7.14.3 → 8.2.5 on units with a migration that fails, leaving the
// database at schema leaves (0: unchanged), and settles.
func (w *world) failUpgradeOfWebs(leaves int64, units ...string) {
	w.t.Helper()
	w.migrateErr, w.migrateLeaves = errors.New("migration 1770000001 failed: deadlock detected"), leaves
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	for _, u := range units {
		w.mustHook(u, "config-changed")
	}
	w.settle()
}

// A leader elected while the previous leader's failed upgrade is held keeps the hold (it does
// not retry the upgrade by itself) until the operator retries with a config change.
func TestHeldUpgradeSurvivesALeadershipChange(t *testing.T) {
	w := newWorld(t, 3, map[string]any{"version": "7.14.3", "mode": "web"})
	w.deploy()
	w.addPostgres()
	units := []string{u0, u1, u2}
	for _, u := range units {
		oldBinary(t, w, u, "7.14.3")
	}
	migrations := len(w.migrated)
	w.failUpgradeOfWebs(0, units...)
	held := "7.14.3 8.2.5 restored concourse-ci-machine/0"
	peers := w.m.RelationID(app, "peers")
	if got := w.m.AppData(peers, app)[keyUpgradeHeld]; got != held {
		t.Fatalf("upgrade-held = %q; want %q", got, held)
	}
	w.m.SetLeader(app, u1)
	w.mustHook(u1, "leader-elected")
	w.mustHook(u0, "leader-settings-changed")
	w.mustHook(u2, "leader-settings-changed")
	w.settle()
	if got := len(w.migrated) - migrations; got != 1 {
		t.Errorf("%d migrations after the leadership change; want only the failed one", got)
	}
	for _, u := range units {
		if !w.svcs[u].active[webService] {
			t.Errorf("%s web stopped after the leadership change; want 7.14.3 running", u)
		}
	}
	if got := w.m.AppData(peers, app)[keyUpgradeHeld]; got != held {
		t.Errorf("upgrade-held = %q under the new leader; want %q kept", got, held)
	}
	w.wantStatus(u1, "blocked: Upgrade 7.14.3 → 8.2.5 failed on the leader concourse-ci-machine/0: Concourse 7.14.3 runs again here; see concourse-ci-machine/0's status for the cause and the restore instructions; fixed? any `juju config` change retries")
	if s := w.status(u0); !strings.HasPrefix(s, "blocked: Upgrade to Concourse 8.2.5 failed: ") {
		t.Errorf("old leader status %q; want its own failure", s)
	}

	w.migrateErr = nil
	w.m.SetConfig(app, map[string]any{"log-level": "debug"})
	for _, u := range units {
		w.mustHook(u, "config-changed")
	}
	w.settle()
	for i, u := range units {
		w.wantStatus(u, fmt.Sprintf("active: Web server ready (v8.2.5) http://127.0.2.%d:8080", 10+i))
	}
	if got := w.m.AppData(peers, app)[keyUpgradeHeld]; got != "" {
		t.Errorf("upgrade-held = %q after the retry; want it removed", got)
	}
}

// A web unit added while the leader's failed upgrade is held installs the target but never
// migrates the schema under the leader's old web: it waits, stopped, for the leader, and starts
// once the leader's retry has moved the database.
func TestWebJoiningDuringAHeldUpgradeDoesNotMigrate(t *testing.T) {
	w := newWorld(t, 2, map[string]any{"version": "7.14.3", "mode": "web"})
	w.deploy()
	w.addPostgres()
	for _, u := range []string{u0, u1} {
		oldBinary(t, w, u, "7.14.3")
	}
	w.failUpgradeOfWebs(0, u0, u1)
	migrations := len(w.migrated)
	u := w.addUnit("127.0.2.12")
	if len(w.migrated) != migrations {
		t.Fatalf("the joining web migrated the database during the held upgrade: %v", w.migrated[migrations:])
	}
	if w.svcs[u].active[webService] {
		t.Errorf("the joining web started on 8.2.5 under the leader's 7.14.3")
	}
	w.wantStatus(u, "waiting: Waiting for the leader to migrate the database to Concourse 8.2.5 (schema 1746768931 → 1776182280) before this web starts")
	// Fixed and retried: the leader migrates once, and the new web follows.
	w.migrateErr = nil
	w.m.SetConfig(app, map[string]any{"log-level": "debug"})
	for _, unit := range []string{u0, u1, u} {
		w.mustHook(unit, "config-changed")
	}
	w.settle()
	if n := len(w.migrated) - migrations; n != 1 {
		t.Errorf("%d migrations after the retry; want the leader's one", n)
	}
	for _, unit := range []string{u0, u1, u} {
		if !strings.HasPrefix(w.status(unit), "active: Web server ready (v8.2.5)") {
			t.Errorf("%s: %s; want the web ready on 8.2.5", unit, w.status(unit))
		}
	}
}
