package jujutest_test

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

const (
	app = "concourse-ci-machine"
	pg  = "postgresql"
)

var charmMeta = jujutest.AppMeta{
	Peers:    map[string]string{"peers": "concourse_peers"},
	Provides: map[string]string{"tsa": "concourse_tsa"},
	Requires: map[string]string{"postgresql": "postgresql_client"},
	Options: map[string]jujutest.Option{
		"mode":           {Type: "string", Default: "auto"},
		"web-port":       {Type: "int", Default: 8080},
		"version":        {Type: "string"},
		"shared-storage": {Type: "string", Default: "none"},
	},
}

// fixture is a model with three concourse units (leader /0) related to one postgresql unit.
type fixture struct {
	m     *jujutest.Model
	peers int
	db    int
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	m := jujutest.NewModel("ci", "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10")
	m.AddApp(app, charmMeta, map[string]any{"mode": "web"})
	for range 3 {
		m.AddUnit(app)
	}
	m.AddApp(pg, jujutest.AppMeta{
		Peers:    map[string]string{"database-peers": "postgresql_peers"},
		Provides: map[string]string{"database": "postgresql_client"},
	}, nil)
	m.AddUnit(pg)
	db := m.Relate(app, "postgresql", pg, "database")
	return fixture{m: m, peers: m.RelationID(app, "peers"), db: db}
}

// hook starts a context and returns it with a juju.Client over it.
func (f fixture) hook(t *testing.T, unit string, h jujutest.HookInfo) (*jujutest.HookContext, *juju.Client) {
	t.Helper()
	hc := f.m.NewHookContext(unit, h)
	env := juju.ParseEnv(func(k string) string {
		for _, kv := range hc.Env() {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}, "")
	return hc, juju.NewClient(jujutest.Runner{Ctx: hc}, env)
}

func noRelation(hook string) jujutest.HookInfo { return jujutest.HookInfo{Hook: hook, RelationID: -1} }

func TestClientOverFakeRelations(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()

	// The leader writes peer app data and its unit bag; it reads its own pending writes.
	hc, c := f.hook(t, app+"/0", noRelation("config-changed"))
	if leader, err := c.IsLeader(ctx); err != nil || !leader {
		t.Fatalf("IsLeader = %v, %v; want true", leader, err)
	}
	if err := c.SetAppRelationData(ctx, f.peers, map[string]string{"web-address": "127.0.1.1"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRelationData(ctx, f.peers, map[string]string{"role": "web"}); err != nil {
		t.Fatal(err)
	}
	own, err := c.RelationData(ctx, f.peers, app+"/0")
	if err != nil || own["role"] != "web" || own["private-address"] != "127.0.1.1" {
		t.Fatalf("own pending unit data: %v, %v", own, err)
	}
	if got := f.m.AppData(f.peers, app); len(got) != 0 {
		t.Fatalf("app data visible before commit: %v", got)
	}
	events := hc.Commit()
	want := []jujutest.Event{
		{Unit: app + "/1", HookInfo: jujutest.HookInfo{Hook: "peers-relation-changed", RelationID: f.peers, RemoteUnit: app + "/0", RemoteApp: app}},
		{Unit: app + "/1", HookInfo: jujutest.HookInfo{Hook: "peers-relation-changed", RelationID: f.peers, RemoteApp: app}},
		{Unit: app + "/2", HookInfo: jujutest.HookInfo{Hook: "peers-relation-changed", RelationID: f.peers, RemoteUnit: app + "/0", RemoteApp: app}},
		{Unit: app + "/2", HookInfo: jujutest.HookInfo{Hook: "peers-relation-changed", RelationID: f.peers, RemoteApp: app}},
	}
	if !reflect.DeepEqual(events, want) {
		t.Errorf("events:\nwant %v\n got %v", want, events)
	}
	if got := f.m.AppData(f.peers, app); got["web-address"] != "127.0.1.1" {
		t.Errorf("committed app data: %v", got)
	}

	// A follower reads the peer app bag, cannot write it, and cannot read its own app bag on a
	// regular relation.
	hc, c = f.hook(t, app+"/1", jujutest.HookInfo{Hook: "peers-relation-changed", RelationID: f.peers, RemoteApp: app})
	got, err := c.AppRelationData(ctx, f.peers, app)
	if err != nil || got["web-address"] != "127.0.1.1" {
		t.Errorf("follower reading peer app data: %v, %v", got, err)
	}
	if err := c.SetAppRelationData(ctx, f.peers, map[string]string{"x": "y"}); !errors.Is(err, juju.ErrNotLeader) {
		t.Errorf("follower app write: want ErrNotLeader, got %v", err)
	}
	if _, err := c.AppRelationData(ctx, f.db, app); !errors.Is(err, juju.ErrPermissionDenied) {
		t.Errorf("follower reading own app bag on a regular relation: want ErrPermissionDenied, got %v", err)
	}
	if err := c.SetAppStatus(ctx, juju.Status{Name: juju.StatusActive}); !errors.Is(err, juju.ErrNotLeader) {
		t.Errorf("follower app status: want ErrNotLeader, got %v", err)
	}
	units, err := c.RelationUnits(ctx, f.peers)
	if err != nil || !slices.Equal(units, []string{app + "/0", app + "/2"}) {
		t.Errorf("peer units: %v, %v", units, err)
	}
	if remote, err := c.RelationApp(ctx, f.db); err != nil || remote != pg {
		t.Errorf("RelationApp: %q, %v", remote, err)
	}
	ids, err := c.RelationIDs(ctx, "postgresql")
	if err != nil || !slices.Equal(ids, []int{f.db}) {
		t.Errorf("RelationIDs: %v, %v", ids, err)
	}
	if _, err := c.RelationUnits(ctx, 99); !errors.Is(err, juju.ErrRelationNotFound) {
		t.Errorf("unknown relation: want ErrRelationNotFound, got %v", err)
	}
	hc.Discard()

	// The provider's app-data write reaches every concourse unit, with no remote unit.
	events = f.m.SetAppData(f.db, pg, map[string]string{"endpoints": "127.0.2.1:5432"})
	if len(events) != 3 || events[0].Hook != "postgresql-relation-changed" || events[0].RemoteUnit != "" || events[0].RemoteApp != pg {
		t.Errorf("provider app data events: %v", events)
	}
	// Writing the same value again changes nothing and causes nothing.
	if events := f.m.SetAppData(f.db, pg, map[string]string{"endpoints": "127.0.2.1:5432"}); len(events) != 0 {
		t.Errorf("unchanged write caused %v", events)
	}
}

func TestClientOverFakeDiscard(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	hc, c := f.hook(t, app+"/0", noRelation("install"))
	must(t, c.SetStatus(ctx, juju.Status{Name: juju.StatusMaintenance, Message: "installing"}))
	must(t, c.StateSet(ctx, map[string]string{"installed": "7.14.3"}))
	must(t, c.OpenPort(ctx, juju.TCP(8080)))
	must(t, c.Log(ctx, juju.LogInfo, "installing 7.14.3"))
	if v, err := c.StateGet(ctx, "installed"); err != nil || v != "7.14.3" {
		t.Errorf("own pending state: %q, %v", v, err)
	}
	if ports, err := c.OpenedPorts(ctx); err != nil || len(ports) != 0 {
		t.Errorf("opened-ports must not show pending ports: %v, %v", ports, err)
	}
	hc.Discard()
	if got := f.m.UnitState(app + "/0"); len(got) != 0 {
		t.Errorf("state survived a failed hook: %v", got)
	}
	if got := f.m.OpenedPorts(app + "/0"); len(got) != 0 {
		t.Errorf("ports survived a failed hook: %v", got)
	}
	// status-set and juju-log are not transactional.
	if got := f.m.UnitStatus(app + "/0"); got != (jujutest.Status{Status: "maintenance", Message: "installing"}) {
		t.Errorf("status: %v", got)
	}
	if logs := f.m.Logs(app + "/0"); len(logs) != 1 || logs[0] != (jujutest.LogLine{Level: "INFO", Message: "installing 7.14.3", Hook: "install"}) {
		t.Errorf("logs: %v", logs)
	}
	if res := hc.Run("is-leader", nil, nil); res.Code == 0 {
		t.Errorf("tool ran in an ended context")
	}

	hc, c = f.hook(t, app+"/0", noRelation("install"))
	must(t, c.StateSet(ctx, map[string]string{"installed": "7.14.3", "gone": "x"}))
	must(t, c.StateDelete(ctx, "gone"))
	must(t, c.OpenPort(ctx, juju.TCP(8080)))
	must(t, c.OpenPort(ctx, juju.Port{From: 2222, To: 2222, Protocol: "tcp"}))
	if ev := hc.Commit(); len(ev) != 0 {
		t.Errorf("state and ports cause no events, got %v", ev)
	}
	if got := f.m.UnitState(app + "/0"); !maps.Equal(got, map[string]string{"installed": "7.14.3"}) {
		t.Errorf("state: %v", got)
	}
	if got := f.m.OpenedPorts(app + "/0"); !slices.Equal(got, []string{"2222/tcp", "8080/tcp"}) {
		t.Errorf("ports: %v", got)
	}
}

func TestClientOverFakeSecrets(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	// The postgresql stand-in publishes credentials as a secret granted to the relation.
	uri := f.m.AddSecret(pg, map[string]string{"username": "relation-1", "password": "p1"}, "")
	f.m.GrantSecret(uri, f.db, "")
	f.m.SetAppData(f.db, pg, map[string]string{"secret-user": uri, "endpoints": "127.0.2.1:5432"})

	label := "database.1.user.secret"
	_, c := f.hook(t, app+"/2", jujutest.HookInfo{Hook: "postgresql-relation-changed", RelationID: f.db, RemoteApp: pg})
	got, err := c.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Label: label})
	if err != nil || got["password"] != "p1" {
		t.Fatalf("first read: %v, %v", got, err)
	}
	if l, rev, ok := f.m.SecretConsumer(uri, app+"/2"); !ok || l != label || rev != 1 {
		t.Errorf("consumer record: %q %d %t", l, rev, ok)
	}

	events := f.m.UpdateSecret(uri, map[string]string{"username": "relation-1", "password": "p2"})
	wantEv := []jujutest.Event{{Unit: app + "/2", HookInfo: jujutest.HookInfo{Hook: "secret-changed", SecretID: uri, SecretLabel: label}}}
	if !reflect.DeepEqual(events, wantEv) {
		t.Errorf("secret-changed events:\nwant %v\n got %v", wantEv, events)
	}
	_, c = f.hook(t, app+"/2", jujutest.HookInfo{Hook: "secret-changed", RelationID: -1, SecretID: uri, SecretLabel: label})
	if got, _ := c.GetSecret(ctx, juju.SecretGetOptions{Label: label}); got["password"] != "p1" {
		t.Errorf("pinned read: want p1, got %v", got)
	}
	if got, _ := c.GetSecret(ctx, juju.SecretGetOptions{Label: label, Peek: true}); got["password"] != "p2" {
		t.Errorf("peek: want p2, got %v", got)
	}
	if got, _ := c.GetSecret(ctx, juju.SecretGetOptions{Label: label}); got["password"] != "p1" {
		t.Errorf("peek must not re-pin: got %v", got)
	}
	if got, _ := c.GetSecret(ctx, juju.SecretGetOptions{Label: label, Refresh: true}); got["password"] != "p2" {
		t.Errorf("refresh: want p2, got %v", got)
	}
	if got, _ := c.GetSecret(ctx, juju.SecretGetOptions{Label: label}); got["password"] != "p2" {
		t.Errorf("after refresh: want p2, got %v", got)
	}

	// Not granted, unknown.
	other := f.m.AddSecret(pg, map[string]string{"tls-ca": "x"}, "")
	if _, err := c.GetSecret(ctx, juju.SecretGetOptions{ID: other}); !errors.Is(err, juju.ErrPermissionDenied) {
		t.Errorf("ungranted secret: want ErrPermissionDenied, got %v", err)
	}
	if _, err := c.GetSecret(ctx, juju.SecretGetOptions{ID: "secret:aaaaaaaaaaaaaaaaaaaa"}); !errors.Is(err, juju.ErrSecretNotFound) {
		t.Errorf("unknown secret: want ErrSecretNotFound, got %v", err)
	}
	if _, err := c.GetSecret(ctx, juju.SecretGetOptions{Label: "nope"}); !errors.Is(err, juju.ErrSecretNotFound) {
		t.Errorf("unknown label: want ErrSecretNotFound, got %v", err)
	}
}

func TestClientOverFakeOwnedSecrets(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()

	// A follower cannot create an application secret.
	hc, c := f.hook(t, app+"/1", noRelation("config-changed"))
	if _, err := c.AddSecret(ctx, juju.SecretAddOptions{Content: map[string]string{"password": "x"}}); !errors.Is(err, juju.ErrNotLeader) {
		t.Errorf("follower secret-add: want ErrNotLeader, got %v", err)
	}
	if ids, err := c.SecretIDs(ctx); err != nil || len(ids) != 0 || ids == nil {
		t.Errorf("secret-ids with none: %#v, %v", ids, err)
	}
	hc.Discard()

	hc, c = f.hook(t, app+"/0", noRelation("leader-elected"))
	uri, err := c.AddSecret(ctx, juju.SecretAddOptions{Label: "web-keys", Content: map[string]string{"session-key": "s1", "tsa-host-key": "k1"}})
	if err != nil || !strings.HasPrefix(uri, "secret:") || len(uri) != len("secret:")+20 {
		t.Fatalf("AddSecret = %q, %v", uri, err)
	}
	if got, err := c.GetSecret(ctx, juju.SecretGetOptions{Label: "web-keys"}); err != nil || got["session-key"] != "s1" {
		t.Errorf("owner reads its pending secret: %v, %v", got, err)
	}
	must(t, c.SetAppRelationData(ctx, f.peers, map[string]string{"web-keys": uri}))
	if _, ok := f.m.SecretContent(uri, 0); ok {
		t.Errorf("secret exists before commit")
	}
	hc.Commit()
	if content, ok := f.m.SecretContent(uri, 0); !ok || content["tsa-host-key"] != "k1" {
		t.Errorf("committed secret: %v %t", content, ok)
	}

	// Peers read their application's secret; the leader manages it.
	hc, c = f.hook(t, app+"/2", noRelation("config-changed"))
	if got, err := c.GetSecret(ctx, juju.SecretGetOptions{ID: uri}); err != nil || got["tsa-host-key"] != "k1" {
		t.Errorf("peer reads app secret: %v, %v", got, err)
	}
	if err := c.SetSecret(ctx, uri, map[string]string{"session-key": "s2"}); !errors.Is(err, juju.ErrNotLeader) {
		t.Errorf("follower secret-set: want ErrNotLeader, got %v", err)
	}
	hc.Discard()

	hc, c = f.hook(t, app+"/0", noRelation("config-changed"))
	info, err := c.SecretInfo(ctx, "web-keys", true)
	if err != nil || info.Revision != 1 || info.Label != "web-keys" || info.Owner != "application" || "secret:"+info.ID != uri {
		t.Errorf("SecretInfo: %+v, %v", info, err)
	}
	ids, err := c.SecretIDs(ctx)
	if err != nil || len(ids) != 1 || "secret:"+ids[0] != uri {
		t.Errorf("SecretIDs: %v, %v", ids, err)
	}
	must(t, c.SetSecret(ctx, uri, map[string]string{"session-key": "s2", "tsa-host-key": "k1"}))
	must(t, c.GrantSecret(ctx, uri, f.db, "postgresql/0"))
	if err := c.GrantSecret(ctx, uri, f.db, app+"/1"); err == nil {
		t.Errorf("granting to a unit not on the remote side must fail")
	}
	hc.Commit()
	if content, _ := f.m.SecretContent(uri, 0); content["session-key"] != "s2" {
		t.Errorf("revision 2: %v", content)
	}
	_, c = f.hook(t, "postgresql/0", noRelation("update-status"))
	if got, err := c.GetSecret(ctx, juju.SecretGetOptions{ID: uri}); err != nil || got["session-key"] != "s2" {
		t.Errorf("granted unit reads: %v, %v", got, err)
	}
}

func TestActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	hc, c := f.hook(t, app+"/0", jujutest.HookInfo{RelationID: -1, ActionName: "get-admin-password",
		ActionParams: map[string]any{"user": "admin", "opts": map[string]any{"show": true}}})
	var params struct {
		User string `json:"user"`
	}
	must(t, c.ActionParams(ctx, &params))
	if params.User != "admin" {
		t.Errorf("params: %+v", params)
	}
	if res := hc.Run("action-get", []string{"--format=json", "opts.show"}, nil); string(res.Stdout) != "true\n" {
		t.Errorf("action-get dotted key: %q", res.Stdout)
	}
	must(t, c.SetActionResults(ctx, map[string]string{"password": "hunter2"}))
	must(t, c.ActionLog(ctx, "looking up"))
	must(t, c.FailAction(ctx, "user locked"))
	hc.Commit()
	rec, ok := f.m.Action(hc.ActionUUID())
	if !ok || rec.Status != "failed" || rec.Message != "user locked" || rec.Results["password"] != "hunter2" || !slices.Equal(rec.Logs, []string{"looking up"}) {
		t.Errorf("action record: %+v", rec)
	}

	hc, c = f.hook(t, app+"/0", noRelation("install"))
	var p map[string]any
	if err := c.ActionParams(ctx, &p); err == nil {
		t.Errorf("action-get outside an action must fail")
	}
	hc.Discard()
}

func TestModelJSONRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.m.SetConfig(app, map[string]any{"web-port": 9090})
	hc, c := f.hook(t, app+"/0", noRelation("config-changed"))
	must(t, c.SetRelationData(t.Context(), f.peers, map[string]string{"pending": "yes"}))

	mb, err := json.Marshal(f.m)
	must(t, err)
	hb, err := json.Marshal(hc)
	must(t, err)
	m2 := &jujutest.Model{}
	must(t, json.Unmarshal(mb, m2))
	hc2, err := m2.LoadHookContext(hb)
	must(t, err)
	if res := hc2.Run("relation-get", []string{"--format=json", "-r", "0", "pending", app + "/0"}, nil); string(res.Stdout) != "\"yes\"\n" {
		t.Errorf("restored pending write: %q %q", res.Stdout, res.Stderr)
	}
	if res := hc2.Run("config-get", []string{"--format=json", "web-port"}, nil); string(res.Stdout) != "9090\n" {
		t.Errorf("restored config: %q", res.Stdout)
	}
	hc2.Commit()
	if got := m2.UnitData(f.peers, app+"/0")["pending"]; got != "yes" {
		t.Errorf("commit after restore: %q", got)
	}
}

func TestLifecycleEvents(t *testing.T) {
	t.Parallel()
	m := jujutest.NewModel("ci", "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10")
	m.AddApp(app, charmMeta, nil)
	var last string
	for range 11 {
		last = m.AddUnit(app)
	}
	if last != app+"/10" {
		t.Fatalf("11th unit: %q", last)
	}
	peers := m.RelationID(app, "peers")
	units := m.RelationUnits(peers)
	if units[len(units)-1] != app+"/10" || units[2] != app+"/2" {
		t.Errorf("scope order: %v", units)
	}
	joins := m.JoinEvents(peers, app+"/10")
	if len(joins) != 40 { // 10 other units × (joined+changed) × both directions
		t.Errorf("join events: %d", len(joins))
	}
	if m.Leader(app) != app+"/0" {
		t.Errorf("leader: %q", m.Leader(app))
	}
	evs := m.RemoveUnit(app + "/0")
	if m.Leader(app) != "" || slices.Contains(m.Units(app), app+"/0") {
		t.Errorf("after remove: leader %q units %v", m.Leader(app), m.Units(app))
	}
	departed := 0
	for _, e := range evs {
		if e.Unit != app+"/0" && e.Hook == "peers-relation-departed" && e.DepartingUnit == app+"/0" {
			departed++
		}
	}
	if departed != 10 {
		t.Errorf("departed events on remaining units: %d (%v)", departed, evs)
	}
	m.SetLeader(app, app+"/10")
	hc := m.NewHookContext(app+"/10", noRelation("leader-elected"))
	if res := hc.Run("is-leader", []string{"--format", "json"}, nil); string(res.Stdout) != "true\n" {
		t.Errorf("new leader: %q", res.Stdout)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ForgetSecret removes a secret from the model: a later secret-get does not find it, and its
// label is free for a new secret-add.
func TestForgetSecret(t *testing.T) {
	m := jujutest.NewModel("test", "1b9e6e3c-0000-4000-8000-000000000001")
	m.AddApp("app", jujutest.AppMeta{}, nil)
	m.AddUnit("app")
	uri := m.AddSecret("app", map[string]string{"password": "x"}, "web-keys")
	m.ForgetSecret(uri)
	if _, ok := m.SecretContent(uri, 0); ok {
		t.Errorf("secret %s still in the model", uri)
	}
	if _, ok := m.SecretByLabel("web-keys"); ok {
		t.Error("label web-keys still taken")
	}
}
