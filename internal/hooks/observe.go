package hooks

import (
	"context"
	"fmt"
	"slices"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse/observe"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// epDashboards is the grafana_dashboard endpoint (metadata.yaml): the leader writes the
// dashboards there, as cos-lib's GrafanaDashboardProvider does, and reads nothing back.
const epDashboards = "grafana-dashboard"

// topology is where the observability data comes from (cos-lib's JujuTopology), from the JUJU_*
// environment of the hook.
func (u *unitRun) topology() observe.Topology {
	e := u.f.Env
	return observe.Topology{Model: e.ModelName, ModelUUID: e.ModelUUID, Application: e.AppName, Unit: e.UnitName}
}

// exportsMetrics reports whether this application publishes a scrape job: only then do the
// alert rules and the dashboard mean anything (with enable-metrics off, or for a separate worker
// application, no series carries this application's topology, so rules would never fire and
// panels would stay empty).
func (u *unitRun) exportsMetrics() bool { return u.cfg.EnableMetrics && u.cfg.Mode != "worker" }

// alertRules is the monitoring relation's "alert_rules" value: cos-lib's rule file with the
// topology labels and matchers, or "" (deleted) while no scrape job is published.
func (u *unitRun) alertRules() (string, error) {
	if !u.exportsMetrics() {
		return "", nil
	}
	v, err := observe.AlertRules(u.topology())
	if err != nil {
		return "", fmt.Errorf("building the alert rules: %w", err)
	}
	return v, nil
}

// dashboardWrites put the Grafana dashboard in the application bag of every grafana-dashboard
// relation (leader only). The value changes only with the topology (the leader's unit name is in
// it) or a new charm, and publishSteps writes it only when it differs from the leader's own last
// write, so a steady hook writes nothing.
func (u *unitRun) dashboardWrites() ([]relationWrite, error) {
	if !u.f.Leader || len(u.f.Dashboards) == 0 {
		return nil, nil
	}
	v := ""
	if u.exportsMetrics() {
		var err error
		if v, err = observe.Dashboards(u.topology()); err != nil {
			return nil, fmt.Errorf("building the Grafana dashboard: %w", err)
		}
	}
	var out []relationWrite
	for _, id := range u.f.Dashboards {
		out = append(out, relationWrite{ID: id, App: true, Data: map[string]string{observe.DashboardsKey: v},
			What: fmt.Sprintf("the Grafana dashboard on relation %d", id)})
	}
	return out, nil
}

// relistDashboards are the events where the leader asks relation-ids for grafana-dashboard
// instead of trusting the relation cache's list: a grafana-dashboard relation appears only
// with -created and goes with -broken (both relation events of the endpoint, which also remove
// the cache file first: changesCache), and install and upgrade-charm trust no cache.
func relistDashboards(ev juju.Event) bool {
	return ev.Endpoint == epDashboards || ev.Name == "install" || ev.Name == "upgrade-charm" || ev.Name == "leader-elected"
}

// dashboardFacts gives the leader the ids of its grafana-dashboard relations. A steady hook
// costs no hook-tool call for them (issue 12's bound of 15 calls): the list is kept in the
// relation cache while this unit stays leader and asked again only where it may have changed
// (relistDashboards) or nobody kept it. Non-leaders write nothing there and forget the list,
// so a unit that becomes leader asks again.
func (h *handler) dashboardFacts(ctx context.Context, f *Facts, live map[int]bool) error {
	c := f.Kept
	if !f.Leader {
		c.forgetDashboards()
		return nil
	}
	if !c.DashboardsListed || relistDashboards(f.Event) {
		ids, err := h.liveIDs(ctx, epDashboards)
		if err != nil {
			return err
		}
		c.setDashboards(ids)
	}
	f.Dashboards = slices.Clone(c.DashboardIDs)
	for _, id := range f.Dashboards {
		live[id] = true
	}
	return nil
}

// setDashboards records the grafana-dashboard relations relation-ids listed.
func (c *relationCache) setDashboards(ids []int) {
	if c.DashboardsListed && slices.Equal(c.DashboardIDs, ids) {
		return
	}
	c.DashboardIDs, c.DashboardsListed, c.dirty = slices.Clone(ids), true, true
}

func (c *relationCache) forgetDashboards() {
	if c.DashboardsListed || c.DashboardIDs != nil {
		c.DashboardIDs, c.DashboardsListed, c.dirty = nil, false, true
	}
}
