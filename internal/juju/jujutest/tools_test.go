package jujutest_test

import (
	"net"
	"net/rpc"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// TestToolArgv checks raw argv handling, output shapes and error codes tool by tool. Each case
// runs in a fresh fixture, on concourse-ci-machine/1 (a follower) unless it names a unit, in a
// database-relation-changed hook for relation 2 (the postgresql relation; 0 and 1 are the peer relations).
func TestToolArgv(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		unit       string
		tool       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr string // substring
	}{
		{name: "is-leader/smart", tool: "is-leader", wantStdout: "False\n"},
		{name: "is-leader/json-space", tool: "is-leader", args: []string{"--format", "json"}, wantStdout: "false\n"},
		{name: "is-leader/bad-format", tool: "is-leader", args: []string{"--format=xml"}, wantCode: 2, wantStderr: "ERROR invalid value"},
		{name: "is-leader/unknown-flag", tool: "is-leader", args: []string{"--bogus"}, wantCode: 2, wantStderr: "ERROR flag provided but not defined: --bogus"},
		{name: "config-get/set-and-defaults", tool: "config-get", args: []string{"--format=json"},
			wantStdout: `{"mode":"web","shared-storage":"none","web-port":8080}` + "\n"},
		{name: "config-get/all", tool: "config-get", args: []string{"--all", "--format=json"},
			wantStdout: `{"mode":"web","shared-storage":"none","version":null,"web-port":8080}` + "\n"},
		{name: "config-get/key", tool: "config-get", args: []string{"--format=json", "web-port"}, wantStdout: "8080\n"},
		{name: "config-get/missing-key", tool: "config-get", args: []string{"--format=json", "nope"}, wantStdout: "null\n"},
		{name: "config-get/all-with-key", tool: "config-get", args: []string{"--all", "mode"}, wantCode: 2},
		{name: "relation-ids/current", tool: "relation-ids", args: []string{"--format=json"}, wantStdout: `["postgresql:2"]` + "\n"},
		{name: "relation-ids/peers", tool: "relation-ids", args: []string{"peers", "--format=json"}, wantStdout: `["peers:0"]` + "\n"},
		{name: "relation-ids/none", tool: "relation-ids", args: []string{"tsa", "--format=json"}, wantStdout: "[]\n"},
		{name: "relation-list/r-space", tool: "relation-list", args: []string{"--format=json", "-r", "0"},
			wantStdout: `["concourse-ci-machine/0","concourse-ci-machine/2"]` + "\n"},
		{name: "relation-list/r-equals", tool: "relation-list", args: []string{"--format=json", "-r=2"}, wantStdout: `["postgresql/0"]` + "\n"},
		{name: "relation-list/r-key", tool: "relation-list", args: []string{"--format=json", "-r", "postgresql:2"}, wantStdout: `["postgresql/0"]` + "\n"},
		{name: "relation-list/long-flag", tool: "relation-list", args: []string{"--relation=peers:0", "--app", "--format=json"}, wantStdout: `"concourse-ci-machine"` + "\n"},
		{name: "relation-list/default-relation", tool: "relation-list", args: []string{"--app", "--format=json"}, wantStdout: `"postgresql"` + "\n"},
		{name: "relation-list/not-found", tool: "relation-list", args: []string{"-r", "db:7"}, wantCode: 2, wantStderr: "relation not found"},
		{name: "relation-list/bad-id", tool: "relation-list", args: []string{"-r", "db:x"}, wantCode: 2},
		{name: "relation-get/remote-default", tool: "relation-get", args: []string{"--format=json", "private-address"}, wantStdout: `"127.0.1.4"` + "\n"},
		{name: "relation-get/missing-key-null", tool: "relation-get", args: []string{"--format=json", "-r", "2", "nope", "postgresql/0"}, wantStdout: "null\n"},
		{name: "relation-get/app-name-without-app", tool: "relation-get", args: []string{"-r", "2", "-", "postgresql"}, wantCode: 2, wantStderr: "expected unit name"},
		{name: "relation-get/remote-app-from-unit", tool: "relation-get", args: []string{"--format=json", "-r", "2", "--app", "-", "postgresql/0"}, wantStdout: "{}\n"},
		{name: "relation-get/own-app-leader", unit: "concourse-ci-machine/0", tool: "relation-get", args: []string{"--format=json", "-r", "2", "--app", "-", "concourse-ci-machine"}, wantStdout: "{}\n"},
		{name: "relation-get/own-app-follower", tool: "relation-get", args: []string{"-r", "2", "--app", "-", "concourse-ci-machine"}, wantCode: 1, wantStderr: "ERROR permission denied"},
		{name: "relation-get/unrelated-unit", tool: "relation-get", args: []string{"-r", "2", "-", "vault/0"}, wantCode: 1, wantStderr: "settings not found"},
		{name: "relation-set/kv-and-readback", tool: "relation-set", args: []string{"-r", "0", "role=worker"}},
		{name: "relation-set/file-yaml", tool: "relation-set", args: []string{"-r", "0", "--file", "-"}, stdin: "role: worker\nport: 7777\n"},
		{name: "relation-set/bad-kv", tool: "relation-set", args: []string{"-r", "0", "role"}, wantCode: 2},
		{name: "relation-set/app-follower", tool: "relation-set", args: []string{"-r", "0", "--app", "--file", "-"}, stdin: `{"a":"b"}`, wantCode: 1, wantStderr: "ERROR cannot write relation settings"},
		{name: "relation-set/no-relation", tool: "relation-set", args: []string{"-r", "5", "a=b"}, wantCode: 2, wantStderr: "relation not found"},
		{name: "status-set/ok", tool: "status-set", args: []string{"--application=False", "active", "--", "-ready"}},
		{name: "status-set/bad-status", tool: "status-set", args: []string{"error", "boom"}, wantCode: 2, wantStderr: "invalid status"},
		{name: "status-set/extra-args", tool: "status-set", args: []string{"active", "a", "b"}, wantCode: 2, wantStderr: "unrecognized args"},
		{name: "status-set/app-follower", tool: "status-set", args: []string{"--application", "active"}, wantCode: 1, wantStderr: "not the leader"},
		{name: "status-get/unit", tool: "status-get", args: []string{"--include-data", "--format=json", "--application=false"},
			wantStdout: `{"message":"","status":"unknown","status-data":{}}` + "\n"},
		{name: "status-get/app-follower", tool: "status-get", args: []string{"--application=true"}, wantCode: 1, wantStderr: "not the leader"},
		{name: "juju-log/ok", tool: "juju-log", args: []string{"--log-level", "WARNING", "--", "-x"}},
		{name: "juju-log/no-message", tool: "juju-log", wantCode: 2},
		{name: "open-port/range", tool: "open-port", args: []string{"8000-8100/udp"}},
		{name: "open-port/bad", tool: "open-port", args: []string{"80/sctp"}, wantCode: 2},
		{name: "opened-ports/empty", tool: "opened-ports", args: []string{"--format=json"}, wantStdout: "[]\n"},
		{name: "unit-get/private", tool: "unit-get", args: []string{"--format=json", "private-address"}, wantStdout: `"127.0.1.2"` + "\n"},
		{name: "unit-get/unknown", tool: "unit-get", args: []string{"hostname"}, wantCode: 2, wantStderr: "unknown setting"},
		{name: "network-get/ok", tool: "network-get", args: []string{"--format=json", "peers"},
			wantStdout: `{"bind-addresses":[{"addresses":[{"cidr":"127.0.1.0/24","hostname":"","value":"127.0.1.2"}],"interface-name":"eth0","mac-address":"00:16:3e:00:00:01"}],"egress-subnets":["127.0.1.2/32"],"ingress-addresses":["127.0.1.2"]}` + "\n"},
		{name: "network-get/ingress", tool: "network-get", args: []string{"--format=json", "--ingress-address", "tsa"}, wantStdout: `"127.0.1.2"` + "\n"},
		{name: "network-get/unknown", tool: "network-get", args: []string{"metrics"}, wantCode: 1, wantStderr: `no network config found for binding "metrics"`},
		{name: "action-get/not-action", tool: "action-get", wantCode: 1, wantStderr: "not running an action"},
		{name: "state-get/missing", tool: "state-get", args: []string{"--format=json", "k"}, wantStdout: `""` + "\n"},
		{name: "state-get/strict", tool: "state-get", args: []string{"--strict", "k"}, wantCode: 1, wantStderr: `"k" not found`},
		{name: "state-get/all-empty", tool: "state-get", args: []string{"--format=json"}, wantStdout: "{}\n"},
		{name: "state-set/too-big", tool: "state-set", args: []string{"--file", "-"}, stdin: `{"k":"` + strings.Repeat("x", 64*1024+1) + `"}`, wantCode: 1},
		{name: "secret-ids/null", tool: "secret-ids", args: []string{"--format=json"}, wantStdout: "null\n"},
		{name: "secret-add/bad-key", unit: "concourse-ci-machine/0", tool: "secret-add", args: []string{"pw=x"}, wantCode: 2},
		{name: "secret-add/empty", unit: "concourse-ci-machine/0", tool: "secret-add", wantCode: 2, wantStderr: "missing secret value"},
		{name: "secret-add/follower", tool: "secret-add", args: []string{"password=x"}, wantCode: 1, wantStderr: "not the leader"},
		{name: "secret-add/unit-owner", tool: "secret-add", args: []string{"--owner", "unit", "password#base64=aHVudGVyMg=="}},
		{name: "secret-get/both-modes", tool: "secret-get", args: []string{"secret:x", "--peek", "--refresh"}, wantCode: 2},
		{name: "secret-get/nothing", tool: "secret-get", wantCode: 2},
		{name: "secret-info-get/both", tool: "secret-info-get", args: []string{"secret:x", "--label", "l"}, wantCode: 2},
		{name: "resource-get/missing", tool: "resource-get", args: []string{"concourse"}, wantCode: 1, wantStderr: `resource "concourse" not found`},
		{name: "unknown-tool", tool: "goal-state", wantCode: 1, wantStderr: "ERROR bad request: unknown command: goal-state"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			unit := tc.unit
			if unit == "" {
				unit = app + "/1"
			}
			hc := f.m.NewHookContext(unit, jujutest.HookInfo{Hook: "postgresql-relation-changed", RelationID: f.db, RemoteUnit: "postgresql/0"})
			res := hc.Run(tc.tool, tc.args, []byte(tc.stdin))
			if res.Code != tc.wantCode {
				t.Fatalf("exit code %d, want %d (stderr %q)", res.Code, tc.wantCode, res.Stderr)
			}
			if tc.wantCode == 0 && len(res.Stderr) != 0 {
				t.Errorf("stderr on success: %q", res.Stderr)
			}
			if tc.wantStdout != "" && string(res.Stdout) != tc.wantStdout {
				t.Errorf("stdout:\nwant %q\n got %q", tc.wantStdout, res.Stdout)
			}
			if !strings.Contains(string(res.Stderr), tc.wantStderr) {
				t.Errorf("stderr %q does not contain %q", res.Stderr, tc.wantStderr)
			}
		})
	}
}

func TestRelationSetFileReadBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hc := f.m.NewHookContext(app+"/1", noRelation("config-changed"))
	run := func(tool string, stdin string, args ...string) string {
		t.Helper()
		res := hc.Run(tool, args, []byte(stdin))
		if res.Code != 0 {
			t.Fatalf("%s %v: %d %s", tool, args, res.Code, res.Stderr)
		}
		return string(res.Stdout)
	}
	run("relation-set", "role: worker\nport: 7777\nstale: x\n", "-r", "0", "--file", "-")
	run("relation-set", "", "-r=peers:0", "stale=", "tag=a=b")
	got := run("relation-get", "", "--format=json", "-r", "0", "-", app+"/1")
	want := `{"egress-subnets":"127.0.1.2/32","ingress-address":"127.0.1.2","port":"7777","private-address":"127.0.1.2","role":"worker","tag":"a=b"}` + "\n"
	if got != want {
		t.Errorf("readback:\nwant %s\n got %s", want, got)
	}
	// Another unit does not see it before commit, and gets an event after.
	other := f.m.NewHookContext(app+"/2", noRelation("update-status"))
	if res := other.Run("relation-get", []string{"--format=json", "-r", "0", "role", app + "/1"}, nil); string(res.Stdout) != "null\n" {
		t.Errorf("uncommitted write visible to another unit: %q", res.Stdout)
	}
	evs := hc.Commit()
	if len(evs) != 2 || evs[0].Unit != app+"/0" || evs[1].Unit != app+"/2" || evs[0].RemoteUnit != app+"/1" {
		t.Errorf("events: %v", evs)
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.m.SetProxy(jujutest.ProxySettings{HTTPS: "http://proxy.internal:3128", NoProxy: "127.0.0.1"})
	hc := f.m.NewHookContext(app+"/2", jujutest.HookInfo{Hook: "postgresql-relation-departed", RelationID: f.db,
		RemoteUnit: "postgresql/0", DepartingUnit: "postgresql/0"})
	hc.AgentSocketAddress = "/tmp/agent.socket"
	env := map[string]string{}
	for _, kv := range hc.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	want := map[string]string{
		"JUJU_DISPATCH_PATH": "hooks/postgresql-relation-departed", "JUJU_HOOK_NAME": "postgresql-relation-departed",
		"JUJU_UNIT_NAME": app + "/2", "JUJU_RELATION": "postgresql", "JUJU_RELATION_ID": "postgresql:2",
		"JUJU_REMOTE_UNIT": "postgresql/0", "JUJU_REMOTE_APP": "postgresql", "JUJU_DEPARTING_UNIT": "postgresql/0",
		"JUJU_MODEL_NAME": "ci", "JUJU_VERSION": "3.6.4", "JUJU_CONTEXT_ID": hc.ID(), "JUJU_MACHINE_ID": "2",
		"JUJU_AGENT_SOCKET_ADDRESS": "/tmp/agent.socket", "JUJU_AGENT_SOCKET_NETWORK": "unix",
		"JUJU_CHARM_DIR":         "/var/lib/juju/agents/unit-concourse-ci-machine-2/charm",
		"JUJU_CHARM_HTTPS_PROXY": "http://proxy.internal:3128", "JUJU_CHARM_NO_PROXY": "127.0.0.1",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["PATH"]; ok {
		t.Errorf("Env must not set PATH")
	}

	act := f.m.NewHookContext(app+"/0", jujutest.HookInfo{RelationID: -1, ActionName: "backup"})
	env = map[string]string{}
	for _, kv := range act.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if env["JUJU_DISPATCH_PATH"] != "actions/backup" || env["JUJU_HOOK_NAME"] != "" || env["JUJU_ACTION_NAME"] != "backup" || env["JUJU_ACTION_UUID"] != act.ActionUUID() {
		t.Errorf("action env: %v", env)
	}
	if _, ok := env["JUJU_RELATION_ID"]; ok {
		t.Errorf("action env has a relation")
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hc := f.m.NewHookContext(app+"/0", noRelation("config-changed"))
	sock := filepath.Join(t.TempDir(), "agent.socket")
	l, err := net.Listen("unix", sock)
	must(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := jujutest.Serve(l, func(id string) (*jujutest.HookContext, bool) { return hc, id == hc.ID() }); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })

	client, err := rpc.Dial("unix", sock)
	must(t, err)
	defer client.Close()
	call := func(req jujutest.Request) (jujutest.Response, error) {
		var resp jujutest.Response
		err := client.Call("Jujuc.Main", req, &resp)
		return resp, err
	}
	dir := t.TempDir()

	resp, err := call(jujutest.Request{ContextId: hc.ID(), Dir: dir, CommandName: "is-leader", Args: []string{"--format=json"}})
	if err != nil || resp.Code != 0 || string(resp.Stdout) != "true\n" {
		t.Errorf("is-leader: %+v, %v", resp, err)
	}
	// The stdin handshake: first without stdin, then with.
	req := jujutest.Request{ContextId: hc.ID(), Dir: dir, CommandName: "state-set", Args: []string{"--file", "-"}}
	if _, err := call(req); err == nil || err.Error() != "hook tool requires stdin, none supplied" {
		t.Errorf("handshake: want the stdin error, got %v", err)
	}
	req.StdinSet, req.Stdin = true, []byte(`{"k":"v"}`)
	if resp, err := call(req); err != nil || resp.Code != 0 {
		t.Errorf("state-set with stdin: %+v, %v", resp, err)
	}
	resp, err = call(jujutest.Request{ContextId: hc.ID(), Dir: dir, CommandName: "status-set", Args: []string{"bogus"}})
	if err != nil || resp.Code != 2 || !strings.HasPrefix(string(resp.Stderr), "ERROR invalid status") {
		t.Errorf("usage error travels in the response: %+v, %v", resp, err)
	}
	for _, bad := range []struct {
		req  jujutest.Request
		want string
	}{
		{jujutest.Request{ContextId: hc.ID(), Dir: dir}, "bad request: command not specified"},
		{jujutest.Request{ContextId: hc.ID(), Dir: "rel", CommandName: "is-leader"}, "bad request: Dir is not absolute"},
		{jujutest.Request{ContextId: "other", Dir: dir, CommandName: "is-leader"}, "bad request: unknown context id"},
		{jujutest.Request{ContextId: hc.ID(), Dir: dir, CommandName: "is-leader", Token: "x"}, "bad request: token does not match"},
		{jujutest.Request{ContextId: hc.ID(), Dir: dir, CommandName: "leader-get"}, "bad request: unknown command: leader-get"},
	} {
		if _, err := call(bad.req); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: want %q, got %v", bad.req, bad.want, err)
		}
	}
	hc.Commit()
	if got := f.m.UnitState(app + "/0"); got["k"] != "v" {
		t.Errorf("state after commit: %v", got)
	}
}

// A unit whose endpoints are bound to another space than its private address, and whose
// postgresql relation advertises another ingress address (as a cross-model relation does):
// network-get answers per binding and per relation, unit-get keeps the private address, and
// Juju's defaults in the unit's databags follow the binding of each relation's endpoint.
func TestNetworkGetBindings(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	unit := app + "/1" // private address 127.0.1.2
	f.m.SetBindingAddress(unit, "peers", "192.168.7.5")
	f.m.SetBindingAddress(unit, "postgresql", "192.168.8.5")
	f.m.SetRelationIngress(unit, f.db, "203.0.113.5")
	hc := f.m.NewHookContext(unit, noRelation("config-changed"))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unbound binding answers the private address", []string{"--format=json", "--ingress-address", "tsa"}, `"127.0.1.2"`},
		{"bound binding answers its space address", []string{"--format=json", "--ingress-address", "peers"}, `"192.168.7.5"`},
		{"full answer of a bound binding", []string{"--format=json", "peers"},
			`{"bind-addresses":[{"addresses":[{"cidr":"192.168.7.0/24","hostname":"","value":"192.168.7.5"}],"interface-name":"eth1","mac-address":"00:16:3e:00:00:01"}],"egress-subnets":["192.168.7.5/32"],"ingress-addresses":["192.168.7.5"]}`},
		{"relation ingress differs from the bound address", []string{"--format=json", "-r", "2", "postgresql"},
			`{"bind-addresses":[{"addresses":[{"cidr":"192.168.8.0/24","hostname":"","value":"192.168.8.5"}],"interface-name":"eth1","mac-address":"00:16:3e:00:00:01"}],"egress-subnets":["203.0.113.5/32"],"ingress-addresses":["203.0.113.5"]}`},
		// Juju answers -r for the relation's own endpoint, whatever binding is named.
		{"-r answers for the relation's endpoint", []string{"--format=json", "-r", "2", "--ingress-address", "peers"}, `"203.0.113.5"`},
		{"-r on a relation without its own ingress", []string{"--format=json", "-r", "0", "--ingress-address", "peers"}, `"192.168.7.5"`},
	} {
		res := hc.Run("network-get", tc.args, nil)
		if res.Code != 0 || strings.TrimSpace(string(res.Stdout)) != tc.want {
			t.Errorf("%s: network-get %v = %d %s %s; want %s", tc.name, tc.args, res.Code, res.Stdout, res.Stderr, tc.want)
		}
	}
	if res := hc.Run("unit-get", []string{"--format=json", "private-address"}, nil); strings.TrimSpace(string(res.Stdout)) != `"127.0.1.2"` {
		t.Errorf("unit-get private-address = %s; want the private address to stay", res.Stdout)
	}
	want := map[int]map[string]string{
		f.peers: {"private-address": "192.168.7.5", "ingress-address": "192.168.7.5", "egress-subnets": "192.168.7.5/32"},
		f.db:    {"private-address": "192.168.8.5", "ingress-address": "203.0.113.5", "egress-subnets": "203.0.113.5/32"},
	}
	for id, w := range want {
		got := f.m.UnitData(id, unit)
		for k, v := range w {
			if got[k] != v {
				t.Errorf("relation %d: %s's %s = %q; want %q", id, unit, k, got[k], v)
			}
		}
	}
	// Resetting goes back to the private address, bags included; a later SetAddress moves
	// only what follows the private address.
	f.m.SetBindingAddress(unit, "peers", "")
	f.m.SetAddress(unit, "127.0.1.9")
	if res := hc.Run("network-get", []string{"--ingress-address", "peers"}, nil); strings.TrimSpace(string(res.Stdout)) != "127.0.1.9" {
		t.Errorf("after reset: network-get peers = %s; want the private address", res.Stdout)
	}
	if got := f.m.UnitData(f.peers, unit)["ingress-address"]; got != "127.0.1.9" {
		t.Errorf("after reset: peers ingress-address = %q; want 127.0.1.9", got)
	}
	if got := f.m.UnitData(f.db, unit)["private-address"]; got != "192.168.8.5" {
		t.Errorf("after SetAddress: postgresql private-address = %q; want the binding's 192.168.8.5", got)
	}
}
