package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The drain side of systemd as the charm sees it (drainControl). A busy unit's stop or restart
// leaves it deactivating (IsActive false, as `systemctl is-active` says) until exitDrain; an idle
// one finishes at once, as an idle worker lands within a second.
func (f *fakeServices) ActiveState(_ context.Context, u string) (string, error) {
	switch {
	case f.pending[u] != "":
		return "deactivating", nil
	case f.active[u]:
		return "active", nil
	}
	return "inactive", nil
}

func (f *fakeServices) RestartNoBlock(_ context.Context, u string) error {
	f.log("restart --no-block " + u)
	f.queue(u, "restart")
	return nil
}

func (f *fakeServices) StopNoBlock(_ context.Context, u string) error {
	f.log("stop --no-block " + u)
	f.queue(u, "stop")
	return nil
}

func (f *fakeServices) queue(u, job string) {
	if f.pending == nil {
		f.pending = map[string]string{}
	}
	if f.active[u] && f.busy[u] || f.pending[u] != "" {
		f.active[u] = false
		f.pending[u] = job
		return
	}
	if job == "restart" && f.onRestart != nil {
		f.onRestart(u) // the new process starts now: what it reads is what is on disk now
	}
	f.active[u] = job == "restart"
}

// exitDrain is the drained worker exiting: systemd runs what the pending job asks.
func (f *fakeServices) exitDrain(u string) {
	f.busy[u] = false
	if f.pending[u] == "restart" {
		if f.onRestart != nil {
			f.onRestart(u)
		}
		f.active[u] = true
		f.log("systemd start " + u + " after the drain")
	}
	delete(f.pending, u)
}

// fakeGarden answers GET /containers like the real worker's Garden (seen with 7.14.3, houdini).
type fakeGarden struct {
	mu sync.Mutex
	n  int
}

func (g *fakeGarden) set(n int) { g.mu.Lock(); g.n = n; g.mu.Unlock() }

func serveGarden(t *testing.T, w *world) *fakeGarden {
	g := &fakeGarden{}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/containers" {
			http.NotFound(rw, r)
			return
		}
		g.mu.Lock()
		handles := []string{}
		for i := 0; i < g.n; i++ {
			handles = append(handles, fmt.Sprintf("h%d", i))
		}
		g.mu.Unlock()
		json.NewEncoder(rw).Encode(map[string][]string{"Handles": handles})
	}))
	t.Cleanup(srv.Close)
	w.gardenAddr = strings.TrimPrefix(srv.URL, "http://")
	return g
}

func (w *world) workerUnitFile(unit string) string {
	w.t.Helper()
	b, err := os.ReadFile(filepath.Join(w.paths(unit).SystemdDir, workerSvc))
	if err != nil {
		w.t.Fatal(err)
	}
	return string(b)
}

func TestDrainTimeoutRendersTimeoutStopSec(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"", "TimeoutStopSec=3600\n"}, // the default, 1h
		{"90m", "TimeoutStopSec=5400\n"},
		{"45s", "TimeoutStopSec=45\n"},
		{"24h", "TimeoutStopSec=86400\n"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			cfg := map[string]any{"mode": "all", "version": "7.14.3"}
			if tc.value != "" {
				cfg["drain-timeout"] = tc.value
			}
			w := newWorld(t, 1, cfg)
			w.deploy()
			if got := w.workerUnitFile(u0); !strings.Contains(got, tc.want) {
				t.Errorf("drain-timeout %q: unit file has no %q:\n%s", tc.value, tc.want, got)
			}
		})
	}
}

func TestDrainTimeoutRefused(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"forever", "expected a duration such as 1h, 90m or 300s"},
		{"0s", "must be between 1s and 24h0m0s"},
		{"-5m", "must be between 1s and 24h0m0s"},
		{"25h", "must be between 1s and 24h0m0s"},
		{"1.5s", "must be whole seconds"},
		{"300", "expected a duration"}, // no unit: seconds or minutes? refused, not guessed
	} {
		t.Run(tc.value, func(t *testing.T) {
			w := newWorld(t, 1, map[string]any{"mode": "all", "version": "7.14.3", "drain-timeout": tc.value})
			w.deploy()
			if got := w.status(u0); !strings.HasPrefix(got, "blocked: ") || !strings.Contains(got, "drain-timeout") || !strings.Contains(got, tc.want) {
				t.Errorf("drain-timeout %q: status %q; want blocked naming drain-timeout and %q", tc.value, got, tc.want)
			}
		})
	}
}

// A config change on a busy worker queues a restart and returns: the hook does not wait for the
// drain, later hooks report it and start nothing, and systemd's one start uses the new config.
func TestConfigChangeOnBusyWorkerDrainsWithoutBlocking(t *testing.T) {
	w := newWorld(t, 2, pinned)
	g := serveGarden(t, w)
	w.deploy()
	w.addPostgres()
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	svcs := w.services(u1)
	svcs.busy = map[string]bool{workerSvc: true}
	g.set(3)
	before := len(svcs.calls)

	w.m.SetConfig(app, map[string]any{"log-level": "debug"})
	w.mustHook(u1, "config-changed")
	w.wantStatus(u1, "maintenance: Draining: 3 containers (restarting with the new configuration once they finish, at most 1h0m0s)")
	if got := strings.Join(svcs.calls[before:], "; "); got != "restart --no-block "+workerSvc {
		t.Errorf("config-changed on a busy worker did %q; want one non-blocking restart", got)
	}
	if !strings.Contains(w.readFile(u1, fileWorkerEnv), `CONCOURSE_LOG_LEVEL="debug"`) {
		t.Error("the new environment is not on disk for systemd's start")
	}

	g.set(1)
	before = len(svcs.calls)
	for _, hook := range []string{"update-status", "config-changed", "update-status"} {
		w.mustHook(u1, hook)
	}
	w.wantStatus(u1, "maintenance: Draining: 1 containers (restarting with the new configuration once they finish, at most 1h0m0s)")
	if got := svcs.calls[before:]; len(got) != 0 {
		t.Errorf("hooks during the drain did %q; want nothing", got)
	}

	g.set(0)
	svcs.exitDrain(workerSvc)
	before = len(svcs.calls)
	w.mustHook(u1, "update-status")
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	if got := svcs.calls[before:]; len(got) != 0 {
		t.Errorf("update-status after systemd's start did %q; want nothing", got)
	}
	if n := svcs.count("systemd start"); n != 1 {
		t.Errorf("%d starts after the drain; want 1", n)
	}
}

// A restart job that vanished (the drain ended and nothing started it) is repaired by the next
// hook with one start.
func TestLostRestartJobIsStarted(t *testing.T) {
	w := newWorld(t, 2, pinned)
	serveGarden(t, w).set(2)
	w.deploy()
	svcs := w.services(u1)
	svcs.busy = map[string]bool{workerSvc: true}
	w.m.SetConfig(app, map[string]any{"log-level": "debug"})
	w.mustHook(u1, "config-changed")
	svcs.pending[workerSvc] = "stop" // e.g. an operator's systemctl stop replaced the restart
	svcs.exitDrain(workerSvc)
	w.mustHook(u1, "update-status")
	if n := svcs.count("start " + workerSvc); n != 2 { // the deploy's, and this one
		t.Errorf("starts = %d; want 2 (%v)", n, svcs.calls)
	}
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
}

func TestLandResumeRetire(t *testing.T) {
	w := newWorld(t, 2, pinned)
	g := serveGarden(t, w)
	w.deploy()
	svcs := w.services(u1)
	svcs.busy = map[string]bool{workerSvc: true}
	g.set(2)

	a := w.action(u1, "land-worker", nil)
	if a.Status == "failed" || !strings.HasPrefix(a.Results["status"], "Landing: 2 containers") || a.Results["worker"] != "concourse-ci-machine-1" {
		t.Errorf("land-worker = %+v", a)
	}
	w.wantStatus(u1, "maintenance: Landing: 2 containers still running, then the worker stays landed; resume with: juju run concourse-ci-machine/1 resume-worker")
	if svcs.count("stop --no-block") != 1 || svcs.enabled[workerSvc] {
		t.Errorf("land-worker: calls %v, enabled %v; want one non-blocking stop and the unit disabled", svcs.calls, svcs.enabled[workerSvc])
	}

	svcs.exitDrain(workerSvc)
	before := len(svcs.calls)
	w.m.SetConfig(app, map[string]any{"log-level": "debug"})
	for _, hook := range []string{"config-changed", "update-status", "upgrade-charm"} {
		w.mustHook(u1, hook)
	}
	w.wantStatus(u1, "maintenance: Landed: takes no new builds; resume with: juju run concourse-ci-machine/1 resume-worker")
	for _, c := range svcs.calls[before:] {
		if strings.HasPrefix(c, "start") || strings.HasPrefix(c, "restart") {
			t.Errorf("a hook started the landed worker: %q", c)
		}
	}
	if a := w.action(u1, "check-status", nil); !strings.HasPrefix(a.Results["worker-hold"], "landed since ") || a.Results["drain-timeout"] != "1h0m0s" {
		t.Errorf("check-status on a landed worker = %v", a.Results)
	}

	// Started outside the charm (an operator's systemctl start): landed again.
	svcs.active[workerSvc] = true
	w.mustHook(u1, "update-status")
	if svcs.active[workerSvc] || svcs.count("stop --no-block") != 2 {
		t.Errorf("a landed worker started by hand was not landed again: %v", svcs.calls)
	}

	a = w.action(u1, "resume-worker", nil)
	if !strings.HasPrefix(a.Results["was"], "landed since ") || !svcs.active[workerSvc] || !svcs.enabled[workerSvc] {
		t.Errorf("resume-worker = %+v; active %v enabled %v", a, svcs.active[workerSvc], svcs.enabled[workerSvc])
	}
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	if !strings.Contains(w.readFile(u1, fileWorkerEnv), `CONCOURSE_LOG_LEVEL="debug"`) {
		t.Error("the resumed worker does not have the configuration set while it was landed")
	}

	g.set(0)
	svcs.busy[workerSvc] = false
	before = len(svcs.calls)
	w.action(u1, "retire-worker", nil)
	if got := strings.Join(svcs.calls[before:], "; "); !strings.HasPrefix(got, "kill SIGUSR2 "+workerSvc) {
		t.Errorf("retire-worker did %q; want SIGUSR2 first", got)
	}
	w.wantStatus(u1, "maintenance: Retired: left Concourse; rejoin with: juju run concourse-ci-machine/1 resume-worker")
	w.mustHook(u1, "config-changed")
	if svcs.active[workerSvc] || svcs.count("kill SIGUSR2") != 1 {
		t.Errorf("a retired worker was started or signalled again: %v", svcs.calls)
	}
	w.action(u1, "resume-worker", nil)
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")

	if a := w.action(u0, "land-worker", nil); a.Status != "failed" || !strings.Contains(a.Message, "needs a worker") {
		t.Errorf("land-worker on the web = %+v", a)
	}
}

// prune-workers logs in as the admin and prunes the stalled workers only, through a web API
// that answers like the real one (shapes from TestWorkerOpsRealConcourse).
func TestPruneWorkers(t *testing.T) {
	var mu sync.Mutex
	var pruned []string
	workers := `[{"name":"w-run","state":"running"},{"name":"w-stalled","state":"stalled"},{"name":"w-landed","state":"landed"},{"name":"w-gone","state":"stalled"}]`
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/sky/issuer/token":
			r.ParseForm()
			if r.Form.Get("username") != "admin" || len(r.Form.Get("password")) < 24 {
				http.Error(rw, "bad login", http.StatusUnauthorized)
				return
			}
			fmt.Fprint(rw, `{"access_token":"tok","token_type":"bearer"}`)
		case r.Header.Get("Authorization") != "Bearer tok":
			http.Error(rw, "no token", http.StatusUnauthorized)
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/workers":
			fmt.Fprint(rw, workers)
		case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/prune"):
			name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/v1/workers/"), "/prune")
			if name == "w-run" {
				rw.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(rw, `{"stderr":"cannot prune running worker"}`)
				return
			}
			mu.Lock()
			pruned = append(pruned, name)
			mu.Unlock()
		default:
			http.NotFound(rw, r)
		}
	}))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	w := newWorld(t, 2, map[string]any{"version": "7.14.3", "shared-storage": "lxc", "web-port": port})
	w.deploy()
	w.addPostgres()
	a := w.action(u0, "prune-workers", nil)
	if a.Status == "failed" || a.Results["pruned"] != "w-stalled,w-gone" || a.Results["kept"] != "w-run (running), w-landed (landed)" {
		t.Errorf("prune-workers = %+v", a)
	}
	if strings.Join(pruned, ",") != "w-stalled,w-gone" {
		t.Errorf("the web was asked to prune %v", pruned)
	}
	pruned = nil
	if a := w.action(u0, "prune-workers", map[string]any{"worker": "w-run"}); a.Status != "failed" || !strings.Contains(a.Message, "worker w-run is running") || len(pruned) != 0 {
		t.Errorf("prune-workers worker=w-run = %+v (pruned %v)", a, pruned)
	}
	if a := w.action(u0, "prune-workers", map[string]any{"worker": "w-landed"}); a.Results["pruned"] != "w-landed" {
		t.Errorf("prune-workers worker=w-landed = %+v", a)
	}
	if a := w.action(u1, "prune-workers", nil); a.Status != "failed" || !strings.Contains(a.Message, "needs the web node") {
		t.Errorf("prune-workers on a worker = %+v", a)
	}
}

// land-worker while a config change's restart drains the worker: the stop replaces the restart,
// so systemd does not start it once drained.
func TestLandDuringDrainCancelsTheRestart(t *testing.T) {
	w := newWorld(t, 2, pinned)
	serveGarden(t, w).set(1)
	w.deploy()
	svcs := w.services(u1)
	svcs.busy = map[string]bool{workerSvc: true}
	w.m.SetConfig(app, map[string]any{"log-level": "debug"})
	w.mustHook(u1, "config-changed")
	if svcs.pending[workerSvc] != "restart" {
		t.Fatalf("pending job %q; want the restart", svcs.pending[workerSvc])
	}
	w.action(u1, "land-worker", nil)
	if svcs.pending[workerSvc] != "stop" {
		t.Errorf("pending job after land-worker %q; want stop", svcs.pending[workerSvc])
	}
	svcs.exitDrain(workerSvc)
	w.mustHook(u1, "update-status")
	if svcs.active[workerSvc] || svcs.count("systemd start") != 0 {
		t.Errorf("the landed worker was started after its drain: %v", svcs.calls)
	}
	w.wantStatus(u1, "maintenance: Landed: takes no new builds; resume with: juju run concourse-ci-machine/1 resume-worker")
}
