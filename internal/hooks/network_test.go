package hooks

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// recorder notes every hook tool a unit runs, with its arguments.
type recorder struct {
	r     juju.Runner
	calls *[]string
	// noNetworkConfig makes network-get fail as an agent that knows no such binding does.
	noNetworkConfig bool
}

func (c recorder) Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	*c.calls = append(*c.calls, strings.Join(append([]string{tool}, args...), " "))
	if tool == "network-get" && c.noNetworkConfig {
		return nil, &juju.ToolError{Tool: tool, Args: args, ExitCode: 1,
			Stderr: "ERROR no network config found for binding \"" + args[len(args)-1] + "\"\n"}
	}
	return c.r.Run(ctx, tool, args, stdin)
}

// relateMonitoring relates a stand-in Prometheus to the application and returns the relation.
func (w *world) relateMonitoring() int {
	w.t.Helper()
	w.m.AddApp("prometheus", jujutest.AppMeta{Requires: map[string]string{"metrics-endpoint": "prometheus_scrape"}}, nil)
	prom := w.m.AddUnit("prometheus")
	id := w.m.Relate(app, "monitoring", "prometheus", "metrics-endpoint")
	for _, u := range w.m.Units(app) {
		w.mustHookRel(u, "monitoring-relation-created", id, "")
	}
	w.queue = append(w.queue, w.m.JoinEvents(id, prom)...)
	w.settle()
	return id
}

// issue 8 §4: a web unit whose private address (10.0.0.5) is not the address of its bindings
// (192.168.7.5, e.g. a second interface in the space the endpoints are bound to) publishes the
// binding's address everywhere another unit or Prometheus dials it, and the private address
// nowhere.
func TestBindingAddressDiffersFromPrivateAddress(t *testing.T) {
	w := newWorld(t, 2, map[string]any{"version": "7.14.3", "shared-storage": "lxc", "enable-metrics": true})
	w.m.SetAddress(u0, "10.0.0.5")
	for _, b := range []string{"peers", "tsa", "monitoring"} {
		w.m.SetBindingAddress(u0, b, "192.168.7.5")
	}
	w.deploy()
	w.addPostgres()
	mon := w.relateMonitoring()
	peers := w.m.RelationID(app, "peers")

	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://192.168.7.5:8080")
	if d := w.m.UnitData(peers, u0); d[keyTSAHost] != "192.168.7.5:2222" || d[keyWebIP] != "192.168.7.5" {
		t.Errorf("peer data tsa-host %q, web-ip %q; want 192.168.7.5:2222 and 192.168.7.5", d[keyTSAHost], d[keyWebIP])
	}
	web := w.readFile(u0, fileWebEnv)
	for _, want := range []string{`CONCOURSE_EXTERNAL_URL="http://192.168.7.5:8080"`, `CONCOURSE_PEER_ADDRESS="192.168.7.5"`} {
		if !strings.Contains(web, want) {
			t.Errorf("web.env lacks %s:\n%s", want, web)
		}
	}
	if env := w.readFile(u1, fileWorkerEnv); !strings.Contains(env, `CONCOURSE_TSA_HOST="192.168.7.5:2222"`) {
		t.Errorf("worker env does not dial the binding address:\n%s", env)
	}
	// Prometheus expands the job's "*" with each unit's advertised address.
	job, addr := w.m.AppData(mon, app)["scrape_jobs"], w.m.UnitData(mon, u0)["prometheus_scrape_unit_address"]
	if target := strings.Replace(`*:9391`, "*", addr, 1); !strings.Contains(job, `"*:9391"`) || target != "192.168.7.5:9391" {
		t.Errorf("scrape target %s (job %s); want 192.168.7.5:9391", target, job)
	}
	if strings.Contains(web, "10.0.0.5") || strings.Contains(w.status(u0), "10.0.0.5") {
		t.Errorf("the private address is still used: status %q, web.env:\n%s", w.status(u0), web)
	}
}

// A separate worker application across models (or spaces): each tsa relation gets the address
// network-get -r gives for it, the units of our own application the peers address, and the URL
// the tsa binding's.
func TestTSAAddressPerRelation(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"mode": "web", "version": "7.14.3", "shared-storage": "lxc"})
	w.m.SetBindingAddress(u0, "peers", "192.168.7.5")
	w.m.SetBindingAddress(u0, "tsa", "192.168.9.5")
	w.deploy()
	w.addPostgres()
	id := w.relateWorkerApp()
	if env := w.readFile("concourse-worker/0", fileWorkerEnv); !strings.Contains(env, `CONCOURSE_TSA_HOST="192.168.9.5:2222"`) {
		t.Errorf("worker application env does not dial the tsa binding:\n%s", env)
	}
	// The relation becomes cross-model-like: Juju gives it the unit's public address and runs
	// config-changed, as on any address change.
	w.m.SetRelationIngress(u0, id, "203.0.113.5")
	w.mustHook(u0, "config-changed")
	w.settle()
	peers := w.m.RelationID(app, "peers")
	for _, c := range []struct {
		rel  int
		want string
	}{{peers, "192.168.7.5"}, {id, "203.0.113.5"}} {
		if d := w.m.UnitData(c.rel, u0); d[keyTSAHost] != c.want+":2222" || d[keyWebIP] != c.want {
			t.Errorf("relation %d: tsa-host %q, web-ip %q; want %s:2222", c.rel, d[keyTSAHost], d[keyWebIP], c.want)
		}
	}
	if env := w.readFile("concourse-worker/0", fileWorkerEnv); !strings.Contains(env, `CONCOURSE_TSA_HOST="203.0.113.5:2222"`) {
		t.Errorf("worker application env does not follow the relation's address:\n%s", env)
	}
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://192.168.9.5:8080")
	if web := w.readFile(u0, fileWebEnv); !strings.Contains(web, `CONCOURSE_PEER_ADDRESS="192.168.7.5"`) {
		t.Errorf("web.env peer address is not the peers binding's:\n%s", web)
	}
}

// An agent that answers "no network config" for the bindings (older Juju): the unit falls back to
// unit-get's private address, once per hook, and says so in the log.
func TestNoNetworkConfigFallsBackToPrivateAddress(t *testing.T) {
	w := newWorld(t, 2, pinned)
	var calls []string
	w.wrap = func(_ string, r juju.Runner) juju.Runner { return recorder{r: r, calls: &calls, noNetworkConfig: true} }
	w.deploy()
	w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	if env := w.readFile(u1, fileWorkerEnv); !strings.Contains(env, `CONCOURSE_TSA_HOST="127.0.2.10:2222"`) {
		t.Errorf("worker env:\n%s", env)
	}
	calls = nil
	w.mustHook(u0, "update-status")
	if n := count(calls, "unit-get"); n != 1 {
		t.Errorf("unit-get calls in one hook = %d; want 1: %q", n, calls)
	}
	if !strings.Contains(w.stderr.String(), "no network config") || !slices.ContainsFunc(w.m.Logs(u0), func(l jujutest.LogLine) bool {
		return l.Level == "WARNING" && strings.Contains(l.Message, "using the private address 127.0.2.10")
	}) {
		t.Errorf("no warning about the fallback in the unit's log: %v", w.m.Logs(u0))
	}
}

// Steady hooks cost few tool calls: a worker asks for no address at all, a web asks network-get
// for its two bindings and never unit-get, and neither grows with the number of workers.
func TestSteadyHookAddressCalls(t *testing.T) {
	for _, workers := range []int{1, 3} {
		w := newWorld(t, 1+workers, pinned)
		calls := map[string]*[]string{}
		w.wrap = func(unit string, r juju.Runner) juju.Runner {
			c := &[]string{}
			calls[unit] = c
			return recorder{r: r, calls: c}
		}
		w.deploy()
		w.addPostgres()
		w.mustHook(u0, "update-status")
		w.mustHook(u1, "update-status")
		web, wk := *calls[u0], *calls[u1]
		if got := filter(web, "network-get", "unit-get"); !slices.Equal(got, []string{"network-get --format=json peers", "network-get --format=json tsa"}) {
			t.Errorf("%d workers: web address calls = %q; want network-get peers and tsa", workers, got)
		}
		if got := filter(wk, "network-get", "unit-get"); len(got) != 0 {
			t.Errorf("%d workers: worker address calls = %q; want none", workers, got)
		}
		t.Logf("%d workers: steady update-status tool calls: web %d, worker %d", workers, len(web), len(wk))
	}
}

func count(calls []string, tool string) int { return len(filter(calls, tool)) }

func filter(calls []string, tools ...string) []string {
	var out []string
	for _, c := range calls {
		name, _, _ := strings.Cut(c, " ")
		if slices.Contains(tools, name) {
			out = append(out, c)
		}
	}
	return out
}
