package hooks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// GPUs and folders of the worker machine in every task container (issue 10, last part). Both go
// through one prestart OCI hook in a charm-owned --containerd-oci-hooks-dir (see
// internal/concourse/gpu.go for what Concourse does with it): the hook is this charm's own
// binary (a copy of dispatch at <state dir>/oci-hook, run as `oci-hook`), it reads task-hook.json and, per container, runs the NVIDIA
// toolkit or bind-mounts /dev/kfd and the chosen render nodes, and the folders. Device nodes
// keep their modes: access is granted by the container's device cgroup (allowed-device rules,
// or nvidia-container-cli's own), never by making nodes world-writable as the Python charm did.
//
// Teams: a container's spec does not say which team it runs for (internal/concourse/gpu.go), so
// the hook cannot choose per team. A folder for named teams is therefore given only by workers
// bound to one of them (worker-team); a folder for every team must say so with `*`.

const (
	fileTaskHook = "task-hook.json" // the hook's configuration, beside worker.env
	dirOCIHooks  = "oci-hooks"      // --containerd-oci-hooks-dir
	fileOCIHook  = "concourse-ci-machine.json"
	// fileHookBinary is the charm's binary as the hook runs it, under Paths.StateDir.
	fileHookBinary = "oci-hook"
	hookSubcmd     = "oci-hook"
	srvDir         = "/srv"
	computeNone    = "none"
	gpuDevicesAll  = "all"
)

func gpuOptions() []option {
	return []option{
		{Name: "compute-runtime", Type: "string", Default: computeNone, Role: roleWorker, Python: true, Check: checkComputeRuntime,
			Doc: "GPUs in the workers' task containers: none, cuda (NVIDIA: the driver's /dev/nvidia* nodes and nvidia-container-cli from nvidia-container-toolkit must be installed; the toolkit puts the GPUs and driver libraries into each container) or rocm (AMD: /dev/kfd and /dev/dri/renderD* from the amdgpu driver; needs Concourse 8.1.0 or later for its device cgroup rules). Only for worker-runtime containerd. The workers get the tags gpu, cuda or rocm and gpu-count=<n>, after the tag option's. The charm installs no driver or toolkit: a missing one blocks the unit, naming it."},
		{Name: "gpu-device-ids", Type: "string", Default: gpuDevicesAll, Role: roleWorker, Python: true, Check: checkGPUDeviceIDs,
			Doc: "With compute-runtime, which GPUs the task containers get: all, or comma-separated indices (0,1): NVIDIA's device indices for cuda, the position among /dev/dri/renderD* in number order for rocm. Unlike the Python charm's, enforced: a container sees only these."},
		{Name: "task-folders", Type: "string", Role: roleWorker, Check: checkTaskFolders,
			Doc: "Folders of the worker machine bind-mounted into every container the workers run, at the same path: comma-separated name:ro|rw:teams, each naming /srv/<name>, e.g. datasets:ro:ml+research,cache:rw:*. teams is team names joined by '+', or * for every team (said explicitly, since a folder given to all teams is readable by all). A container does not say its team, so a worker gives a folder only if worker-team is one of its teams (or teams is *). rw folders are written as the container's root, which in an unprivileged task is a high host uid: make the folder writable for it. Only for worker-runtime containerd. Replaces the Python charm's /srv wrapper (which gave every /srv folder to every team). Not in the Python charm."},
	}
}

func checkComputeRuntime(v string) (string, error) {
	switch v {
	case computeNone:
		return "", nil
	case "cuda", "rocm":
		return v, nil
	}
	return "", errors.New("allowed values are none, cuda, rocm")
}

// checkGPUDeviceIDs returns all, or the indices sorted and deduplicated.
func checkGPUDeviceIDs(v string) (string, error) {
	if v == gpuDevicesAll {
		return v, nil
	}
	seen := map[int]bool{}
	var ids []int
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 63 || s != strconv.Itoa(n) {
			return "", errors.New("expected all, or comma-separated device indices such as 0,1")
		}
		if !seen[n] {
			seen[n] = true
			ids = append(ids, n)
		}
	}
	sort.Ints(ids)
	out := make([]string, len(ids))
	for i, n := range ids {
		out[i] = strconv.Itoa(n)
	}
	return strings.Join(out, ","), nil
}

// taskFolder is one entry of task-folders.
type taskFolder struct {
	Name     string
	ReadOnly bool
	Teams    []string // nil: every team (*)
}

var folderNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func parseTaskFolders(v string) ([]taskFolder, error) {
	var out []taskFolder
	seen := map[string]bool{}
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		parts := strings.Split(e, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("entry %q: expected name:ro|rw:teams, e.g. datasets:ro:ml+research or cache:rw:*", e)
		}
		name, mode, teams := parts[0], parts[1], parts[2]
		if !folderNameRE.MatchString(name) || name == ".." {
			return nil, fmt.Errorf("entry %q: %q is not a folder name under /srv (letters, digits, '.', '_', '-')", e, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("folder %s is listed twice", name)
		}
		seen[name] = true
		f := taskFolder{Name: name}
		switch mode {
		case "ro":
			f.ReadOnly = true
		case "rw":
		default:
			return nil, fmt.Errorf("entry %q: mode %q must be ro or rw", e, mode)
		}
		if teams != "*" {
			for _, t := range strings.Split(teams, "+") {
				if !teamRE.MatchString(t) {
					return nil, fmt.Errorf("entry %q: teams must be team names joined by '+', or * for every team", e)
				}
				if !contains(f.Teams, t) {
					f.Teams = append(f.Teams, t)
				}
			}
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, errors.New("no folder given: expected name:ro|rw:teams")
	}
	return out, nil
}

func checkTaskFolders(v string) (string, error) {
	if _, err := parseTaskFolders(v); err != nil {
		return "", err
	}
	return v, nil
}

// taskHook is what the worker's containers get from the charm's OCI hook; the zero value is
// nothing (no hooks dir rendered).
type taskHook struct {
	Binary         string // the hook program: the charm-owned copy of dispatch
	Config         concourse.TaskHookConfig
	AllowedDevices []string // --containerd-allowed-device rules
	Tags           []string // merged after the tag option's
}

func (h taskHook) empty() bool {
	return h.Config.NvidiaCLI == "" && len(h.Config.Devices) == 0 && len(h.Config.Mounts) == 0
}

// gpuError is a missing piece of the machine: the status names it and the fix.
type gpuError struct{ msg string }

func (e *gpuError) Error() string { return e.msg }

// planTaskHook decides the hook from the options, the machine (under p.Host) and the release
// version. It writes nothing: an error leaves the running worker as it was.
func planTaskHook(cfg Config, p Paths, version, self string) (taskHook, error) {
	h := taskHook{Binary: self}
	rt := cfg.Opts["compute-runtime"]
	folders := cfg.Opts["task-folders"]
	if rt == "" && folders == "" {
		return h, nil
	}
	if cfg.WorkerRuntime != "containerd" {
		name, val := "compute-runtime", rt
		if rt == "" {
			name, val = "task-folders", folders
		}
		return h, &ConfigError{name, val, fmt.Sprintf("needs worker-runtime containerd (the only runtime whose containers take OCI hooks); worker-runtime is %s", cfg.WorkerRuntime)}
	}
	host := p.Host
	if host == "" {
		host = "/"
	}
	ids := cfg.Opts["gpu-device-ids"]
	if ids == "" {
		ids = gpuDevicesAll
	}
	switch rt {
	case "cuda":
		gpus, err := deviceNodes(host, "/dev", `^nvidia([0-9]+)$`)
		if err != nil {
			return h, err
		}
		if len(gpus) == 0 {
			return h, &gpuError{"compute-runtime=cuda: /dev/nvidia0 not found; install the NVIDIA driver"}
		}
		chosen, err := chooseGPUs(gpus, ids, "NVIDIA")
		if err != nil {
			return h, err
		}
		cli := findTool(host, "nvidia-container-cli")
		if cli == "" {
			return h, &gpuError{"compute-runtime=cuda: nvidia-container-cli not found; install nvidia-container-toolkit"}
		}
		idx := make([]string, len(chosen))
		for i, g := range chosen {
			idx[i] = strings.TrimPrefix(filepath.Base(g.Path), "nvidia")
		}
		h.Config.NvidiaCLI, h.Config.NvidiaDevices = cli, strings.Join(idx, ",")
		h.Tags = []string{"gpu", "cuda", fmt.Sprintf("gpu-count=%d", len(chosen))}
	case "rocm":
		if !concourse.SupportsAllowedDevice(version) {
			return h, &gpuError{fmt.Sprintf("compute-runtime=rocm needs Concourse %s or later (--containerd-allowed-device); the worker runs %s: set version", concourse.AllowedDeviceSince, version)}
		}
		kfd, err := deviceNodes(host, "/dev", `^kfd()$`)
		if err != nil {
			return h, err
		}
		if len(kfd) == 0 {
			return h, &gpuError{"compute-runtime=rocm: /dev/kfd not found; install the AMD GPU driver (amdgpu)"}
		}
		gpus, err := deviceNodes(host, "/dev/dri", `^renderD([0-9]+)$`)
		if err != nil {
			return h, err
		}
		if len(gpus) == 0 {
			return h, &gpuError{"compute-runtime=rocm: no /dev/dri/renderD* node found; install the AMD GPU driver (amdgpu)"}
		}
		chosen, err := chooseGPUs(gpus, ids, "AMD")
		if err != nil {
			return h, err
		}
		h.Config.Devices = append(kfd, chosen...)
		for _, d := range h.Config.Devices {
			h.AllowedDevices = append(h.AllowedDevices, d.CgroupRule())
		}
		h.Tags = []string{"gpu", "rocm", fmt.Sprintf("gpu-count=%d", len(chosen))}
	}
	if folders != "" {
		list, err := parseTaskFolders(folders)
		if err != nil {
			return h, &ConfigError{"task-folders", folders, err.Error()}
		}
		team := cfg.Opts["worker-team"]
		for _, f := range list {
			if f.Teams != nil && team == "" {
				return h, &ConfigError{"task-folders", f.Name, fmt.Sprintf("is for teams %s, but these workers run every team's containers and a container does not say its team: set worker-team to one of them, or give the folder to * (every team)", strings.Join(f.Teams, "+"))}
			}
			if f.Teams != nil && !contains(f.Teams, team) {
				return h, &ConfigError{"task-folders", f.Name, fmt.Sprintf("is for teams %s, but these workers belong to team %s: add %s to its teams, or remove the folder", strings.Join(f.Teams, "+"), team, team)}
			}
			src := filepath.Join(srvDir, f.Name)
			if fi, err := os.Stat(filepath.Join(host, src)); err != nil || !fi.IsDir() {
				return h, &gpuError{fmt.Sprintf("task-folders: %s is not a directory on this machine: create it (mkdir -p %s) or remove %s from task-folders", src, src, f.Name)}
			}
			h.Config.Mounts = append(h.Config.Mounts, concourse.TaskMount{Source: src, Destination: src, ReadOnly: f.ReadOnly})
		}
	}
	return h, nil
}

// deviceNodes lists the character devices of host+dir whose names match re, ordered by the
// number re captures (renderD128 before renderD129, nvidia2 before nvidia10).
func deviceNodes(host, dir, re string) ([]concourse.DeviceNode, error) {
	match := regexp.MustCompile(re)
	entries, err := os.ReadDir(filepath.Join(host, dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	type numbered struct {
		n int
		d concourse.DeviceNode
	}
	var found []numbered
	for _, e := range entries {
		m := match.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(host, dir, e.Name()), &st); err != nil {
			return nil, fmt.Errorf("reading %s/%s: %w", dir, e.Name(), err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR {
			continue // not a device node (a leftover file): not a GPU
		}
		n, _ := strconv.Atoi(m[1])
		found = append(found, numbered{n, concourse.DeviceNode{Path: filepath.Join(dir, e.Name()), Major: unix.Major(uint64(st.Rdev)), Minor: unix.Minor(uint64(st.Rdev))}})
	}
	sort.Slice(found, func(i, j int) bool { return found[i].n < found[j].n })
	out := make([]concourse.DeviceNode, len(found))
	for i, f := range found {
		out[i] = f.d
	}
	return out, nil
}

// chooseGPUs picks gpu-device-ids out of the machine's GPUs (indices into gpus).
func chooseGPUs(gpus []concourse.DeviceNode, ids, vendor string) ([]concourse.DeviceNode, error) {
	if ids == gpuDevicesAll {
		return gpus, nil
	}
	var out []concourse.DeviceNode
	for _, s := range strings.Split(ids, ",") {
		n, _ := strconv.Atoi(s)
		if n >= len(gpus) {
			names := make([]string, len(gpus))
			for i, g := range gpus {
				names[i] = g.Path
			}
			return nil, &gpuError{fmt.Sprintf("gpu-device-ids=%s: this machine has %d %s GPU(s) (%s): use indices 0-%d or all", ids, len(gpus), vendor, strings.Join(names, ", "), len(gpus)-1)}
		}
		out = append(out, gpus[n])
	}
	return out, nil
}

// findTool finds a program where the distributions install it, under host; the result is the
// path on the machine.
func findTool(host, name string) string {
	for _, dir := range []string{"/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(filepath.Join(host, p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// taskHookFiles are the hook's files beside worker.env: the hooks dir's one file and the
// configuration it reads. Both are public (no secret in them), 0644 root.
func taskHookFiles(h taskHook, p Paths) ([]fileSpec, error) {
	if h.empty() {
		return nil, nil
	}
	cfgPath := filepath.Join(p.ConfigDir, fileTaskHook)
	hook, err := concourse.RenderOCIHookFile(concourse.OCIHook{
		Path:    h.Binary,
		Args:    []string{"dispatch", hookSubcmd, "--config", cfgPath},
		Env:     []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Timeout: 60,
	})
	if err != nil {
		return nil, err
	}
	return []fileSpec{
		{Path: cfgPath, Data: h.Config.Render(), Mode: 0o644, UID: 0, GID: 0},
		{Path: filepath.Join(p.ConfigDir, dirOCIHooks, fileOCIHook), Data: hook, Mode: 0o644, UID: 0, GID: 0},
	}, nil
}

// taskHookEnv is what the hook adds to worker.env.
func taskHookEnv(h taskHook, p Paths) []concourse.EnvVar {
	if h.empty() {
		return nil
	}
	out := []concourse.EnvVar{{Name: "CONCOURSE_CONTAINERD_OCI_HOOKS_DIR", Value: filepath.Join(p.ConfigDir, dirOCIHooks)}}
	if len(h.AllowedDevices) > 0 {
		// Concourse splits list variables at commas (concourse-contract §1); a rule has none.
		out = append(out, concourse.EnvVar{Name: "CONCOURSE_CONTAINERD_ALLOWED_DEVICE", Value: strings.Join(h.AllowedDevices, ",")})
	}
	return out
}

// mergeTags is the tag option's tags, then the hook's, each once.
func mergeTags(user, gpu []string) []string {
	out := append([]string(nil), user...)
	for _, t := range gpu {
		if !contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// hookBinaryFile is the charm's own binary (src, $JUJU_CHARM_DIR/dispatch) copied to the
// hook's stable path h.Binary: written (atomically) only when its content differs, so a
// container starting during `juju refresh` runs either the old binary or the new one, whole.
func hookBinaryFile(h taskHook, src string) ([]fileSpec, error) {
	if h.empty() {
		return nil, nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("reading the charm's binary for the OCI hook: %w", err)
	}
	return []fileSpec{{Path: h.Binary, Data: b, Mode: 0o755, UID: 0, GID: 0}}, nil
}

// removeTaskHookFiles removes what taskHookFiles and hookBinaryFile wrote, once the worker runs
// without them; each removal is an action of the hook. The hooks dir goes too when empty.
func (u *unitRun) removeTaskHookFiles() error {
	p := u.deps.Paths
	hooksDir := filepath.Join(p.ConfigDir, dirOCIHooks)
	for _, f := range []string{
		filepath.Join(hooksDir, fileOCIHook),
		filepath.Join(p.ConfigDir, fileTaskHook),
		filepath.Join(p.StateDir, fileHookBinary),
	} {
		err := os.Remove(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("removing the task hook's %s: %w", f, err)
		}
		u.act("Remove %s (no compute-runtime, no task-folders)", f)
	}
	if err := os.Remove(hooksDir); err == nil {
		u.act("Remove %s", hooksDir)
	} else if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("removing %s: %w", hooksDir, err)
	}
	return nil
}
