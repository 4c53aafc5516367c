package hooks

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// webCalls is the unit's service calls on the web, in order.
func webCalls(w *world, unit string) []string {
	var out []string
	for _, c := range w.svcs[unit].calls {
		if strings.HasSuffix(c, " "+webService) {
			out = append(out, strings.TrimSuffix(c, " "+webService))
		}
	}
	return out
}

// An upgrade stops the old web before the new release migrates the database, then starts the new
// one: the old binary never runs on a schema it does not know.
func TestUpgradeStopsTheWebBeforeMigrating(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	migrations := len(w.migrated)
	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	w.mustHook(u0, "config-changed")
	if got := w.migrated[migrations:]; len(got) != 1 || len(got[0]) != 0 {
		t.Errorf("migrations during the upgrade, with the webs running at each: %v; want one, with no web running", got)
	}
	calls := webCalls(w, u0)
	stop := slices.Index(calls, "stop")
	if stop < 0 || slices.Contains(calls[stop:], "restart") || !slices.Contains(calls[stop:], "start") {
		t.Errorf("%s web calls = %v; want a stop, then a start (no restart of the old process)", u0, calls)
	}
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v8.2.5) http://127.0.2.10:8080")
	w.wantStatus(u1, "active: Worker ready (v8.2.5)")
}

// With several webs in the application, every old web stops before the one migration: the leader
// waits for the others, they wait (stopped) for the leader, and all start on the new schema.
func TestUpgradeEveryWebStopsBeforeTheMigration(t *testing.T) {
	w := newWorld(t, 2, map[string]any{"version": "7.14.3", "mode": "web"})
	w.deploy()
	w.addPostgres()
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	w.wantStatus(u1, "active: Web server ready (v7.14.3) http://127.0.2.11:8080")
	migrations := len(w.migrated)
	old := w.schema["7.14.3"]

	w.m.SetConfig(app, map[string]any{"version": "8.2.5", "allow-major-upgrade": "8"})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, fmt.Sprintf("waiting: Waiting for %s (running 7.14.3) to stop before migrating the database to Concourse 8.2.5", u1))
	if w.current != old || w.svcs[u0].active[webService] {
		t.Fatalf("leader: schema %d, web active %t; want the schema untouched and its web stopped while %s runs 7.14.3",
			w.current, w.svcs[u0].active[webService], u1)
	}
	w.mustHook(u1, "config-changed")
	w.wantStatus(u1, fmt.Sprintf("waiting: Waiting for the leader to migrate the database to Concourse 8.2.5 (schema %d → %d)", old, w.schema["8.2.5"]))
	if w.current != old || w.svcs[u1].active[webService] {
		t.Fatalf("%s: schema %d, web active %t; want it stopped, and no migration but the leader's", u1, w.current, w.svcs[u1].active[webService])
	}
	w.settle()
	if got := w.migrated[migrations:]; len(got) != 1 || len(got[0]) != 0 {
		t.Errorf("migrations during the upgrade, with the webs running at each: %v; want one, with no web running", got)
	}
	w.wantStatus(u0, "active: Web server ready (v8.2.5) http://127.0.2.10:8080")
	w.wantStatus(u1, "active: Web server ready (v8.2.5) http://127.0.2.11:8080")
}
