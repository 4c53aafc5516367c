package hooks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// ensureWorker converges the worker service. It (re)starts only when its inputs changed, and during
// an upgrade it keeps running the old version until the web runs the new one (web first, then the
// workers): its old release stays on disk as `previous`.
func (u *unitRun) ensureWorker(ctx context.Context) (ready bool, version string, err error) {
	if !u.role.Worker {
		return false, "", u.removeService(ctx, workerSvc, &u.state.Worker, u.path(fileWorkerEnv))
	}
	u.unitData[keyWorkerKey] = u.workerPub
	if u.installed == "" {
		return false, "", nil
	}
	hosts, keys, webVersion := webUnits(u.f)
	if u.role.Web && u.tsaPub != "" {
		// mode=all: the unit's own web is a TSA too; it is not in the relation's remote units.
		own := fmt.Sprintf("%s:%d", u.f.Address, tsaPort)
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
	if len(hosts) == 0 {
		u.status.waiting("Waiting for TSA connection info...")
		return false, "", nil
	}
	rec := u.state.Worker
	active, err := u.deps.Services.IsActive(ctx, workerSvc)
	if err != nil {
		return false, "", err
	}
	if rec != nil && active && rec.Version != u.installed && webVersion != "" && webVersion != u.installed {
		// The web has not moved to the new release yet; the worker follows it, not the disk.
		u.logf("keeping %s on Concourse %s until the web runs %s (web runs %s)", workerSvc, rec.Version, u.installed, webVersion)
		u.unitData[keyRunning] = rec.Version
		return true, rec.Version, nil
	}
	pubFile := []byte(strings.Join(keys, "\n") + "\n")
	if _, err := concourse.WriteFileAtomic(u.path(keyTSAPublicForWkr), pubFile, 0o644, 0, 0); err != nil {
		return false, "", err
	}
	envFile, unitFile, err := renderWorker(u.cfg, u.deps.Paths, u.f.Env.UnitName, u.binary, hosts)
	if err != nil {
		u.status.blocked(fmt.Sprintf("Invalid worker configuration: %v", err))
		return false, "", nil
	}
	if _, err := concourse.WriteFileAtomic(u.path(fileWorkerEnv), envFile, 0o600, 0, 0); err != nil {
		return false, "", err
	}
	if err := os.MkdirAll(u.deps.Paths.SystemdDir, 0o755); err != nil {
		return false, "", err
	}
	unitChanged, err := concourse.WriteFileAtomic(u.unitPath(workerSvc), unitFile, 0o644, -1, -1)
	if err != nil {
		return false, "", err
	}
	if unitChanged {
		if err := u.deps.Services.DaemonReload(ctx); err != nil {
			return false, "", err
		}
	}
	hash := hashOf(envFile, unitFile, pubFile)
	if rec == nil || rec.Hash != hash || !active {
		if err := u.deps.Services.Enable(ctx, workerSvc); err != nil {
			return false, "", err
		}
		verb := "Start"
		if active {
			verb = "Restart"
			err = u.deps.Services.Restart(ctx, workerSvc)
		} else {
			err = u.deps.Services.Start(ctx, workerSvc)
		}
		if err != nil {
			u.status.blocked(fmt.Sprintf("Cannot start %s: %v", workerSvc, err))
			return false, "", nil
		}
		u.act("%s %s (Concourse %s, TSA %s)", verb, workerSvc, u.installed, strings.Join(hosts, ","))
		u.jlog(juju.LogInfo, fmt.Sprintf("%sed %s with Concourse %s", strings.ToLower(verb), workerSvc, u.installed))
		u.state.Worker = &ServiceRecord{Hash: hash, Version: u.installed, StartedAt: u.now(), StartedWith: u.binary}
		u.changed = true
		if err := u.store.RecordRunning(u.installed, u.deps.Paths.StateDir); err != nil {
			u.logf("recording the running version: %v", err)
		}
	}
	u.unitData[keyRunning] = u.state.Worker.Version
	return true, u.state.Worker.Version, nil
}

// renderWorker builds the worker's environment and unit file from plain values (see renderWeb).
func renderWorker(cfg Config, p Paths, unit, binary string, tsaHosts []string) ([]byte, []byte, error) {
	path := func(rel string) string { return filepath.Join(p.ConfigDir, rel) }
	env, err := concourse.WorkerEnv(concourse.WorkerConfig{
		Name:                 unitTag(unit),
		WorkDir:              p.WorkDir,
		TSAHosts:             tsaHosts,
		TSAPublicKeyPath:     path(keyTSAPublicForWkr),
		WorkerPrivateKeyPath: path(keyWorker),
		LogLevel:             cfg.LogLevel,
		Tags:                 cfg.Tags,
		DNSProxyEnable:       cfg.DNSProxyEnable,
		DNSServers:           cfg.DNSServers,
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
