package hooks

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of render_test.go")

// Every option that reaches a rendered file, through the same functions the hooks use: the golden
// files are what an operator's unit gets for each configuration.
func TestRenderGolden(t *testing.T) {
	t.Parallel()
	paths := DefaultPaths()
	cases := []struct {
		name   string
		leader bool
		config map[string]any
		tsa    []string
	}{
		{"auto-leader-defaults", true, map[string]any{"version": "7.14.3"}, nil},
		{"auto-worker-defaults", false, map[string]any{"version": "7.14.3"}, []string{"10.0.0.5:2222"}},
		{"web-every-option", true, map[string]any{
			"mode": "web", "version": "8.2.5", "web-port": "443", "external-url": "https://ci.example.com/",
			"initial-admin-username": "ops", "log-level": "debug",
			"container-placement-strategy": "limit-active-tasks,volume-locality", "enable-metrics": "true",
			"extra-web-flags": `--cluster-name "CI #1" --enable-global-resources --default-task-memory-limit=2GB`,
		}, nil},
		{"worker-every-option", false, map[string]any{
			"mode": "worker", "version": "8.2.5", "log-level": "error", "tag": "gpu,big, gpu",
			"containerd-dns-proxy-enable": "true", "containerd-dns-server": "10.0.0.2,10.0.0.3",
		}, []string{"10.0.0.5:2222", "10.0.0.6:2222"}},
		{"worker-no-dns", false, map[string]any{"mode": "worker", "version": "8.2.5", "containerd-dns-server": ""}, []string{"10.0.0.5:2222"}},
		{"worker-houdini", false, map[string]any{"mode": "worker", "version": "8.2.5", "worker-runtime": "houdini"}, []string{"10.0.0.5:2222"}},
		{"all", false, map[string]any{"mode": "all", "version": "7.14.3", "log-level": "warn"}, nil},
		{"web-every-vault-option", true, map[string]any{"mode": "web", "version": "8.2.5",
			"vault-url": "https://vault.corp:8200", "vault-auth-backend": "cert", "vault-auth-backend-max-ttl": "1h",
			"vault-auth-param": "name:concourse", "vault-ca-cert": testCAPEMFixed(t), "vault-client-cert": fixture(t, "vault-client.pem"),
			"vault-client-key": fixture(t, "vault-client-key.pem"), "vault-lookup-templates": "/{{.Team}}/{{.Pipeline}}/{{.Secret}}, /{{.Team}}/{{.Secret}}",
			"vault-namespace": "ci", "vault-path-prefix": "/concourse-kv", "vault-shared-path": "shared", "vault-enable-kv-mount-cache": false,
			"secret-cache-enabled": true, "secret-cache-duration": "10m", "secret-cache-duration-notfound": "30s",
		}, nil},
		{"web-vault-token-secret", true, map[string]any{"mode": "web", "version": "7.14.3",
			"vault-url": "http://127.0.0.1:8200", "vault-client-token": "secret:d0a1b2c3d4e5f6g7h8i9", "vault-ca-cert": "/etc/ssl/vault-ca.pem",
			"secret-cache-enabled": false,
		}, nil},
		{"worker-every-worker-option", false, map[string]any{"mode": "worker", "version": "8.2.5",
			"worker-baggageclaim-driver": "overlay", "worker-max-containers": json.Number("100"), "worker-team": "ops",
			"worker-ephemeral": true, "extra-worker-flags": `--garden-network-pool=10.80.0.0/16 --baggageclaim-log-level "debug"`,
		}, []string{"10.0.0.5:2222"}},
		{"worker-guardian-max-containers", false, map[string]any{"mode": "worker", "version": "8.2.5",
			"worker-runtime": "guardian", "worker-max-containers": json.Number("40"),
		}, []string{"10.0.0.5:2222"}},
		{"all-login-options", true, map[string]any{"mode": "all", "version": "7.14.3",
			"extra-local-users": "alice:alice-pw,bob:$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", "main-team-local-user": "alice",
			"ldap-host": "ldap.corp:636", "ldap-bind-dn": "cn=ro,dc=corp", "ldap-bind-pw": "secret:d0a1b2c3d4e5f6g7h8i9",
			"ldap-user-search-base-dn": "ou=people,dc=corp", "ldap-ca-cert": testCAPEMFixed(t), "main-team-ldap-group": "ci-admins",
			"oidc-issuer": "https://sso.corp", "oidc-client-id": "ci", "oidc-client-secret": "oidc-secret", "oidc-scope": "groups email",
			"encryption-key": "0123456789abcdef", "default-build-logs-to-retain": json.Number("20"), "gc-failed-grace-period": "48h",
			"http-proxy": "http://proxy.corp:3128", "no-proxy": "localhost,.corp", "worker-procs": json.Number("4"),
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Render(&out, RenderInput{Config: c.config, Leader: c.leader, Unit: "concourse-ci-machine/10",
				Address: "10.0.0.5", TSAHosts: c.tsa, Paths: paths, DBHost: "10.0.0.9", DBPort: 5432})
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "render", c.name+".golden")
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestRenderGolden -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("render differs from %s:\n--- got\n%s\n--- want\n%s", golden, out.Bytes(), want)
			}
		})
	}
}

// fixture is a file of testdata/render.
func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "render", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRenderShowsNoSecret: what `render` prints (to terminals, tickets, pastebins) carries no
// secret option's value, only which option it comes from.
func TestRenderShowsNoSecret(t *testing.T) {
	secrets := map[string]any{"ldap-bind-pw": "bind-pw-123", "oidc-client-secret": "oidc-secret-456",
		"encryption-key": "0123456789abcdef", "vault-client-token": "s.token-789", "extra-local-users": "alice:alice-pw-0"}
	cfg := map[string]any{"mode": "web", "version": "8.2.5", "ldap-host": "ldap.corp:636", "ldap-bind-dn": "cn=ro,dc=corp",
		"ldap-user-search-base-dn": "ou=people,dc=corp", "oidc-issuer": "https://sso.corp", "oidc-client-id": "ci",
		"vault-url": "https://vault.corp:8200", "vault-client-key": fixture(t, "vault-client-key.pem"), "vault-client-cert": fixture(t, "vault-client.pem")}
	for k, v := range secrets {
		cfg[k] = v
	}
	var out bytes.Buffer
	if err := Render(&out, RenderInput{Config: cfg, Leader: true, Unit: "concourse-ci-machine/0", Address: "10.0.0.5",
		Paths: DefaultPaths(), DBHost: "10.0.0.9", DBPort: 5432}); err != nil {
		t.Fatal(err)
	}
	for name, v := range secrets {
		if s := v.(string); strings.Contains(out.String(), s[len(s)-6:]) {
			t.Errorf("render printed (part of) %s's value:\n%s", name, out.String())
		}
	}
	if key := fixture(t, "vault-client-key.pem"); strings.Contains(out.String(), strings.Split(key, "\n")[1]) {
		t.Errorf("render printed the vault client key")
	}
	for _, want := range []string{"<ldap-bind-pw, not shown>", "<oidc-client-secret, not shown>", "<encryption-key, not shown>", "<vault-client-token, not shown>"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("render lacks %q", want)
		}
	}
}
