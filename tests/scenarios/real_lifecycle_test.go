package scenarios

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
)

// TestRealWorkerLifecycle runs the worker lifecycle of issue 13 §3 with the real Concourse under
// real systemd: a 45-second build survives a worker config change that restarts the worker (the
// hook does not wait; the status says Draining; systemd starts the worker with the new
// configuration once the build is done), and a landed worker takes no new builds until
// resume-worker.
func TestRealWorkerLifecycle(t *testing.T) {
	// Its own fixture, bed machines and cluster: it runs beside the other scenarios (most of a
	// real scenario is waiting for Concourse: landing, heartbeats).
	t.Parallel()
	f := NewRealFixture(t)
	s := f.NewRealScenario(t)
	rt := RealRuntime()
	s.MarkShared(t)
	s.DeployPostgres(t)
	cfg := map[string]any{"drain-timeout": "3m"}
	if rt != "containerd" {
		cfg["worker-runtime"] = rt
	}
	s.Deploy(t, App, 2, s.Config(cfg), bed.StorageShared)
	s.IntegratePostgres(t, App)
	s.Settle(t, s.WebReady(u0, V1), s.WorkerReady(u1, V1), s.Registered(u0, u1),
		s.FileHas(u1, "/etc/systemd/system/concourse-worker.service", "TimeoutStopSec=180\n"))
	if rt == "containerd" {
		prepareTaskRootfs(t, s, u1)
	}
	fly := f.NewFly(t, V1)
	flyLogin(t, s, fly, u0)
	waitFlyWorkers(t, fly, map[string]string{UnitTag(u1): "running"})

	step(t, "long-build-survives-config-change", func(t *testing.T) {
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := fly.Run(4*time.Minute, "execute", "-c", writeSleepTask(t, rt, "survived-the-restart", 45))
			done <- result{out, err}
		}()
		waitBuildStarted(t, fly)
		time.Sleep(5 * time.Second) // the step's container exists a moment after the build starts
		// A worker-only change (the web is not restarted: a web restart during a build waits
		// its own 60 s): the unit file changes, so the worker restarts.
		changed := time.Now()
		s.C.Config(App, map[string]any{"drain-timeout": "4m"})
		s.Settle(t, s.StatusHas(u1, "maintenance", "Draining: ", " containers (restarting with the new configuration", "at most 4m0s"))
		hooks := s.Unit(t, u1).Hooks()
		if last := hooks[len(hooks)-1]; last.Hook != "config-changed" || last.Duration > 20*time.Second {
			t.Errorf("the worker's last hook: %s; want a config-changed that did not wait for the drain", last)
		} else {
			t.Logf("the worker's config-changed took %s", last.Duration.Round(time.Millisecond))
		}
		t.Logf("status while the build runs: %s", s.C.Model.UnitStatus(u1).Message)
		r := <-done
		t.Logf("fly execute across the restart:\n%s", r.out)
		if r.err != nil || !strings.Contains(r.out, "succeeded") {
			t.Fatalf("the build across the worker restart: %v; want succeeded", r.err)
		}
		taskRan(t, s, rt, r.out, "survived-the-restart", u1)
		waitUpdateStatus(t, s, u1, s.WorkerReady(u1, V1))
		// The new process runs with the new configuration, started after the build ended.
		if got := unitProperty(t, s, u1, "concourse-worker.service", "TimeoutStopUSec"); got != "4min" {
			t.Errorf("the restarted worker's TimeoutStopUSec = %q; want 4min", got)
		}
		if since := time.Since(changed); since < 40*time.Second {
			t.Errorf("the worker was back %s after the change: it cannot have waited for the 45 s build", since)
		}
		waitFlyWorkers(t, fly, map[string]string{UnitTag(u1): "running"})
	})

	step(t, "landed-worker-takes-no-builds", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rec, err := s.C.RunAction(ctx, u1, "land-worker", nil)
		if err != nil || rec.Status != "completed" {
			t.Fatalf("land-worker: %v %s %q", err, rec.Status, rec.Message)
		}
		t.Logf("land-worker: %v", rec.Results)
		waitUpdateStatus(t, s, u1, s.StatusHas(u1, "maintenance", "Landed: takes no new builds; resume with: juju run "+u1+" resume-worker"))
		waitFlyWorkers(t, fly, map[string]string{UnitTag(u1): "landed"})
		// A config change does not bring it back.
		s.C.Config(App, map[string]any{"drain-timeout": "5m"})
		s.Settle(t, s.StatusHas(u1, "maintenance", "Landed: "), s.ServiceIs(u1, "concourse-worker.service", "inactive"))
		out, err := fly.Run(90*time.Second, "execute", "-c", writeTask(t, rt, "ran-on-a-landed-worker"))
		t.Logf("fly execute with the only worker landed (%v):\n%s", err, out)
		if err == nil || strings.Contains(out, "ran-on-a-landed-worker-42") {
			t.Errorf("a build ran with the only worker landed")
		}
		rec, err = s.C.RunAction(ctx, u1, "resume-worker", nil)
		if err != nil || rec.Status != "completed" {
			t.Fatalf("resume-worker: %v %s %q", err, rec.Status, rec.Message)
		}
		s.Settle(t, s.WorkerReady(u1, V1))
		waitFlyWorkers(t, fly, map[string]string{UnitTag(u1): "running"})
		out, err = fly.Run(2*time.Minute, "execute", "-c", writeTask(t, rt, "after-resume"))
		if err != nil || !strings.Contains(out, "succeeded") {
			t.Fatalf("fly execute after resume-worker: %v\n%s", err, out)
		}
	})
}

// writeSleepTask is writeTask's task, sleeping secs seconds before it prints.
func writeSleepTask(t *testing.T, runtime, msg string, secs int) string {
	t.Helper()
	cfg := strings.Replace(taskConfig(runtime, msg), `"echo `, `"sleep `+strconv.Itoa(secs)+`; echo `, 1)
	if !strings.Contains(cfg, "sleep ") {
		t.Fatalf("taskConfig changed shape:\n%s", cfg)
	}
	path := filepath.Join(t.TempDir(), "sleep-task.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitBuildStarted polls `fly builds` (bounded) until a build is started.
func waitBuildStarted(t *testing.T, fly *Fly) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		out, _ := fly.Run(30*time.Second, "builds", "--json")
		if strings.Contains(out, `"status": "started"`) || strings.Contains(out, `"status":"started"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no build started:\n%s", out)
		}
	}
}

// waitUpdateStatus runs update-status on unit until chk passes (bounded, 3 minutes): a status
// that follows systemd (a drained worker back up, a landed one gone) changes in the next hook.
func waitUpdateStatus(t *testing.T, s *Scenario, unit string, chk Check) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		s.C.UpdateStatus(unit)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := s.C.Settle(ctx)
		cancel()
		if err == nil {
			if err = chk(); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v\n%s", err, s.C.Status())
		}
		time.Sleep(2 * time.Second)
	}
}

// unitProperty is one property of svc on unit, as systemd runs it.
func unitProperty(t *testing.T, s *Scenario, unit, svc, prop string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _, _, err := s.Unit(t, unit).Exec(ctx, nil, "systemctl", "show", "-p", prop, "--value", svc)
	if err != nil {
		t.Fatalf("systemctl show -p %s %s: %v", prop, svc, err)
	}
	return strings.TrimSpace(string(out))
}
