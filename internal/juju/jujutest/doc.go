// Package jujutest is an in-memory Juju model that interprets hook-tool argv the way the unit
// agent does (juju-contract §2, §3, §8, §10), for tests that need Juju without Juju.
//
// It is used three ways, and its API is kept stable for all of them:
//
//   - Handler tests: build a Model, start a HookContext, and hand jujutest.Runner{Ctx: hc} to
//     the real juju.NewClient. The client's argv and parsing are exercised too.
//   - tests/fakejuju: a hook-tool binary that either keeps a Model in a JSON file (file mode) or
//     forwards argv over the jujuc RPC protocol to Serve (socket mode).
//   - The multi-unit test bed: one Model, one Serve listener, a HookContext per running hook,
//     and the Events that Commit returns fed back as the next hooks to run.
//
// # Model
//
//	m := jujutest.NewModel("ci", "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10")
//	m.AddApp("concourse-ci-machine", jujutest.AppMeta{
//		Peers:    map[string]string{"peers": "concourse_peers"},
//		Requires: map[string]string{"postgresql": "postgresql_client"},
//		Options:  map[string]jujutest.Option{"mode": {Type: "string", Default: "auto"}},
//	}, map[string]any{"mode": "web"})
//	web := m.AddUnit("concourse-ci-machine")  // "concourse-ci-machine/0", leader (first unit)
//	m.AddApp("postgresql", jujutest.AppMeta{Provides: map[string]string{"database": "postgresql_client"}}, nil)
//	m.AddUnit("postgresql")
//	db := m.Relate("concourse-ci-machine", "postgresql", "postgresql", "database")
//
// Builders: AddApp (creates the peer relations), AddUnit (enters scope, first unit leads,
// loopback address 127.0.1.N), RemoveUnit, SetConfig (nil resets to default), SetLeader,
// Relate, RemoveRelation, SetAddress, SetBindingAddress and SetRelationIngress (what
// network-get answers per binding and per relation), AttachResource, SetProxy. Provider stand-ins write
// committed data directly with SetAppData/SetUnitData, AddSecret, GrantSecret and UpdateSecret;
// these return the Events the write causes. Getters: UnitStatus, AppStatus, AppVersion, Logs,
// OpenedPorts, UnitState, Config, Leader, Units, Relations, RelationID, RelationUnits, AppData,
// UnitData, SecretContent, SecretByLabel, SecretConsumer, Action, Actions. Builders panic on
// programmer errors (unknown application or unit), like httptest.NewRequest.
//
// The model does not sequence hooks: the caller decides which hooks run and in what order
// (contract §4). RemoveUnit, RemoveRelation and JoinEvents return the relation events Juju
// would queue for those changes; Commit returns the -changed and secret-changed events that
// committed writes cause.
//
// # Hook contexts
//
//	hc := m.NewHookContext(web, jujutest.HookInfo{Hook: "postgresql-relation-changed",
//		RelationID: db, RemoteUnit: "postgresql/0"})
//	env := hc.Env()                      // JUJU_* variables for the dispatch process
//	res := hc.Run("relation-get", []string{"--format=json", "-r", "1", "-", "postgresql/0"}, nil)
//	events := hc.Commit()                // or hc.Discard() when the hook failed
//
// Like the unit agent, a context buffers relation-set, open/close-port, state-set/-delete and
// secret-add/-set/-grant/-revoke/-remove, shows its own relation and state writes to its own
// reads, and applies them only on Commit. status-set, application-version-set, juju-log and
// action-* apply at once. A leader gets no -changed event for its own app-data write; followers
// on the peer relation do.
//
// Implemented tools: see ToolNames. Not implemented (they fail as unknown commands):
// leader-get/leader-set (deprecated), goal-state, storage-*, credential-get, juju-reboot,
// relation-model-get, payload-*, pod-spec-*.
//
// # jujuc RPC
//
// Serve answers Jujuc.Main over net/rpc (gob) exactly as contract §3.1 describes, including the
// stdin handshake, so Juju's own jujuc or tests/fakejuju in socket mode can call it. Model
// methods and tool calls take the model's mutex: one tool call at a time per model.
package jujutest
