package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse/observe"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Keys a unit publishes for each role; the keys of a role it does not have are published empty,
// which deletes them (juju-contract §8), so a former web stops advertising its TSA.
var (
	webUnitKeys    = []string{keyTSAHost, keyWebIP, keyTSAPublicKey, keyWebVersion}
	workerUnitKeys = []string{keyWorkerKey, keyRunning}
)

// publication is what this unit should have published once the hook is over: every bag it
// writes, as plain data built from the run's decisions without I/O. publishSteps turns the part
// that differs from what Juju already holds into named steps.
type publication struct {
	Writes     []relationWrite
	AppVersion string // application-version-set; "" leaves it
}

// relationWrite is one bag this unit writes.
type relationWrite struct {
	ID   int
	App  bool              // the application bag (leader only)
	Data map[string]string // "" deletes a key
	What string            // for the step and its error: "the TSA on relation 3"
	// Peers marks the peer application bag: Data holds only what differs from the peer data
	// read in this hook (setPeerApp), so it is written whenever it is not empty.
	Peers bool
}

func (u *unitRun) publication() (publication, error) {
	var p publication
	bag := map[string]string{}
	for _, k := range append(append([]string{}, webUnitKeys...), workerUnitKeys...) {
		bag[k] = u.unitData[k] // "" deletes
	}
	if u.f.Peers != nil {
		p.Writes = append(p.Writes, relationWrite{ID: u.f.Peers.ID, Data: bag, What: "on the peer relation"})
		if u.f.Leader && len(u.peerApp) > 0 {
			p.Writes = append(p.Writes, relationWrite{ID: u.f.Peers.ID, App: true, Peers: true, Data: u.peerApp,
				What: "application data on the peer relation"})
		}
	}
	for _, r := range u.f.TSA {
		web := map[string]string{}
		for _, k := range webUnitKeys {
			web[k] = u.unitData[k]
		}
		if addr := u.f.Addr.TSA[r.ID]; addr != "" && web[keyTSAHost] != "" {
			// What this worker application can reach: network-get -r gives the public address
			// across models, where the peers address would be unreachable.
			web[keyTSAHost], web[keyWebIP] = tsaHost(addr), addr
		}
		p.Writes = append(p.Writes, relationWrite{ID: r.ID, Data: web, What: fmt.Sprintf("the TSA on relation %d", r.ID)})
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
				p.Writes = append(p.Writes, relationWrite{ID: r.ID, App: true, Data: app, What: fmt.Sprintf("versions on relation %d", r.ID)})
			}
		}
	}
	for _, r := range u.f.Flight {
		wk := map[string]string{keyWorkerKey: u.unitData[keyWorkerKey], keyRunning: u.unitData[keyRunning]}
		p.Writes = append(p.Writes, relationWrite{ID: r.ID, Data: wk, What: fmt.Sprintf("the worker key on relation %d", r.ID)})
	}
	metrics, err := u.metricsWrites()
	if err != nil {
		return p, err
	}
	p.Writes = append(p.Writes, metrics...)
	dashboards, err := u.dashboardWrites()
	if err != nil {
		return p, err
	}
	p.Writes = append(p.Writes, dashboards...)
	p.Writes = append(p.Writes, u.vaultWrites()...)
	p.AppVersion = u.runningVersion()
	return p, nil
}

// publishSteps is the difference between the publication and what this unit already published
// (the relation cache's record, relcache.go invariant 6): unchanged data is not written again,
// and application-version-set runs only when the version changes.
func (u *unitRun) publishSteps(p publication) []step {
	var steps []step
	for _, w := range p.Writes {
		switch {
		case w.Peers:
		case w.App && u.f.Kept.sameAppData(w.ID, w.Data):
			continue
		case !w.App && u.f.Kept.samePublished(w.ID, w.Data):
			continue
		}
		steps = append(steps, step{Summary: "Publish " + w.What, Do: func(ctx context.Context) error {
			var err error
			if w.App {
				err = u.juju.SetAppRelationData(ctx, w.ID, w.Data)
			} else {
				err = u.juju.SetRelationData(ctx, w.ID, w.Data)
			}
			if err != nil {
				return fmt.Errorf("publishing %s: %w", w.What, err)
			}
			switch {
			case w.Peers:
				u.act("Publish %s on the peer relation", describe(w.Data))
			case w.App:
				u.f.Kept.recordAppData(w.ID, w.Data)
			default:
				u.f.Kept.recordPublished(w.ID, w.Data)
			}
			return nil
		}})
	}
	// The last version set is kept with the relation cache, which a failed hook does not save,
	// and install/upgrade-charm start from an empty one (so it is set again).
	if v := p.AppVersion; v != "" && (u.f.Kept == nil || u.f.Kept.AppVersion != v) {
		steps = append(steps, step{Summary: "Set the application version " + v, Do: func(ctx context.Context) error {
			if err := u.juju.SetAppVersion(ctx, v); err != nil {
				return err
			}
			u.f.Kept.setAppVersion(v)
			return nil
		}})
	}
	return steps
}

func (u *unitRun) publish(ctx context.Context) error {
	p, err := u.publication()
	if err != nil {
		return err
	}
	for _, s := range u.publishSteps(p) {
		if err := s.Do(ctx); err != nil {
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

// metricsWrites speak the prometheus_scrape interface on the monitoring relation: the leader
// publishes the scrape job ("*" stands for each unit's address) and the alert rules (observe.go),
// each web unit its address.
// Nothing is advertised while enable-metrics is off (the reference advertised :9391 regardless:
// weakness #15), and workers, which serve no metrics, publish no address.
func (u *unitRun) metricsWrites() ([]relationWrite, error) {
	var out []relationWrite
	serving := u.role.Web && u.cfg.EnableMetrics && u.state.Web != nil
	for _, id := range u.f.Metrics {
		unit := map[string]string{"prometheus_scrape_unit_address": "", "prometheus_scrape_unit_name": ""}
		if serving {
			unit["prometheus_scrape_unit_address"] = u.f.Addr.Metrics[id]
			unit["prometheus_scrape_unit_name"] = u.f.Env.UnitName
		}
		out = append(out, relationWrite{ID: id, Data: unit, What: fmt.Sprintf("the metrics endpoint on relation %d", id)})
		if !u.f.Leader {
			continue
		}
		jobs := []map[string]any{}
		if u.exportsMetrics() {
			jobs = append(jobs, map[string]any{
				"metrics_path":   "/metrics",
				"static_configs": []map[string]any{{"targets": []string{fmt.Sprintf("*:%d", metricsPort)}}},
			})
		}
		jobsJSON, err := json.Marshal(jobs)
		if err != nil {
			return nil, err
		}
		meta, err := json.Marshal(map[string]string{
			"model": u.f.Env.ModelName, "model_uuid": u.f.Env.ModelUUID, "application": u.f.Env.AppName,
			"unit": u.f.Env.UnitName, "charm_name": "concourse-ci-machine",
		})
		if err != nil {
			return nil, err
		}
		rules, err := u.alertRules()
		if err != nil {
			return nil, err
		}
		out = append(out, relationWrite{ID: id, App: true, Data: map[string]string{"scrape_jobs": string(jobsJSON), "scrape_metadata": string(meta),
			observe.AlertRulesKey: rules},
			What: fmt.Sprintf("the scrape job on relation %d", id)})
	}
	return out, nil
}

// ensurePorts opens the web port and the TSA port on a web unit and closes everything else the
// unit opened, including the old web-port after a change.
func (u *unitRun) ensurePorts(ctx context.Context) error {
	opened, err := u.juju.OpenedPorts(ctx)
	if err != nil {
		return fmt.Errorf("listing opened ports: %w", err)
	}
	for _, s := range u.portSteps(u.desiredPorts(), opened) {
		if err := s.Do(ctx); err != nil {
			return err
		}
		u.act("%s", s.Summary)
	}
	return nil
}

// desiredPorts are the ports this unit should have open, by their juju.Port string: plain data.
func (u *unitRun) desiredPorts() map[string]juju.Port {
	want := map[string]juju.Port{}
	if u.role.Web {
		// The web port, the TSA, TLS's redirect port and metrics when they are on.
		for _, p := range webListenPorts(u.cfg) {
			port := juju.Port{From: p, To: p, Protocol: "tcp"}
			want[port.String()] = port
		}
	}
	return want
}

// portSteps is the difference between the wanted ports and the opened ones: closes first, in the
// order opened-ports gave, then opens, sorted.
func (u *unitRun) portSteps(want map[string]juju.Port, opened []juju.Port) []step {
	var steps []step
	have := map[string]bool{}
	for _, p := range opened {
		have[p.String()] = true
		if _, ok := want[p.String()]; !ok {
			steps = append(steps, step{Summary: "Close port " + p.String(), Do: func(ctx context.Context) error {
				if err := u.juju.ClosePort(ctx, p); err != nil {
					return fmt.Errorf("closing port %s: %w", p, err)
				}
				return nil
			}})
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !have[n] {
			p := want[n]
			steps = append(steps, step{Summary: "Open port " + n, Do: func(ctx context.Context) error {
				if err := u.juju.OpenPort(ctx, p); err != nil {
					return fmt.Errorf("opening port %s: %w", n, err)
				}
				return nil
			}})
		}
	}
	return steps
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
