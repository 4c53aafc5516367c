package hooks

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// ensureWorker converges the worker service. It (re)starts only when its inputs changed, and during
// an upgrade it keeps running the old version until the web runs the new one (web first, then the
// workers): its old release stays on disk as `previous`.
func (u *unitRun) ensureWorker(ctx context.Context) (ready bool, version string, err error) {
	if !u.role.Worker {
		return false, "", u.removeService(ctx, workerSvc, &u.state.Worker, u.path(fileWorkerEnv))
	}
	u.unitData[keyWorkerKey] = u.workerPub
	if u.state.Worker != nil {
		u.unitData[keyRunning] = u.state.Worker.Version
	}
	if held, err := u.ensureHold(ctx); held || err != nil {
		return false, "", err // landed or retired by the operator: no hook starts it (lifecycle.go)
	}
	if u.installed == "" {
		return false, "", nil
	}
	hosts, keys, webVersion, refused := tsaEndpoints(u.f)
	if len(refused) > 0 {
		u.logRefusals(refused)
		for _, r := range refused {
			u.status.note(r.status())
		}
	}
	if u.role.Web && u.tsaPub != "" {
		// mode=all: the unit's own web is a TSA too; it is not in the relation's remote units.
		own := tsaHost(u.f.Addr.Peers)
		if !contains(hosts, own) {
			hosts = append(hosts, own)
		}
		if !contains(keys, u.tsaPub) {
			keys = append(keys, u.tsaPub)
		}
		if u.state.Web != nil {
			webVersion = u.state.Web.Version
		}
	}
	if len(hosts) == 0 && u.cfg.Mode == "worker" && len(u.f.Flight) == 0 {
		u.status.blocked(needWebMessage(u.f.Env.AppName))
		return false, "", nil
	}
	if len(hosts) == 0 && len(refused) > 0 {
		// Waiting would not help: the webs published keys, and every one was refused (the notes
		// name them). A running worker keeps its files from before.
		u.status.blocked("No web unit offers a usable TSA host key")
		return false, "", nil
	}
	if len(hosts) == 0 {
		u.status.waiting("Waiting for TSA connection info...")
		return false, "", nil
	}
	if rec := u.state.Worker; rec != nil && rec.Version != u.installed && webVersion != "" && webVersion != u.installed {
		// The web has not moved to the new release yet; the worker follows it, not the disk.
		// Its old release stays on disk as `previous`.
		if active, err := u.deps.Services.IsActive(ctx, workerSvc); err != nil {
			return false, "", err
		} else if active {
			u.logf("keeping %s on Concourse %s until the web runs %s (web runs %s)", workerSvc, rec.Version, u.installed, webVersion)
			u.unitData[keyRunning] = rec.Version
			return true, rec.Version, nil
		}
	}
	pubFile := []byte(strings.Join(keys, "\n") + "\n")
	// GPUs and task folders (gpu.go): decided from the machine before anything is written, so a
	// missing driver or folder leaves the running worker as it was.
	// The hook runs the charm's binary from a charm-owned copy: $JUJU_CHARM_DIR/dispatch is
	// replaced under the worker's feet by `juju refresh`, while containers keep starting.
	hookBin := filepath.Join(u.deps.Paths.StateDir, fileHookBinary)
	hook, err := planTaskHook(u.cfg, u.deps.Paths, u.installed, hookBin)
	var missing *gpuError
	if errors.As(err, &missing) {
		u.status.blocked(missing.msg)
		return false, "", nil
	}
	if err != nil {
		u.status.blocked(fmt.Sprintf("Invalid worker configuration: %v", err))
		return false, "", nil
	}
	hookFiles, err := taskHookFiles(hook, u.deps.Paths)
	if err != nil {
		return false, "", err
	}
	binFile, err := hookBinaryFile(hook, filepath.Join(u.f.Env.CharmDir, "dispatch"))
	if err != nil {
		return false, "", err
	}
	envFile, unitFile, err := renderWorker(u.cfg, u.deps.Paths, u.f.Env.UnitName, u.binary, hosts, hook)
	if err != nil {
		u.status.blocked(fmt.Sprintf("Invalid worker configuration: %v", err))
		return false, "", nil
	}
	spec := serviceSpec{
		Name: workerSvc,
		Files: []fileSpec{
			{Path: u.path(keyTSAPublicForWkr), Data: pubFile, Mode: 0o644, UID: 0, GID: 0},
			{Path: u.path(fileWorkerEnv), Data: envFile, Mode: 0o600, UID: 0, GID: 0},
		},
		UnitFile: fileSpec{Path: u.unitPath(workerSvc), Data: unitFile, Mode: 0o644, UID: -1, GID: -1},
		Inputs: map[string]string{
			"environment":     hashOf(envFile),
			"unit file":       hashOf(unitFile),
			"TSA public keys": hashOf(pubFile),
			"release":         u.installed + " " + u.binary,
		},
		Version: u.installed,
		Binary:  u.binary,
		NoBlock: true,
	}
	// The worker reads the hooks dir once, at start: the hook's files are inputs (a change
	// restarts it); the configuration is read by every hook run, so it is one too, to be sure.
	spec.Files = append(spec.Files, hookFiles...)
	for _, f := range hookFiles {
		spec.Inputs[filepath.Base(f.Path)] = hashOf(f.Data)
	}
	// The hook's binary is written first (the hook file names it) and is no input: each
	// container start runs it afresh, so a new charm's binary needs no worker restart.
	spec.Files = append(binFile, spec.Files...)
	plan, err := u.planService(ctx, spec, nil)
	if err != nil {
		return false, "", err
	}
	if ok, err := u.applyService(ctx, spec, plan); err != nil || !ok {
		return false, "", err
	}
	if plan.restart {
		u.jlog(juju.LogInfo, fmt.Sprintf("started %s with Concourse %s (TSA %s)", workerSvc, u.installed, strings.Join(hosts, ",")))
	}
	if draining, err := u.reportDrain(ctx, plan.restart); err != nil || draining {
		return false, "", err
	}
	if hook.empty() {
		// Only now: the worker runs without the hooks dir, so no container start needs them.
		if err := u.removeTaskHookFiles(); err != nil {
			return false, "", err
		}
	}
	u.unitData[keyRunning] = u.state.Worker.Version
	return true, u.state.Worker.Version, nil
}

// renderWorker builds the worker's environment and unit file from plain values (see renderWeb).
// hook is what planTaskHook decided (the zero value: no GPUs, no task folders).
func renderWorker(cfg Config, p Paths, unit, binary string, tsaHosts []string, hook taskHook) ([]byte, []byte, error) {
	path := func(rel string) string { return filepath.Join(p.ConfigDir, rel) }
	dns := cfg.DNSServers
	if cfg.WorkerRuntime == "houdini" {
		// houdini steps are host processes using the host's resolver; the containerd-dns-server
		// default (config.yaml says so) does not apply to them.
		dns = nil
	}
	extra := optionEnv(cfg.Opts, roleWorker, p) // proxies, worker-team, worker-ephemeral
	extra = append(extra, taskHookEnv(hook, p)...)
	if n := cfg.Opts["worker-max-containers"]; n != "" {
		env := workerMaxContainersEnv(cfg.WorkerRuntime)
		if env == "" {
			return nil, nil, &ConfigError{"worker-max-containers", n, "worker-runtime houdini runs no containers: set it to 0, or choose containerd or guardian"}
		}
		extra = append(extra, concourse.EnvVar{Name: env, Value: n})
	}
	var flags []string
	if raw := cfg.Opts["extra-worker-flags"]; raw != "" {
		var err error
		if flags, err = concourse.SplitFlags(raw); err != nil {
			return nil, nil, &ConfigError{"extra-worker-flags", raw, err.Error()}
		}
	}
	env, err := concourse.WorkerEnv(concourse.WorkerConfig{
		Name:                 storage.UnitTag(unit), // stable and unique: the unit, as the share names it
		WorkDir:              p.WorkDir,
		TSAHosts:             tsaHosts,
		TSAPublicKeyPath:     path(keyTSAPublicForWkr),
		WorkerPrivateKeyPath: path(keyWorker),
		LogLevel:             cfg.LogLevel,
		Tags:                 mergeTags(cfg.Tags, hook.Tags),
		Runtime:              cfg.WorkerRuntime,
		DNSProxyEnable:       cfg.DNSProxyEnable,
		DNSServers:           dns,
		BaggageclaimDriver:   cfg.Opts["worker-baggageclaim-driver"],
		Extra:                extra,
	})
	if err != nil {
		return nil, nil, err
	}
	unitFile := concourse.WorkerUnit(concourse.UnitOptions{
		Description: "Concourse CI worker (managed by the concourse-ci-machine charm)",
		Binary:      binary,
		Subcommand:  "worker",
		EnvFile:     path(fileWorkerEnv),
		User:        "root",
		ExtraArgs:   flags,
		StopTimeout: drainTimeoutOf(cfg),
	})
	return concourse.RenderEnv(env), unitFile, nil
}

// tsaEndpoints lists the TSA endpoints and canonical host public keys published by the web units
// this unit can reach, sorted so that rendered files (and their hashes) do not depend on map
// order. A web whose tsa-public-key is not exactly one SSH public key is left out with its host,
// and reported: its key is not written, and a worker told to dial it could never verify it.
func tsaEndpoints(f *Facts) (hosts, keys []string, version string, refused []keyRefusal) {
	seenH, seenK := map[string]bool{}, map[string]bool{}
	add := func(unit string, bag map[string]string) {
		h, v := bag[keyTSAHost], bag[keyTSAPublicKey]
		if h == "" && bag[keyWebIP] != "" {
			h = tsaHost(bag[keyWebIP])
		}
		if h == "" || strings.TrimSpace(v) == "" {
			return // not a web, or not published yet
		}
		k, ok := checkedKey(unit, keyTSAPublicKey, v, &refused)
		if !ok {
			return
		}
		if !seenH[h] {
			seenH[h] = true
			hosts = append(hosts, h)
		}
		if !seenK[k] {
			seenK[k] = true
			keys = append(keys, k)
		}
	}
	if f.Peers != nil {
		for unit, bag := range f.Peers.Units {
			add(unit, bag)
		}
		version = f.Peers.AppData[keyWebVersion]
	}
	for _, r := range f.Flight {
		for unit, bag := range r.Units {
			add(unit, bag)
		}
		if version == "" {
			version = r.AppData[keyWebVersion]
		}
	}
	sort.Strings(hosts)
	sort.Strings(keys)
	sortRefusals(refused)
	return hosts, keys, version, refused
}

// workerOptions are the worker's settings of issue 10 (not in the Python charm), checked
// against the real `concourse worker --help` of 7.14.3 and 8.2.5.
func workerOptions() []option {
	return []option{
		{Name: "worker-baggageclaim-driver", Type: "string", Default: concourse.DefaultBaggageclaimDriver, Role: roleWorker, Check: checkBaggageclaimDriver,
			Doc: "Volume driver of the workers: naive (copies, works everywhere; the charm's default, as the Python charm rendered), overlay, btrfs, or detect (Concourse picks overlay on kernels 4.0 and later, else btrfs if usable, else naive). Changing it restarts the workers; volumes of the old driver are not reused. Not in the Python charm."},
		{Name: "worker-max-containers", Type: "int", Default: "0", Role: roleWorker, Check: checkCount,
			Doc: "Most containers a worker runs at once (CONCOURSE_CONTAINERD_MAX_CONTAINERS or CONCOURSE_GARDEN_MAX_CONTAINERS, after worker-runtime); 0 leaves Concourse's 250. Not for worker-runtime houdini. Not in the Python charm."},
		{Name: "worker-team", Type: "string", Role: roleWorker, Env: "CONCOURSE_TEAM", Check: checkTeamName,
			Doc: "Team the workers belong to: they run only that team's builds (empty: every team's). Not in the Python charm."},
		{Name: "worker-ephemeral", Type: "boolean", Default: "false", Role: roleWorker, Env: "CONCOURSE_EPHEMERAL", Check: checkSwitch,
			Doc: "Workers are removed from Concourse at once when they stop heartbeating, instead of stalling. Not in the Python charm."},
		{Name: "extra-worker-flags", Type: "string", Role: roleWorker, Check: checkExtraWorkerFlags,
			Doc: "Further `concourse worker` flags, space-separated, quoted as in a shell, e.g. --garden-network-pool=10.80.0.0/16. Flags the charm sets itself and flags carrying secrets are refused. Not in the Python charm."},
	}
}

func checkBaggageclaimDriver(v string) (string, error) {
	if !contains([]string{"naive", "overlay", "btrfs", "detect"}, v) {
		return "", errors.New("allowed values are naive, overlay, btrfs, detect")
	}
	return v, nil
}

// checkTeamName accepts a Concourse team name: one word, no slashes.
func checkTeamName(v string) (string, error) {
	if !teamRE.MatchString(v) {
		return "", errors.New("expected a team name: letters, digits, '-', '_' and '.'")
	}
	return v, nil
}

var teamRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// workerMaxContainersEnv is the variable of worker-max-containers for runtime.
func workerMaxContainersEnv(runtime string) string {
	switch runtime {
	case "guardian":
		return "CONCOURSE_GARDEN_MAX_CONTAINERS"
	case "houdini":
		return ""
	}
	return "CONCOURSE_CONTAINERD_MAX_CONTAINERS"
}

// charmWorkerFlags maps every `concourse worker` flag the charm renders to its variable,
// derived from renderWorker with every setting on for each runtime (see charmWebFlags).
func charmWorkerFlags() (map[string]string, error) {
	out := map[string]string{}
	for _, runtime := range workerRuntimes {
		cfg := Config{LogLevel: "info", Tags: []string{"t"}, WorkerRuntime: runtime, DNSProxyEnable: runtime != "houdini",
			Opts: map[string]string{"worker-team": "main", "worker-ephemeral": "true", "http-proxy": "http://p:1", "https-proxy": "http://p:1", "no-proxy": "x"}}
		if runtime != "houdini" {
			cfg.DNSServers = []string{"192.0.2.53"}
			cfg.Opts["worker-max-containers"] = "10"
		}
		var hook taskHook
		if runtime == "containerd" {
			hook = taskHook{Binary: "/charm/dispatch", AllowedDevices: []string{"c 238:0 rwm"},
				Config: concourse.TaskHookConfig{Devices: []concourse.DeviceNode{{Path: "/dev/kfd", Major: 238}}}}
		}
		env, _, err := renderWorker(cfg, Paths{ConfigDir: "/etc/concourse", WorkDir: "/var/lib/concourse-worker/work"}, "app/0", "/bin/concourse", []string{"192.0.2.1:2222"}, hook)
		if err != nil {
			return nil, fmt.Errorf("listing the flags the charm renders for the worker: %w", err)
		}
		vars, err := concourse.ParseEnvFile(env)
		if err != nil {
			return nil, err
		}
		for name := range vars {
			if strings.HasPrefix(name, "CONCOURSE_") {
				out[flagOfEnv(name)] = name
			}
		}
	}
	// The other runtime's max-containers flag is the same setting.
	out["--garden-max-containers"], out["--containerd-max-containers"] = "CONCOURSE_GARDEN_MAX_CONTAINERS", "CONCOURSE_CONTAINERD_MAX_CONTAINERS"
	return out, nil
}

// workerFlagHint says which option sets a worker variable the charm renders.
func workerFlagHint(env string) string {
	switch {
	case strings.HasPrefix(env, "CONCOURSE_TSA_"):
		return "the charm exchanges the TSA keys and addresses over relations"
	case strings.HasSuffix(env, "_MAX_CONTAINERS"):
		return "use the worker-max-containers option"
	case env == "CONCOURSE_BAGGAGECLAIM_DRIVER":
		return "use the worker-baggageclaim-driver option"
	case env == "CONCOURSE_TEAM":
		return "use the worker-team option"
	case env == "CONCOURSE_EPHEMERAL":
		return "use the worker-ephemeral option"
	case env == "CONCOURSE_TAG":
		return "use the tag option"
	case env == "CONCOURSE_CONTAINERD_OCI_HOOKS_DIR" || env == "CONCOURSE_CONTAINERD_ALLOWED_DEVICE":
		return "use the compute-runtime, gpu-device-ids and task-folders options"
	case env == "CONCOURSE_RUNTIME":
		return "use the worker-runtime option"
	case strings.Contains(env, "_DNS_"):
		return "use the containerd-dns-proxy-enable and containerd-dns-server options"
	case env == "CONCOURSE_LOG_LEVEL":
		return "use the log-level option"
	}
	return "the charm sets it for every worker"
}

// checkExtraWorkerFlags splits extra-worker-flags like extra-web-flags (parseExtraWebFlags):
// loosely first, so an unbalanced quote does not echo a secret into the status, then exactly.
// A flag the charm renders is refused (the operator's copy would fight it), and so is a flag
// carrying a secret (argv and the unit file are world-readable). It returns the value as given;
// renderWorker splits it again.
func checkExtraWorkerFlags(raw string) (string, error) {
	managed, err := charmWorkerFlags()
	if err != nil {
		return "", err
	}
	check := func(w string) error {
		name, _, hasValue := strings.Cut(w, "=")
		switch {
		case strings.HasPrefix(name, "--") && len(name) > 2:
			name = strings.ToLower(name)
		case hasValue && envNameRE.MatchString(name):
			return &ConfigError{"extra-worker-flags", name, fmt.Sprintf("environment variables are not accepted here: give the flag instead, %s=…", flagOfEnv(name))}
		default:
			return nil
		}
		if env, ok := managed[name]; ok {
			return &ConfigError{"extra-worker-flags", name, fmt.Sprintf("the charm sets %s itself: %s", name, workerFlagHint(env))}
		}
		if carriesSecret(name) {
			return &ConfigError{"extra-worker-flags", name, fmt.Sprintf("%s carries a secret, which would be readable in the process list and in the world-readable unit file: extra-worker-flags takes no secrets", name)}
		}
		return nil
	}
	for _, w := range strings.Fields(raw) {
		if err := check(strings.Trim(w, `'"`)); err != nil {
			return "", err
		}
	}
	words, err := concourse.SplitFlags(raw)
	if err != nil {
		return "", &ConfigError{"extra-worker-flags", raw, err.Error()}
	}
	for _, w := range words {
		if err := check(w); err != nil {
			return "", err
		}
	}
	return raw, nil
}
