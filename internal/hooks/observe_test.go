package hooks

import (
	"bytes"
	"encoding/json"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse/observe"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// observeWorld is a 2-unit mode=auto deployment related to Prometheus (monitoring) and Grafana
// (grafana-dashboard), every hook-tool call recorded per unit.
type observeWorld struct {
	*world
	mon, graf int
	calls     map[string]*[]string // the last hook's calls, by unit
}

func newObserveWorld(t *testing.T, metrics bool) *observeWorld {
	t.Helper()
	cfg := maps.Clone(pinned)
	cfg["enable-metrics"] = metrics
	ow := &observeWorld{world: newWorld(t, 2, cfg), calls: map[string]*[]string{}}
	ow.wrap = func(unit string, r juju.Runner) juju.Runner {
		calls := []string{}
		ow.calls[unit] = &calls
		return recorder{r: r, calls: &calls}
	}
	ow.deploy()
	ow.addPostgres()
	ow.m.AddApp("prometheus", jujutest.AppMeta{Requires: map[string]string{"metrics-endpoint": "prometheus_scrape"}}, nil)
	ow.m.AddApp("grafana", jujutest.AppMeta{Requires: map[string]string{"grafana-dashboard": "grafana_dashboard"}}, nil)
	prom, graf := ow.m.AddUnit("prometheus"), ow.m.AddUnit("grafana")
	ow.mon = ow.m.Relate(app, "monitoring", "prometheus", "metrics-endpoint")
	ow.graf = ow.m.Relate(app, "grafana-dashboard", "grafana", "grafana-dashboard")
	for _, u := range []string{u0, u1} {
		ow.mustHookRel(u, "monitoring-relation-created", ow.mon, "")
		ow.mustHookRel(u, "grafana-dashboard-relation-created", ow.graf, "")
	}
	ow.queue = append(ow.queue, ow.m.JoinEvents(ow.mon, prom)...)
	ow.queue = append(ow.queue, ow.m.JoinEvents(ow.graf, graf)...)
	ow.settle()
	return ow
}

// selectorRE finds PromQL vector selectors with matchers: name{…}.
var selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)

// The monitoring relation's alert_rules as the Prometheus charm's MetricsEndpointConsumer reads
// them: a rule file whose rules carry the juju_* topology labels (it derives the rule file's
// identifier from them) and whose every vector selector is already narrowed to this
// application's series, as cos-lib's AlertRules leaves them after cos-tool's injection.
func TestAlertRulesOnMonitoring(t *testing.T) {
	w := newObserveWorld(t, true)
	raw := w.m.AppData(w.mon, app)[observe.AlertRulesKey]
	var f observe.RuleFile
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		t.Fatalf("alert_rules is not a JSON rule file: %v\n%s", err, raw)
	}
	wantGroup := "test_1b9e6e3c_" + strings.ReplaceAll(app, "-", "_") + "_concourse_rules"
	if len(f.Groups) != 1 || f.Groups[0].Name != wantGroup || len(f.Groups[0].Rules) < 4 {
		t.Fatalf("groups = %+v; want one group %s with the four rules", f.Groups, wantGroup)
	}
	topology := map[string]string{"juju_model": "test", "juju_model_uuid": w.m.UUID(), "juju_application": app}
	metrics, err := observe.MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	metrics = append(metrics, "up")
	for _, r := range f.Groups[0].Rules {
		for k, v := range topology {
			if r.Labels[k] != v {
				t.Errorf("%s: label %s = %q; want %q", r.Alert, k, r.Labels[k], v)
			}
		}
		if r.Labels["juju_charm"] != "concourse-ci-machine" {
			t.Errorf("%s: juju_charm = %q", r.Alert, r.Labels["juju_charm"])
		}
		sels := selectorRE.FindAllStringSubmatch(r.Expr, -1)
		if len(sels) == 0 {
			t.Errorf("%s: expr %q has no selector", r.Alert, r.Expr)
		}
		for _, s := range sels {
			for k, v := range topology {
				if !strings.Contains(s[2], k+`="`+v+`"`) {
					t.Errorf("%s: selector %s lacks %s=%q", r.Alert, s[0], k, v)
				}
			}
		}
		// No metric is queried without matchers (a bare name would see every application).
		for _, m := range metrics {
			for _, i := range regexp.MustCompile(`\b`+m+`\b`).FindAllStringIndex(r.Expr, -1) {
				if !strings.HasPrefix(r.Expr[i[1]:], "{") {
					t.Errorf("%s: %s without the topology matchers in %q", r.Alert, m, r.Expr)
				}
			}
		}
	}
	// enable-metrics off: no scrape job, and no rules about series nobody scrapes.
	w.m.SetConfig(app, map[string]any{"enable-metrics": false})
	w.mustHook(u0, "config-changed")
	if v, ok := w.m.AppData(w.mon, app)[observe.AlertRulesKey]; ok {
		t.Errorf("alert_rules with metrics off = %.80q; want the key deleted", v)
	}
}

// consumerDecode is what the Grafana charm's GrafanaDashboardConsumer does with the dashboards
// value (_render_dashboards_and_signal_changed): json.loads, then per template
// cosl.LZMABase64.decompress(content) (base64, then Python's lzma), and the fields it reads.
const consumerDecode = `
import base64, json, lzma, sys
data = json.loads(sys.stdin.read())
out = {"uuid": data["uuid"], "templates": {}}
for fname, t in data.pop("templates").items():
    d = json.loads(lzma.decompress(base64.b64decode(t["content"])).decode())
    out["templates"][fname] = {"charm": t.get("charm"), "juju_topology": t.get("juju_topology", {}),
        "inject_dropdowns": t.get("inject_dropdowns", True), "alt_uid": t.get("dashboard_alt_uid"),
        "uid": d.get("uid"), "title": d.get("title"), "panels": len(d.get("panels", []))}
print(json.dumps(out))
`

type decodedDashboards struct {
	UUID      string
	Templates map[string]struct {
		Charm           string
		JujuTopology    map[string]string `json:"juju_topology"`
		InjectDropdowns bool              `json:"inject_dropdowns"`
		AltUID          string            `json:"alt_uid"`
		UID, Title      string
		Panels          int
	}
}

func decodeDashboards(t *testing.T, raw string) decodedDashboards {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 (the Grafana charm's decoder) is not installed")
	}
	cmd := exec.Command("python3", "-c", consumerDecode)
	cmd.Stdin = strings.NewReader(raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the consumer's decoding fails: %v\n%s", err, stderr.String())
	}
	var d decodedDashboards
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// The grafana-dashboard relation: the leader's dashboards value decodes as the Grafana charm
// decodes it; it is written once, not again by steady hooks, whose hook-tool calls do not even
// list the relation; non-leaders write nothing; a new leader writes its own topology once.
func TestGrafanaDashboardRelation(t *testing.T) {
	w := newObserveWorld(t, true)
	raw := w.m.AppData(w.graf, app)[observe.DashboardsKey]
	d := decodeDashboards(t, raw)
	tmpl, ok := d.Templates["file:concourse"]
	if !ok || len(d.Templates) != 1 {
		t.Fatalf("templates = %+v; want file:concourse", d.Templates)
	}
	wantTop := map[string]string{"model": "test", "model_uuid": w.m.UUID(), "application": app, "unit": u0}
	if !maps.Equal(tmpl.JujuTopology, wantTop) || tmpl.Charm != "concourse-ci-machine" || !tmpl.InjectDropdowns ||
		tmpl.UID != "concourse-ci-machine" || tmpl.Panels < 5 || len(tmpl.AltUID) != 16 || len(d.UUID) != 36 {
		t.Errorf("decoded dashboards = %+v (uuid %q); want topology %v", tmpl, d.UUID, wantTop)
	}

	// Steady hooks: no relation-set, no relation-ids grafana-dashboard, on either unit.
	appSets := func(unit string) (sets, lists int) {
		for _, c := range *w.calls[unit] {
			if strings.HasPrefix(c, "relation-set") && strings.Contains(c, "--app") {
				sets++
			}
			if strings.HasPrefix(c, "relation-ids "+epDashboards) {
				lists++
			}
		}
		return sets, lists
	}
	for _, h := range []string{"update-status", "config-changed", "update-status"} {
		for _, u := range []string{u0, u1} {
			w.mustHook(u, h)
			if sets, lists := appSets(u); sets != 0 || lists != 0 {
				t.Errorf("%s %s: %d application relation-sets, %d relation-ids %s: %q", u, h, sets, lists, epDashboards, *w.calls[u])
			}
		}
	}
	// Grafana answers on the relation (its "event" key): the leader lists the relations and
	// finds nothing to write.
	for _, ev := range w.m.SetAppData(w.graf, "grafana", map[string]string{"event": "{}"}) {
		if ev.Unit == u0 {
			w.mustHookRel(u0, ev.Hook, ev.RelationID, ev.RemoteUnit)
			if sets, lists := appSets(u0); sets != 0 || lists != 1 {
				t.Errorf("%s: %d application relation-sets, %d relation-ids; want 0 and 1: %q", ev.Hook, sets, lists, *w.calls[u0])
			}
		}
	}

	// Leadership moves: the new leader writes its own topology, once.
	w.m.SetLeader(app, u1)
	w.mustHook(u1, "leader-elected")
	w.mustHook(u0, "leader-settings-changed")
	w.settle()
	moved := w.m.AppData(w.graf, app)[observe.DashboardsKey]
	if moved == raw {
		t.Fatal("the new leader left the old leader's dashboards")
	}
	if got := decodeDashboards(t, moved).Templates["file:concourse"].JujuTopology["unit"]; got != u1 {
		t.Errorf("dashboards after the leadership move name unit %q; want %s", got, u1)
	}
	w.mustHook(u1, "update-status")
	if sets, lists := appSets(u1); sets != 0 || lists != 0 {
		t.Errorf("the new leader's steady hook: %d relation-sets, %d relation-ids: %q", sets, lists, *w.calls[u1])
	}
	w.mustHook(u0, "update-status")
	if sets, lists := appSets(u0); sets != 0 || lists != 0 {
		t.Errorf("the old leader's hook: %d application relation-sets, %d relation-ids: %q", sets, lists, *w.calls[u0])
	}

	// A second Grafana: the leader's -created hook lists it and writes there only.
	w.m.AddApp("grafana2", jujutest.AppMeta{Requires: map[string]string{"grafana-dashboard": "grafana_dashboard"}}, nil)
	g2 := w.m.AddUnit("grafana2")
	id2 := w.m.Relate(app, "grafana-dashboard", "grafana2", "grafana-dashboard")
	w.mustHookRel(u1, "grafana-dashboard-relation-created", id2, "")
	if got := w.m.AppData(id2, app)[observe.DashboardsKey]; got != moved {
		t.Errorf("second grafana relation holds %.60q; want the leader's dashboards", got)
	}
	if sets, _ := appSets(u1); sets != 1 {
		t.Errorf("relation-created wrote %d application bags; want 1 (the new relation): %q", sets, *w.calls[u1])
	}
	w.queue = append(w.queue, w.m.JoinEvents(id2, g2)...)
	w.settle()

	// Metrics off: the dashboards go with the scrape job.
	w.m.SetConfig(app, map[string]any{"enable-metrics": false})
	w.mustHook(u1, "config-changed")
	for _, id := range []int{w.graf, id2} {
		if _, ok := w.m.AppData(id, app)[observe.DashboardsKey]; ok {
			t.Errorf("relation %d keeps the dashboards with enable-metrics off", id)
		}
	}
}

// Non-leaders never list the grafana-dashboard relations nor write there, in any hook.
func TestGrafanaDashboardNonLeaderWritesNothing(t *testing.T) {
	w := newObserveWorld(t, true)
	for _, h := range []string{"update-status", "config-changed"} {
		w.mustHook(u1, h)
		for _, c := range *w.calls[u1] {
			if strings.Contains(c, epDashboards) || (strings.HasPrefix(c, "relation-set") && strings.Contains(c, "--app")) {
				t.Errorf("non-leader %s makes %q", h, c)
			}
		}
	}
	if !slices.Contains(slices.Collect(maps.Keys(w.m.AppData(w.graf, app))), observe.DashboardsKey) {
		t.Error("the leader published no dashboards (the check above would prove nothing)")
	}
}
