package juju_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

func TestParseEnv(t *testing.T) {
	t.Parallel()
	env := juju.ParseEnv(mapEnv(map[string]string{
		"JUJU_UNIT_NAME":            "concourse-ci-machine/10",
		"JUJU_CHARM_DIR":            "/var/lib/juju/agents/unit-concourse-ci-machine-10/charm",
		"JUJU_DISPATCH_PATH":        "hooks/database-relation-changed",
		"JUJU_HOOK_NAME":            "database-relation-changed",
		"JUJU_RELATION":             "database",
		"JUJU_RELATION_ID":          "database:5",
		"JUJU_REMOTE_UNIT":          "postgresql/0",
		"JUJU_REMOTE_APP":           "postgresql",
		"JUJU_SECRET_REVISION":      "3",
		"JUJU_MODEL_NAME":           "ci",
		"JUJU_MODEL_UUID":           "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10",
		"JUJU_VERSION":              "3.6.4",
		"JUJU_MACHINE_ID":           "1/lxd/2",
		"JUJU_CONTEXT_ID":           "concourse-ci-machine/10-database-relation-changed-123",
		"JUJU_AGENT_SOCKET_ADDRESS": "/var/lib/juju/agents/unit-concourse-ci-machine-10/agent.socket",
		"JUJU_AGENT_SOCKET_NETWORK": "unix",
		"JUJU_CHARM_HTTP_PROXY":     "http://proxy.internal:3128",
	}), "/var/lib/juju/agents/unit-concourse-ci-machine-10/charm/dispatch")
	want := juju.Env{
		UnitName: "concourse-ci-machine/10", AppName: "concourse-ci-machine",
		CharmDir:     "/var/lib/juju/agents/unit-concourse-ci-machine-10/charm",
		DispatchPath: "hooks/database-relation-changed", HookName: "database-relation-changed",
		RelationName: "database", RelationID: 5, RemoteUnit: "postgresql/0", RemoteApp: "postgresql",
		SecretRevision: 3, ModelName: "ci", ModelUUID: "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10",
		JujuVersion: "3.6.4", MachineID: "1/lxd/2",
		ContextID:          "concourse-ci-machine/10-database-relation-changed-123",
		AgentSocketAddress: "/var/lib/juju/agents/unit-concourse-ci-machine-10/agent.socket",
		AgentSocketNetwork: "unix", HTTPProxy: "http://proxy.internal:3128",
	}
	if env != want {
		t.Errorf("ParseEnv:\nwant %+v\n got %+v", want, env)
	}
}

func TestParseEnvFallbacks(t *testing.T) {
	t.Parallel()
	env := juju.ParseEnv(mapEnv(map[string]string{"CHARM_DIR": "/charm", "JUJU_RELATION_ID": "7"}), "/charm/hooks/install")
	if env.DispatchPath != "hooks/install" || env.HookName != "install" {
		t.Errorf("argv[0] fallback: dispatch %q hook %q, want hooks/install", env.DispatchPath, env.HookName)
	}
	if env.CharmDir != "/charm" {
		t.Errorf("CHARM_DIR fallback: got %q", env.CharmDir)
	}
	if env.RelationID != 7 {
		t.Errorf("bare relation id: got %d, want 7", env.RelationID)
	}
	if got := juju.ParseEnv(mapEnv(nil), "").RelationID; got != -1 {
		t.Errorf("no relation: got %d, want -1", got)
	}
}

func TestEvent(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dispatch, action string
		want             juju.Event
	}{
		{"hooks/install", "", juju.Event{Kind: juju.KindHook, Name: "install"}},
		{"hooks/leader-settings-changed", "", juju.Event{Kind: juju.KindHook, Name: "leader-settings-changed"}},
		{"hooks/peers-relation-changed", "", juju.Event{Kind: juju.KindHook, Name: "peers-relation-changed", Endpoint: "peers", RelationEvent: "changed"}},
		{"hooks/postgresql-client-relation-broken", "", juju.Event{Kind: juju.KindHook, Name: "postgresql-client-relation-broken", Endpoint: "postgresql-client", RelationEvent: "broken"}},
		{"hooks/data-storage-detaching", "", juju.Event{Kind: juju.KindHook, Name: "data-storage-detaching", Endpoint: "data", StorageEvent: "detaching"}},
		{"hooks/secret-changed", "", juju.Event{Kind: juju.KindHook, Name: "secret-changed"}},
		{"actions/get-admin-password", "get-admin-password", juju.Event{Kind: juju.KindAction, Name: "get-admin-password"}},
		{"", "backup", juju.Event{Kind: juju.KindAction, Name: "backup"}},
	}
	for _, tc := range cases {
		t.Run(tc.dispatch+tc.action, func(t *testing.T) {
			t.Parallel()
			env := juju.ParseEnv(mapEnv(map[string]string{"JUJU_DISPATCH_PATH": tc.dispatch, "JUJU_ACTION_NAME": tc.action}), "")
			if got := env.Event(); got != tc.want {
				t.Errorf("want %+v, got %+v", tc.want, got)
			}
		})
	}
}

func TestAppName(t *testing.T) {
	t.Parallel()
	for unit, want := range map[string]string{
		"concourse-ci-machine/0": "concourse-ci-machine", "concourse-ci-machine/10": "concourse-ci-machine",
		"postgresql": "postgresql", "": "",
	} {
		if got := juju.AppName(unit); got != want {
			t.Errorf("AppName(%q) = %q, want %q", unit, got, want)
		}
	}
}

func TestProxyFunc(t *testing.T) {
	t.Parallel()
	env := juju.Env{
		HTTPProxy:  "proxy.internal:3128",
		HTTPSProxy: "http://secure-proxy.internal:3129",
		NoProxy:    "10.0.0.0/8, .svc.example.com,github.com, 192.168.1.7, registry.local:5000",
	}
	proxy := env.ProxyFunc()
	cases := []struct{ url, want string }{
		{"http://example.org/x", "http://proxy.internal:3128"},
		{"https://example.org/x", "http://secure-proxy.internal:3129"},
		{"https://github.com/concourse/concourse/releases", ""},
		{"https://api.github.com/repos", ""},
		{"https://notgithub.com/", "http://secure-proxy.internal:3129"},
		{"https://svc.example.com/", "http://secure-proxy.internal:3129"}, // leading dot: subdomains only
		{"https://db.svc.example.com/", ""},
		{"http://10.1.2.3:8080/", ""},
		{"http://192.168.1.7/", ""},
		{"http://192.168.1.8/", "http://proxy.internal:3128"},
		{"http://registry.local:5000/v2/", ""},
		{"http://registry.local/v2/", "http://proxy.internal:3128"},
		{"http://127.0.0.1:8080/", ""},
		{"http://localhost:8080/", ""},
		{"ftp://example.org/", ""},
	}
	for _, tc := range cases {
		u, _ := url.Parse(tc.url)
		got, err := proxy(&http.Request{URL: u})
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		gotS := ""
		if got != nil {
			gotS = got.String()
		}
		if gotS != tc.want {
			t.Errorf("%s: want proxy %q, got %q", tc.url, tc.want, gotS)
		}
	}

	all := juju.Env{HTTPProxy: "http://p:1", NoProxy: "*"}.ProxyFunc()
	if got, _ := all(&http.Request{URL: &url.URL{Scheme: "http", Host: "example.org"}}); got != nil {
		t.Errorf("NO_PROXY=*: want no proxy, got %v", got)
	}
	none := juju.Env{}.ProxyFunc()
	if got, _ := none(&http.Request{URL: &url.URL{Scheme: "https", Host: "example.org"}}); got != nil {
		t.Errorf("no proxies: got %v", got)
	}
	bad := juju.Env{HTTPProxy: "ftp://p:1"}.ProxyFunc()
	if _, err := bad(&http.Request{URL: &url.URL{Scheme: "http", Host: "example.org"}}); err == nil {
		t.Errorf("ftp proxy: want an error")
	}
}
