package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Keys a unit publishes for each role; the keys of a role it does not have are published empty,
// which deletes them (juju-contract §8), so a former web stops advertising its TSA.
var (
	webUnitKeys    = []string{keyTSAHost, keyWebIP, keyTSAPublicKey, keyWebVersion}
	workerUnitKeys = []string{keyWorkerKey, keyRunning}
)

func (u *unitRun) publish(ctx context.Context) error {
	bag := map[string]string{}
	for _, k := range append(append([]string{}, webUnitKeys...), workerUnitKeys...) {
		bag[k] = u.unitData[k] // "" deletes
	}
	if u.f.Peers != nil {
		if err := u.juju.SetRelationData(ctx, u.f.Peers.ID, bag); err != nil {
			return fmt.Errorf("publishing on the peer relation: %w", err)
		}
		if u.f.Leader && len(u.peerApp) > 0 {
			if err := u.juju.SetAppRelationData(ctx, u.f.Peers.ID, u.peerApp); err != nil {
				return fmt.Errorf("publishing application data on the peer relation: %w", err)
			}
			u.act("Publish %s on the peer relation", describe(u.peerApp))
		}
	}
	for _, r := range u.f.TSA {
		web := map[string]string{}
		for _, k := range webUnitKeys {
			web[k] = u.unitData[k]
		}
		if err := u.juju.SetRelationData(ctx, r.ID, web); err != nil {
			return fmt.Errorf("publishing the TSA on relation %d: %w", r.ID, err)
		}
		if u.f.Leader && u.role.Web {
			// A separate worker application has no peer relation with us: the installed and
			// running versions travel here, and wake its units as the peer data wakes ours.
			app := map[string]string{}
			for k, v := range u.tsaApp {
				if v != "" {
					app[k] = v
				}
			}
			if len(app) > 0 {
				if err := u.juju.SetAppRelationData(ctx, r.ID, app); err != nil {
					return fmt.Errorf("publishing versions on relation %d: %w", r.ID, err)
				}
			}
		}
	}
	for _, r := range u.f.Flight {
		wk := map[string]string{keyWorkerKey: u.unitData[keyWorkerKey], keyRunning: u.unitData[keyRunning]}
		if err := u.juju.SetRelationData(ctx, r.ID, wk); err != nil {
			return fmt.Errorf("publishing the worker key on relation %d: %w", r.ID, err)
		}
	}
	if err := u.publishMetrics(ctx); err != nil {
		return err
	}
	if v := u.runningVersion(); v != "" && u.f.Event.Name != "update-status" {
		if err := u.juju.SetAppVersion(ctx, v); err != nil {
			return err
		}
	}
	return nil
}

func (u *unitRun) runningVersion() string {
	switch {
	case u.state.Web != nil:
		return u.state.Web.Version
	case u.state.Worker != nil:
		return u.state.Worker.Version
	}
	return ""
}

// publishMetrics speaks the prometheus_scrape interface on the monitoring relation: the leader
// publishes the scrape job ("*" stands for each unit's address), each web unit its address.
// Nothing is advertised while enable-metrics is off (the reference advertised :9391 regardless:
// weakness #15), and workers, which serve no metrics, publish no address.
func (u *unitRun) publishMetrics(ctx context.Context) error {
	serving := u.role.Web && u.cfg.EnableMetrics && u.state.Web != nil
	for _, id := range u.f.Metrics {
		unit := map[string]string{"prometheus_scrape_unit_address": "", "prometheus_scrape_unit_name": ""}
		if serving {
			unit["prometheus_scrape_unit_address"] = u.f.Address
			unit["prometheus_scrape_unit_name"] = u.f.Env.UnitName
		}
		if err := u.juju.SetRelationData(ctx, id, unit); err != nil {
			return fmt.Errorf("publishing the metrics endpoint on relation %d: %w", id, err)
		}
		if !u.f.Leader {
			continue
		}
		jobs := []map[string]any{}
		if u.cfg.EnableMetrics && u.cfg.Mode != "worker" {
			jobs = append(jobs, map[string]any{
				"metrics_path":   "/metrics",
				"static_configs": []map[string]any{{"targets": []string{fmt.Sprintf("*:%d", metricsPort)}}},
			})
		}
		jobsJSON, err := json.Marshal(jobs)
		if err != nil {
			return err
		}
		meta, err := json.Marshal(map[string]string{
			"model": u.f.Env.ModelName, "model_uuid": u.f.Env.ModelUUID, "application": u.f.Env.AppName,
			"unit": u.f.Env.UnitName, "charm_name": "concourse-ci-machine",
		})
		if err != nil {
			return err
		}
		if err := u.juju.SetAppRelationData(ctx, id, map[string]string{"scrape_jobs": string(jobsJSON), "scrape_metadata": string(meta)}); err != nil {
			return fmt.Errorf("publishing the scrape job on relation %d: %w", id, err)
		}
	}
	return nil
}

// ensurePorts opens the web port and the TSA port on a web unit and closes everything else the
// unit opened, including the old web-port after a change.
func (u *unitRun) ensurePorts(ctx context.Context) error {
	want := map[string]juju.Port{}
	if u.role.Web {
		ports := []int{u.cfg.WebPort, tsaPort}
		if u.cfg.EnableMetrics {
			ports = append(ports, metricsPort)
		}
		for _, p := range ports {
			port := juju.Port{From: p, To: p, Protocol: "tcp"}
			want[port.String()] = port
		}
	}
	opened, err := u.juju.OpenedPorts(ctx)
	if err != nil {
		return fmt.Errorf("listing opened ports: %w", err)
	}
	have := map[string]bool{}
	for _, p := range opened {
		have[p.String()] = true
		if _, ok := want[p.String()]; !ok {
			if err := u.juju.ClosePort(ctx, p); err != nil {
				return fmt.Errorf("closing port %s: %w", p, err)
			}
			u.act("Close port %s", p)
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !have[n] {
			if err := u.juju.OpenPort(ctx, want[n]); err != nil {
				return fmt.Errorf("opening port %s: %w", n, err)
			}
			u.act("Open port %s", n)
		}
	}
	return nil
}

func describe(m map[string]string) string {
	s := ""
	for _, k := range sortedKeys(m) {
		if s != "" {
			s += ", "
		}
		v := m[k]
		if k == keyAdminSecret {
			v = "(secret id)"
		}
		s += fmt.Sprintf("%s=%q", k, v)
	}
	return s
}
