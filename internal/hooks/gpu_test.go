package hooks

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// fakeHost makes a machine root with the given char device nodes (path -> major:minor, made
// with mknod; harmless numbers are used), directories and executables.
func fakeHost(t *testing.T, devs map[string][2]uint32, dirs, tools []string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mknod the fake device nodes")
	}
	root := t.TempDir()
	for p, mm := range devs {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(full, unix.S_IFCHR|0o600, int(unix.Mkdev(mm[0], mm[1]))); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range tools {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestPlanTaskHook(t *testing.T) {
	amd := map[string][2]uint32{"/dev/kfd": {1, 5}, "/dev/dri/renderD128": {1, 3}, "/dev/dri/renderD129": {1, 7}, "/dev/dri/card0": {1, 8}}
	nv := map[string][2]uint32{"/dev/nvidia0": {1, 3}, "/dev/nvidia1": {1, 5}, "/dev/nvidiactl": {1, 7}}
	cli := []string{"/usr/bin/nvidia-container-cli"}
	kfd := concourse.DeviceNode{Path: "/dev/kfd", Major: 1, Minor: 5}
	r128 := concourse.DeviceNode{Path: "/dev/dri/renderD128", Major: 1, Minor: 3}
	r129 := concourse.DeviceNode{Path: "/dev/dri/renderD129", Major: 1, Minor: 7}
	tests := []struct {
		name    string
		opts    map[string]string
		runtime string
		version string
		devs    map[string][2]uint32
		dirs    []string
		tools   []string
		want    taskHook
		wantErr string
	}{
		{name: "none", opts: map[string]string{}, want: taskHook{}},
		{name: "rocm/all", opts: map[string]string{"compute-runtime": "rocm"}, devs: amd,
			want: taskHook{Config: concourse.TaskHookConfig{Devices: []concourse.DeviceNode{kfd, r128, r129}},
				AllowedDevices: []string{"c 1:5 rwm", "c 1:3 rwm", "c 1:7 rwm"}, Tags: []string{"gpu", "rocm", "gpu-count=2"}}},
		{name: "rocm/one", opts: map[string]string{"compute-runtime": "rocm", "gpu-device-ids": "1"}, devs: amd,
			want: taskHook{Config: concourse.TaskHookConfig{Devices: []concourse.DeviceNode{kfd, r129}},
				AllowedDevices: []string{"c 1:5 rwm", "c 1:7 rwm"}, Tags: []string{"gpu", "rocm", "gpu-count=1"}}},
		{name: "rocm/7.14", opts: map[string]string{"compute-runtime": "rocm"}, version: "7.14.3", devs: amd,
			wantErr: "compute-runtime=rocm needs Concourse 8.1.0 or later (--containerd-allowed-device); the worker runs 7.14.3: set version"},
		{name: "rocm/no-kfd", opts: map[string]string{"compute-runtime": "rocm"}, devs: map[string][2]uint32{"/dev/dri/renderD128": {1, 3}},
			wantErr: "compute-runtime=rocm: /dev/kfd not found; install the AMD GPU driver (amdgpu)"},
		{name: "rocm/bad-index", opts: map[string]string{"compute-runtime": "rocm", "gpu-device-ids": "0,2"}, devs: amd,
			wantErr: "gpu-device-ids=0,2: this machine has 2 AMD GPU(s) (/dev/dri/renderD128, /dev/dri/renderD129): use indices 0-1 or all"},
		{name: "cuda/one", opts: map[string]string{"compute-runtime": "cuda", "gpu-device-ids": "1"}, version: "7.14.3", devs: nv, tools: cli,
			want: taskHook{Config: concourse.TaskHookConfig{NvidiaCLI: "/usr/bin/nvidia-container-cli", NvidiaDevices: "1"}, Tags: []string{"gpu", "cuda", "gpu-count=1"}}},
		{name: "cuda/no-driver", opts: map[string]string{"compute-runtime": "cuda"}, tools: cli,
			wantErr: "compute-runtime=cuda: /dev/nvidia0 not found; install the NVIDIA driver"},
		{name: "cuda/no-toolkit", opts: map[string]string{"compute-runtime": "cuda"}, devs: nv,
			wantErr: "compute-runtime=cuda: nvidia-container-cli not found; install nvidia-container-toolkit"},
		{name: "guardian", opts: map[string]string{"compute-runtime": "cuda"}, runtime: "guardian", devs: nv, tools: cli,
			wantErr: `invalid compute-runtime "cuda": needs worker-runtime containerd (the only runtime whose containers take OCI hooks); worker-runtime is guardian`},
		{name: "houdini/folders", opts: map[string]string{"task-folders": "data:ro:*"}, runtime: "houdini", dirs: []string{"/srv/data"},
			wantErr: `invalid task-folders "data:ro:*": needs worker-runtime containerd (the only runtime whose containers take OCI hooks); worker-runtime is houdini`},
		{name: "folders/every-team", opts: map[string]string{"task-folders": "datasets:ro:*, cache:rw:*"}, dirs: []string{"/srv/datasets", "/srv/cache"},
			want: taskHook{Config: concourse.TaskHookConfig{Mounts: []concourse.TaskMount{{Source: "/srv/datasets", Destination: "/srv/datasets", ReadOnly: true}, {Source: "/srv/cache", Destination: "/srv/cache"}}}}},
		{name: "folders/team-worker", opts: map[string]string{"task-folders": "datasets:ro:ml+research", "worker-team": "research"}, dirs: []string{"/srv/datasets"},
			want: taskHook{Config: concourse.TaskHookConfig{Mounts: []concourse.TaskMount{{Source: "/srv/datasets", Destination: "/srv/datasets", ReadOnly: true}}}}},
		{name: "folders/teams-without-worker-team", opts: map[string]string{"task-folders": "datasets:ro:ml"}, dirs: []string{"/srv/datasets"},
			wantErr: `invalid task-folders "datasets": is for teams ml, but these workers run every team's containers and a container does not say its team: set worker-team to one of them, or give the folder to * (every team)`},
		{name: "folders/other-team", opts: map[string]string{"task-folders": "datasets:ro:ml", "worker-team": "web"}, dirs: []string{"/srv/datasets"},
			wantErr: `invalid task-folders "datasets": is for teams ml, but these workers belong to team web: add web to its teams, or remove the folder`},
		{name: "folders/missing", opts: map[string]string{"task-folders": "datasets:ro:*"},
			wantErr: "task-folders: /srv/datasets is not a directory on this machine: create it (mkdir -p /srv/datasets) or remove datasets from task-folders"},
		{name: "rocm+folders", opts: map[string]string{"compute-runtime": "rocm", "gpu-device-ids": "0", "task-folders": "models:ro:*"}, devs: amd, dirs: []string{"/srv/models"},
			want: taskHook{Config: concourse.TaskHookConfig{Devices: []concourse.DeviceNode{kfd, r128}, Mounts: []concourse.TaskMount{{Source: "/srv/models", Destination: "/srv/models", ReadOnly: true}}},
				AllowedDevices: []string{"c 1:5 rwm", "c 1:3 rwm"}, Tags: []string{"gpu", "rocm", "gpu-count=1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host := fakeHost(t, tc.devs, tc.dirs, tc.tools)
			rt, version := tc.runtime, tc.version
			if rt == "" {
				rt = "containerd"
			}
			if version == "" {
				version = "8.2.5"
			}
			cfg := Config{WorkerRuntime: rt, Opts: tc.opts}
			got, err := planTaskHook(cfg, Paths{Host: host}, version, "/charm/dispatch")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v\nwant  %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Binary = "/charm/dispatch"
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan = %+v\nwant   %+v", got, tc.want)
			}
		})
	}
}

func TestGPUOptionValues(t *testing.T) {
	tests := []struct {
		name, value, want, wantErr string
	}{
		{"compute-runtime", "none", "", ""},
		{"compute-runtime", "rocm", "rocm", ""},
		{"compute-runtime", "opencl", "", "allowed values are none, cuda, rocm"},
		{"gpu-device-ids", "all", "all", ""},
		{"gpu-device-ids", "2, 0,2", "0,2", ""},
		{"gpu-device-ids", "0,x", "", "expected all, or comma-separated device indices such as 0,1"},
		{"gpu-device-ids", "-1", "", "expected all, or comma-separated device indices such as 0,1"},
		{"task-folders", "datasets:ro:ml+research,cache:rw:*", "datasets:ro:ml+research,cache:rw:*", ""},
		{"task-folders", "datasets:ro", "", `entry "datasets:ro": expected name:ro|rw:teams, e.g. datasets:ro:ml+research or cache:rw:*`},
		{"task-folders", "datasets:wo:*", "", `entry "datasets:wo:*": mode "wo" must be ro or rw`},
		{"task-folders", "../etc:rw:*", "", `entry "../etc:rw:*": "../etc" is not a folder name under /srv (letters, digits, '.', '_', '-')`},
		{"task-folders", "a:ro:*,a:rw:*", "", "folder a is listed twice"},
		{"task-folders", "a:ro:", "", `entry "a:ro:": teams must be team names joined by '+', or * for every team`},
		{"task-folders", "a:ro:ml+*", "", `entry "a:ro:ml+*": teams must be team names joined by '+', or * for every team`},
	}
	opts := optionsByName()
	for _, tc := range tests {
		got, err := opts[tc.name].Check(tc.value)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%s=%q: err = %v, want %q", tc.name, tc.value, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s=%q = %q, %v; want %q", tc.name, tc.value, got, err, tc.want)
		}
	}
}

func TestRenderWorkerWithTaskHook(t *testing.T) {
	p := Paths{ConfigDir: "/etc/concourse", WorkDir: "/var/lib/concourse-worker/work"}
	hook := taskHook{Binary: "/var/lib/juju/agents/unit-concourse-ci-machine-10/charm/dispatch",
		Config:         concourse.TaskHookConfig{Devices: []concourse.DeviceNode{{Path: "/dev/kfd", Major: 238}, {Path: "/dev/dri/renderD128", Major: 226, Minor: 128}}},
		AllowedDevices: []string{"c 238:0 rwm", "c 226:128 rwm"}, Tags: []string{"gpu", "rocm", "gpu-count=1"}}
	cfg := Config{LogLevel: "info", WorkerRuntime: "containerd", Tags: []string{"big", "gpu"}, Opts: map[string]string{}}
	env, _, err := renderWorker(cfg, p, "concourse-ci-machine/10", "/var/lib/concourse/bin/concourse", []string{"192.0.2.1:2222"}, hook)
	if err != nil {
		t.Fatal(err)
	}
	vars, err := concourse.ParseEnvFile(env)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"CONCOURSE_TAG":                       "big,gpu,rocm,gpu-count=1",
		"CONCOURSE_CONTAINERD_OCI_HOOKS_DIR":  "/etc/concourse/oci-hooks",
		"CONCOURSE_CONTAINERD_ALLOWED_DEVICE": "c 238:0 rwm,c 226:128 rwm",
	} {
		if vars[k] != want {
			t.Errorf("%s = %q, want %q", k, vars[k], want)
		}
	}
	files, err := taskHookFiles(hook, p)
	if err != nil || len(files) != 2 {
		t.Fatalf("hook files = %v, %v", files, err)
	}
	if !strings.Contains(string(files[1].Data), `"/etc/concourse/task-hook.json"`) || files[1].Path != "/etc/concourse/oci-hooks/concourse-ci-machine.json" {
		t.Errorf("hook file %s:\n%s", files[1].Path, files[1].Data)
	}
	if c, err := concourse.ParseTaskHookConfig(files[0].Data); err != nil || !reflect.DeepEqual(c, hook.Config) {
		t.Errorf("task-hook.json = %s (%v)", files[0].Data, err)
	}
	// Without a hook nothing of it is rendered.
	env, _, _ = renderWorker(cfg, p, "concourse-ci-machine/10", "/var/lib/concourse/bin/concourse", []string{"192.0.2.1:2222"}, taskHook{})
	if strings.Contains(string(env), "OCI_HOOKS") || strings.Contains(string(env), "ALLOWED_DEVICE") {
		t.Errorf("worker.env without GPUs or folders:\n%s", env)
	}
	if files, _ := taskHookFiles(taskHook{}, p); files != nil {
		t.Errorf("hook files without a hook: %v", files)
	}
}

func TestExtraWorkerFlagsRefuseTheHookFlags(t *testing.T) {
	for _, f := range []string{"--containerd-oci-hooks-dir=/x", "--containerd-allowed-device=c 1:3 rwm"} {
		_, err := checkExtraWorkerFlags(`"` + f + `"`)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(ce.Allowed, "compute-runtime") {
			t.Errorf("%s: err = %v; want a refusal naming compute-runtime", f, err)
		}
	}
}

// The hook runs a charm-owned copy of the binary, refreshed (atomically, without a worker
// restart) when `juju refresh` brings a new one; with neither GPUs nor folders left, the hook's
// files go, after the worker restarted without them.
func TestTaskHookBinaryCopyAndRemoval(t *testing.T) {
	host := t.TempDir()
	if err := os.MkdirAll(filepath.Join(host, "srv", "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	charm := t.TempDir()
	setBinary := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(charm, "dispatch"), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	setBinary("charm binary, revision 1")
	w := newWorld(t, 2, map[string]any{"version": "7.14.3", "shared-storage": "lxc", "task-folders": "data:ro:*"})
	w.host, w.charmDir = host, charm
	w.deploy()
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	p := w.paths(u1)
	bin := filepath.Join(p.StateDir, fileHookBinary)
	hookFile := filepath.Join(p.ConfigDir, dirOCIHooks, fileOCIHook)
	inode := func() uint64 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(bin, &st); err != nil {
			t.Fatalf("the hook's binary: %v", err)
		}
		if st.Mode&0o777 != 0o755 {
			t.Errorf("%s mode %o; want 0755", bin, st.Mode&0o777)
		}
		return st.Ino
	}
	wantBinary := func(content string) {
		t.Helper()
		if b, err := os.ReadFile(bin); err != nil || string(b) != content {
			t.Errorf("%s = %q, %v; want %q", bin, b, err, content)
		}
	}
	wantBinary("charm binary, revision 1")
	first := inode()
	if hf := w.readFile(u1, filepath.Join(dirOCIHooks, fileOCIHook)); !strings.Contains(hf, `"path": "`+bin+`"`) || strings.Contains(hf, charm) {
		t.Errorf("hook file names another program than %s:\n%s", bin, hf)
	}
	restarts := func() int { return countRestarts(w.services(u1).calls, workerSvc) }

	// A steady hook rewrites nothing.
	w.mustHook(u1, "update-status")
	if inode() != first {
		t.Error("a steady hook rewrote the hook's binary")
	}
	// juju refresh: a new binary in the charm dir replaces the copy by rename, no restart.
	before := restarts()
	setBinary("charm binary, revision 2")
	w.mustHook(u1, "upgrade-charm")
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	wantBinary("charm binary, revision 2")
	if inode() == first {
		t.Error("the hook's binary was rewritten in place; want a new file renamed over it")
	}
	if got := restarts(); got != before {
		t.Errorf("a new hook binary restarted the worker %d time(s); want none", got-before)
	}

	// No GPUs, no folders: the worker restarts without the hooks dir, then its files go.
	hadHookAtRestart := false
	w.services(u1).onRestart = func(unit string) {
		if unit == workerSvc {
			_, err := os.Stat(hookFile)
			hadHookAtRestart = err == nil
		}
	}
	w.m.SetConfig(app, map[string]any{"task-folders": nil}) // juju config --reset
	w.mustHook(u1, "config-changed")
	w.wantStatus(u1, "active: Worker ready (v7.14.3)")
	if restarts() != before+1 || !hadHookAtRestart {
		t.Errorf("restarts %d (want %d), hook file present at the restart: %v; want the files removed after", restarts(), before+1, hadHookAtRestart)
	}
	if env := w.readFile(u1, fileWorkerEnv); strings.Contains(env, "OCI_HOOKS_DIR") {
		t.Errorf("worker.env still names the hooks dir:\n%s", env)
	}
	for _, f := range []string{hookFile, filepath.Dir(hookFile), filepath.Join(p.ConfigDir, fileTaskHook), bin} {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v); want it removed", f, err)
		}
	}
	// Idempotent: the next hook has nothing to remove and does not fail.
	w.mustHook(u1, "update-status")
}
