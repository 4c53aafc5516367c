package juju

import (
	"path"
	"strconv"
	"strings"
)

// Env is the hook environment Juju hands the dispatch process (juju-contract §1.3), parsed once.
// Juju replaces the whole process environment, so every field here is exactly what the agent
// set; absent variables leave zero values (RelationID and SecretRevision use -1 and 0).
type Env struct {
	UnitName     string // "concourse-ci-machine/0"
	AppName      string // derived from UnitName: everything before the last "/"
	CharmDir     string // JUJU_CHARM_DIR (falls back to the legacy CHARM_DIR)
	DispatchPath string // "hooks/install", "actions/backup"; see ParseEnv for the fallback
	HookName     string // JUJU_HOOK_NAME; empty for actions

	ActionName string
	ActionUUID string

	RelationName  string // endpoint of a relation hook: "database"
	RelationID    int    // -1 outside relation hooks; JUJU_RELATION_ID is "database:7" or "7"
	RemoteUnit    string // empty in -created, -broken and app-databag -changed hooks
	RemoteApp     string
	DepartingUnit string

	SecretID       string
	SecretLabel    string
	SecretRevision int // 0 when Juju did not set one

	ModelName   string
	ModelUUID   string
	JujuVersion string
	MachineID   string
	ContextID   string

	AgentSocketAddress string
	AgentSocketNetwork string

	// Proxies from the model config (juju-http-proxy & co), exported as JUJU_CHARM_*. Juju does not
	// apply them to the charm process: the charm must (contract §9.2), see ProxyFunc.
	HTTPProxy  string
	HTTPSProxy string
	NoProxy    string
}

// ParseEnv reads the hook environment through getenv (os.Getenv in production, a map in tests).
// argv0 is the process's argv[0]: pre-2.8 agents ran hooks/<name> symlinks without setting
// JUJU_DISPATCH_PATH, so its basename then names the hook (contract §1.1).
func ParseEnv(getenv func(string) string, argv0 string) Env {
	e := Env{
		UnitName:           getenv("JUJU_UNIT_NAME"),
		CharmDir:           getenv("JUJU_CHARM_DIR"),
		DispatchPath:       getenv("JUJU_DISPATCH_PATH"),
		HookName:           getenv("JUJU_HOOK_NAME"),
		ActionName:         getenv("JUJU_ACTION_NAME"),
		ActionUUID:         getenv("JUJU_ACTION_UUID"),
		RelationName:       getenv("JUJU_RELATION"),
		RelationID:         ParseRelationID(getenv("JUJU_RELATION_ID")),
		RemoteUnit:         getenv("JUJU_REMOTE_UNIT"),
		RemoteApp:          getenv("JUJU_REMOTE_APP"),
		DepartingUnit:      getenv("JUJU_DEPARTING_UNIT"),
		SecretID:           getenv("JUJU_SECRET_ID"),
		SecretLabel:        getenv("JUJU_SECRET_LABEL"),
		ModelName:          getenv("JUJU_MODEL_NAME"),
		ModelUUID:          getenv("JUJU_MODEL_UUID"),
		JujuVersion:        getenv("JUJU_VERSION"),
		MachineID:          getenv("JUJU_MACHINE_ID"),
		ContextID:          getenv("JUJU_CONTEXT_ID"),
		AgentSocketAddress: getenv("JUJU_AGENT_SOCKET_ADDRESS"),
		AgentSocketNetwork: getenv("JUJU_AGENT_SOCKET_NETWORK"),
		HTTPProxy:          getenv("JUJU_CHARM_HTTP_PROXY"),
		HTTPSProxy:         getenv("JUJU_CHARM_HTTPS_PROXY"),
		NoProxy:            getenv("JUJU_CHARM_NO_PROXY"),
	}
	if e.CharmDir == "" {
		e.CharmDir = getenv("CHARM_DIR")
	}
	e.AppName = AppName(e.UnitName)
	if rev, err := strconv.Atoi(getenv("JUJU_SECRET_REVISION")); err == nil {
		e.SecretRevision = rev
	}
	if e.DispatchPath == "" && argv0 != "" {
		// Charmcraft's dispatch shim does ${JUJU_DISPATCH_PATH:-$0}; a binary reached through a
		// hooks/<name> symlink sees the hook name as its own basename.
		e.DispatchPath = "hooks/" + path.Base(argv0)
	}
	if e.HookName == "" && e.ActionName == "" && strings.HasPrefix(e.DispatchPath, "hooks/") {
		e.HookName = strings.TrimPrefix(e.DispatchPath, "hooks/")
	}
	return e
}

// AppName returns the application of a unit name. It cuts at the last "/" so that
// "concourse-ci-machine/10" gives "concourse-ci-machine" (goops' fixed-width slice does not).
// A name without "/" is returned unchanged: it already names an application.
func AppName(unit string) string {
	if i := strings.LastIndexByte(unit, '/'); i >= 0 {
		return unit[:i]
	}
	return unit
}

// ParseRelationID returns the integer after the last ":" of a relation id as hook tools and
// JUJU_RELATION_ID spell it ("database:7" or "7"), or -1 when there is none.
func ParseRelationID(s string) int {
	if s == "" {
		return -1
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		s = s[i+1:]
	}
	id, err := strconv.Atoi(s)
	if err != nil || id < 0 {
		return -1
	}
	return id
}

// EventKind tells hooks from actions.
type EventKind string

const (
	KindHook   EventKind = "hook"
	KindAction EventKind = "action"
)

// Event is what the dispatch process was started for.
type Event struct {
	Kind EventKind
	// Name is the full hook name ("install", "peers-relation-changed", "data-storage-attached")
	// or the action name ("backup").
	Name string
	// Endpoint is the relation endpoint of a relation hook ("peers") or the storage name of a
	// storage hook ("data"); empty otherwise.
	Endpoint string
	// RelationEvent is "created", "joined", "changed", "departed" or "broken" for relation hooks.
	RelationEvent string
	// StorageEvent is "attached" or "detaching" for storage hooks.
	StorageEvent string
}

// IsRelation reports whether the event is a relation hook.
func (ev Event) IsRelation() bool { return ev.RelationEvent != "" }

// Suffixes that turn a hook name into endpoint + event (contract §1.2). Read-only tables.
var (
	relationSuffixes = []string{"created", "joined", "changed", "departed", "broken"}
	storageSuffixes  = []string{"attached", "detaching"}
)

// Event classifies the dispatch path. Actions are recognised by the "actions/" prefix of
// JUJU_DISPATCH_PATH (JUJU_ACTION_NAME names them too); everything else is a hook named by the
// basename of the dispatch path.
func (e Env) Event() Event {
	if strings.HasPrefix(e.DispatchPath, "actions/") || (e.DispatchPath == "" && e.ActionName != "") {
		name := strings.TrimPrefix(e.DispatchPath, "actions/")
		if name == "" {
			name = e.ActionName
		}
		return Event{Kind: KindAction, Name: name}
	}
	name := e.HookName
	if e.DispatchPath != "" {
		name = path.Base(e.DispatchPath)
	}
	ev := Event{Kind: KindHook, Name: name}
	for _, s := range relationSuffixes {
		if ep, ok := strings.CutSuffix(name, "-relation-"+s); ok && ep != "" {
			ev.Endpoint, ev.RelationEvent = ep, s
			return ev
		}
	}
	for _, s := range storageSuffixes {
		if st, ok := strings.CutSuffix(name, "-storage-"+s); ok && st != "" {
			ev.Endpoint, ev.StorageEvent = st, s
			return ev
		}
	}
	return ev
}
