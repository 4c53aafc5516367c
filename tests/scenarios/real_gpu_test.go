package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
)

// TestRealGPUWorker runs compute-runtime and task-folders with the real 8.2.5 worker on the
// containerd runtime, under real systemd: the worker loads the charm's OCI hook file, and task
// containers get exactly the chosen device nodes and the folders. The worker machine has no GPU:
// the scenario makes, as a driver would, the nodes discovery reads (/dev/kfd, /dev/dri/renderD*,
// /dev/nvidia*), character devices of harmless kernel devices (null, zero, full), and for cuda a
// stand-in nvidia-container-cli that records its argv; what a task receives is the charm's doing.
func TestRealGPUWorker(t *testing.T) {
	// Its own fixture, bed machines and cluster: it runs beside the other scenarios (most of a
	// real scenario is waiting for Concourse: landing, heartbeats).
	t.Parallel()
	if RealRuntime() != "containerd" {
		t.Skip("OCI hooks need worker-runtime containerd; CCM_REAL_RUNTIME is " + RealRuntime())
	}
	f := NewRealFixture(t)
	s := f.NewRealScenario(t)
	s.MarkShared(t)
	s.DeployPostgres(t)
	// rocm needs --containerd-allowed-device, 8.1.0 and later: the scenario runs V2 only.
	s.Deploy(t, App, 2, s.Config(map[string]any{"version": V2}), bed.StorageShared)
	s.IntegratePostgres(t, App)
	fly := f.NewFly(t, V2)
	step(t, "deploy", func(t *testing.T) {
		s.Settle(t, s.WebReady(u0, V2), s.WorkerReady(u1, V2), s.Registered(u0, u1))
	})
	// What the operator's driver install would leave on the worker machine, and the folders.
	const (
		cliLog  = "/var/log/fake-nvidia-container-cli.argv"
		dataset = "hello-dataset.txt"
	)
	onWorker(t, s, u1, `set -e
mkdir -p /dev/dri
mknod -m 666 /dev/kfd c 1 7
mknod -m 666 /dev/dri/renderD128 c 1 3
mknod -m 666 /dev/dri/renderD129 c 1 5
mknod -m 666 /dev/nvidia0 c 1 3
mknod -m 666 /dev/nvidia1 c 1 5
mkdir -p /srv/datasets /srv/scratch
echo dataset-content-42 > /srv/datasets/`+dataset+`
# An unprivileged task writes as a high host uid (its user namespace's root).
chmod 1777 /srv/scratch
cat > /usr/local/bin/nvidia-container-cli <<'EOF'
#!/bin/sh
echo "$@" >> `+cliLog+`
EOF
chmod 755 /usr/local/bin/nvidia-container-cli`)
	prepareTaskRootfs(t, s, u1)
	flyLogin(t, s, fly, u0)

	step(t, "rocm-and-folders", func(t *testing.T) {
		s.C.Config(App, map[string]any{"compute-runtime": "rocm", "gpu-device-ids": "1", "task-folders": "datasets:ro:*,scratch:rw:*"})
		waitUpdateStatus(t, s, u1, s.WorkerReady(u1, V2)) // the worker drains, then restarts (lifecycle.go)
		s.Settle(t, s.WorkerReady(u1, V2),
			s.FileHas(u1, "/etc/concourse/worker.env",
				`CONCOURSE_CONTAINERD_OCI_HOOKS_DIR="/etc/concourse/oci-hooks"`,
				`CONCOURSE_CONTAINERD_ALLOWED_DEVICE="c 1:7 rwm,c 1:5 rwm"`),
			s.Exists(u1, "/etc/concourse/oci-hooks/concourse-ci-machine.json"),
			s.Registered(u0, u1))
		waitWorkerTags(t, fly, UnitTag(u1), "gpu", "rocm", "gpu-count=1")
		script := `ls -1 /dev; echo dri:; ls -1 /dev/dri; echo read:$(cat /srv/datasets/` + dataset + `)
if echo x > /srv/datasets/written 2>/dev/null; then echo ro:writable; else echo ro:refused; fi
echo scratch-$((6*7)) > /srv/scratch/from-task && echo rw:written
echo zero > /dev/dri/renderD129 && echo dev:usable`
		out := strings.Fields(gpuTask(t, fly, "gpu", script))
		for _, want := range []string{"kfd", "renderD129", "read:dataset-content-42", "ro:refused", "rw:written", "dev:usable"} {
			if !slices.Contains(out, want) {
				t.Errorf("task output lacks %q", want)
			}
		}
		if slices.Contains(out, "renderD128") {
			t.Errorf("the task sees /dev/dri/renderD128; gpu-device-ids=1 gives it renderD129 only")
		}
		if b, err := s.Unit(t, u1).ReadFile("/srv/scratch/from-task"); err != nil || strings.TrimSpace(string(b)) != "scratch-42" {
			t.Errorf("/srv/scratch/from-task on the worker machine = %q, %v; want the task's scratch-42", b, err)
		}
		if _, err := s.Unit(t, u1).ReadFile("/srv/datasets/written"); err == nil {
			t.Errorf("the task wrote /srv/datasets/written through a read-only folder")
		}
	})

	step(t, "cuda", func(t *testing.T) {
		s.C.Config(App, map[string]any{"compute-runtime": "cuda"})
		waitUpdateStatus(t, s, u1, s.WorkerReady(u1, V2)) // the worker drains, then restarts (lifecycle.go)
		s.Settle(t, s.WorkerReady(u1, V2),
			s.FileLacks(u1, "/etc/concourse/worker.env", "CONCOURSE_CONTAINERD_ALLOWED_DEVICE"),
			s.Registered(u0, u1))
		waitWorkerTags(t, fly, UnitTag(u1), "gpu", "cuda", "gpu-count=1")
		onWorker(t, s, u1, "rm -f "+cliLog)
		out := strings.Fields(gpuTask(t, fly, "cuda", `echo read:$(cat /srv/datasets/`+dataset+`)`))
		if !slices.Contains(out, "read:dataset-content-42") {
			t.Errorf("task output lacks the dataset (folders with cuda)")
		}
		b, err := s.Unit(t, u1).ReadFile(cliLog)
		if err != nil {
			t.Fatalf("nvidia-container-cli was not run for the task's container: %v", err)
		}
		t.Logf("nvidia-container-cli argv:\n%s", b)
		// One line per container the worker made for the build (image and task at least).
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			args := strings.Fields(line)
			if !slices.Contains(args, "--device=1") || !slices.Contains(args, "configure") || !hasPrefixArg(args, "--pid=") {
				t.Errorf("nvidia-container-cli %s; want configure --device=1 --pid=<pid> <rootfs>", line)
			}
			if root := args[len(args)-1]; !filepath.IsAbs(root) {
				t.Errorf("nvidia-container-cli's last argument %q is not the container's rootfs", root)
			}
		}
	})

	step(t, "none-removes-the-hook", func(t *testing.T) {
		s.C.Config(App, map[string]any{"compute-runtime": "none", "task-folders": ""})
		waitUpdateStatus(t, s, u1, s.WorkerReady(u1, V2)) // the worker drains, then restarts (lifecycle.go)
		s.Settle(t, s.WorkerReady(u1, V2),
			s.FileLacks(u1, "/etc/concourse/worker.env", "CONCOURSE_CONTAINERD_OCI_HOOKS_DIR"),
			s.Absent(u1, "/etc/concourse/oci-hooks/concourse-ci-machine.json"),
			s.Absent(u1, "/etc/concourse/task-hook.json"),
			s.Registered(u0, u1))
		// The raw:// rootfs is the worker's own directory, not a per-container snapshot: the
		// earlier hooks' mount points (empty /srv/datasets) stay in it, their content does not.
		out := strings.Fields(gpuTask(t, fly, "", `ls -1 /dev; cat /srv/datasets/`+dataset+` 2>&1`))
		if slices.Contains(out, "kfd") || slices.Contains(out, "dataset-content-42") || !slices.Contains(out, "null") {
			t.Errorf("with compute-runtime=none and no task-folders a task still sees the hook's devices or folders")
		}
	})
}

// onWorker runs a shell script on unit's machine or fails t.
func onWorker(t *testing.T, s *Scenario, unit, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, stderr, code, err := s.Unit(t, unit).Machine.Exec(ctx, nil, "/bin/sh", "-c", script)
	if err != nil || code != 0 {
		t.Fatalf("on %s: exit %d, %v: %s%s", unit, code, err, out, stderr)
	}
}

// gpuTask runs script as a one-off task (fly execute) on a worker with tag (none: any worker)
// and returns fly's output; the task must succeed and print done-42 last.
func gpuTask(t *testing.T, fly *Fly, tag, script string) string {
	t.Helper()
	task := fmt.Sprintf("platform: linux\nrootfs_uri: raw://%s\nrun:\n  path: /bin/sh\n  args: [-c, %s]\n",
		taskRootfs, strconv.Quote(script+"; echo done-$((6*7))"))
	p := filepath.Join(t.TempDir(), "task.yml")
	if err := os.WriteFile(p, []byte(task), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"execute", "-c", p}
	if tag != "" {
		args = append(args, "--tag", tag)
	}
	out, err := fly.Run(3*time.Minute, args...)
	t.Logf("fly %s:\n%s", strings.Join(args, " "), out)
	if err != nil || !strings.Contains(out, "done-42") {
		t.Fatalf("fly execute: %v; want the task to succeed", err)
	}
	return out
}

// waitWorkerTags polls `fly workers --json` (bounded, 90 s) until worker is running with every
// tag of want.
func waitWorkerTags(t *testing.T, fly *Fly, worker string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for {
		out, err := fly.Run(30*time.Second, "workers", "--json")
		var list []struct {
			Name  string   `json:"name"`
			State string   `json:"state"`
			Tags  []string `json:"tags"`
		}
		if err == nil && json.Unmarshal([]byte(out), &list) == nil {
			for _, w := range list {
				if w.Name != worker {
					continue
				}
				last = fmt.Sprintf("%s %v", w.State, w.Tags)
				ok := w.State == "running"
				for _, tag := range want {
					ok = ok && slices.Contains(w.Tags, tag)
				}
				if ok {
					t.Logf("fly workers: %s %s", worker, last)
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %s: %q (last error %v); want running with tags %v", worker, last, err, want)
		}
		time.Sleep(time.Second)
	}
}

func hasPrefixArg(args []string, prefix string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}
