package concourse

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/vaulttest"
)

// vaultMount is the mount the Vault charm makes for this application: charm-<app>-<suffix>.
const vaultMount = "charm-concourse-ci-machine-concourse"

// vaultPipeline prints ((greeting)) as it is (redacted when Concourse redacts secrets) and
// upper-cased, which redaction does not recognise, so the value shows in every version. On one
// line, then a pause: houdini was seen to drop a step's last output line when the process
// exited at once (2 builds of 6 here).
const vaultPipeline = `jobs:
- name: hello
  plan:
  - task: say
    config:
      platform: linux
      run:
        path: /bin/sh
        args: [-c, "echo got-((greeting)) upper-$(echo '((greeting))' | /usr/bin/tr a-z- A-Z_); sleep 1"]
`

// TestVaultCredentialsRealConcourse runs the real web of each version with the variables
// VaultEnv renders for what the vault-kv relation hands over (HTTPS with the relation's CA,
// AppRole role_id/secret_id, the prefix /<mount>) against the fake Vault, and a houdini
// worker: a pipeline's ((greeting)) resolves to the value the fake serves, after an AppRole
// login with the relation's ids and a KV v2 read at the first lookup template's path. Then the
// secret-id rotates: a web restarted with the old one is refused, one restarted with the new
// one logs in and the build sees the secret's new value.
func TestVaultCredentialsRealConcourse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Concourse web and worker processes")
	}
	set := realconcourse.Require(t)
	pg := pgtest.Start(t, pgtest.Options{})
	for i, version := range realconcourse.Versions() {
		t.Run(version, func(t *testing.T) {
			db := "atc" + strconv.Itoa(i)
			pg.CreateRole(t, db, "vault-db-pw-"+db)
			pg.CreateDatabase(t, db, db)
			runVaultScenario(t, set, version, DBConfig{Host: pg.Host(), Port: pg.Port(), User: db, Password: "vault-db-pw-" + db, Database: db})
		})
	}
}

func runVaultScenario(t *testing.T, set realconcourse.Set, version string, db DBConfig) {
	bin, flyBin := set.Concourse(version), set.Fly(version)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// A short token lease makes the web renew (lookup-self, renew-self) and log in again while
	// the test runs, as it does every 30 minutes with the Vault charm's 1h tokens.
	// It also requires a TLS client certificate (the vault-client-cert/-key options): a web
	// that did not present the rendered one would not get a single request through.
	fake := vaulttest.Start(t, vaulttest.Options{Mount: vaultMount, TLS: true, ClientCert: true, TokenTTL: 8 * time.Second})
	fake.Put("main/vault/greeting", map[string]any{"value": "hello-from-vault"})

	vaultVars := func(secretID string, customLookup bool) []string {
		cfg := AppRoleVault(fake.URL, string(fake.CACertPEM), vaultMount, fake.RoleID(), secretID)
		cfg.ClientCert, cfg.ClientKey = string(fake.ClientCertPEM), string(fake.ClientKeyPEM)
		cfg.Files = VaultFilePaths{
			CACert:     filepath.Join(dir, "vault-ca.pem"),
			ClientCert: filepath.Join(dir, "vault-client.pem"),
			ClientKey:  filepath.Join(dir, "vault-client-key.pem"),
		}
		cfg.KVMountCache = true
		if customLookup {
			cfg.LookupTemplates = []string{"/{{.Team}}/shared-{{.Secret}}", "/{{.Team}}/{{.Pipeline}}/{{.Secret}}"}
			cfg.SharedPath = "common"
		}
		r, err := VaultEnv(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Secret, []string{"CONCOURSE_VAULT_AUTH_PARAM"}) {
			t.Fatalf("secret variables = %v, want the auth params only", r.Secret)
		}
		if _, err := WriteVaultFiles(r, -1, -1); err != nil {
			t.Fatal(err)
		}
		cache, err := SecretCacheEnv(SecretCacheConfig{Enabled: true, Duration: 5 * time.Minute, NotFoundDuration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range append(r.Env, cache...) {
			out = append(out, v.Name+"="+v.Value)
		}
		return out
	}

	realweb.GenerateKeys(t, ctx, bin, dir)
	lb := realweb.NewLoopback(t)
	const adminPass = "vault-admin-pw"
	baseEnv := []string{
		"CONCOURSE_ADD_LOCAL_USER=admin:" + adminPass,
		"CONCOURSE_MAIN_TEAM_LOCAL_USER=admin",
		"CONCOURSE_SESSION_SIGNING_KEY=" + filepath.Join(dir, "session_signing_key"),
		"CONCOURSE_TSA_HOST_KEY=" + filepath.Join(dir, "tsa_host_key"),
		"CONCOURSE_TSA_AUTHORIZED_KEYS=" + filepath.Join(dir, "worker_key.pub"),
		"CONCOURSE_LOG_LEVEL=debug",
	}
	for _, v := range db.Env() {
		baseEnv = append(baseEnv, v.Name+"="+v.Value)
	}
	baseEnv = append(baseEnv, lb.WebEnv(t)...)
	startWeb := func(name string, vault []string) *realweb.Child {
		env := append(slices.Clone(baseEnv), vault...)
		return realweb.Start(t, bin, []string{"web"}, env, filepath.Join(dir, name+".log"))
	}

	web := startWeb("web", vaultVars(fake.SecretID(), false))
	realweb.WaitInfo(t, ctx, web, lb.URL)
	fly := realweb.NewFly(t, flyBin, dir)
	if out, err := fly.Run(ctx, "login", "-c", lb.URL, "-u", "admin", "-p", adminPass); err != nil {
		t.Fatalf("fly login: %v\n%s\n%s", err, out, web.LogTail())
	}
	pipeline := filepath.Join(dir, "pipeline.yml")
	if err := os.WriteFile(pipeline, []byte(vaultPipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"set-pipeline", "-n", "-p", "vault", "-c", pipeline},
		{"unpause-pipeline", "-p", "vault"},
	} {
		if out, err := fly.Run(ctx, args...); err != nil {
			t.Fatalf("fly %s: %v\n%s\n%s", args[0], err, out, web.LogTail())
		}
	}
	worker := vaultHoudiniWorker(t, bin, dir, lb.TSAPort)
	vaultWaitWorker(t, ctx, fly, worker, "vault-worker")

	start := time.Now()
	out, err := fly.Run(ctx, "trigger-job", "-j", "vault/hello", "-w")
	t.Logf("%s build: %s", version, time.Since(start).Round(time.Millisecond))
	if err != nil || !strings.Contains(out, "upper-HELLO_FROM_VAULT") {
		t.Fatalf("fly trigger-job -w: %v\n%s\nvault requests: %+v\nweb:\n%s", err, out, fake.Requests(), web.LogTail())
	}
	// 7.14 redacts only with --enable-redact-secrets (off by default); 8.x always redacts.
	wantPlain := strings.HasPrefix(version, "7.")
	if got := strings.Contains(out, "got-hello-from-vault"); got != wantPlain {
		t.Errorf("%s: the secret shows in the build output: %v, want %v\n%s", version, got, wantPlain, out)
	}
	if !wantPlain && !strings.Contains(out, "got-((redacted))") {
		t.Errorf("%s: want the secret redacted in the build output:\n%s", version, out)
	}
	logins := fake.Logins()
	if len(logins) == 0 || !logins[0].OK || logins[0].RoleID != fake.RoleID() || logins[0].SecretID != fake.SecretID() {
		t.Fatalf("AppRole logins = %+v; want one with role %s and the current secret id", logins, fake.RoleID())
	}
	// The first lookup template, /{{.Team}}/{{.Pipeline}}/{{.Secret}}, under the prefix.
	if reads := fake.Reads(); !slices.Contains(reads, "main/vault/greeting") {
		t.Fatalf("KV reads = %v; want main/vault/greeting", reads)
	}
	t.Logf("%s: Vault endpoints called: %s", version, vaultEndpoints(fake.Requests()))
	// The secret-id reaches the web through web.env only; the web's own log (debug level here)
	// must not show it, nor the secret's value.
	if b, err := os.ReadFile(web.Log); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(b), fake.SecretID()) || strings.Contains(string(b), "hello-from-vault") {
		t.Errorf("the web's log shows the secret id or the secret's value")
	}

	// Rotation: the Vault charm replaces the unit's secret-id (and its old tokens expire).
	web.Stop(t)
	oldID := fake.SecretID()
	newID := fake.RotateSecretID()
	fake.RevokeTokens()
	// The new value lives only under the shared path, which the restarted web's custom lookup
	// templates reach last: that checks the comma-joined templates and the shared path too.
	fake.Delete("main/vault/greeting")
	fake.Put("common/greeting", map[string]any{"value": "rotated-value"})

	stale := startWeb("web-stale", vaultVars(oldID, false))
	realweb.WaitFor(t, ctx, stale, 90*time.Second, "a login with the old secret id", func() error {
		for _, l := range fake.Logins()[len(logins):] {
			if l.SecretID == oldID && !l.OK {
				return nil
			}
		}
		return fmt.Errorf("no refused login yet")
	})
	stale.Stop(t)

	before, readsBefore, reqsBefore := len(fake.Logins()), len(fake.Reads()), len(fake.Requests())
	web = startWeb("web-rotated", vaultVars(newID, true))
	realweb.WaitInfo(t, ctx, web, lb.URL)
	vaultWaitWorker(t, ctx, fly, worker, "vault-worker")
	out, err = fly.Run(ctx, "trigger-job", "-j", "vault/hello", "-w")
	if err != nil || !strings.Contains(out, "upper-ROTATED_VALUE") {
		t.Fatalf("after rotation: fly trigger-job -w: %v\n%s\nweb:\n%s", err, out, web.LogTail())
	}
	var ok bool
	for _, l := range fake.Logins()[before:] {
		if l.SecretID == oldID {
			t.Errorf("the web restarted with the new secret id logged in with the old one")
		}
		ok = ok || (l.OK && l.SecretID == newID)
	}
	if !ok {
		t.Fatalf("no successful login with the new secret id: %+v", fake.Logins()[before:])
	}
	want := []string{"main/shared-greeting", "main/vault/greeting", "common/greeting"}
	if reads := fake.Reads()[readsBefore:]; !slices.Equal(reads, want) {
		t.Errorf("KV reads with the custom templates and the shared path = %v, want %v", reads, want)
	}
	// CONCOURSE_VAULT_ENABLE_KV_MOUNT_CACHE (rendered for both): 8.2 asks for the mount's KV
	// version once, 7.14 ignores the variable and asks before every read.
	preflights := 0
	for _, r := range fake.Requests()[reqsBefore:] {
		if strings.HasPrefix(r.Path, "/v1/sys/internal/ui/mounts/") {
			preflights++
		}
	}
	wantPreflights := 1
	if strings.HasPrefix(version, "7.") {
		wantPreflights = len(want)
	}
	if preflights != wantPreflights {
		t.Errorf("%s made %d KV version preflights for %d reads, want %d", version, preflights, len(want), wantPreflights)
	}
}

// vaultEndpoints summarises the requests as "METHOD path → status" with KV paths kept whole.
func vaultEndpoints(reqs []vaulttest.Request) string {
	var out []string
	for _, r := range reqs {
		e := fmt.Sprintf("%s %s → %d", r.Method, r.Path, r.Status)
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return strings.Join(out, "; ")
}

// vaultHoudiniWorker runs a houdini worker registering with the web's TSA on tsaPort.
func vaultHoudiniWorker(t *testing.T, bin, dir string, tsaPort int) *realweb.Child {
	return realweb.StartHoudiniWorker(t, bin, "vault-worker", dir, tsaPort, filepath.Join(dir, "worker"), filepath.Join(dir, "worker.log"))
}

func vaultWaitWorker(t *testing.T, ctx context.Context, fly realweb.Fly, worker *realweb.Child, name string) {
	t.Helper()
	realweb.WaitFor(t, ctx, worker, 90*time.Second, "the worker to be running", func() error {
		out, err := fly.Run(ctx, "workers")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == name && strings.Contains(line, "running") {
				return nil
			}
		}
		return fmt.Errorf("fly workers: %s", strings.TrimSpace(out))
	})
}
