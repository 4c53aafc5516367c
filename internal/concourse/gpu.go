package concourse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What the containerd runtime of `concourse worker` offers for devices and host folders, read
// from worker/runtime of 7.14.3 and 8.2.5:
//
//   - --containerd-oci-hooks-dir (both lines): every file of the directory is JSON
//     {"version","hook":{path,args,env,timeout},"when","stages":[…]} (backend.go HookFile),
//     parsed once when the worker starts (a bad file stops it: "ociHooks file failed to parse").
//     `when` is parsed and ignored: every hook runs for every container, tasks, resource
//     checks and image fetches alike, and for every team.
//   - --containerd-allowed-device (8.1.0 and later only): device cgroup rules
//     "type major:minor access" appended to the container's device rules
//     (spec.ParseAllowedDevices). It only allows access; it creates no device node, so the
//     node must be put into the container's /dev by other means (the hook below).
//   - A container's spec carries no team: the annotations are the garden properties, which the
//     ATC sets to {"user": <image user>} only; a task's environment is ATC_EXTERNAL_URL plus the
//     task's own params (which a pipeline may set to anything, BUILD_TEAM_NAME included); the
//     handle is a random id. A hook therefore cannot tell teams apart.

// OCIHook is the hook of a hooks-dir file (OCI runtime spec, "hooks").
type OCIHook struct {
	Path    string   `json:"path"`
	Args    []string `json:"args,omitempty"`
	Env     []string `json:"env,omitempty"`
	Timeout int      `json:"timeout,omitempty"` // seconds; runc kills the hook after it
}

type ociHookFile struct {
	Version string   `json:"version"`
	Hook    OCIHook  `json:"hook"`
	When    ociWhen  `json:"when"`
	Stages  []string `json:"stages"`
}

type ociWhen struct {
	Always bool `json:"always"`
}

// RenderOCIHookFile renders one hooks-dir file. The stage is prestart: runc runs prestart hooks
// in the runtime's namespaces once the container's mount namespace is set up and before
// pivot_root, with the container's state (pid, bundle) on stdin; both 7.14.3 and 8.2.5 accept
// it. `when.always` is written for other readers of the format; Concourse ignores it.
func RenderOCIHookFile(h OCIHook) ([]byte, error) {
	if !filepath.IsAbs(h.Path) {
		return nil, fmt.Errorf("OCI hook path %q is not absolute", h.Path)
	}
	b, err := json.MarshalIndent(ociHookFile{Version: "1.0.0", Hook: h, When: ociWhen{Always: true}, Stages: []string{"prestart"}}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// AllowedDeviceSince is the first release with --containerd-allowed-device.
const AllowedDeviceSince = "8.1.0"

// SupportsAllowedDevice says whether release version has --containerd-allowed-device.
func SupportsAllowedDevice(version string) bool {
	return compareVersions(strings.TrimPrefix(version, "v"), AllowedDeviceSince) >= 0
}

// compareVersions orders dotted numeric versions; a missing or non-numeric part counts as 0.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// DeviceNode is a character device of the worker machine given to every container, at the same
// path inside it.
type DeviceNode struct {
	Path  string `json:"path"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
}

// CgroupRule is the node's --containerd-allowed-device rule: read, write, mknod on exactly it.
func (d DeviceNode) CgroupRule() string { return fmt.Sprintf("c %d:%d rwm", d.Major, d.Minor) }

// TaskMount is a folder of the worker machine bind-mounted into every container.
type TaskMount struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"read_only"`
}

// TaskHookConfig is what the charm's prestart hook does to each container; the charm writes it
// as JSON beside the hooks dir, the hook reads it at every container start.
type TaskHookConfig struct {
	Devices []DeviceNode `json:"devices,omitempty"`
	Mounts  []TaskMount  `json:"mounts,omitempty"`
	// NvidiaCLI, when set, is run as `nvidia-container-cli --load-kmods configure
	// --device=<NvidiaDevices> --compute --utility --pid=<pid> <rootfs>`: the NVIDIA container
	// toolkit's own way to put exactly those GPUs (nodes, cgroup rules, driver libraries) into a
	// container.
	NvidiaCLI     string `json:"nvidia_cli,omitempty"`
	NvidiaDevices string `json:"nvidia_devices,omitempty"`
}

// ParseTaskHookConfig reads the hook's configuration, refusing unknown fields (a newer charm's
// file read by an older hook must fail loudly, not half-apply).
func ParseTaskHookConfig(b []byte) (TaskHookConfig, error) {
	var c TaskHookConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("parsing the task hook configuration: %w", err)
	}
	return c, nil
}

// Render is the configuration as the hook reads it.
func (c TaskHookConfig) Render() []byte {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		panic("internal error: " + err.Error())
	}
	return append(b, '\n')
}

// NvidiaArgs is the nvidia-container-cli argv (after the program) for a container.
func (c TaskHookConfig) NvidiaArgs(pid int, rootfs string) []string {
	return []string{"--load-kmods", "configure", "--device=" + c.NvidiaDevices, "--compute", "--utility",
		"--pid=" + strconv.Itoa(pid), rootfs}
}

// containerState is the part of the OCI state (runtime spec, "state") the hook reads on stdin.
type containerState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Bundle string `json:"bundle"`
}

// MountPlan is what the inner half of the hook does inside the container's mount namespace.
type MountPlan struct {
	Rootfs string `json:"rootfs"`
	// RootUID and RootGID are the host ids of the container's root: mount points are created
	// as them.
	RootUID uint32       `json:"root_uid"`
	RootGID uint32       `json:"root_gid"`
	Devices []DeviceNode `json:"devices,omitempty"`
	Mounts  []TaskMount  `json:"mounts,omitempty"`
}

// HookRunner runs a program; stdin may be nil. The hook's tests hand in a recorder.
type HookRunner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) error
}

// RunTaskHook is the prestart hook: it reads the container's state from stdin, runs the NVIDIA
// toolkit if configured, then enters the container's mount namespace (nsenter, util-linux, on
// every Debian and Ubuntu) to run self's inner half (ApplyMountPlan) there. A Go process cannot
// setns(2) into a mount namespace once it has threads, hence the second process. Any error fails
// the container's creation, which is what the build shows.
//
// procDir is /proc (tests hand in a tree of their own): where the hook reads which user
// namespaces it and the container are in.
func RunTaskHook(ctx context.Context, cfg TaskHookConfig, state io.Reader, self, procDir string, run HookRunner) error {
	var st containerState
	if err := json.NewDecoder(state).Decode(&st); err != nil {
		return fmt.Errorf("reading the container state from stdin: %w", err)
	}
	if st.Pid <= 0 || st.Bundle == "" {
		return fmt.Errorf("container state %q has no pid or bundle", st.ID)
	}
	rootfs, err := bundleRootfs(st.Bundle)
	if err != nil {
		return err
	}
	if cfg.NvidiaCLI != "" {
		if err := run.Run(ctx, nil, cfg.NvidiaCLI, cfg.NvidiaArgs(st.Pid, rootfs)...); err != nil {
			return fmt.Errorf("giving GPUs %s to container %s: %w", cfg.NvidiaDevices, st.ID, err)
		}
	}
	if len(cfg.Devices) == 0 && len(cfg.Mounts) == 0 {
		return nil
	}
	// An unprivileged task's mount namespace belongs to its user namespace, and so do the file
	// systems runc mounted there (its /dev tmpfs): the host's root, unmapped in it, may not
	// create a mount point on them (open: EOVERFLOW, seen with the real 8.2.5 worker). The
	// inner half creates them as the container's root, that is as the host ids its root maps
	// to (0 for a privileged task). It stays in the worker's user namespace, where it may mount
	// in any of its containers and still exec the charm's binary from its 0700 state dir.
	uid, err := rootID(procDir, st.Pid, "uid_map")
	if err != nil {
		return err
	}
	gid, err := rootID(procDir, st.Pid, "gid_map")
	if err != nil {
		return err
	}
	plan, err := json.Marshal(MountPlan{Rootfs: rootfs, RootUID: uid, RootGID: gid, Devices: cfg.Devices, Mounts: cfg.Mounts})
	if err != nil {
		return err
	}
	args := []string{"--target", strconv.Itoa(st.Pid), "--mount", "--", self, "oci-hook", "mount"}
	if err := run.Run(ctx, plan, "nsenter", args...); err != nil {
		return fmt.Errorf("mounting into container %s: %w", st.ID, err)
	}
	return nil
}

// rootID is the host id that id 0 of process pid's user namespace maps to, from its uid_map or
// gid_map under procDir (user_namespaces(7): lines "inside outside count").
func rootID(procDir string, pid int, file string) (uint32, error) {
	path := filepath.Join(procDir, strconv.Itoa(pid), file)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading the container's id mapping: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		in, err1 := strconv.ParseUint(f[0], 10, 32)
		out, err2 := strconv.ParseUint(f[1], 10, 32)
		n, err3 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			return 0, fmt.Errorf("%s: malformed line %q", path, line)
		}
		if in == 0 && n > 0 {
			return uint32(out), nil
		}
	}
	return 0, fmt.Errorf("%s maps no id 0: the container has no root to create mount points as", path)
}

// bundleRootfs is root.path of the bundle's config.json, made absolute.
func bundleRootfs(bundle string) (string, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", fmt.Errorf("reading the container's spec: %w", err)
	}
	var spec struct {
		Root struct {
			Path string `json:"path"`
		} `json:"root"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", fmt.Errorf("parsing %s/config.json: %w", bundle, err)
	}
	if spec.Root.Path == "" {
		return "", fmt.Errorf("%s/config.json has no root.path", bundle)
	}
	if !filepath.IsAbs(spec.Root.Path) {
		return filepath.Join(bundle, spec.Root.Path), nil
	}
	return spec.Root.Path, nil
}

// ApplyMountPlan runs inside the container's mount namespace before pivot_root, where the host's
// files are still reachable: it bind-mounts each device node and folder onto its place under the
// container's root file system. Mount points are created as needed, never through a symbolic
// link: the image owns the root file system, and a link there (srv -> /) would otherwise point
// the mount, or the directories made for it, at the host.
//
// It locks its goroutine to one thread and sets that thread's file system ids (setfsuid(2)) to
// the container's root, so the calling process must be used for nothing else (the hook's
// inner half is a process of its own). Mounting needs CAP_SYS_ADMIN, which fsuid leaves alone.
func ApplyMountPlan(p MountPlan) error {
	runtime.LockOSThread()
	// The thread is never unlocked: it dies with the goroutine's process, never reused with
	// these ids.
	unix.Setfsgid(int(p.RootGID))
	unix.Setfsuid(int(p.RootUID))
	if got, _ := unix.SetfsuidRetUid(-1); got != int(p.RootUID) {
		return fmt.Errorf("setting the file system uid to %d: still %d", p.RootUID, got)
	}
	if got, _ := unix.SetfsgidRetGid(-1); got != int(p.RootGID) {
		return fmt.Errorf("setting the file system gid to %d: still %d", p.RootGID, got)
	}
	for _, d := range p.Devices {
		target, err := mountPoint(p.Rootfs, d.Path, false)
		if err != nil {
			return err
		}
		if err := unix.Mount(d.Path, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting device %s: %w", d.Path, err)
		}
	}
	for _, m := range p.Mounts {
		target, err := mountPoint(p.Rootfs, m.Destination, true)
		if err != nil {
			return err
		}
		if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s: %w", m.Source, err)
		}
		if m.ReadOnly {
			// A bind mount takes MS_RDONLY only on a remount (mount(2), "Creating a bind mount").
			// In a user namespace the flags the mount came with are locked: the remount must
			// repeat them or it is refused (EPERM), so they are read back first.
			var fs unix.Statfs_t
			if err := unix.Statfs(target, &fs); err != nil {
				return fmt.Errorf("reading the mount flags of %s: %w", m.Destination, err)
			}
			flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
			if fs.Flags&unix.ST_NOEXEC != 0 {
				flags |= unix.MS_NOEXEC
			}
			if err := unix.Mount("", target, "", flags, ""); err != nil {
				return fmt.Errorf("making %s read-only: %w", m.Destination, err)
			}
		}
	}
	return nil
}

// mountPoint makes rootfs+dest exist (a directory, or an empty file for a device node) without
// following a symbolic link in any component under rootfs.
func mountPoint(rootfs, dest string, dir bool) (string, error) {
	clean := filepath.Clean("/" + dest)
	if clean == "/" {
		return "", fmt.Errorf("mount destination %q is the container's root", dest)
	}
	parts := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	cur := rootfs
	for i, part := range parts {
		cur = filepath.Join(cur, part)
		last := i == len(parts)-1
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, os.ErrNotExist) && (!last || dir):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return "", fmt.Errorf("making mount point %s: %w", clean, err)
			}
		case errors.Is(err, os.ErrNotExist):
			f, err := os.OpenFile(cur, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return "", fmt.Errorf("making mount point %s: %w", clean, err)
			}
			f.Close()
		case err != nil:
			return "", fmt.Errorf("checking mount point %s: %w", clean, err)
		case fi.Mode()&os.ModeSymlink != 0:
			return "", fmt.Errorf("mount point %s: %s is a symbolic link in the image; refusing to follow it", clean, "/"+filepath.Join(parts[:i+1]...))
		case !last && !fi.IsDir():
			return "", fmt.Errorf("mount point %s: %s is not a directory in the image", clean, "/"+filepath.Join(parts[:i+1]...))
		}
	}
	return cur, nil
}
