package hooks

import (
	"slices"
	"strings"
	"testing"
)

// A worker unit that is removed leaves the web's authorized keys in the web's departed hook, so
// it can no longer retire through the TSA by itself: the web retires it through the API, and the
// leaving unit's own stop still tells its worker to retire (SIGUSR2) before stopping it.
func TestDepartedWorkerIsRetiredByTheWeb(t *testing.T) {
	w := newWorld(t, 3, pinned)
	w.deploy()
	w.addPostgres()
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	evs := w.m.RemoveUnit(u2)
	w.queue = append(w.queue, evs...)
	w.settle()
	w.mustHook(u2, "stop")
	if !slices.Equal(w.retired, []string{"concourse-ci-machine-2"}) {
		t.Errorf("workers retired through the API = %v; want only concourse-ci-machine-2", w.retired)
	}
	calls := strings.Join(w.svcs[u2].calls, ",")
	if !strings.Contains(calls, "kill SIGUSR2 "+workerSvc+",stop "+workerSvc) {
		t.Errorf("%s service calls %s; want its worker told to retire, then stopped", u2, calls)
	}
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
}
