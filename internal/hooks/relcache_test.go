package hooks

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

var (
	cacheSequences = flag.Int("relcache.sequences", 10, "random event sequences TestRelationCacheEqualsFullRead runs")
	cacheEvents    = flag.Int("relcache.events", 30, "events per sequence")
	cacheSeed      = flag.Uint64("relcache.seed", 0, "first seed (0: from the clock; the test logs it)")
)

// cacheWorld is a deployment driven by random events: the charm's application (mode=auto, so
// leadership moves change roles), PostgreSQL, and a stand-in worker application related on tsa
// whose units' data the test writes directly (valid keys, refused values, deletions).
type cacheWorld struct {
	*world
	rng    *rand.Rand
	peers  int
	tsa    int
	ext    []string // live stand-in worker units
	checks int      // comparisons made
	// old is a relation cache file per unit as it was some events ago: what a charm that kept
	// no cache up to date would leave behind for upgrade-charm.
	old map[string][]byte
}

const extApp = "ext-worker"

// TestRelationCacheEqualsFullRead drives random sequences of joins, data changes, departures,
// leadership moves, charm upgrades and damaged cache files, and after every hook that leaves a
// unit with nothing more to hear checks that what it wrote from the cache (a web's authorized
// worker keys, a worker's TSA hosts) is what a full read of the model's relation data gives.
func TestRelationCacheEqualsFullRead(t *testing.T) {
	seed := *cacheSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("first seed %d (rerun with -relcache.seed=%d)", seed, seed)
	n := *cacheSequences
	if testing.Short() {
		n = 3
	}
	total := 0
	for i := 0; i < n; i++ {
		s := seed + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			total += runCacheSequence(t, s, *cacheEvents)
		})
	}
	if total == 0 && !t.Failed() {
		t.Fatal("no comparison was made: the sequences never reached a ready web or worker")
	}
	t.Logf("%d sequences × %d events, %d comparisons with a full read", n, *cacheEvents, total)
}

func runCacheSequence(t *testing.T, seed uint64, events int) int {
	w := &cacheWorld{world: newWorld(t, 2, pinned), rng: rand.New(rand.NewPCG(seed, 0)), old: map[string][]byte{}}
	w.deploy()
	w.addPostgres()
	w.peers = w.m.RelationID(app, "peers")
	w.m.AddApp(extApp, jujutest.AppMeta{Requires: map[string]string{"flight": "concourse-ci_tsa"}}, nil)
	w.tsa = w.m.Relate(app, "tsa", extApp, "flight")
	for _, u := range w.m.Units(app) {
		w.mustHookRel(u, "tsa-relation-created", w.tsa, "")
	}
	w.run()
	var log []string
	for i := 0; i < events; i++ {
		log = append(log, w.step())
		w.run()
		if t.Failed() {
			t.Fatalf("seed %d: failed after events %s", seed, strings.Join(log, ", "))
		}
	}
	return w.checks
}

func (w *cacheWorld) charmUnits() []string { return w.m.Units(app) }

func (w *cacheWorld) pick(units []string) string { return units[w.rng.IntN(len(units))] }

// step applies one random event to the model and queues the hooks it causes; it returns its name.
func (w *cacheWorld) step() string {
	units := w.charmUnits()
	leader := w.m.Leader(app)
	if u := w.pick(units); w.rng.IntN(4) == 0 {
		if b, err := os.ReadFile(filepath.Join(w.paths(u).StateDir, relCacheFile)); err == nil {
			w.old[u] = b
		}
	}
	switch r := w.rng.IntN(22); {
	case r < 2 && len(units) < 5: // a unit of the charm joins
		u := w.m.AddUnit(app)
		w.m.SetAddress(u, fmt.Sprintf("127.0.2.%d", 20+len(units)+w.rng.IntN(200)))
		for _, h := range []string{"install", "peers-relation-created", "tsa-relation-created", "leader-settings-changed", "config-changed", "start"} {
			info := jujutest.HookInfo{Hook: h}
			switch h {
			case "peers-relation-created":
				info.RelationID = w.peers
			case "tsa-relation-created":
				info.RelationID = w.tsa
			}
			if err := w.hook(u, info); err != nil {
				w.t.Fatalf("%s %s: %v", u, h, err)
			}
		}
		w.queue = append(w.queue, w.m.JoinEvents(w.peers, u)...)
		w.queue = append(w.queue, w.m.JoinEvents(w.tsa, u)...)
		return "join " + u
	case r < 6: // a stand-in worker joins and publishes
		u := w.m.AddUnit(extApp)
		w.ext = append(w.ext, u)
		w.queue = append(w.queue, w.m.JoinEvents(w.tsa, u)...)
		w.queue = append(w.queue, w.m.SetUnitData(w.tsa, u, map[string]string{keyWorkerKey: w.keyValue()})...)
		return "join " + u
	case r < 10 && len(w.ext) > 0: // a stand-in worker changes its key
		u := w.pick(w.ext)
		w.queue = append(w.queue, w.m.SetUnitData(w.tsa, u, map[string]string{keyWorkerKey: w.keyValue()})...)
		return "change " + u
	case r < 12 && len(w.ext) > 0: // a stand-in worker leaves
		u := w.pick(w.ext)
		w.ext = slices.DeleteFunc(w.ext, func(s string) bool { return s == u })
		w.queue = append(w.queue, w.m.RemoveUnit(u)...)
		return "depart " + u
	case r < 13 && len(units) > 2: // a charm worker leaves
		var others []string
		for _, u := range units {
			if u != leader {
				others = append(others, u)
			}
		}
		u := w.pick(others)
		w.queue = append(w.queue, w.m.RemoveUnit(u)...)
		w.run()
		w.mustHook(u, "stop")
		return "depart " + u
	case r < 14: // a charm worker makes a new key (its files were lost); its hook may fail once
		u := w.pick(units)
		os.Remove(filepath.Join(w.paths(u).ConfigDir, keyWorker))
		os.Remove(filepath.Join(w.paths(u).ConfigDir, keyWorker+".pub"))
		if w.rng.IntN(2) == 0 {
			w.wrap = func(_ string, r juju.Runner) juju.Runner { return failStatus{r} }
			err := w.hook(u, jujutest.HookInfo{Hook: "config-changed"})
			w.wrap = nil
			if err == nil {
				w.t.Fatalf("%s config-changed: the hook was to fail", u)
			}
			// Skipped, not retried: the next hook must publish what the failed one could not.
			w.mustHook(u, "update-status")
			return "rekey " + u + " (failed, skipped)"
		}
		w.mustHook(u, "config-changed")
		return "rekey " + u
	case r < 16 && len(units) > 1: // leadership moves
		var others []string
		for _, u := range units {
			if u != leader {
				others = append(others, u)
			}
		}
		u := w.pick(others)
		w.m.SetLeader(app, u)
		w.mustHook(u, "leader-elected")
		for _, o := range units {
			if o != u {
				w.mustHook(o, "leader-settings-changed")
			}
		}
		return "leader " + u
	case r < 17: // the charm is upgraded, from one that left stale caches behind
		for _, u := range units {
			if b, ok := w.old[u]; ok {
				os.WriteFile(filepath.Join(w.paths(u).StateDir, relCacheFile), b, 0o600)
			}
			w.mustHook(u, "upgrade-charm")
		}
		return "upgrade-charm"
	case r < 19 && len(w.ext) > 0: // a relation hook fails and is skipped (juju resolved --no-retry)
		u := w.pick(w.ext)
		evs := w.m.SetUnitData(w.tsa, u, map[string]string{keyWorkerKey: w.keyValue()})
		for i, ev := range evs {
			if !strings.HasPrefix(ev.Unit, app+"/") {
				continue
			}
			w.wrap = func(_ string, r juju.Runner) juju.Runner { return failStatus{r} }
			err := w.hook(ev.Unit, ev.HookInfo)
			w.wrap = nil
			if err == nil {
				w.t.Fatalf("%s: the hook was to fail", ev)
			}
			w.queue = append(w.queue, append(evs[:i:i], evs[i+1:]...)...)
			return "failed and skipped " + ev.String()
		}
		w.queue = append(w.queue, evs...)
		return "change " + u
	case r < 18: // a unit's cache is lost or damaged
		u := w.pick(units)
		p := filepath.Join(w.paths(u).StateDir, relCacheFile)
		if w.rng.IntN(2) == 0 {
			os.Remove(p)
		} else {
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o600) // cut short, as by a full disk
		}
		w.mustHook(u, "update-status")
		return "damage cache " + u
	default:
		u := w.pick(units)
		h := []string{"update-status", "config-changed", "start"}[w.rng.IntN(3)]
		w.mustHook(u, h)
		return h + " " + u
	}
}

// failStatus fails status-set, the last hook tool of a convergence: the hook fails after
// everything else was done.
type failStatus struct{ r juju.Runner }

func (f failStatus) Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	if tool == "status-set" {
		return nil, &juju.ToolError{Tool: tool, Args: args, ExitCode: 1, Stderr: "ERROR connection is shut down\n"}
	}
	return f.r.Run(ctx, tool, args, stdin)
}

// keyValue is what a stand-in worker publishes: mostly a fresh key, sometimes a refused value,
// a key another unit has, or nothing (deletes).
func (w *cacheWorld) keyValue() string {
	switch r := w.rng.IntN(10); {
	case r < 6:
		return w.newKey()
	case r < 7:
		return "not a key"
	case r < 8:
		return w.newKey() + "\n" + w.newKey() // a second key after a newline: refused
	case r < 9:
		for _, u := range w.ext {
			if k := w.m.UnitData(w.tsa, u)[keyWorkerKey]; k != "" {
				return k
			}
		}
		return w.newKey()
	default:
		return ""
	}
}

func (w *cacheWorld) newKey() string {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(w.rng.Uint32())
	}
	pub, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(seed).Public())
	if err != nil {
		w.t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// run delivers the queued hooks like settle, skipping the stand-in applications, and checks each
// charm unit once it has no hook left to hear.
func (w *cacheWorld) run() {
	w.t.Helper()
	for i := 0; len(w.queue) > 0; i++ {
		if i > 2000 {
			w.t.Fatalf("hooks do not settle; still queued: %v", w.queue)
		}
		ev := w.queue[0]
		w.queue = w.queue[1:]
		if strings.HasPrefix(ev.Unit, "postgresql/") || strings.HasPrefix(ev.Unit, extApp+"/") {
			continue
		}
		if err := w.hook(ev.Unit, ev.HookInfo); err != nil {
			w.t.Fatalf("%s: %v\n%s", ev, err, w.stderr.String())
		}
		if !w.pending(ev.Unit) {
			w.check(ev.Unit)
		}
	}
	for _, u := range w.charmUnits() {
		w.check(u)
	}
}

func (w *cacheWorld) pending(unit string) bool {
	return slices.ContainsFunc(w.queue, func(e jujutest.Event) bool { return e.Unit == unit })
}

// fullRead is what reading every unit's bag of relation id gives unit (the model's own data).
func (w *cacheWorld) fullRead(unit string, id int, sameApp bool) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, o := range w.m.RelationUnits(id) {
		if o == unit || (!sameApp && strings.HasPrefix(o, app+"/")) {
			continue
		}
		out[o] = w.m.UnitData(id, o)
	}
	return out
}

// check compares what unit rendered from its cached relation data with a full read.
func (w *cacheWorld) check(unit string) {
	w.t.Helper()
	if !slices.Contains(w.charmUnits(), unit) {
		return // removed
	}
	status := w.status(unit)
	// What the unit last published is what the model holds: a skipped relation-set never
	// leaves an old key behind.
	own := w.m.UnitData(w.peers, unit)
	for rel, key := range map[string]string{keyWorker: keyWorkerKey, keyTSAHostKey: keyTSAPublicKey} {
		if !strings.HasPrefix(status, "active: ") || own[key] == "" {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(w.paths(unit).ConfigDir, rel+".pub")); err == nil && strings.TrimSpace(string(b)) != own[key] {
			w.t.Errorf("%s publishes the %s %.40q…, its key file holds %.40q…", unit, key, own[key], b)
		}
	}
	full := &Facts{
		Peers: &RelationFacts{ID: w.peers, Units: w.fullRead(unit, w.peers, true)},
		TSA:   []RelationFacts{{ID: w.tsa, Units: w.fullRead(unit, w.tsa, false)}},
	}
	switch {
	case w.m.Leader(app) == unit && strings.HasPrefix(status, "active: Web server ready"):
		keys, _ := workerKeys(full)
		want := ""
		if len(keys) > 0 {
			want = strings.Join(keys, "\n") + "\n"
		}
		if got := w.readFile(unit, keyAuthorized); got != want {
			w.t.Errorf("%s authorized_worker_keys from the cache:\n%s\nfull read gives:\n%s", unit, got, want)
		}
		w.checks++
	case w.m.Leader(app) != unit && strings.HasPrefix(status, "active: Worker ready"):
		hosts, _, _, _ := tsaEndpoints(&Facts{Peers: full.Peers})
		env, err := concourse.ParseEnvFile([]byte(w.readFile(unit, fileWorkerEnv)))
		if err != nil {
			w.t.Fatal(err)
		}
		if got, want := env["CONCOURSE_TSA_HOST"], strings.Join(hosts, ","); got != want {
			w.t.Errorf("%s TSA hosts from the cache %q; full read gives %q", unit, got, want)
		}
		w.checks++
	}
}

// The publication is plain data; publishSteps is its difference from what the unit last
// published: nothing unchanged is written again, and an application bag is trusted only while
// the unit stayed leader.
func TestPublishSteps(t *testing.T) {
	unitBag := map[string]string{keyWorkerKey: "ssh-ed25519 AAAA", keyRunning: "7.14.3", keyTSAHost: ""}
	appBag := map[string]string{"concourse-version": "7.14.3"}
	p := publication{AppVersion: "7.14.3", Writes: []relationWrite{
		{ID: 0, Data: unitBag, What: "on the peer relation"},
		{ID: 3, App: true, Data: appBag, What: "versions on relation 3"},
	}}
	published := func(c *relationCache) *relationCache {
		c.recordPublished(0, unitBag)
		c.recordAppData(3, appBag)
		c.setAppVersion("7.14.3")
		c.Leader = true
		return c
	}
	for _, c := range []struct {
		name   string
		kept   *relationCache
		leader bool
		event  string
		change func(*publication)
		want   []string
	}{
		{"nothing recorded (install, upgrade-charm, lost file)", newRelationCache(), true, "update-status", nil,
			[]string{"Publish on the peer relation", "Publish versions on relation 3", "Set the application version 7.14.3"}},
		{"all as published", published(newRelationCache()), true, "update-status", nil, nil},
		{"a key changed", published(newRelationCache()), true, "config-changed",
			func(p *publication) {
				p.Writes[0].Data = map[string]string{keyWorkerKey: "ssh-ed25519 BBBB", keyRunning: "7.14.3"}
			},
			[]string{"Publish on the peer relation"}},
		{"a deleted key that is already absent", published(newRelationCache()), true, "update-status",
			func(p *publication) {
				p.Writes[0].Data = map[string]string{keyWorkerKey: "ssh-ed25519 AAAA", keyRunning: "7.14.3", keyWebVersion: ""}
			},
			nil},
		{"leadership came back: another leader may have written", published(newRelationCache()), true, "leader-elected", nil,
			[]string{"Publish versions on relation 3"}},
		{"a new version", published(newRelationCache()), true, "upgrade-charm",
			func(p *publication) { p.AppVersion = "8.2.5" },
			[]string{"Set the application version 8.2.5"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.kept.observeLeadership(c.leader, juju.Event{Name: c.event})
			q := publication{AppVersion: p.AppVersion, Writes: slices.Clone(p.Writes)}
			if c.change != nil {
				c.change(&q)
			}
			u := &unitRun{f: &Facts{Kept: c.kept}}
			var got []string
			for _, s := range u.publishSteps(q) {
				got = append(got, s.Summary)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("steps = %q; want %q", got, c.want)
			}
		})
	}
}

// The ports are data too: the wanted set against what opened-ports lists.
func TestPortSteps(t *testing.T) {
	port := func(n int) juju.Port { return juju.Port{From: n, To: n, Protocol: "tcp"} }
	for _, c := range []struct {
		name   string
		role   Role
		cfg    Config
		opened []juju.Port
		want   []string
	}{
		{"steady web", Role{Web: true}, Config{WebPort: 8080}, []juju.Port{port(2222), port(8080)}, nil},
		{"new web", Role{Web: true}, Config{WebPort: 8080}, nil, []string{"Open port 2222/tcp", "Open port 8080/tcp"}},
		{"web-port changed, metrics on", Role{Web: true}, Config{WebPort: 9090, EnableMetrics: true}, []juju.Port{port(8080), port(2222)},
			[]string{"Close port 8080/tcp", "Open port 9090/tcp", "Open port 9391/tcp"}},
		{"a former web", Role{Worker: true}, Config{WebPort: 8080}, []juju.Port{port(8080), port(2222)},
			[]string{"Close port 8080/tcp", "Close port 2222/tcp"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := &unitRun{role: c.role, cfg: c.cfg}
			var got []string
			for _, s := range u.portSteps(u.desiredPorts(), c.opened) {
				got = append(got, s.Summary)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("steps = %q; want %q", got, c.want)
			}
		})
	}
}

// A web unit being removed runs its postgresql-relation-broken before its other relations'
// departures (the bed's order, found by TestRealHA): the relation it saw break never counts
// again, so the departing web is not restarted on the credentials it just lost (it sat for a
// minute per hook in "Web server starting" before).
func TestDepartingWebStaysStoppedAfterItsDatabaseBroke(t *testing.T) {
	w := newWorld(t, 3, map[string]any{"version": "7.14.3", "mode": "web"})
	w.deploy()
	w.relateWorkerApp()
	w.addPostgres()
	w.wantStatus(u1, "active: Web server ready (v7.14.3) http://127.0.2.11:8080")
	before := len(w.svcs[u1].calls)
	evs := w.m.RemoveUnit(u1)
	sort.SliceStable(evs, func(i, j int) bool { // the database's departure and breaking first
		return strings.HasPrefix(evs[i].HookInfo.Hook, "postgresql") && !strings.HasPrefix(evs[j].HookInfo.Hook, "postgresql")
	})
	w.queue = append(w.queue, evs...)
	w.settle()
	for _, c := range w.svcs[u1].calls[before:] {
		if strings.HasPrefix(c, "start") || strings.HasPrefix(c, "restart") {
			t.Fatalf("the departing web was started again after its database relation broke: %v", w.svcs[u1].calls[before:])
		}
	}
	w.wantStatus(u1, "blocked: PostgreSQL database required")
}
