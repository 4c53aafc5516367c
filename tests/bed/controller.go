package bed

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// ControllerOptions tunes a Controller. ToolsDir is required; the rest have defaults.
type ControllerOptions struct {
	Bed Options
	// ToolsDir holds fakejuju and the hook-tool symlinks (see BuildTools); build it once in
	// TestMain and share it.
	ToolsDir string
	// ModelName defaults to "test"; the UUID is fixed, which keeps secret URIs readable.
	ModelName string
	// RetryDelay is the first back-off after a failed hook, doubled per retry like Juju's
	// 5 s, 10 s, 20 s… (juju-contract §1.4) but scaled down for tests; default 100 ms.
	RetryDelay time.Duration
	// MaxRetries bounds the automatic retries of one failed hook; after that the unit stays in
	// error until Resolve, and Settle reports it. Default 3.
	MaxRetries int
	// HookTimeout bounds one dispatch run; default 2 minutes.
	HookTimeout time.Duration
}

// socketName is the controller's jujuc socket, in a host directory bind-mounted at /run/bed.
const (
	socketDir  = "/run/bed"
	socketName = "jujuc.sock"
)

// Controller plays the Juju controller and unit agents for a bed: it owns the model, serves the
// jujuc protocol, and runs each unit's hooks one at a time in FIFO order.
type Controller struct {
	Model *jujutest.Model
	Bed   *Bed

	t        testing.TB
	opts     ControllerOptions
	listener net.Listener
	serveErr chan error

	mu       sync.Mutex
	contexts map[string]*jujutest.HookContext // running hooks by JUJU_CONTEXT_ID
	units    map[string]*Unit
	order    []string // unit names in creation order
	apps     map[string]*appInfo
	changed  chan struct{} // closed and replaced on every queue state change (for Settle)
	closed   bool
	wg       sync.WaitGroup
}

type appInfo struct {
	name    string
	charm   *Charm // nil for a virtual application
	handler VirtualHandler
	opts    DeployOptions
	nextIdx int
	shared  string // host directory for shared /var/lib/concourse
}

// VirtualHandler runs a hook of a virtual unit (a provider stand-in with no container). It uses
// h.Run like a charm uses hook tools; a nil return commits, an error discards (like exit 1).
type VirtualHandler func(h *jujutest.HookContext, info jujutest.HookInfo) error

// Storage says how /var/lib/concourse is provided to an application's units.
type Storage int

const (
	// StorageNone mounts nothing: /var/lib/concourse is whatever the charm makes on the
	// machine's own root, as on a machine Juju gives.
	StorageNone Storage = iota
	// StorageShared binds one host directory read-write into every unit (shared-storage=lxc).
	StorageShared
	// StorageSharedROWorkers binds it read-write into the first unit deployed and read-only
	// into every other unit.
	StorageSharedROWorkers
)

// DeployOptions tunes Deploy.
type DeployOptions struct {
	Storage Storage
	// SharedDir is the host directory shared between units; default a new directory.
	SharedDir string
	// Provision runs on each new machine after it boots and before the unit's first hook, as
	// cloud-init runs a model's cloudinit-userdata (e.g. its ca-certs) on a machine Juju adds.
	Provision func(ctx context.Context, m *Machine) error
}

// NewController starts a bed and a controller on it. Everything stops in t.Cleanup; when the test
// failed, every unit's hook log is printed first.
func NewController(t testing.TB, opts ControllerOptions) *Controller {
	t.Helper()
	if opts.ToolsDir == "" {
		t.Fatal("bed.NewController: ControllerOptions.ToolsDir is required (see BuildTools)")
	}
	if opts.ModelName == "" {
		opts.ModelName = "test"
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = 100 * time.Millisecond
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 3
	}
	if opts.HookTimeout == 0 {
		opts.HookTimeout = 2 * time.Minute
	}
	b := New(t, opts.Bed)
	c := &Controller{
		Model:    jujutest.NewModel(opts.ModelName, "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10"),
		Bed:      b,
		t:        t,
		opts:     opts,
		contexts: map[string]*jujutest.HookContext{},
		units:    map[string]*Unit{},
		apps:     map[string]*appInfo{},
		changed:  make(chan struct{}),
		serveErr: make(chan error, 1),
	}
	sock := filepath.Join(b.Dir(), "sock")
	if err := os.MkdirAll(sock, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(sock, socketName))
	if err != nil {
		t.Fatalf("cannot listen for jujuc: %v", err)
	}
	c.listener = l
	go func() { c.serveErr <- jujutest.Serve(l, c.lookup) }()
	// Registered after New's cleanup, so it runs first: hooks stop before the containers do.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hook logs:\n%s", c.HookLogs())
			t.Logf("status:\n%s", c.Status())
		}
		c.close()
	})
	return c
}

func (c *Controller) lookup(id string) (*jujutest.HookContext, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.contexts[id]
	return h, ok
}

func (c *Controller) close() {
	c.mu.Lock()
	c.closed = true
	units := c.unitsLocked()
	c.notifyLocked()
	c.mu.Unlock()
	for _, u := range units {
		u.wakeUp()
	}
	c.wg.Wait()
	c.listener.Close()
	if err := <-c.serveErr; err != nil {
		c.t.Errorf("jujuc server: %v", err)
	}
}

// notifyLocked wakes Settle waiters; callers hold c.mu.
func (c *Controller) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Controller) unitsLocked() []*Unit {
	out := make([]*Unit, 0, len(c.order))
	for _, n := range c.order {
		out = append(out, c.units[n])
	}
	return out
}

// Unit returns a unit by name ("echo/0"), or nil.
func (c *Controller) Unit(name string) *Unit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.units[name]
}

// Units returns the live units of app in creation order.
func (c *Controller) Units(app string) []*Unit {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Unit
	for _, u := range c.unitsLocked() {
		if u.App == app && !u.gone {
			out = append(out, u)
		}
	}
	return out
}

// --- units and their hook queues -------------------------------------------------------------

// Unit is one unit: a container (nil Machine for a virtual unit) and its hook queue.
type Unit struct {
	*Machine
	Name string // "echo/0"
	App  string
	// CharmDir is the charm directory inside the container.
	CharmDir string
	// ToolsDir is the hook-tools directory inside the container, first on the hooks' PATH.
	ToolsDir string

	c       *Controller
	wake    chan struct{}
	queue   []*queued // guarded by c.mu, like the fields below
	running bool
	failed  bool // the head of the queue failed and waits for a retry
	stuck   bool // retries exhausted: waits for Resolve
	tries   int
	gone    bool // removed or killed: its queue is dropped
	log     []HookRecord
}

type queued struct {
	info jujutest.HookInfo
	// done receives the action record when an action finishes.
	done chan actionResult
	// terminate stops the unit's machine after its teardown hooks (remove-unit).
	terminate bool
	// charm, when set, is installed in place of the unit's charm (refresh).
	charm *Charm
}

type actionResult struct {
	rec jujutest.ActionRecord
	err error
}

// HookRecord is one dispatch run, kept for assertions and printed when a test fails.
type HookRecord struct {
	Hook     string // hook name, or "action <name>"
	Info     jujutest.HookInfo
	Start    time.Time
	Duration time.Duration
	Exit     int
	Err      string // the bed could not run it at all, or a virtual handler's error
	Stdout   string
	Stderr   string
	Events   []jujutest.Event // what a successful hook caused on other units
}

func (r HookRecord) String() string {
	s := fmt.Sprintf("%s exit %d (%s)", r.Hook, r.Exit, r.Duration.Round(time.Millisecond))
	if r.Info.RemoteUnit != "" {
		s = fmt.Sprintf("%s(%s) exit %d (%s)", r.Hook, r.Info.RemoteUnit, r.Exit, r.Duration.Round(time.Millisecond))
	}
	if r.Err != "" {
		s += " error: " + r.Err
	}
	return s
}

func (u *Unit) wakeUp() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Exec runs argv in the unit's container with the charm directory as working directory.
func (u *Unit) Exec(ctx context.Context, env []string, argv ...string) (stdout, stderr []byte, exit int, err error) {
	if u.Machine == nil {
		return nil, nil, 0, fmt.Errorf("%s is virtual: it has no container", u.Name)
	}
	res, err := u.Run(ctx, Cmd{Argv: argv, Env: env, Dir: u.CharmDir})
	return res.Stdout, res.Stderr, res.Exit, err
}

// Hooks returns the unit's hook log so far.
func (u *Unit) Hooks() []HookRecord {
	u.c.mu.Lock()
	defer u.c.mu.Unlock()
	return slices.Clone(u.log)
}

// HookNames returns the names of the hooks that ran, with "(remote)" for relation hooks naming
// a remote unit and "!" for a failed run: e.g. "install", "peers-relation-joined(echo/1)",
// "config-changed!".
func (u *Unit) HookNames() []string {
	var out []string
	for _, r := range u.Hooks() {
		s := r.Hook
		if r.Info.RemoteUnit != "" {
			s += "(" + r.Info.RemoteUnit + ")"
		}
		if r.Exit != 0 || r.Err != "" {
			s += "!"
		}
		out = append(out, s)
	}
	return out
}

// enqueue appends hooks to unit queues and wakes them. Events for unknown or gone units are
// dropped: Juju does not run hooks on a unit that has left.
func (c *Controller) enqueue(evs ...jujutest.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range evs {
		u, ok := c.units[e.Unit]
		if !ok || u.gone || u.coalesces(e.HookInfo) {
			continue
		}
		u.queue = append(u.queue, &queued{info: e.HookInfo})
		u.wakeUp()
	}
	c.notifyLocked()
}

// coalesces reports whether a -relation-changed event is already pending (queued, not yet
// started) for the same relation and remote unit. Juju's uniter keeps one "changed" flag per
// remote unit, not a list, and the hook reads the latest data when it runs: so a write landing
// before the other unit has even run joined/changed yields one changed hook, not two.
// Callers hold c.mu.
func (u *Unit) coalesces(info jujutest.HookInfo) bool {
	if !strings.HasSuffix(info.Hook, "-relation-changed") {
		return false
	}
	for i, q := range u.queue {
		if i == 0 && u.running {
			continue
		}
		if q.info.Hook == info.Hook && q.info.RelationID == info.RelationID && q.info.RemoteUnit == info.RemoteUnit {
			return true
		}
	}
	return false
}

func (c *Controller) enqueueItem(u *Unit, q *queued) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u.queue = append(u.queue, q)
	u.wakeUp()
	c.notifyLocked()
}

func hook(unit, name string) jujutest.Event {
	return jujutest.Event{Unit: unit, HookInfo: jujutest.HookInfo{Hook: name, RelationID: -1}}
}

// loop is a unit agent: one hook at a time, retried with back-off while it fails.
func (u *Unit) loop() {
	defer u.c.wg.Done()
	c := u.c
	for {
		c.mu.Lock()
		for !c.closed && !u.gone && (len(u.queue) == 0 || u.stuck) {
			c.mu.Unlock()
			<-u.wake
			c.mu.Lock()
		}
		if c.closed || u.gone {
			for _, q := range u.queue {
				if q.done != nil {
					q.done <- actionResult{err: fmt.Errorf("unit %s went away", u.Name)}
				}
			}
			u.queue = nil
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
		q := u.queue[0]
		delay := time.Duration(0)
		if u.failed {
			delay = c.opts.RetryDelay << (u.tries - 1)
		}
		u.running = true
		c.mu.Unlock()

		if delay > 0 {
			time.Sleep(delay)
		}
		ok := u.runOne(q)

		c.mu.Lock()
		u.running = false
		switch {
		case ok || q.done != nil || q.terminate:
			// Actions never block the queue and are not retried (juju-contract §1.4).
			u.queue = u.queue[1:]
			u.failed, u.stuck, u.tries = false, false, 0
		default:
			u.failed = true
			u.tries++
			if u.tries > c.opts.MaxRetries {
				u.stuck = true
			}
		}
		c.notifyLocked()
		c.mu.Unlock()
	}
}

// runOne runs one queued item and reports whether it succeeded.
func (u *Unit) runOne(q *queued) bool {
	c := u.c
	if q.terminate {
		var err error
		if u.Machine != nil {
			err = u.Machine.Stop()
		}
		c.mu.Lock()
		u.gone = true
		u.log = append(u.log, HookRecord{Hook: "(machine removed)", Start: time.Now(), Err: errString(err)})
		c.mu.Unlock()
		return true
	}
	if q.charm != nil {
		err := q.charm.install(u.Machine, u.CharmDir)
		c.mu.Lock()
		u.log = append(u.log, HookRecord{Hook: "(charm refreshed)", Start: time.Now(), Err: errString(err)})
		c.mu.Unlock()
		return err == nil
	}
	h := c.Model.NewHookContext(u.Name, q.info)
	h.CharmDir = u.CharmDir
	h.ReadFile = u.Machine.ReadFile // --file and key#file= paths are the unit's, not the host's
	h.AgentSocketAddress = socketDir + "/" + socketName
	rec := HookRecord{Hook: q.info.Hook, Info: q.info, Start: time.Now()}
	if q.info.ActionName != "" {
		rec.Hook = "action " + q.info.ActionName
	}
	c.mu.Lock()
	c.contexts[h.ID()] = h
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.contexts, h.ID())
		c.mu.Unlock()
	}()

	var err error
	if u.Machine == nil {
		c.mu.Lock()
		handler := c.apps[u.App].handler
		c.mu.Unlock()
		err = handler(h, q.info)
		if err != nil {
			rec.Exit, rec.Err = 1, err.Error()
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.HookTimeout)
		env := append(h.Env(), "PATH="+u.ToolsDir+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
		var res Result
		res, err = u.Run(ctx, Cmd{Argv: []string{u.CharmDir + "/dispatch"}, Env: env, Dir: u.CharmDir})
		cancel()
		rec.Exit, rec.Stdout, rec.Stderr = res.Exit, string(res.Stdout), string(res.Stderr)
		if err != nil {
			rec.Exit, rec.Err = -1, err.Error()
		}
	}
	ok := rec.Exit == 0 && rec.Err == ""
	if ok {
		rec.Events = h.Commit()
	} else {
		h.Discard()
	}
	rec.Duration = time.Since(rec.Start)
	c.mu.Lock()
	u.log = append(u.log, rec)
	c.mu.Unlock()
	if q.done != nil {
		ar, _ := c.Model.Action(h.ActionUUID())
		var aerr error
		if !ok {
			aerr = fmt.Errorf("action %s on %s failed: exit %d %s%s", q.info.ActionName, u.Name, rec.Exit, rec.Err, rec.Stderr)
		}
		q.done <- actionResult{rec: ar, err: aerr}
	}
	c.enqueue(rec.Events...)
	return ok
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Resolve retries a unit's failed hook now (retry=true, `juju resolved`) or skips it
// (`juju resolved --no-retry`).
func (c *Controller) Resolve(unit string, retry bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.units[unit]
	if !ok || !u.failed {
		return fmt.Errorf("unit %s is not in error", unit)
	}
	if !retry {
		u.queue = u.queue[1:]
	}
	u.failed, u.stuck, u.tries = false, false, 0
	u.wakeUp()
	c.notifyLocked()
	return nil
}

// Settle waits until every unit's queue is empty and no hook runs. It returns an error naming the
// units whose failed hook exhausted its retries, or when ctx ends first.
func (c *Controller) Settle(ctx context.Context) error {
	for {
		c.mu.Lock()
		busy, stuck := []string{}, []string{}
		for _, u := range c.unitsLocked() {
			if u.gone || (len(u.queue) == 0 && !u.running) {
				continue
			}
			if u.stuck && !u.running {
				stuck = append(stuck, fmt.Sprintf("%s (hook %q failed %d times)", u.Name, u.queue[0].info.Hook, u.tries))
				continue
			}
			busy = append(busy, u.Name)
		}
		ch := c.changed
		c.mu.Unlock()
		if len(busy) == 0 {
			if len(stuck) > 0 {
				return fmt.Errorf("units in error: %s", strings.Join(stuck, ", "))
			}
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("settling (busy: %s): %w", strings.Join(busy, ", "), ctx.Err())
		}
	}
}

// --- verbs mirroring the juju CLI ----------------------------------------------------------

// Deploy adds an application from an unpacked charm with n units, boots their containers in
// parallel, installs the charm and queues the hooks of juju-contract §4.1. The first unit leads.
func (c *Controller) Deploy(ctx context.Context, app string, ch *Charm, n int, config map[string]any, opts DeployOptions) ([]*Unit, error) {
	a := &appInfo{name: app, charm: ch, opts: opts}
	if opts.Storage != StorageNone {
		a.shared = opts.SharedDir
		if a.shared == "" {
			a.shared = filepath.Join(c.Bed.Dir(), "shared-"+app)
		}
		if err := os.MkdirAll(a.shared, 0o755); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	if _, dup := c.apps[app]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("application %q already exists", app)
	}
	c.apps[app] = a
	c.mu.Unlock()
	c.Model.AddApp(app, ch.Meta, config)
	return c.addUnits(ctx, a, n, true)
}

// DeployVirtual adds an application whose n units have no container: their hooks run handler in
// the controller, against the same model, so they write databags and secrets and cause events
// exactly like a real unit. Its hooks follow the same sequences as Deploy.
func (c *Controller) DeployVirtual(app string, meta jujutest.AppMeta, n int, handler VirtualHandler) []*Unit {
	a := &appInfo{name: app, handler: handler}
	c.mu.Lock()
	c.apps[app] = a
	c.mu.Unlock()
	c.Model.AddApp(app, meta, nil)
	units, err := c.addUnits(context.Background(), a, n, true)
	if err != nil {
		c.t.Fatalf("cannot deploy %s: %v", app, err)
	}
	return units
}

// AddUnit adds n units to an application (`juju add-unit -n`).
func (c *Controller) AddUnit(ctx context.Context, app string, n int) ([]*Unit, error) {
	c.mu.Lock()
	a, ok := c.apps[app]
	c.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no application %q", app)
	}
	return c.addUnits(ctx, a, n, false)
}

func (c *Controller) addUnits(ctx context.Context, a *appInfo, n int, deploy bool) ([]*Unit, error) {
	units := make([]*Unit, n)
	var bootOpts []MachineOptions
	for i := range n {
		name := c.Model.AddUnit(a.name)
		tag := strings.ReplaceAll(name, "/", "-")
		u := &Unit{Name: name, App: a.name, c: c, wake: make(chan struct{}, 1),
			CharmDir: "/var/lib/juju/agents/unit-" + tag + "/charm",
			ToolsDir: "/var/lib/juju/tools/unit-" + tag}
		units[i] = u
		if a.charm == nil {
			continue
		}
		binds := []Bind{
			{Source: c.opts.ToolsDir, Target: u.ToolsDir, ReadOnly: true},
			{Source: filepath.Join(c.Bed.Dir(), "sock"), Target: socketDir},
		}
		switch a.opts.Storage {
		case StorageShared:
			binds = append(binds, Bind{Source: a.shared, Target: "/var/lib/concourse"})
		case StorageSharedROWorkers:
			binds = append(binds, Bind{Source: a.shared, Target: "/var/lib/concourse", ReadOnly: a.nextIdx+i > 0})
		default:
			// shared-storage=none: the unit's own disk, as on a machine Juju gives; nothing is
			// mounted or pre-created at /var/lib/concourse.
		}
		bootOpts = append(bootOpts, MachineOptions{Binds: binds})
	}
	a.nextIdx += n
	if a.charm != nil {
		machines, err := c.Bed.BootAll(ctx, bootOpts)
		if err != nil {
			return nil, err
		}
		for i, m := range machines {
			units[i].Machine = m
			if a.opts.Provision != nil {
				if err := a.opts.Provision(ctx, m); err != nil {
					return nil, fmt.Errorf("provisioning %s: %w", m.Name, err)
				}
			}
			if err := a.charm.install(m, units[i].CharmDir); err != nil {
				return nil, err
			}
			c.Model.SetAddress(units[i].Name, m.IP)
		}
	}
	c.mu.Lock()
	for _, u := range units {
		c.units[u.Name] = u
		c.order = append(c.order, u.Name)
		c.wg.Add(1)
		go u.loop()
	}
	c.mu.Unlock()

	// juju-contract §4.1/§4.2: install → -relation-created (peers and existing relations) →
	// leader-elected or leader-settings-changed → config-changed → start, then joined/changed.
	leader := c.Model.Leader(a.name)
	rels := c.liveRelations(a.name)
	var evs, joins []jujutest.Event
	for _, u := range units {
		evs = append(evs, hook(u.Name, "install"))
		for _, r := range rels {
			ep := endpointOf(r, a.name)
			evs = append(evs, jujutest.Event{Unit: u.Name, HookInfo: jujutest.HookInfo{Hook: ep + "-relation-created", RelationID: r.ID}})
		}
		if u.Name == leader {
			evs = append(evs, hook(u.Name, "leader-elected"))
		} else {
			evs = append(evs, hook(u.Name, "leader-settings-changed"))
		}
		evs = append(evs, hook(u.Name, "config-changed"), hook(u.Name, "start"))
		for _, r := range rels {
			joins = append(joins, c.Model.JoinEvents(r.ID, u.Name)...)
		}
	}
	c.enqueue(append(evs, dedupe(joins)...)...)
	return units, nil
}

// dedupe drops repeated events: when several units join at once, JoinEvents of each names the
// others, so every pair appears twice.
func dedupe(evs []jujutest.Event) []jujutest.Event {
	seen := map[string]bool{}
	var out []jujutest.Event
	for _, e := range evs {
		k := fmt.Sprintf("%s|%s|%d|%s", e.Unit, e.Hook, e.RelationID, e.RemoteUnit)
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

func (c *Controller) liveRelations(app string) []jujutest.RelationInfo {
	var out []jujutest.RelationInfo
	for _, r := range c.Model.Relations() {
		if !r.Broken && (r.Endpoints[0].App == app || r.Endpoints[1].App == app) {
			out = append(out, r)
		}
	}
	return out
}

func endpointOf(r jujutest.RelationInfo, app string) string {
	if r.Endpoints[0].App == app {
		return r.Endpoints[0].Name
	}
	return r.Endpoints[1].Name
}

// Config sets config values (nil resets to the default) and queues config-changed on every unit.
func (c *Controller) Config(app string, kv map[string]any) {
	c.Model.SetConfig(app, kv)
	var evs []jujutest.Event
	for _, u := range c.Units(app) {
		evs = append(evs, hook(u.Name, "config-changed"))
	}
	c.enqueue(evs...)
}

// Integrate relates "app:endpoint" to "app:endpoint" and queues -created then joined/changed
// on both sides (juju-contract §4.3). It returns the relation id.
func (c *Controller) Integrate(a, b string) (int, error) {
	app1, ep1, ok1 := strings.Cut(a, ":")
	app2, ep2, ok2 := strings.Cut(b, ":")
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("integrate %q %q: want app:endpoint", a, b)
	}
	id := c.Model.Relate(app1, ep1, app2, ep2)
	var evs, joins []jujutest.Event
	for _, app := range []struct{ name, ep string }{{app1, ep1}, {app2, ep2}} {
		for _, u := range c.Units(app.name) {
			evs = append(evs, jujutest.Event{Unit: u.Name, HookInfo: jujutest.HookInfo{Hook: app.ep + "-relation-created", RelationID: id}})
			joins = append(joins, c.Model.JoinEvents(id, u.Name)...)
		}
	}
	c.enqueue(append(evs, dedupe(joins)...)...)
	return id, nil
}

// RemoveRelation queues -departed per remote unit then -broken on every unit of the relation.
func (c *Controller) RemoveRelation(id int) {
	c.enqueue(c.Model.RemoveRelation(id)...)
}

// RemoveUnit runs the unit's teardown (departed/broken, stop, remove), tells the others, moves
// leadership if it led, then stops its container (juju-contract §4.4).
func (c *Controller) RemoveUnit(unit string) error {
	u := c.Unit(unit)
	if u == nil {
		return fmt.Errorf("no unit %q", unit)
	}
	wasLeader := c.Model.Leader(u.App) == unit
	evs := c.Model.RemoveUnit(unit)
	var own, others []jujutest.Event
	for _, e := range evs {
		if e.Unit == unit {
			own = append(own, e)
		} else {
			others = append(others, e)
		}
	}
	own = append(own, hook(unit, "stop"), hook(unit, "remove"))
	c.enqueue(own...)
	c.enqueueItem(u, &queued{terminate: true})
	c.enqueue(others...)
	if wasLeader {
		c.electLeader(u.App, unit)
	}
	return nil
}

// KillUnit pulls the plug on a unit's container: no teardown hooks run on it. The model drops it
// (the others see it depart, as when Juju removes a dead machine) and, if it led, another unit
// takes the lease.
func (c *Controller) KillUnit(unit string) error {
	u := c.Unit(unit)
	if u == nil {
		return fmt.Errorf("no unit %q", unit)
	}
	var err error
	if u.Machine != nil {
		err = u.Machine.Kill()
	}
	c.mu.Lock()
	u.gone = true
	u.wakeUp()
	c.notifyLocked()
	c.mu.Unlock()
	wasLeader := c.Model.Leader(u.App) == unit
	var others []jujutest.Event
	for _, e := range c.Model.RemoveUnit(unit) {
		if e.Unit != unit {
			others = append(others, e)
		}
	}
	c.enqueue(others...)
	if wasLeader {
		c.electLeader(u.App, unit)
	}
	return err
}

// electLeader gives leadership to the first live unit other than old.
func (c *Controller) electLeader(app, old string) {
	for _, u := range c.Units(app) {
		if u.Name != old {
			c.SetLeader(app, u.Name)
			return
		}
	}
}

// SetLeader moves leadership: leader-elected on the new leader, leader-settings-changed on the
// others (juju-contract §4.4).
func (c *Controller) SetLeader(app, unit string) {
	c.Model.SetLeader(app, unit)
	var evs []jujutest.Event
	for _, u := range c.Units(app) {
		if u.Name == unit {
			evs = append(evs, hook(u.Name, "leader-elected"))
		} else {
			evs = append(evs, hook(u.Name, "leader-settings-changed"))
		}
	}
	c.enqueue(evs...)
}

// Refresh installs a new charm on every unit and queues upgrade-charm → config-changed →
// leader-settings-changed (non-leaders) → start (juju-contract §4.4). The charm is swapped when
// the unit reaches the refresh in its queue, so earlier hooks still run the old charm.
func (c *Controller) Refresh(app string, ch *Charm) error {
	c.mu.Lock()
	a, ok := c.apps[app]
	c.mu.Unlock()
	if !ok || a.charm == nil {
		return fmt.Errorf("no charm application %q", app)
	}
	c.mu.Lock()
	a.charm = ch
	c.mu.Unlock()
	leader := c.Model.Leader(app)
	for _, u := range c.Units(app) {
		c.enqueueItem(u, &queued{charm: ch})
		evs := []jujutest.Event{hook(u.Name, "upgrade-charm"), hook(u.Name, "config-changed")}
		if u.Name != leader {
			evs = append(evs, hook(u.Name, "leader-settings-changed"))
		}
		c.enqueue(append(evs, hook(u.Name, "start"))...)
	}
	return nil
}

// AttachResource copies a file into every unit of app and points resource-get at it; Juju runs
// upgrade-charm when a resource changes.
func (c *Controller) AttachResource(app, name, hostPath string) error {
	target := filepath.Join("/var/lib/juju/resources", app, name, filepath.Base(hostPath))
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	for _, u := range c.Units(app) {
		if u.Machine == nil {
			continue
		}
		dir := filepath.Join(u.Root, filepath.Dir(target))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(u.Root, target), data, 0o644); err != nil {
			return err
		}
	}
	c.Model.AttachResource(app, name, target)
	var evs []jujutest.Event
	for _, u := range c.Units(app) {
		evs = append(evs, hook(u.Name, "upgrade-charm"))
	}
	c.enqueue(evs...)
	return nil
}

// UpdateStatus queues update-status on the given units, or on every unit when none is given.
func (c *Controller) UpdateStatus(units ...string) {
	if len(units) == 0 {
		c.mu.Lock()
		for _, u := range c.unitsLocked() {
			if !u.gone {
				units = append(units, u.Name)
			}
		}
		c.mu.Unlock()
	}
	var evs []jujutest.Event
	for _, u := range units {
		evs = append(evs, hook(u, "update-status"))
	}
	c.enqueue(evs...)
}

// RunAction queues an action behind the unit's pending hooks and waits for it (`juju run`).
// A failed action returns its record and an error; the unit is not put in error.
func (c *Controller) RunAction(ctx context.Context, unit, name string, params map[string]any) (jujutest.ActionRecord, error) {
	u := c.Unit(unit)
	if u == nil {
		return jujutest.ActionRecord{}, fmt.Errorf("no unit %q", unit)
	}
	done := make(chan actionResult, 1)
	c.enqueueItem(u, &queued{info: jujutest.HookInfo{RelationID: -1, ActionName: name, ActionParams: params}, done: done})
	select {
	case r := <-done:
		return r.rec, r.err
	case <-ctx.Done():
		return jujutest.ActionRecord{}, fmt.Errorf("action %s on %s: %w", name, unit, ctx.Err())
	}
}

// --- status ------------------------------------------------------------------------------------

// StatusTable is a juju-status-like snapshot.
type StatusTable struct {
	Units []UnitStatus
}

// UnitStatus is one row of StatusTable.
type UnitStatus struct {
	Unit     string
	Leader   bool
	Workload jujutest.Status
	Agent    string // idle, executing, error, lost
	Address  string
	Machine  string
}

// Status returns the units' workload and agent status. A unit whose current hook failed shows
// workload "error" with `hook failed: "<hook>"`, as juju status does (juju-contract §1.4).
func (c *Controller) Status() StatusTable {
	c.mu.Lock()
	units := c.unitsLocked()
	type snap struct {
		u             *Unit
		running, fail bool
		head          string
		gone          bool
	}
	snaps := make([]snap, len(units))
	for i, u := range units {
		s := snap{u: u, running: u.running, fail: u.failed, gone: u.gone}
		if len(u.queue) > 0 {
			s.head = u.queue[0].info.Hook
		}
		snaps[i] = s
	}
	c.mu.Unlock()
	var t StatusTable
	for _, s := range snaps {
		if s.gone {
			continue
		}
		row := UnitStatus{Unit: s.u.Name, Leader: c.Model.Leader(s.u.App) == s.u.Name,
			Workload: c.Model.UnitStatus(s.u.Name), Agent: "idle", Address: c.Model.Address(s.u.Name)}
		if s.u.Machine != nil {
			row.Machine = s.u.Machine.Name
		} else {
			row.Machine = "(virtual)"
		}
		switch {
		case s.fail:
			row.Agent = "error"
			row.Workload = jujutest.Status{Status: "error", Message: fmt.Sprintf("hook failed: %q", s.head)}
		case s.running:
			row.Agent = "executing"
		}
		t.Units = append(t.Units, row)
	}
	sort.SliceStable(t.Units, func(i, j int) bool { return unitLess(t.Units[i].Unit, t.Units[j].Unit) })
	return t
}

// unitLess orders "app/2" before "app/10".
func unitLess(a, b string) bool {
	aa, an, _ := strings.Cut(a, "/")
	ba, bn, _ := strings.Cut(b, "/")
	if aa != ba {
		return aa < ba
	}
	if len(an) != len(bn) {
		return len(an) < len(bn)
	}
	return an < bn
}

// Unit returns the row for unit, or false.
func (t StatusTable) Unit(name string) (UnitStatus, bool) {
	for _, u := range t.Units {
		if u.Unit == name {
			return u, true
		}
	}
	return UnitStatus{}, false
}

func (t StatusTable) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s %-10s %-10s %-14s %-12s %s\n", "Unit", "Workload", "Agent", "Address", "Machine", "Message")
	for _, u := range t.Units {
		name := u.Unit
		if u.Leader {
			name += "*"
		}
		fmt.Fprintf(&b, "%-28s %-10s %-10s %-14s %-12s %s\n", name, u.Workload.Status, u.Agent, u.Address, u.Machine, u.Workload.Message)
	}
	return b.String()
}

// HookLogs renders every unit's hook log, with output of failed hooks, for failure reports.
func (c *Controller) HookLogs() string {
	c.mu.Lock()
	units := c.unitsLocked()
	c.mu.Unlock()
	var b strings.Builder
	for _, u := range units {
		fmt.Fprintf(&b, "%s:\n", u.Name)
		for _, r := range u.Hooks() {
			fmt.Fprintf(&b, "  %s\n", r)
			if r.Exit != 0 || r.Err != "" {
				for _, out := range []string{r.Stdout, r.Stderr} {
					if s := strings.TrimSpace(out); s != "" {
						fmt.Fprintf(&b, "    | %s\n", strings.ReplaceAll(s, "\n", "\n    | "))
					}
				}
			}
		}
	}
	return b.String()
}
