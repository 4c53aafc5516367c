package concourse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// The web's answers to land and prune requests, as the charm reads them.
func TestLandAndPruneWorkerAnswers(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "bad request shape", http.StatusTeapot)
			return
		}
		switch r.URL.EscapedPath() {
		case "/api/v1/workers/w%2F1/land", "/api/v1/workers/w-stalled/prune":
			w.WriteHeader(http.StatusOK)
		case "/api/v1/workers/w-running/prune":
			// The body 7.14.3 and 8.2.5 send (seen in TestWorkerOpsRealConcourse).
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"stderr":"cannot prune running worker"}`))
		case "/api/v1/workers/gone/land", "/api/v1/workers/gone/prune":
			w.WriteHeader(http.StatusNotFound)
		default:
			http.Error(w, "not an admin", http.StatusForbidden)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		op      func(context.Context, *http.Client, string, string, string) (WorkerOpResult, error)
		worker  string
		want    WorkerOpResult
		wantErr func(error) bool
	}{
		{"land, name path-escaped", LandWorker, "w/1", WorkerOpDone, nil},
		{"land an unknown worker", LandWorker, "gone", WorkerOpNotFound, nil},
		{"prune a stalled worker", PruneWorker, "w-stalled", WorkerOpDone, nil},
		{"prune an unknown worker", PruneWorker, "gone", WorkerOpNotFound, nil},
		{"prune a running worker", PruneWorker, "w-running", 0, func(err error) bool { return errors.Is(err, ErrWorkerRunning) }},
		{"not an admin", LandWorker, "other", 0, func(err error) bool {
			var apiErr *APIError
			return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusForbidden
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.op(ctx, srv.Client(), srv.URL, "tok", tc.worker)
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("error %v is not the one wanted", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("= %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestWorkerOpsRealConcourse drives LandWorker and PruneWorker against a real web and a real
// houdini worker of each version: a landed worker takes no new build (with no other worker the
// build errors for want of one), restarting its process resumes it and builds run; a worker killed hard
// turns stalled after the heartbeat TTL, a running one cannot be pruned, a stalled one can.
func TestWorkerOpsRealConcourse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Concourse web and worker processes")
	}
	set := realconcourse.Require(t)
	pg := pgtest.Start(t, pgtest.Options{})
	for i, v := range []string{"7.14.3", "8.2.5"} {
		t.Run(v, func(t *testing.T) {
			name := "ops" + strconv.Itoa(i)
			pg.CreateRole(t, name, name+"-pw")
			pg.CreateDatabase(t, name, name)
			db := DBConfig{Host: pg.Host(), Port: pg.Port(), User: name, Password: name + "-pw", Database: name}
			testWorkerOps(t, set, v, db)
		})
	}
}

// heartbeat is the TSA heartbeat interval the test's web uses (the default is 30 s).
const heartbeat = 3 * time.Second

func testWorkerOps(t *testing.T, set realconcourse.Set, version string, db DBConfig) {
	bin, flyBin := set.Concourse(version), set.Fly(version)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()
	realweb.GenerateKeys(t, ctx, bin, dir)
	lb := realweb.NewLoopback(t)
	const adminPass = "worker-ops-admin-pw"
	webEnv := append([]string{
		"CONCOURSE_ADD_LOCAL_USER=admin:" + adminPass,
		"CONCOURSE_MAIN_TEAM_LOCAL_USER=admin",
		"CONCOURSE_SESSION_SIGNING_KEY=" + filepath.Join(dir, "session_signing_key"),
		"CONCOURSE_TSA_HOST_KEY=" + filepath.Join(dir, "tsa_host_key"),
		"CONCOURSE_TSA_AUTHORIZED_KEYS=" + filepath.Join(dir, "worker_key.pub"),
		"CONCOURSE_TSA_HEARTBEAT_INTERVAL=" + heartbeat.String(),
		"CONCOURSE_GC_INTERVAL=2s",
		"CONCOURSE_COMPONENT_RUNNER_INTERVAL=2s",
		"CONCOURSE_BUILD_TRACKER_INTERVAL=2s",
	}, lb.WebEnv(t)...)
	webEnv = append(webEnv, dbEnvOf(db)...)
	web := realweb.Start(t, bin, []string{"web"}, webEnv, filepath.Join(dir, "web.log"))
	realweb.WaitInfo(t, ctx, web, lb.URL)
	token, err := PasswordToken(ctx, nil, lb.URL, "admin", adminPass)
	if err != nil {
		t.Fatal(err)
	}
	checkComponents(t, ctx, version, lb.URL, token)
	fly := realweb.NewFly(t, flyBin, dir)
	if out, err := fly.Run(ctx, "login", "-c", lb.URL, "-u", "admin", "-p", adminPass); err != nil {
		t.Fatalf("fly login: %v\n%s", err, out)
	}
	pipeline := realweb.EchoPipeline(t, dir, "hello-after-resume")
	for _, args := range [][]string{{"set-pipeline", "-n", "-p", "ops", "-c", pipeline}, {"unpause-pipeline", "-p", "ops"}} {
		if out, err := fly.Run(ctx, args...); err != nil {
			t.Fatalf("fly %s: %v\n%s", args[0], err, out)
		}
	}

	const wname = "ops-worker"
	startWorker := func(log string) *realweb.Child {
		return realweb.StartHoudiniWorker(t, bin, wname, dir, lb.TSAPort, filepath.Join(dir, "worker"), filepath.Join(dir, log))
	}
	// workerState polls the API until the worker is in state want (or gone, for want "").
	workerState := func(p *realweb.Child, limit time.Duration, want string) time.Duration {
		t.Helper()
		start := time.Now()
		realweb.WaitFor(t, ctx, web, limit, "worker "+wname+" to be "+want, func() error {
			ws, err := Workers(ctx, nil, lb.URL, token)
			if err != nil {
				return err
			}
			w, ok := FindWorker(ws, wname)
			switch {
			case want == "" && !ok:
				return nil
			case ok && w.State == want:
				return nil
			}
			return fmt.Errorf("worker %s: %+v (listed: %v)", wname, w, ok)
		})
		return time.Since(start)
	}
	worker := startWorker("worker.log")
	workerState(worker, 90*time.Second, WorkerRunning)

	// A running worker cannot be pruned; an unknown one is nothing to do.
	if _, err := PruneWorker(ctx, nil, lb.URL, token, wname); !errors.Is(err, ErrWorkerRunning) {
		t.Fatalf("pruning the running worker: %v; want ErrWorkerRunning", err)
	}
	if res, err := PruneWorker(ctx, nil, lb.URL, token, "no-such-worker"); err != nil || res != WorkerOpNotFound {
		t.Fatalf("pruning an unknown worker: %v, %v; want WorkerOpNotFound", res, err)
	}
	if res, err := LandWorker(ctx, nil, lb.URL, token, "no-such-worker"); err != nil || res != WorkerOpNotFound {
		t.Fatalf("landing an unknown worker: %v, %v; want WorkerOpNotFound", res, err)
	}

	// Land: with nothing running it turns landed, and stays landed while its process runs on.
	if res, err := LandWorker(ctx, nil, lb.URL, token, wname); err != nil || res != WorkerOpDone {
		t.Fatalf("LandWorker: %v, %v", res, err)
	}
	t.Logf("%s: landing -> landed in %s", version, workerState(worker, 60*time.Second, WorkerLanded).Round(100*time.Millisecond))
	// Concourse does not queue a build for a landed worker: with no other worker, the step
	// errors at once with "no workers satisfying" (seen with 7.14.3 and 8.2.5) and nothing
	// runs on the landed one.
	if out, err := fly.Run(ctx, "trigger-job", "-j", "ops/hello"); err != nil {
		t.Fatalf("fly trigger-job: %v\n%s", err, out)
	}
	realweb.WaitFor(t, ctx, web, time.Minute, "the build to finish", func() error {
		if s := buildStatus(t, ctx, fly); s == "pending" || s == "started" {
			return fmt.Errorf("build status %q", s)
		}
		return nil
	})
	out, _ := fly.Run(ctx, "watch", "-j", "ops/hello")
	if s := buildStatus(t, ctx, fly); s != "errored" || !strings.Contains(out, "no workers satisfying") {
		t.Fatalf("a build with the only worker landed is %q; want errored for want of a worker:\n%s", s, out)
	}
	// It stays landed through its own heartbeats while its process runs on.
	deadline := time.Now().Add(4 * heartbeat)
	for time.Now().Before(deadline) {
		ws, err := Workers(ctx, nil, lb.URL, token)
		if err != nil {
			t.Fatal(err)
		}
		if w, _ := FindWorker(ws, wname); w.State != WorkerLanded {
			t.Fatalf("the landed worker turned %q (process exited: %v)", w.State, worker.Exited())
		}
		time.Sleep(time.Second)
	}
	// The worker process exits once landed (its unit's Restart=on-failure must not bring it back:
	// a restart is what resumes it).
	exit := "still running"
	if worker.Exited() {
		exit = "exited: " + worker.Cmd.ProcessState.String()
	}
	t.Logf("%s: the landed worker's process: %s", version, exit)

	// Resume: a restart of the worker process registers it as running, and builds run again.
	worker.Stop(t)
	worker = startWorker("worker-2.log")
	workerState(worker, 90*time.Second, WorkerRunning)
	if out, err := fly.Run(ctx, "trigger-job", "-j", "ops/hello", "-w"); err != nil || !strings.Contains(out, "hello-after-resume") {
		t.Fatalf("a build after resuming: %v\n%s\n%s", err, out, worker.LogTail())
	}

	// Stalled and pruned: a worker killed hard stops heartbeating.
	if err := worker.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	worker.Wait(10 * time.Second)
	stall := workerState(web, 3*time.Minute, WorkerStalled)
	t.Logf("%s: SIGKILL -> stalled in %s with a %s heartbeat", version, stall.Round(100*time.Millisecond), heartbeat)
	ws, err := Workers(ctx, nil, lb.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	if got := StalledWorkers(ws); len(got) != 1 || got[0] != wname {
		t.Fatalf("StalledWorkers = %v, want [%s]", got, wname)
	}
	if res, err := PruneWorker(ctx, nil, lb.URL, token, wname); err != nil || res != WorkerOpDone {
		t.Fatalf("pruning the stalled worker: %v, %v", res, err)
	}
	workerState(web, 30*time.Second, "")
}

// buildStatus is the status of the newest build of ops/hello, from the real fly.
func buildStatus(t *testing.T, ctx context.Context, fly realweb.Fly) string {
	t.Helper()
	out, err := fly.Run(ctx, "builds", "-j", "ops/hello", "--json")
	if err != nil {
		t.Fatalf("fly builds: %v\n%s", err, out)
	}
	var builds []struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &builds); err != nil || len(builds) == 0 {
		t.Fatalf("fly builds --json: %v: %s", err, out)
	}
	return builds[0].Status
}

// checkComponents pauses and unpauses the runtime components where the web has them (8.2+),
// and sees an older web refuse cleanly. The rest of the test runs builds, which a scheduler
// left paused would not.
func checkComponents(t *testing.T, ctx context.Context, version, url, token string) {
	t.Helper()
	if version == "7.14.3" {
		if _, err := Components(ctx, nil, url, token); !errors.Is(err, ErrComponentsUnsupported) {
			t.Fatalf("7.14.3 Components: %v; want ErrComponentsUnsupported", err)
		}
		if err := PauseComponents(ctx, nil, url, token, RuntimeComponents...); !errors.Is(err, ErrComponentsUnsupported) {
			t.Fatalf("7.14.3 PauseComponents: %v; want ErrComponentsUnsupported", err)
		}
		return
	}
	paused := func() map[string]bool {
		comps, err := Components(ctx, nil, url, token)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, c := range comps {
			out[c.Name] = c.Paused
		}
		return out
	}
	if err := PauseComponents(ctx, nil, url, token, "scheduler", "no-such-component"); err == nil || !strings.Contains(err.Error(), "no-such-component") {
		t.Fatalf("pausing an unknown component: %v", err)
	}
	if p := paused(); p["scheduler"] {
		t.Fatal("a refused PauseComponents paused the scheduler anyway")
	}
	if err := PauseComponents(ctx, nil, url, token, RuntimeComponents...); err != nil {
		t.Fatal(err)
	}
	p := paused()
	for _, n := range RuntimeComponents {
		if !p[n] {
			t.Errorf("%s not paused: %v", n, p)
		}
	}
	if p["collector_workers"] {
		t.Errorf("a garbage collector was paused too: %v", p)
	}
	if err := UnpauseComponents(ctx, nil, url, token, RuntimeComponents...); err != nil {
		t.Fatal(err)
	}
	for n, isPaused := range paused() {
		if isPaused {
			t.Errorf("%s still paused after UnpauseComponents", n)
		}
	}
}
