package hooks

import (
	"context"
	"fmt"
	"path/filepath"
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
	envFile, unitFile, err := renderWorker(u.cfg, u.deps.Paths, u.f.Env.UnitName, u.binary, hosts)
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
	}
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
	u.unitData[keyRunning] = u.state.Worker.Version
	return true, u.state.Worker.Version, nil
}

// renderWorker builds the worker's environment and unit file from plain values (see renderWeb).
func renderWorker(cfg Config, p Paths, unit, binary string, tsaHosts []string) ([]byte, []byte, error) {
	path := func(rel string) string { return filepath.Join(p.ConfigDir, rel) }
	dns := cfg.DNSServers
	if cfg.WorkerRuntime == "houdini" {
		// houdini steps are host processes using the host's resolver; the containerd-dns-server
		// default (config.yaml says so) does not apply to them.
		dns = nil
	}
	env, err := concourse.WorkerEnv(concourse.WorkerConfig{
		Name:                 storage.UnitTag(unit), // stable and unique: the unit, as the share names it
		WorkDir:              p.WorkDir,
		TSAHosts:             tsaHosts,
		TSAPublicKeyPath:     path(keyTSAPublicForWkr),
		WorkerPrivateKeyPath: path(keyWorker),
		LogLevel:             cfg.LogLevel,
		Tags:                 cfg.Tags,
		Runtime:              cfg.WorkerRuntime,
		DNSProxyEnable:       cfg.DNSProxyEnable,
		DNSServers:           dns,
		Extra:                optionEnv(cfg.Opts, roleWorker, p), // http-proxy, https-proxy, no-proxy
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
