package jujutest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// JujuVersion is the agent version hook contexts report.
const JujuVersion = "3.6.4"

// HookInfo says which hook or action a context runs.
type HookInfo struct {
	Hook           string         `json:"hook,omitempty"`        // "install", "peers-relation-changed"; empty for actions
	RelationID     int            `json:"relation-id"`           // -1: not a relation hook
	RemoteUnit     string         `json:"remote-unit,omitempty"` // "" for app-databag -changed, -created, -broken
	RemoteApp      string         `json:"remote-app,omitempty"`  // derived from the relation when empty
	DepartingUnit  string         `json:"departing-unit,omitempty"`
	ActionName     string         `json:"action-name,omitempty"`
	ActionParams   map[string]any `json:"action-params,omitempty"`
	SecretID       string         `json:"secret-id,omitempty"`
	SecretLabel    string         `json:"secret-label,omitempty"`
	SecretRevision int            `json:"secret-revision,omitempty"`
}

// Event is a hook that a committed change causes on another unit.
type Event struct {
	Unit string `json:"unit"`
	HookInfo
}

func (e Event) String() string {
	s := e.Unit + " " + e.Hook
	if e.RemoteUnit != "" {
		s += "(" + e.RemoteUnit + ")"
	} else if e.RelationID >= 0 && e.RemoteApp != "" {
		s += "(" + e.RemoteApp + ")"
	}
	if e.SecretID != "" {
		s += "(" + e.SecretID + ")"
	}
	return s
}

// HookContext is one running hook or action on one unit: the hook tools it runs see the model
// plus this hook's own buffered writes, which Commit applies and Discard drops (contract §2.4).
type HookContext struct {
	// Options read by Env; set them before the dispatch process starts.
	CharmDir           string // JUJU_CHARM_DIR; default /var/lib/juju/agents/unit-<app>-<n>/charm
	AgentSocketAddress string // JUJU_AGENT_SOCKET_ADDRESS; set when serving the context with Serve
	AgentSocketNetwork string // default "unix"
	// Dir resolves relative paths given to tools through Run (--file, key#file=); Serve uses
	// the request's Dir instead.
	Dir string
	// ReadFile reads the files tools are pointed at (--file PATH, key#file=PATH). Juju's agent
	// runs on the unit's machine, so a test bed whose units are containers reads them there;
	// nil reads this process's filesystem.
	ReadFile func(path string) ([]byte, error)

	m *Model
	c ctxState
}

// ctxState is the serialisable part of a HookContext.
type ctxState struct {
	ID         string   `json:"id"`
	Unit       string   `json:"unit"`
	Info       HookInfo `json:"info"`
	ActionUUID string   `json:"action-uuid,omitempty"`
	Done       bool     `json:"done,omitempty"`
	Pending    pending  `json:"pending"`
}

// pending holds the hook's buffered writes.
type pending struct {
	Relations  map[int]*relChange `json:"relations,omitempty"`
	Ports      []portOp           `json:"ports,omitempty"`
	State      map[string]*string `json:"state,omitempty"` // nil value: delete
	NewSecrets []*secretState     `json:"new-secrets,omitempty"`
	Updates    []secretUpdate     `json:"secret-updates,omitempty"`
	Grants     []grantOp          `json:"grants,omitempty"`
	Removals   []removeOp         `json:"removals,omitempty"`
}

type relChange struct {
	Unit map[string]string `json:"unit,omitempty"` // "" deletes
	App  map[string]string `json:"app,omitempty"`
}

type portOp struct {
	Open bool   `json:"open"`
	Port string `json:"port"`
}

type secretUpdate struct {
	ID          string            `json:"id"`
	Content     map[string]string `json:"content,omitempty"` // nil: metadata only
	Label       *string           `json:"label,omitempty"`
	Description *string           `json:"description,omitempty"`
}

type grantOp struct {
	ID         string `json:"id"`
	RelationID int    `json:"relation-id"`
	Unit       string `json:"unit,omitempty"`
	App        string `json:"app,omitempty"` // revoke by application
	Revoke     bool   `json:"revoke,omitempty"`
}

type removeOp struct {
	ID       string `json:"id"`
	Revision int    `json:"revision,omitempty"`
}

// NewHookContext starts a hook (or, with h.ActionName, an action) on unit. Set h.RelationID to -1
// for non-relation hooks. An action context records an ActionRecord (see ActionUUID).
func (m *Model) NewHookContext(unit string, h HookInfo) *HookContext {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.unit(unit)
	if h.RelationID >= 0 && h.RemoteApp == "" {
		if r, ok := m.s.Relations[h.RelationID]; ok {
			h.RemoteApp = r.remoteOf(u.App).App
		}
	}
	m.s.Next.Context++
	name := h.Hook
	if h.ActionName != "" {
		name = h.ActionName
	}
	hc := &HookContext{m: m, AgentSocketNetwork: "unix", c: ctxState{
		ID: fmt.Sprintf("%s-%s-%d", unit, name, m.s.Next.Context), Unit: unit, Info: h}}
	hc.CharmDir = "/var/lib/juju/agents/unit-" + unitTag(unit) + "/charm"
	if h.ActionName != "" {
		m.s.Next.Action++
		id := strconv.Itoa(m.s.Next.Action)
		params := h.ActionParams
		if params == nil {
			params = map[string]any{}
		}
		m.s.Actions[id] = &ActionRecord{UUID: id, Unit: unit, Name: h.ActionName, Params: params,
			Results: map[string]string{}, Status: "running"}
		hc.c.ActionUUID = id
	}
	return hc
}

// LoadHookContext restores a context saved with (*HookContext).MarshalJSON against m (fakejuju
// keeps the model and the running hook in one file between tool processes).
func (m *Model) LoadHookContext(b []byte) (*HookContext, error) {
	hc := &HookContext{m: m, AgentSocketNetwork: "unix"}
	var saved struct {
		ctxState
		CharmDir string `json:"charm-dir"`
		Dir      string `json:"dir"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&saved); err != nil {
		return nil, fmt.Errorf("decoding hook context: %w", err)
	}
	hc.c, hc.CharmDir, hc.Dir = saved.ctxState, saved.CharmDir, saved.Dir
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.s.Units[hc.c.Unit]; !ok {
		return nil, fmt.Errorf("hook context for unknown unit %q", hc.c.Unit)
	}
	return hc, nil
}

// MarshalJSON serialises the context, pending writes included.
func (h *HookContext) MarshalJSON() ([]byte, error) {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	return json.Marshal(struct {
		ctxState
		CharmDir string `json:"charm-dir"`
		Dir      string `json:"dir"`
	}{h.c, h.CharmDir, h.Dir})
}

// ID is the context id (JUJU_CONTEXT_ID), e.g. "concourse-ci-machine/0-install-3".
func (h *HookContext) ID() string { return h.c.ID }

// Unit is the unit the hook runs on.
func (h *HookContext) Unit() string { return h.c.Unit }

// Info is the hook the context runs.
func (h *HookContext) Info() HookInfo { return h.c.Info }

// ActionUUID is the id of the action this context runs, "" for hooks.
func (h *HookContext) ActionUUID() string { return h.c.ActionUUID }

// Done reports whether Commit or Discard ended the context.
func (h *HookContext) Done() bool { h.m.mu.Lock(); defer h.m.mu.Unlock(); return h.c.Done }

// Env returns the JUJU_* variables Juju sets for this hook (contract §1.3), as KEY=VALUE. It does
// not include PATH: the caller prepends its tools directory to its own.
func (h *HookContext) Env() []string {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	u := h.m.s.Units[h.c.Unit]
	info := h.c.Info
	dispatch, hookName := "hooks/"+info.Hook, info.Hook
	if info.ActionName != "" {
		dispatch, hookName = "actions/"+info.ActionName, ""
	}
	env := []string{
		"JUJU_HOOK_NAME=" + hookName,
		"JUJU_UNIT_NAME=" + h.c.Unit,
		"JUJU_CHARM_DIR=" + h.CharmDir,
		"CHARM_DIR=" + h.CharmDir,
		"JUJU_CONTEXT_ID=" + h.c.ID,
		"JUJU_AGENT_SOCKET_ADDRESS=" + h.AgentSocketAddress,
		"JUJU_AGENT_SOCKET_NETWORK=" + h.AgentSocketNetwork,
		"JUJU_MODEL_NAME=" + h.m.s.Name,
		"JUJU_MODEL_UUID=" + h.m.s.UUID,
		"JUJU_VERSION=" + JujuVersion,
		"JUJU_API_ADDRESSES=127.0.0.1:17070",
		"JUJU_MACHINE_ID=" + u.Machine,
		"JUJU_PRINCIPAL_UNIT=",
		"JUJU_AVAILABILITY_ZONE=",
		"CLOUD_API_VERSION=",
		"JUJU_CHARM_HTTP_PROXY=" + h.m.s.Proxy.HTTP,
		"JUJU_CHARM_HTTPS_PROXY=" + h.m.s.Proxy.HTTPS,
		"JUJU_CHARM_FTP_PROXY=" + h.m.s.Proxy.FTP,
		"JUJU_CHARM_NO_PROXY=" + h.m.s.Proxy.NoProxy,
		"LANG=C.UTF-8",
	}
	if info.RelationID >= 0 {
		endpoint := ""
		if r, ok := h.m.s.Relations[info.RelationID]; ok {
			endpoint = r.endpointOf(u.App).Name
		} else if i := strings.Index(info.Hook, "-relation-"); i > 0 {
			endpoint = info.Hook[:i]
		}
		env = append(env,
			"JUJU_RELATION="+endpoint,
			"JUJU_RELATION_ID="+endpoint+":"+strconv.Itoa(info.RelationID),
			"JUJU_REMOTE_UNIT="+info.RemoteUnit,
			"JUJU_REMOTE_APP="+info.RemoteApp)
		if strings.HasSuffix(info.Hook, "-relation-departed") {
			env = append(env, "JUJU_DEPARTING_UNIT="+info.DepartingUnit)
		}
	}
	if info.ActionName != "" {
		env = append(env, "JUJU_ACTION_NAME="+info.ActionName, "JUJU_ACTION_UUID="+h.c.ActionUUID,
			"JUJU_ACTION_TAG=action-"+h.c.ActionUUID)
	}
	if info.SecretID != "" {
		env = append(env, "JUJU_SECRET_ID="+info.SecretID, "JUJU_SECRET_LABEL="+info.SecretLabel)
		if info.SecretRevision > 0 {
			env = append(env, "JUJU_SECRET_REVISION="+strconv.Itoa(info.SecretRevision))
		}
	}
	// Juju adds the dispatch path after the rest.
	return append(env, "JUJU_DISPATCH_PATH="+dispatch)
}

// Commit applies the hook's buffered writes, as Juju does when the hook exits 0, ends the
// context, and returns the events the changes cause on other units, sorted by unit. For an
// action it also completes the ActionRecord (failed if action-fail was called).
func (h *HookContext) Commit() []Event {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if h.c.Done {
		return nil
	}
	h.c.Done = true
	m, p, unit := h.m, &h.c.Pending, h.c.Unit
	u := m.s.Units[unit]
	var evs []Event

	for _, id := range slices.Sorted(maps.Keys(p.Relations)) {
		r, ok := m.s.Relations[id]
		if !ok || r.Broken {
			continue // the relation went away: its data went with it
		}
		ch := p.Relations[id]
		evs = append(evs, m.applyRelationWrite(r, unit, u.App, ch.Unit, ch.App)...)
	}

	for _, op := range p.Ports {
		u.Ports = slices.DeleteFunc(u.Ports, func(s string) bool { return s == op.Port })
		if op.Open {
			u.Ports = append(u.Ports, op.Port)
		}
	}
	sortPorts(u.Ports)

	for k, v := range p.State {
		if v == nil {
			delete(u.State, k)
		} else {
			u.State[k] = *v
		}
	}

	for _, s := range p.NewSecrets {
		m.s.Secrets[s.ID] = s
	}
	for _, up := range p.Updates {
		s, ok := m.s.Secrets[up.ID]
		if !ok {
			continue
		}
		if up.Label != nil {
			s.Label = *up.Label
		}
		if up.Description != nil {
			s.Description = *up.Description
		}
		if up.Content != nil {
			evs = append(evs, m.addRevision(s, up.Content)...)
		}
	}
	for _, g := range p.Grants {
		s, ok := m.s.Secrets[g.ID]
		if !ok {
			continue
		}
		if g.Revoke {
			s.Grants = slices.DeleteFunc(s.Grants, func(x secretGrant) bool {
				switch {
				case g.Unit != "":
					return x.Unit == g.Unit && (g.RelationID < 0 || x.RelationID == g.RelationID)
				case g.RelationID >= 0:
					return x.RelationID == g.RelationID
				case g.App != "":
					r, ok := m.s.Relations[x.RelationID]
					return ok && r.remoteOf(s.ownerApp()).App == g.App
				}
				return false
			})
			continue
		}
		s.Grants = append(s.Grants, secretGrant{RelationID: g.RelationID, Unit: g.Unit})
	}
	for _, rm := range p.Removals {
		s, ok := m.s.Secrets[rm.ID]
		if !ok {
			continue
		}
		if rm.Revision == 0 {
			delete(m.s.Secrets, rm.ID)
			continue
		}
		s.Revisions = slices.DeleteFunc(s.Revisions, func(r secretRevision) bool { return r.Revision == rm.Revision })
	}

	if a, ok := m.s.Actions[h.c.ActionUUID]; ok && a.Status == "running" {
		a.Status = "completed"
	}
	h.c.Pending = pending{}
	slices.SortStableFunc(evs, func(a, b Event) int {
		if c := strings.Compare(a.Unit, b.Unit); c != 0 {
			return c
		}
		return strings.Compare(a.Hook, b.Hook)
	})
	return evs
}

// Discard drops the hook's buffered writes, as Juju does when the hook exits non-zero. Status,
// logs and action results already applied stay. An action is recorded as failed.
func (h *HookContext) Discard() {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if h.c.Done {
		return
	}
	h.c.Done = true
	h.c.Pending = pending{}
	if a, ok := h.m.s.Actions[h.c.ActionUUID]; ok && a.Status == "running" {
		a.Status = "failed"
		if a.Message == "" {
			a.Message = "exit status 1"
		}
	}
}

func (s *secretState) ownerApp() string { return juju.AppName(s.Owner) }

// unitTag turns "concourse-ci-machine/0" into "concourse-ci-machine-0".
func unitTag(unit string) string { return strings.ReplaceAll(unit, "/", "-") }

// sortPorts orders ports by protocol, then number, as opened-ports prints them.
func sortPorts(ports []string) {
	slices.SortFunc(ports, func(a, b string) int {
		pa, _ := juju.ParsePort(a)
		pb, _ := juju.ParsePort(b)
		if c := strings.Compare(pa.Protocol, pb.Protocol); c != 0 {
			return c
		}
		return pa.From - pb.From
	})
}
