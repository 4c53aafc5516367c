package hooks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// drainSkipping runs the queued hooks of our application's units; the stand-in providers'
// units have no charm code.
func (w *world) drainSkipping(t *testing.T, apps ...string) {
	t.Helper()
	for i := 0; len(w.queue) > 0; i++ {
		if i > 200 {
			t.Fatalf("hooks do not settle: %v", w.queue)
		}
		ev := w.queue[0]
		w.queue = w.queue[1:]
		if !strings.HasPrefix(ev.Unit, app+"/") {
			continue
		}
		if err := w.hook(ev.Unit, ev.HookInfo); err != nil {
			t.Fatalf("%s: %v\n%s", ev, err, w.stderr.String())
		}
	}
}

// The vault-kv relation with a stand-in Vault provider answering as the Vault charm does:
// the leader asks for a mount, the web unit publishes its nonce and egress subnets, and once the
// provider lists AppRole credentials for that nonce the web gets them in web.env only (never
// argv, the unit file, a status or a log). A rotation re-renders and restarts the web once; the
// relation's end removes every Vault variable and file. A steady hook costs a fixed number of
// hook-tool calls, the workers only one relation-ids fewer than nothing.
func TestVaultKVRelation(t *testing.T) {
	w := newWorld(t, 2, pinned)
	w.deploy()
	w.addPostgres()
	w.m.AddApp("vault", jujutest.AppMeta{Provides: map[string]string{"vault-kv": "vault-kv"}}, nil)
	vu := w.m.AddUnit("vault")
	id := w.m.Relate(app, "vault-kv", "vault", "vault-kv")
	for _, u := range w.m.Units(app) {
		w.mustHookRel(u, "vault-kv-relation-created", id, "")
	}
	w.queue = append(w.queue, w.m.JoinEvents(id, vu)...)
	w.drainSkipping(t)

	if got := w.m.AppData(id, app)["mount_suffix"]; got != "concourse" {
		t.Errorf("mount_suffix = %q; want concourse", got)
	}
	bag := w.m.UnitData(id, u0)
	nonce := bag["nonce"]
	if len(nonce) != 32 || bag["egress_subnet"] != "127.0.2.10/32" {
		t.Fatalf("web unit bag = %v; want a 32-hex nonce and egress_subnet 127.0.2.10/32", bag)
	}
	if wb := w.m.UnitData(id, u1); wb["nonce"] != "" {
		t.Errorf("the worker published a nonce %v: workers need no Vault", wb)
	}
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080; waiting for Vault credentials on the vault-kv relation")

	const secretID, rotated = "first-s3cret-id-0123", "second-s3cret-id-4567"
	uri := w.m.AddSecret("vault", map[string]string{"role-id": "role-abc", "role-secret-id": secretID}, "")
	w.m.GrantSecret(uri, id, "")
	creds, _ := json.Marshal(map[string]string{nonce: uri})
	ca := testCAPEMFixed(t)
	w.queue = append(w.queue, w.m.SetAppData(id, "vault", map[string]string{
		"vault_url": "https://127.0.0.1:8200", "ca_certificate": ca, "mount": "charm-concourse-ci-machine-concourse", "credentials": string(creds),
	})...)
	starts := w.svcs[u0].count("restart "+webService) + w.svcs[u0].count("start "+webService)
	w.drainSkipping(t)
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	env, err := concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv)))
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(w.paths(u0).ConfigDir, "vault/ca.pem")
	want := map[string]string{
		"CONCOURSE_VAULT_URL": "https://127.0.0.1:8200", "CONCOURSE_VAULT_AUTH_BACKEND": "approle",
		"CONCOURSE_VAULT_AUTH_PARAM":  "role_id:role-abc,secret_id:" + secretID,
		"CONCOURSE_VAULT_PATH_PREFIX": "/charm-concourse-ci-machine-concourse", "CONCOURSE_VAULT_CA_CERT": caPath,
		"CONCOURSE_VAULT_ENABLE_KV_MOUNT_CACHE": "true", "CONCOURSE_SECRET_CACHE_ENABLED": "true",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("web.env %s = %q; want %q", k, env[k], v)
		}
	}
	if b, err := os.ReadFile(caPath); err != nil || string(b) != ca {
		t.Errorf("Vault CA file: %v; content matches: %t", err, string(b) == ca)
	}
	if got := w.svcs[u0].count("restart "+webService) + w.svcs[u0].count("start "+webService); got != starts+1 {
		t.Errorf("the credentials (re)started the web %d times; want once", got-starts)
	}
	noSecret := func(s string) {
		t.Helper()
		unitFile, _ := os.ReadFile(filepath.Join(w.paths(u0).SystemdDir, webService))
		var logs strings.Builder
		for _, l := range w.m.Logs(u0) {
			logs.WriteString(l.Message + "\n")
		}
		for what, text := range map[string]string{"unit file": string(unitFile), "status": w.status(u0), "juju-log": logs.String(), "stderr": w.stderr.String()} {
			if strings.Contains(text, s) {
				t.Errorf("the %s shows the Vault secret id", what)
			}
		}
	}
	noSecret(secretID)
	if wenv := w.readFile(u1, fileWorkerEnv); strings.Contains(wenv, "VAULT") {
		t.Errorf("worker.env has Vault settings")
	}

	// A steady hook: a fixed number of calls (15 without Vault, the vault-kv relation-ids among
	// them; three more with it: network-get for the egress subnets, the provider's app bag, the
	// credentials).
	var calls []string
	w.wrap = func(unit string, r juju.Runner) juju.Runner { calls = nil; return recorder{r: r, calls: &calls} }
	w.mustHook(u0, "update-status")
	if len(calls) != 18 {
		t.Errorf("steady update-status with vault-kv: %d hook-tool calls; want 18: %q", len(calls), calls)
	}
	w.mustHook(u1, "update-status")
	for _, c := range calls {
		if strings.Contains(c, "vault-kv") || strings.HasPrefix(c, "secret-get") {
			t.Errorf("a worker's hook makes %q: workers need no Vault", c)
		}
	}
	w.wrap = nil

	// Rotation: the provider updates the secret in place; secret-changed re-renders, one restart.
	starts = w.svcs[u0].count("restart "+webService) + w.svcs[u0].count("start "+webService)
	w.queue = append(w.queue, w.m.UpdateSecret(uri, map[string]string{"role-id": "role-abc", "role-secret-id": rotated})...)
	w.drainSkipping(t)
	w.mustHook(u0, "update-status")
	env, _ = concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv)))
	if env["CONCOURSE_VAULT_AUTH_PARAM"] != "role_id:role-abc,secret_id:"+rotated {
		t.Errorf("after the rotation CONCOURSE_VAULT_AUTH_PARAM = %q", env["CONCOURSE_VAULT_AUTH_PARAM"])
	}
	if got := w.svcs[u0].count("restart "+webService) + w.svcs[u0].count("start "+webService); got != starts+1 {
		t.Errorf("the rotation (re)started the web %d times; want once", got-starts)
	}
	noSecret(rotated)

	// The relation ends: every Vault variable and file goes.
	w.queue = append(w.queue, w.m.RemoveRelation(id)...)
	w.drainSkipping(t)
	text := w.readFile(u0, fileWebEnv)
	if strings.Contains(text, "CONCOURSE_VAULT_") {
		t.Errorf("web.env keeps Vault settings after the relation is gone:\n%s", text)
	}
	if _, err := os.Stat(caPath); !os.IsNotExist(err) {
		t.Errorf("the Vault CA file stays: %v", err)
	}
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
}

// Each Vault and worker option: what is refused, with a status naming the option and never a
// secret, and what goes through.
func TestVaultAndWorkerOptionValidation(t *testing.T) {
	t.Parallel()
	ca := testCAPEMFixed(t)
	cases := []configCase{
		{"Vault by token", map[string]any{"vault-url": "https://vault:8200", "vault-client-token": "hvs.abc"}, ""},
		{"Vault URL with a path", map[string]any{"vault-url": "https://vault:8200/v1"}, `invalid vault-url "https://vault:8200/v1": expected the Vault server's URL`},
		{"auth backend with a space", map[string]any{"vault-auth-backend": "app role"}, `invalid vault-auth-backend "app role": expected one word`},
		{"max TTL not a duration", map[string]any{"vault-auth-backend-max-ttl": "an hour"}, `invalid vault-auth-backend-max-ttl "an hour": expected a positive Go duration`},
		{"auth param without a colon, hidden", map[string]any{"vault-auth-param": "role_id:r,hunter2"}, `invalid vault-auth-param "(hidden)": expected comma-separated name:value pairs`},
		{"auth param as a secret URI", map[string]any{"vault-auth-param": "secret:d0a1b2c3d4e5f6g7h8i9"}, ""},
		{"CA not PEM", map[string]any{"vault-ca-cert": "hello"}, `invalid vault-ca-cert "hello": expected PEM certificates`},
		{"CA as PEM", map[string]any{"vault-ca-cert": ca}, ""},
		{"CA as a path", map[string]any{"vault-ca-cert": "/etc/ssl/vault.pem"}, ""},
		{"client cert neither PEM nor path", map[string]any{"vault-client-cert": "cert.pem"}, `invalid vault-client-cert "cert.pem": expected PEM`},
		{"client key hidden", map[string]any{"vault-client-key": "hunter2"}, `invalid vault-client-key "(hidden)": expected PEM`},
		{"client token with a space", map[string]any{"vault-client-token": "hunter2 x"}, `invalid vault-client-token "(hidden)"`},
		{"lookup template without the secret", map[string]any{"vault-lookup-templates": "/{{.Team}}/x"}, `invalid vault-lookup-templates "/{{.Team}}/x": each template starts with /`},
		{"lookup templates", map[string]any{"vault-lookup-templates": "/{{.Team}}/{{.Secret}}, /shared/{{.Secret}}"}, ""},
		{"namespace with a comma", map[string]any{"vault-namespace": "a,b"}, `invalid vault-namespace "a,b"`},
		{"path prefix with a space", map[string]any{"vault-path-prefix": "/con course"}, `invalid vault-path-prefix "/con course"`},
		{"shared path with a tab", map[string]any{"vault-shared-path": "sh\tared"}, `invalid vault-shared-path`},
		{"KV mount cache not a boolean", map[string]any{"vault-enable-kv-mount-cache": "maybe"}, `invalid vault-enable-kv-mount-cache "maybe": expected true or false`},
		{"secret cache not a boolean", map[string]any{"secret-cache-enabled": "sometimes"}, `invalid secret-cache-enabled "sometimes": expected true or false`},
		{"secret cache duration", map[string]any{"secret-cache-duration": "five minutes"}, `invalid secret-cache-duration "five minutes": expected a positive Go duration`},
		{"secret cache not-found duration", map[string]any{"secret-cache-duration-notfound": "-1m"}, `invalid secret-cache-duration-notfound "-1m"`},
		{"baggageclaim driver", map[string]any{"worker-baggageclaim-driver": "zfs"}, `invalid worker-baggageclaim-driver "zfs": allowed values are naive, overlay, btrfs, detect`},
		{"baggageclaim overlay", map[string]any{"worker-baggageclaim-driver": "overlay"}, ""},
		{"max containers negative", map[string]any{"worker-max-containers": json.Number("-3")}, `invalid worker-max-containers "-3": expected a whole number, 0 or more`},
		{"team with a slash", map[string]any{"worker-team": "a/b"}, `invalid worker-team "a/b": expected a team name`},
		{"ephemeral not a boolean", map[string]any{"worker-ephemeral": "soon"}, `invalid worker-ephemeral "soon": expected true or false`},
		{"extra worker flag the charm sets", map[string]any{"extra-worker-flags": "--baggageclaim-driver=btrfs"}, `invalid extra-worker-flags "--baggageclaim-driver": the charm sets --baggageclaim-driver itself: use the worker-baggageclaim-driver option`},
		{"extra worker flag of the other runtime's limit", map[string]any{"extra-worker-flags": "--garden-max-containers=5"}, `use the worker-max-containers option`},
		{"extra worker flag with a secret", map[string]any{"extra-worker-flags": "--garden-password=hunter2"}, `invalid extra-worker-flags "--garden-password": --garden-password carries a secret`},
		{"extra worker flag with a secret, unbalanced quote", map[string]any{"extra-worker-flags": `--tsa-worker-private-key='hunter2`}, `invalid extra-worker-flags "--tsa-worker-private-key"`},
		{"extra worker env form", map[string]any{"extra-worker-flags": "CONCOURSE_GARDEN_NETWORK_POOL=10.80.0.0/16"}, `environment variables are not accepted here`},
		{"extra worker flags", map[string]any{"extra-worker-flags": `--garden-network-pool=10.80.0.0/16 --baggageclaim-log-level debug`}, ""},
		{"Vault flag in extra-web-flags", map[string]any{"extra-web-flags": "--vault-url=https://v:8200"}, `the charm sets --vault-url itself: use the vault-* options or the vault-kv relation`},
	}
	runConfigCases(t, cases)
}

// Rules the web checks when it renders: Vault options without a Vault do nothing, so they are
// refused; the relation shadows the options that say where Vault is, and says so.
func TestWebVaultRules(t *testing.T) {
	t.Parallel()
	p := Paths{ConfigDir: "/etc/concourse"}
	cfg, err := parseConfig(map[string]any{"vault-shared-path": "shared", "vault-client-token": "hvs.hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := webVault(cfg, p); err == nil || !strings.Contains(err.Error(), "invalid vault-client-token \"(hidden)\": is set but no Vault is") {
		t.Errorf("Vault options without vault-url: %v; want refused naming the first option, hidden", err)
	}
	cfg.Opts["vault-url"] = "https://other:8200"
	kv := concourse.AppRoleVault("https://vault:8200", "", "charm-x-concourse", "r", "s")
	cfg.vaultKV = &kv
	env, _, shadowed, err := webVault(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range env {
		got[e.Name] = e.Value
	}
	if got["CONCOURSE_VAULT_URL"] != "https://vault:8200" || got["CONCOURSE_VAULT_CLIENT_TOKEN"] != "" || got["CONCOURSE_VAULT_SHARED_PATH"] != "shared" {
		t.Errorf("with the relation: %v; want the relation's URL and AppRole, the shared path kept", got)
	}
	if strings.Join(shadowed, ",") != "vault-url,vault-client-token" {
		t.Errorf("shadowed = %v; want vault-url, vault-client-token", shadowed)
	}
}
