package jujutest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// AppMeta is the part of a charm's metadata.yaml and config.yaml the model needs.
type AppMeta struct {
	Peers         map[string]string `json:"peers,omitempty"`    // endpoint → interface
	Provides      map[string]string `json:"provides,omitempty"` // endpoint → interface
	Requires      map[string]string `json:"requires,omitempty"` // endpoint → interface
	ExtraBindings []string          `json:"extra-bindings,omitempty"`
	Options       map[string]Option `json:"options,omitempty"` // config.yaml options
}

// Option is one config.yaml option.
type Option struct {
	Type        string `json:"type"` // string, int, float, boolean, secret
	Default     any    `json:"default,omitempty"`
	Description string `json:"description,omitempty"`
}

// Status is a unit or application status as the model records it.
type Status struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// LogLine is one juju-log call.
type LogLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	Hook    string `json:"hook"` // hook or action name that logged it
}

// Endpoint is one side of a relation.
type Endpoint struct {
	App       string `json:"app"`
	Name      string `json:"name"`
	Interface string `json:"interface"`
	Role      string `json:"role"` // "peer", "provider" or "requirer"
}

// RelationInfo describes a relation for enumeration.
type RelationInfo struct {
	ID        int         `json:"id"`
	Endpoints [2]Endpoint `json:"endpoints"` // for a peer relation both are the same
	Broken    bool        `json:"broken,omitempty"`
}

// Key returns the relation key Juju prints, "database:5", from app's side.
func (r RelationInfo) Key(app string) string {
	ep := r.Endpoints[0]
	if ep.App != app {
		ep = r.Endpoints[1]
	}
	return ep.Name + ":" + strconv.Itoa(r.ID)
}

// ActionRecord is what an action did.
type ActionRecord struct {
	UUID    string            `json:"uuid"`
	Unit    string            `json:"unit"`
	Name    string            `json:"name"`
	Params  map[string]any    `json:"params"`
	Results map[string]string `json:"results,omitempty"`
	Status  string            `json:"status"` // "running", "completed" or "failed"
	Message string            `json:"message,omitempty"`
	Logs    []string          `json:"logs,omitempty"`
}

// ProxySettings are the model's juju-*-proxy settings, exported to hooks as JUJU_CHARM_*.
type ProxySettings struct {
	HTTP    string `json:"http,omitempty"`
	HTTPS   string `json:"https,omitempty"`
	FTP     string `json:"ftp,omitempty"`
	NoProxy string `json:"no-proxy,omitempty"`
}

// Model is an in-memory Juju model. All methods are safe for concurrent use; hook tools of all
// hook contexts of one model are serialised by its mutex, as the unit agent serialises them.
//
// Builder methods panic on programmer errors (unknown application, duplicate name), the way
// httptest.NewRequest does: they are test set-up, not operations under test.
type Model struct {
	mu sync.Mutex
	s  modelState
}

type modelState struct {
	Name      string                   `json:"name"`
	UUID      string                   `json:"uuid"`
	Proxy     ProxySettings            `json:"proxy"`
	Apps      map[string]*appState     `json:"apps"`
	Units     map[string]*unitState    `json:"units"`
	Relations map[int]*relationState   `json:"relations"`
	Secrets   map[string]*secretState  `json:"secrets"` // by bare id
	Actions   map[string]*ActionRecord `json:"actions"`
	Next      counters                 `json:"next"`
}

type counters struct {
	Relation int `json:"relation"`
	Machine  int `json:"machine"`
	Secret   int `json:"secret"`
	Action   int `json:"action"`
	Context  int `json:"context"`
}

type appState struct {
	Name      string            `json:"name"`
	Meta      AppMeta           `json:"meta"`
	Config    map[string]any    `json:"config"` // operator-set values only
	Leader    string            `json:"leader"`
	Status    Status            `json:"status"`
	Version   string            `json:"version"`
	Resources map[string]string `json:"resources"`
	NextUnit  int               `json:"next-unit"`
}

type unitState struct {
	Name    string `json:"name"`
	App     string `json:"app"`
	Machine string `json:"machine"`
	Address string `json:"address"`
	// Bindings are the addresses network-get answers per binding, where the test gave one;
	// any other binding answers Address (one space, as on a machine with one interface).
	Bindings map[string]string `json:"bindings,omitempty"`
	// RelationIngress is the ingress address network-get -r ID answers for a relation (a
	// cross-model relation advertises the unit's public address), where the test gave one.
	RelationIngress map[int]string    `json:"relation-ingress,omitempty"`
	Status          Status            `json:"status"`
	Ports           []string          `json:"ports"`
	State           map[string]string `json:"state"`
	Logs            []LogLine         `json:"logs"`
	Dead            bool              `json:"dead,omitempty"`
}

type relationState struct {
	RelationInfo
	AppData  map[string]map[string]string `json:"app-data"`
	UnitData map[string]map[string]string `json:"unit-data"`
	Scope    []string                     `json:"scope"` // units in scope, sorted
}

type secretState struct {
	ID          string                     `json:"id"`
	Owner       string                     `json:"owner"`      // application or unit name
	OwnerKind   string                     `json:"owner-kind"` // "application" or "unit"
	Label       string                     `json:"label,omitempty"`
	Description string                     `json:"description,omitempty"`
	Expire      string                     `json:"expire,omitempty"`
	Rotate      string                     `json:"rotate,omitempty"`
	Revisions   []secretRevision           `json:"revisions"`
	Consumers   map[string]*secretConsumer `json:"consumers"` // by unit
	Grants      []secretGrant              `json:"grants"`
}

type secretRevision struct {
	Revision int               `json:"revision"`
	Content  map[string]string `json:"content"`
}

type secretConsumer struct {
	Label    string `json:"label,omitempty"`
	Revision int    `json:"revision"`
}

type secretGrant struct {
	RelationID int    `json:"relation-id"`
	Unit       string `json:"unit,omitempty"` // "" grants the whole remote application
}

// NewModel returns an empty model.
func NewModel(name, uuid string) *Model {
	return &Model{s: modelState{
		Name: name, UUID: uuid,
		Apps: map[string]*appState{}, Units: map[string]*unitState{},
		Relations: map[int]*relationState{}, Secrets: map[string]*secretState{},
		Actions: map[string]*ActionRecord{},
	}}
}

// MarshalJSON serialises the whole model (fakejuju keeps it in a file between tool runs).
func (m *Model) MarshalJSON() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return json.Marshal(&m.s)
}

// UnmarshalJSON restores a model written by MarshalJSON. Numbers in config values decode as
// json.Number, so large ints survive the round trip.
func (m *Model) UnmarshalJSON(b []byte) error {
	var s modelState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("decoding model: %w", err)
	}
	if s.Apps == nil || s.Units == nil || s.Relations == nil || s.Secrets == nil || s.Actions == nil {
		return fmt.Errorf("decoding model: missing sections")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = s
	return nil
}

// --- builders -------------------------------------------------------------------------------

// AddApp deploys an application with no units. config holds operator-set values (validated
// against meta.Options); a peer relation is created for each peers endpoint, as Juju does at
// deploy.
func (m *Model) AddApp(name string, meta AppMeta, config map[string]any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.s.Apps[name]; ok {
		panic(fmt.Sprintf("jujutest: application %q already exists", name))
	}
	a := &appState{Name: name, Meta: meta, Config: map[string]any{}, Resources: map[string]string{},
		Status: Status{Status: "unknown"}}
	m.s.Apps[name] = a
	m.setConfigLocked(a, config)
	for _, ep := range slices.Sorted(maps.Keys(meta.Peers)) {
		id := m.s.Next.Relation
		m.s.Next.Relation++
		e := Endpoint{App: name, Name: ep, Interface: meta.Peers[ep], Role: "peer"}
		m.s.Relations[id] = &relationState{RelationInfo: RelationInfo{ID: id, Endpoints: [2]Endpoint{e, e}},
			AppData: map[string]map[string]string{name: {}}, UnitData: map[string]map[string]string{}}
	}
}

// AddUnit adds a unit on a new machine and returns its name ("concourse-ci-machine/3"). The unit
// enters the scope of every live relation of its application, with Juju's default unit databag
// (private-address, ingress-address, egress-subnets). The first unit of an application without
// a leader becomes leader. Its address defaults to a loopback address (127.0.1.<machine+1>),
// so a charm under test that dials it reaches nothing beyond this machine.
func (m *Model) AddUnit(app string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.app(app)
	name := fmt.Sprintf("%s/%d", app, a.NextUnit)
	a.NextUnit++
	machine := m.s.Next.Machine
	m.s.Next.Machine++
	u := &unitState{Name: name, App: app, Machine: strconv.Itoa(machine),
		Address: fmt.Sprintf("127.0.1.%d", machine%250+1), Status: Status{Status: "unknown"},
		Ports: []string{}, State: map[string]string{}, Logs: []LogLine{}}
	m.s.Units[name] = u
	if a.Leader == "" {
		a.Leader = name
	}
	for _, id := range slices.Sorted(maps.Keys(m.s.Relations)) {
		r := m.s.Relations[id]
		if !r.Broken && r.hasApp(app) {
			m.enterScope(r, u)
		}
	}
	return name
}

// RemoveUnit marks unit dead: it leaves the scope of every relation and gives up leadership (the
// test then picks a new leader with SetLeader). Its record stays, so the teardown hooks the
// returned events describe can still run in its context. The events are, in order: on the
// removed unit, <ep>-relation-departed for each remote unit then <ep>-relation-broken for each
// non-peer relation; on every unit still in those relations, <ep>-relation-departed with
// DepartingUnit set. stop and remove are the caller's to run.
func (m *Model) RemoveUnit(unit string) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.unit(unit)
	var own, others []Event
	for _, id := range slices.Sorted(maps.Keys(m.s.Relations)) {
		r := m.s.Relations[id]
		if !slices.Contains(r.Scope, unit) {
			continue
		}
		r.Scope = slices.DeleteFunc(r.Scope, func(s string) bool { return s == unit })
		myEP := r.endpointOf(u.App)
		for _, other := range r.Scope {
			oApp := juju.AppName(other)
			own = append(own, Event{Unit: unit, HookInfo: HookInfo{Hook: myEP.Name + "-relation-departed",
				RelationID: id, RemoteUnit: other, RemoteApp: oApp, DepartingUnit: unit}})
			if other == unit || (oApp == u.App && !r.isPeer()) {
				continue
			}
			others = append(others, Event{Unit: other, HookInfo: HookInfo{
				Hook:       r.endpointOf(oApp).Name + "-relation-departed",
				RelationID: id, RemoteUnit: unit, RemoteApp: u.App, DepartingUnit: unit}})
		}
		if !r.isPeer() {
			own = append(own, Event{Unit: unit, HookInfo: HookInfo{Hook: myEP.Name + "-relation-broken",
				RelationID: id, RemoteApp: r.remoteOf(u.App).App}})
		}
	}
	u.Dead = true
	if a := m.s.Apps[u.App]; a.Leader == unit {
		a.Leader = ""
	}
	return append(own, others...)
}

// SetConfig changes operator-set config values; a nil value resets the option to its default.
// The caller runs config-changed.
func (m *Model) SetConfig(app string, config map[string]any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setConfigLocked(m.app(app), config)
}

func (m *Model) setConfigLocked(a *appState, config map[string]any) {
	for k, v := range config {
		if _, ok := a.Meta.Options[k]; !ok && len(a.Meta.Options) > 0 {
			panic(fmt.Sprintf("jujutest: application %q has no config option %q", a.Name, k))
		}
		if v == nil {
			delete(a.Config, k)
		} else {
			a.Config[k] = v
		}
	}
}

// SetLeader makes unit the leader of its application ("" for no leader). The caller runs
// leader-elected on it and leader-settings-changed on the others.
func (m *Model) SetLeader(app, unit string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.app(app)
	if unit != "" && m.unit(unit).App != app {
		panic(fmt.Sprintf("jujutest: unit %q is not in application %q", unit, app))
	}
	a.Leader = unit
}

// Relate integrates app1:ep1 with app2:ep2 and returns the relation id. The endpoints must exist
// with the same interface, one provided and one required. All live units of both applications
// enter scope; the caller runs -created, -joined and -changed (see JoinEvents).
func (m *Model) Relate(app1, ep1, app2, ep2 string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	e1, e2 := m.endpoint(app1, ep1), m.endpoint(app2, ep2)
	if e1.Interface != e2.Interface || e1.Role == e2.Role || e1.Role == "peer" || e2.Role == "peer" {
		panic(fmt.Sprintf("jujutest: cannot relate %s:%s (%s %s) to %s:%s (%s %s)",
			app1, ep1, e1.Role, e1.Interface, app2, ep2, e2.Role, e2.Interface))
	}
	id := m.s.Next.Relation
	m.s.Next.Relation++
	r := &relationState{RelationInfo: RelationInfo{ID: id, Endpoints: [2]Endpoint{e1, e2}},
		AppData:  map[string]map[string]string{app1: {}, app2: {}},
		UnitData: map[string]map[string]string{}}
	m.s.Relations[id] = r
	for _, name := range slices.Sorted(maps.Keys(m.s.Units)) {
		if u := m.s.Units[name]; !u.Dead && (u.App == app1 || u.App == app2) {
			m.enterScope(r, u)
		}
	}
	return id
}

// RemoveRelation breaks relation id. Every unit leaves scope and grants made on it end. The
// returned events are, per unit, <ep>-relation-departed for each remote unit, then
// <ep>-relation-broken. Peer relations cannot be removed.
func (m *Model) RemoveRelation(id int) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.relation(id)
	if r.isPeer() {
		panic(fmt.Sprintf("jujutest: relation %d is a peer relation", id))
	}
	var evs []Event
	for _, unit := range r.Scope {
		app := juju.AppName(unit)
		ep, remote := r.endpointOf(app), r.remoteOf(app)
		for _, other := range r.Scope {
			if juju.AppName(other) == remote.App {
				evs = append(evs, Event{Unit: unit, HookInfo: HookInfo{Hook: ep.Name + "-relation-departed",
					RelationID: id, RemoteUnit: other, RemoteApp: remote.App, DepartingUnit: other}})
			}
		}
		evs = append(evs, Event{Unit: unit, HookInfo: HookInfo{Hook: ep.Name + "-relation-broken",
			RelationID: id, RemoteApp: remote.App}})
	}
	r.Scope = nil
	r.Broken = true
	for _, s := range m.s.Secrets {
		s.Grants = slices.DeleteFunc(s.Grants, func(g secretGrant) bool { return g.RelationID == id })
	}
	return evs
}

// JoinEvents returns the -joined and -changed events Juju runs when unit has entered the scope
// of relation id (after AddUnit or Relate): on each other unit of the relation a joined/changed
// pair naming unit, and on unit a pair for each of them. Units of the same application on a
// regular relation do not see each other.
func (m *Model) JoinEvents(id int, unit string) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.relation(id)
	app := juju.AppName(unit)
	var evs []Event
	for _, other := range r.Scope {
		oApp := juju.AppName(other)
		if other == unit || (oApp == app && !r.isPeer()) {
			continue
		}
		for _, kind := range []string{"joined", "changed"} {
			evs = append(evs,
				Event{Unit: other, HookInfo: HookInfo{Hook: r.endpointOf(oApp).Name + "-relation-" + kind,
					RelationID: id, RemoteUnit: unit, RemoteApp: app}},
				Event{Unit: unit, HookInfo: HookInfo{Hook: r.endpointOf(app).Name + "-relation-" + kind,
					RelationID: id, RemoteUnit: other, RemoteApp: oApp}})
		}
	}
	return evs
}

// SetAddress changes a unit's private address, including the defaults in its relation
// databags (those whose endpoint has no address of its own: see SetBindingAddress).
func (m *Model) SetAddress(unit, ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.unit(unit)
	u.Address = ip
	m.refreshBagsLocked(u)
}

// SetBindingAddress makes network-get BINDING (and network-get -r on a relation of that
// endpoint) answer ip for the unit, as when the operator binds the endpoint to a space in which
// the machine has that address; its private address (unit-get) stays. Juju's defaults in the
// unit's databags on relations of that endpoint follow (private-address, ingress-address,
// egress-subnets). "" makes the binding answer the private address again.
func (m *Model) SetBindingAddress(unit, binding, ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.unit(unit)
	if !m.hasBinding(m.app(u.App).Meta, binding) {
		panic(fmt.Sprintf("jujutest: application %q has no binding %q", u.App, binding))
	}
	if ip == "" {
		delete(u.Bindings, binding)
	} else {
		if u.Bindings == nil {
			u.Bindings = map[string]string{}
		}
		u.Bindings[binding] = ip
	}
	m.refreshBagsLocked(u)
}

// SetRelationIngress makes network-get -r id answer ip as the unit's ingress address on that
// relation (the bound interface keeps the binding's address), as Juju does for a cross-model
// relation with the unit's public address; the unit's ingress-address default in that relation
// follows. "" goes back to the binding's address.
func (m *Model) SetRelationIngress(unit string, id int, ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.unit(unit)
	if _, ok := m.s.Relations[id]; !ok {
		panic(fmt.Sprintf("jujutest: no relation %d", id))
	}
	if ip == "" {
		delete(u.RelationIngress, id)
	} else {
		if u.RelationIngress == nil {
			u.RelationIngress = map[int]string{}
		}
		u.RelationIngress[id] = ip
	}
	m.refreshBagsLocked(u)
}

func (m *Model) hasBinding(meta AppMeta, binding string) bool {
	_, isPeer := meta.Peers[binding]
	_, isProv := meta.Provides[binding]
	_, isReq := meta.Requires[binding]
	return isPeer || isProv || isReq || slices.Contains(meta.ExtraBindings, binding)
}

// bindingAddress is the unit's address in the space of binding.
func (u *unitState) bindingAddress(binding string) string {
	if a := u.Bindings[binding]; a != "" {
		return a
	}
	return u.Address
}

// relationAddresses are the unit's bound and ingress addresses on relation r: Juju answers for
// the relation's own endpoint, whatever binding network-get was given.
func (u *unitState) relationAddresses(r *relationState) (bind, ingress string) {
	bind = u.bindingAddress(r.endpointOf(u.App).Name)
	if a := u.RelationIngress[r.ID]; a != "" {
		return bind, a
	}
	return bind, bind
}

// refreshBagsLocked rewrites Juju's defaults in the unit's databags after an address change.
func (m *Model) refreshBagsLocked(u *unitState) {
	for _, r := range m.s.Relations {
		if bag, ok := r.UnitData[u.Name]; ok {
			maps.Copy(bag, u.defaultBag(r))
		}
	}
}

// AttachResource makes resource-get NAME print path for the application's units.
func (m *Model) AttachResource(app, name, path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.app(app).Resources[name] = path
}

// SetProxy sets the model's proxy settings, exported to later hooks as JUJU_CHARM_*.
func (m *Model) SetProxy(p ProxySettings) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s.Proxy = p
}

// SetAppData writes app's application databag of relation id directly, as that application's
// leader would from a successful hook (a stand-in provider such as postgresql). It returns the
// -changed events for the units on the other side (and, for a peer relation, the app's units).
func (m *Model) SetAppData(id int, app string, data map[string]string) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyRelationWrite(m.relation(id), "", app, nil, data)
}

// SetUnitData writes unit's databag of relation id directly and returns the -changed events.
func (m *Model) SetUnitData(id int, unit string, data map[string]string) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unit(unit)
	return m.applyRelationWrite(m.relation(id), unit, juju.AppName(unit), data, nil)
}

// AddSecret creates a secret owned by owner (an application name, or a unit name for a
// unit-owned secret) with content as revision 1, and returns its URI ("secret:<20 chars>").
// label is the owner's label, may be empty.
func (m *Model) AddSecret(owner string, content map[string]string, label string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	kind := "application"
	if strings.Contains(owner, "/") {
		kind = "unit"
		m.unit(owner)
	} else {
		m.app(owner)
	}
	s := m.newSecret(owner, kind, label)
	s.Revisions = []secretRevision{{Revision: 1, Content: maps.Clone(content)}}
	m.s.Secrets[s.ID] = s
	return secretURI(s.ID)
}

// GrantSecret grants the secret to the remote side of relation id (unit "" for the whole
// application), as secret-grant would.
func (m *Model) GrantSecret(uri string, id int, unit string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.relation(id)
	s := m.secret(uri)
	s.Grants = append(s.Grants, secretGrant{RelationID: id, Unit: unit})
}

// UpdateSecret publishes content as a new revision and returns the secret-changed events for
// the consumers tracking an older revision.
func (m *Model) UpdateSecret(uri string, content map[string]string) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addRevision(m.secret(uri), content)
}

// --- getters --------------------------------------------------------------------------------

// Name and UUID of the model.
func (m *Model) Name() string { m.mu.Lock(); defer m.mu.Unlock(); return m.s.Name }
func (m *Model) UUID() string { m.mu.Lock(); defer m.mu.Unlock(); return m.s.UUID }

// Apps returns the application names, sorted.
func (m *Model) Apps() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.s.Apps))
}

// Units returns the live units of app, sorted by unit number.
func (m *Model) Units(app string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var units []string
	for name, u := range m.s.Units {
		if u.App == app && !u.Dead {
			units = append(units, name)
		}
	}
	sortUnits(units)
	return units
}

// Leader returns the leader of app, "" when none.
func (m *Model) Leader(app string) string { m.mu.Lock(); defer m.mu.Unlock(); return m.app(app).Leader }

// Config returns app's effective config: operator-set values over non-null defaults.
func (m *Model) Config(app string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return effectiveConfig(m.app(app), false)
}

// UnitStatus returns a unit's workload status.
func (m *Model) UnitStatus(unit string) Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unit(unit).Status
}

// AppStatus returns an application's status.
func (m *Model) AppStatus(app string) Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.app(app).Status
}

// AppVersion returns the workload version set with application-version-set.
func (m *Model) AppVersion(app string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.app(app).Version
}

// Address returns a unit's private address.
func (m *Model) Address(unit string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unit(unit).Address
}

// Logs returns a copy of a unit's juju-log lines.
func (m *Model) Logs(unit string) []LogLine {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.unit(unit).Logs)
}

// OpenedPorts returns a unit's committed open ports ("80/tcp"), sorted.
func (m *Model) OpenedPorts(unit string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.unit(unit).Ports)
}

// UnitState returns a copy of a unit's committed state-set store.
func (m *Model) UnitState(unit string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.unit(unit).State)
}

// RelationID returns the id of the first live relation of app on endpoint, or -1.
func (m *Model) RelationID(app, endpoint string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(m.s.Relations)) {
		r := m.s.Relations[id]
		if !r.Broken && r.hasApp(app) && r.endpointOf(app).Name == endpoint {
			return id
		}
	}
	return -1
}

// Relations lists every relation, broken ones included, by id.
func (m *Model) Relations() []RelationInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []RelationInfo
	for _, id := range slices.Sorted(maps.Keys(m.s.Relations)) {
		out = append(out, m.s.Relations[id].RelationInfo)
	}
	return out
}

// RelationUnits returns the units in scope of relation id.
func (m *Model) RelationUnits(id int) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.relation(id).Scope)
}

// AppData returns a copy of app's committed application databag in relation id.
func (m *Model) AppData(id int, app string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.relation(id).AppData[app])
}

// UnitData returns a copy of unit's committed databag in relation id.
func (m *Model) UnitData(id int, unit string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.relation(id).UnitData[unit])
}

// SecretContent returns the content of revision rev of a committed secret (0: the latest), and
// false when the secret or revision does not exist.
func (m *Model) SecretContent(uri string, rev int) (map[string]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.s.Secrets[secretIDOf(uri)]
	if !ok {
		return nil, false
	}
	c, ok := s.content(rev)
	return maps.Clone(c), ok
}

// SecretByLabel returns the URI of the committed secret with owner label label.
func (m *Model) SecretByLabel(label string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(m.s.Secrets)) {
		if m.s.Secrets[id].Label == label {
			return secretURI(id), true
		}
	}
	return "", false
}

// SecretConsumer returns the label and pinned revision unit holds for a secret it consumes.
func (m *Model) SecretConsumer(uri, unit string) (label string, revision int, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, found := m.s.Secrets[secretIDOf(uri)]
	if !found {
		return "", 0, false
	}
	c, found := s.Consumers[unit]
	if !found {
		return "", 0, false
	}
	return c.Label, c.Revision, true
}

// Action returns the record of the action with uuid (see HookContext.ActionUUID).
func (m *Model) Action(uuid string) (ActionRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.s.Actions[uuid]
	if !ok {
		return ActionRecord{}, false
	}
	c := *a
	c.Results = maps.Clone(a.Results)
	c.Logs = slices.Clone(a.Logs)
	return c, true
}

// Actions returns the records of every action run so far, by uuid order.
func (m *Model) Actions() []ActionRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := slices.SortedFunc(maps.Keys(m.s.Actions), func(a, b string) int {
		na, _ := strconv.Atoi(a)
		nb, _ := strconv.Atoi(b)
		return na - nb
	})
	out := make([]ActionRecord, 0, len(ids))
	for _, id := range ids {
		a := *m.s.Actions[id]
		a.Results = maps.Clone(a.Results)
		a.Logs = slices.Clone(a.Logs)
		out = append(out, a)
	}
	return out
}

// --- internals (callers hold m.mu) ---------------------------------------------------------

func (m *Model) app(name string) *appState {
	a, ok := m.s.Apps[name]
	if !ok {
		panic(fmt.Sprintf("jujutest: no application %q", name))
	}
	return a
}

func (m *Model) unit(name string) *unitState {
	u, ok := m.s.Units[name]
	if !ok {
		panic(fmt.Sprintf("jujutest: no unit %q", name))
	}
	return u
}

func (m *Model) relation(id int) *relationState {
	r, ok := m.s.Relations[id]
	if !ok {
		panic(fmt.Sprintf("jujutest: no relation %d", id))
	}
	return r
}

func (m *Model) secret(uri string) *secretState {
	s, ok := m.s.Secrets[secretIDOf(uri)]
	if !ok {
		panic(fmt.Sprintf("jujutest: no secret %q", uri))
	}
	return s
}

func (m *Model) endpoint(app, name string) Endpoint {
	meta := m.app(app).Meta
	if i, ok := meta.Provides[name]; ok {
		return Endpoint{App: app, Name: name, Interface: i, Role: "provider"}
	}
	if i, ok := meta.Requires[name]; ok {
		return Endpoint{App: app, Name: name, Interface: i, Role: "requirer"}
	}
	if i, ok := meta.Peers[name]; ok {
		return Endpoint{App: app, Name: name, Interface: i, Role: "peer"}
	}
	panic(fmt.Sprintf("jujutest: application %q has no endpoint %q", app, name))
}

func (m *Model) enterScope(r *relationState, u *unitState) {
	if !slices.Contains(r.Scope, u.Name) {
		r.Scope = append(r.Scope, u.Name)
		sortUnits(r.Scope)
	}
	if _, ok := r.UnitData[u.Name]; !ok {
		r.UnitData[u.Name] = u.defaultBag(r)
	}
}

// defaultBag is what Juju puts in a unit's databag when it enters scope: the addresses of the
// relation's endpoint binding (private-address is the bound one, ingress-address what the
// remote side should dial).
func (u *unitState) defaultBag(r *relationState) map[string]string {
	bind, ingress := u.relationAddresses(r)
	return map[string]string{"private-address": bind, "ingress-address": ingress, "egress-subnets": ingress + "/32"}
}

func (m *Model) newSecret(owner, kind, label string) *secretState {
	m.s.Next.Secret++
	sum := sha256.Sum256([]byte(m.s.UUID + "/" + strconv.Itoa(m.s.Next.Secret)))
	// Juju secret ids are 20-character xids in base32hex, lower case.
	id := strings.ToLower(base32.HexEncoding.EncodeToString(sum[:]))[:20]
	return &secretState{ID: id, Owner: owner, OwnerKind: kind, Label: label,
		Consumers: map[string]*secretConsumer{}, Grants: []secretGrant{}}
}

// applyRelationWrite merges changes ("" deletes) into a databag and returns the -changed events
// other units get. writer is the writing unit ("" for a direct model write); it never gets an
// event for its own write.
func (m *Model) applyRelationWrite(r *relationState, writer, app string, unitChanges, appChanges map[string]string) []Event {
	var evs []Event
	if len(unitChanges) > 0 {
		bag := r.UnitData[writer]
		if bag == nil {
			bag = map[string]string{}
			r.UnitData[writer] = bag
		}
		if mergeBag(bag, unitChanges) && slices.Contains(r.Scope, writer) {
			for _, other := range r.Scope {
				oApp := juju.AppName(other)
				if other == writer || (oApp == app && !r.isPeer()) {
					continue
				}
				evs = append(evs, Event{Unit: other, HookInfo: HookInfo{
					Hook: r.endpointOf(oApp).Name + "-relation-changed", RelationID: r.ID,
					RemoteUnit: writer, RemoteApp: app}})
			}
		}
	}
	if len(appChanges) > 0 {
		bag := r.AppData[app]
		if bag == nil {
			bag = map[string]string{}
			r.AppData[app] = bag
		}
		if mergeBag(bag, appChanges) && (writer == "" || slices.Contains(r.Scope, writer)) {
			for _, other := range r.Scope {
				oApp := juju.AppName(other)
				// Followers of a peer relation hear about the leader's app-data write; on a
				// regular relation only the remote side does (contract §8).
				if other == writer || (oApp == app && !r.isPeer()) {
					continue
				}
				evs = append(evs, Event{Unit: other, HookInfo: HookInfo{
					Hook: r.endpointOf(oApp).Name + "-relation-changed", RelationID: r.ID, RemoteApp: app}})
			}
		}
	}
	return evs
}

// mergeBag applies changes and reports whether anything changed.
func mergeBag(bag, changes map[string]string) bool {
	changed := false
	for k, v := range changes {
		old, had := bag[k]
		switch {
		case v == "" && had:
			delete(bag, k)
			changed = true
		case v != "" && (!had || old != v):
			bag[k] = v
			changed = true
		}
	}
	return changed
}

func (m *Model) addRevision(s *secretState, content map[string]string) []Event {
	next := 1
	if n := len(s.Revisions); n > 0 {
		next = s.Revisions[n-1].Revision + 1
	}
	s.Revisions = append(s.Revisions, secretRevision{Revision: next, Content: maps.Clone(content)})
	var evs []Event
	for _, unit := range slices.Sorted(maps.Keys(s.Consumers)) {
		c := s.Consumers[unit]
		if c.Revision < next {
			evs = append(evs, Event{Unit: unit, HookInfo: HookInfo{Hook: "secret-changed",
				SecretID: secretURI(s.ID), SecretLabel: c.Label}})
		}
	}
	return evs
}

func effectiveConfig(a *appState, all bool) map[string]any {
	cfg := map[string]any{}
	for name, opt := range a.Meta.Options {
		if opt.Default != nil || all {
			cfg[name] = opt.Default
		}
	}
	maps.Copy(cfg, a.Config)
	return cfg
}

func (r *relationState) isPeer() bool { return r.Endpoints[0].Role == "peer" }

func (r *relationState) hasApp(app string) bool {
	return r.Endpoints[0].App == app || r.Endpoints[1].App == app
}

func (r *relationState) endpointOf(app string) Endpoint {
	if r.Endpoints[0].App == app {
		return r.Endpoints[0]
	}
	return r.Endpoints[1]
}

func (r *relationState) remoteOf(app string) Endpoint {
	if r.Endpoints[0].App == app {
		return r.Endpoints[1]
	}
	return r.Endpoints[0]
}

func (s *secretState) latest() int {
	if len(s.Revisions) == 0 {
		return 0
	}
	return s.Revisions[len(s.Revisions)-1].Revision
}

func (s *secretState) content(rev int) (map[string]string, bool) {
	if rev == 0 {
		rev = s.latest()
	}
	for _, r := range s.Revisions {
		if r.Revision == rev {
			return r.Content, true
		}
	}
	return nil, false
}

func secretURI(id string) string { return "secret:" + id }

// secretIDOf accepts "secret:ID", "secret://<model-uuid>/ID" and a bare ID.
func secretIDOf(s string) string {
	s = strings.TrimPrefix(s, "secret:")
	if rest, ok := strings.CutPrefix(s, "//"); ok {
		if i := strings.LastIndexByte(rest, '/'); i >= 0 {
			return rest[i+1:]
		}
		return rest
	}
	return s
}

// sortUnits orders unit names by application, then unit number (so /10 follows /9).
func sortUnits(units []string) {
	slices.SortFunc(units, func(a, b string) int {
		if c := strings.Compare(juju.AppName(a), juju.AppName(b)); c != 0 {
			return c
		}
		na, _ := strconv.Atoi(a[strings.LastIndexByte(a, '/')+1:])
		nb, _ := strconv.Atoi(b[strings.LastIndexByte(b, '/')+1:])
		return na - nb
	})
}
