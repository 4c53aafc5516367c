package concourse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRenderOCIHookFileIsConcoursesFormat(t *testing.T) {
	b, err := RenderOCIHookFile(OCIHook{Path: "/var/lib/juju/agents/unit-concourse-ci-machine-10/charm/dispatch", Args: []string{"dispatch", "oci-hook", "--config", "/etc/concourse/task-hook.json"}, Timeout: 60})
	if err != nil {
		t.Fatal(err)
	}
	// The fields Concourse's HookFile (worker/runtime/backend.go, 7.14.3 and 8.2.5) reads.
	var got struct {
		Version string `json:"version"`
		Hook    struct {
			Path    string   `json:"path"`
			Args    []string `json:"args"`
			Timeout int      `json:"timeout"`
		} `json:"hook"`
		Stages []string `json:"stages"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if got.Version != "1.0.0" || got.Hook.Args[1] != "oci-hook" || got.Hook.Timeout != 60 || !reflect.DeepEqual(got.Stages, []string{"prestart"}) {
		t.Errorf("hook file = %s", b)
	}
	if _, err := RenderOCIHookFile(OCIHook{Path: "dispatch"}); err == nil {
		t.Error("a relative hook path was accepted")
	}
}

func TestSupportsAllowedDevice(t *testing.T) {
	for v, want := range map[string]bool{"7.14.3": false, "8.0.0": false, "8.1.0": true, "v8.2.5": true, "10.0": true} {
		if got := SupportsAllowedDevice(v); got != want {
			t.Errorf("SupportsAllowedDevice(%s) = %v, want %v", v, got, want)
		}
	}
}

type recordRunner struct {
	calls []string
	stdin [][]byte
	fail  string
}

func (r *recordRunner) Run(_ context.Context, stdin []byte, name string, args ...string) error {
	r.calls = append(r.calls, name+" "+strings.Join(args, " "))
	r.stdin = append(r.stdin, stdin)
	if name == r.fail {
		return errors.New("exit status 1: no such device")
	}
	return nil
}

func writeBundle(t *testing.T, root string) string {
	t.Helper()
	bundle := t.TempDir()
	spec := fmt.Sprintf(`{"ociVersion":"1.0.2","root":{"path":%q}}`, root)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return bundle
}

func TestRunTaskHook(t *testing.T) {
	bundle := writeBundle(t, "rootfs") // relative: under the bundle
	state := fmt.Sprintf(`{"ociVersion":"1.0.2","id":"c0ffee","status":"created","pid":4242,"bundle":%q}`, bundle)
	kfd := DeviceNode{Path: "/dev/kfd", Major: 238, Minor: 0}
	// A /proc with the container (4242): its id mappings say as whom mount points are made.
	proc := func(t *testing.T, idMap string) string {
		dir := filepath.Join(t.TempDir(), "4242")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"uid_map", "gid_map"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(idMap), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return filepath.Dir(dir)
	}
	tests := []struct {
		name    string
		cfg     TaskHookConfig
		idMap   string // the container's uid_map and gid_map; "" is a privileged task's
		wantID  uint32 // the host id of its root
		fail    string
		want    []string
		wantErr string
	}{
		{name: "cuda", cfg: TaskHookConfig{NvidiaCLI: "/usr/bin/nvidia-container-cli", NvidiaDevices: "0,2"},
			want: []string{"/usr/bin/nvidia-container-cli --load-kmods configure --device=0,2 --compute --utility --pid=4242 " + bundle + "/rootfs"}},
		{name: "rocm", cfg: TaskHookConfig{Devices: []DeviceNode{kfd}},
			want: []string{"nsenter --target 4242 --mount -- /charm/dispatch oci-hook mount"}},
		{name: "rocm-unprivileged", cfg: TaskHookConfig{Devices: []DeviceNode{kfd}}, idMap: "         0 4294770688      65536\n", wantID: 4294770688,
			want: []string{"nsenter --target 4242 --mount -- /charm/dispatch oci-hook mount"}},
		{name: "no-root-mapped", cfg: TaskHookConfig{Devices: []DeviceNode{kfd}}, idMap: "1000 100000 10\n",
			wantErr: "maps no id 0"},
		{name: "cuda-and-folders", cfg: TaskHookConfig{NvidiaCLI: "/usr/bin/nvidia-container-cli", NvidiaDevices: "1", Mounts: []TaskMount{{Source: "/srv/data", Destination: "/srv/data", ReadOnly: true}}},
			want: []string{"/usr/bin/nvidia-container-cli --load-kmods configure --device=1 --compute --utility --pid=4242 " + bundle + "/rootfs", "nsenter --target 4242 --mount -- /charm/dispatch oci-hook mount"}},
		{name: "toolkit-fails", cfg: TaskHookConfig{NvidiaCLI: "/usr/bin/nvidia-container-cli", NvidiaDevices: "0"}, fail: "/usr/bin/nvidia-container-cli",
			wantErr: "giving GPUs 0 to container c0ffee: exit status 1: no such device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recordRunner{fail: tc.fail}
			idMap := tc.idMap
			if idMap == "" {
				idMap = "         0          0 4294967295\n"
			}
			err := RunTaskHook(context.Background(), tc.cfg, strings.NewReader(state), "/charm/dispatch", proc(t, idMap), r)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.calls, tc.want) {
				t.Errorf("calls = %q\nwant    %q", r.calls, tc.want)
			}
			if n := len(r.calls); len(tc.cfg.Devices)+len(tc.cfg.Mounts) > 0 {
				var plan MountPlan
				if err := json.Unmarshal(r.stdin[n-1], &plan); err != nil || plan.Rootfs != bundle+"/rootfs" || plan.RootUID != tc.wantID || plan.RootGID != tc.wantID || len(plan.Devices) != len(tc.cfg.Devices) || len(plan.Mounts) != len(tc.cfg.Mounts) {
					t.Errorf("mount plan = %s (%v)", r.stdin[n-1], err)
				}
			}
		})
	}
	if err := RunTaskHook(context.Background(), TaskHookConfig{}, strings.NewReader(`{"id":"x"}`), "/charm/dispatch", "/proc", &recordRunner{}); err == nil {
		t.Error("a state without pid was accepted")
	}
}

func TestParseTaskHookConfigRefusesUnknownFields(t *testing.T) {
	c := TaskHookConfig{Devices: []DeviceNode{{Path: "/dev/kfd", Major: 238}}, Mounts: []TaskMount{{Source: "/srv/a", Destination: "/srv/a"}}}
	got, err := ParseTaskHookConfig(c.Render())
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	if _, err := ParseTaskHookConfig([]byte(`{"gpus":"all"}`)); err == nil {
		t.Error("an unknown field was accepted")
	}
}

func TestMountPointRefusesLinksOutOfTheImage(t *testing.T) {
	root := t.TempDir()
	if err := os.Symlink("/", filepath.Join(root, "srv")); err != nil {
		t.Fatal(err)
	}
	if _, err := mountPoint(root, "/srv/datasets", true); err == nil || !strings.Contains(err.Error(), "/srv is a symbolic link") {
		t.Errorf("err = %v, want a refusal naming /srv", err)
	}
	if _, err := os.Lstat("/datasets"); err == nil {
		t.Fatal("a directory was made on the host through the link")
	}
	p, err := mountPoint(root, "/dev/dri/renderD128", false)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("device mount point %s: %v %v", p, fi, err)
	}
}

const fakeHookEnv = "CCM_FAKE_OCI_HOOK"

// fakeHookMount is the charm binary's `oci-hook mount` for the test binary.
func fakeHookMount(args []string) int {
	if len(args) != 2 || args[0] != "oci-hook" || args[1] != "mount" {
		fmt.Fprintf(os.Stderr, "unexpected args %q\n", args)
		return 2
	}
	var plan MountPlan
	if err := json.NewDecoder(os.Stdin).Decode(&plan); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := ApplyMountPlan(plan); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type execRunner struct{}

func (execRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) error {
	c := exec.CommandContext(ctx, name, args...)
	c.Env = append(os.Environ(), fakeHookEnv+"=1")
	if stdin != nil {
		c.Stdin = strings.NewReader(string(stdin))
	}
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, out)
	}
	return nil
}

// TestTaskHookRealMountNamespace runs the hook for real against a process in its own mount
// namespace (what runc's container init is at prestart): the device node and the folders appear
// in that namespace only, the ro folder is read-only there, and the host sees no new mount.
func TestTaskHookRealMountNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount namespaces and bind mounts")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("needs nsenter (util-linux)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host := t.TempDir()
	rootfs := filepath.Join(host, "rootfs")
	ro, rw := filepath.Join(host, "srv", "datasets"), filepath.Join(host, "srv", "cache")
	for _, d := range []string{rootfs + "/dev", ro, rw} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ro, "train.csv"), []byte("a,b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The "container": a sleeping process in a private mount namespace (killed by its pid).
	ctr := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "60")
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctr.Process.Kill(); _, _ = ctr.Process.Wait() })
	pid := ctr.Process.Pid
	hostNS, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; i < 100; i++ { // until unshare has exec'd sleep in its namespace
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); ns != "" && ns != hostNS {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	bundle := writeBundle(t, rootfs)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := TaskHookConfig{
		Devices: []DeviceNode{{Path: "/dev/null", Major: 1, Minor: 3}},
		Mounts:  []TaskMount{{Source: ro, Destination: "/srv/datasets", ReadOnly: true}, {Source: rw, Destination: "/srv/cache"}},
	}
	state := fmt.Sprintf(`{"id":"real","pid":%d,"bundle":%q}`, pid, bundle)
	if err := RunTaskHook(ctx, cfg, strings.NewReader(state), self, "/proc", execRunner{}); err != nil {
		t.Fatal(err)
	}
	in := func(script string) (string, error) {
		out, err := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(pid), "--mount", "--", "sh", "-c", script).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := in("cat " + rootfs + "/srv/datasets/train.csv"); err != nil || out != "a,b" {
		t.Errorf("ro folder in the container: %q, %v", out, err)
	}
	if out, err := in("touch " + rootfs + "/srv/datasets/x"); err == nil || !strings.Contains(out, "Read-only") {
		t.Errorf("writing the ro folder: %q, %v; want a read-only error", out, err)
	}
	if out, err := in("echo w > " + rootfs + "/srv/cache/out && cat " + rw + "/out"); err != nil || out != "w" {
		t.Errorf("rw folder: %q, %v; want the write to reach the host folder", out, err)
	}
	var st unix.Stat_t
	if out, err := in("stat -c %t:%T " + rootfs + "/dev/null"); err != nil || out != "1:3" {
		t.Errorf("device node in the container: %q, %v; want 1:3", out, err)
	}
	// The host's namespace has none of it: the mount points are empty there.
	if err := unix.Stat(filepath.Join(rootfs, "dev/null"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("on the host %s/dev/null is %o (%v); want the empty mount point file", rootfs, st.Mode, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(rootfs, "srv/datasets")); len(entries) != 0 {
		t.Errorf("the host sees %d files under the mount point", len(entries))
	}
}
