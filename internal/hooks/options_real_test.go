package hooks

import (
	"context"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/ldaptest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// realWeb runs the real `concourse web` on what the charm renders for raw (renderWeb, the
// option table, the CA files, bcrypt through the hooks' reusing hasher), with only its listeners
// moved to loopback ports.
type realWeb struct {
	t      *testing.T
	bin    string
	dir    string // the unit's ConfigDir
	db     concourse.DBConfig
	lb     realweb.Loopback
	admin  string
	web    *realweb.Child
	starts int
}

func newRealWeb(t *testing.T, bin string, db concourse.DBConfig) *realWeb {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	realweb.GenerateKeys(t, context.Background(), bin, filepath.Join(dir, "keys"))
	pub, err := os.ReadFile(filepath.Join(dir, "keys", "worker_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keyAuthorized), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return &realWeb{t: t, bin: bin, dir: dir, db: db, lb: realweb.NewLoopback(t), admin: "admin-pw-real-1"}
}

// start renders raw as a unit would, writes web.env and the option files, and starts the web;
// it returns the rendered web.env.
func (r *realWeb) start(ctx context.Context, raw map[string]any) string {
	t := r.t
	t.Helper()
	cfg, err := parseConfig(raw)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	cfg.hashPassword = reusingHasher(filepath.Join(r.dir, fileWebEnv), filepath.Join(r.dir, fileHashChecks)).hash
	p := Paths{ConfigDir: r.dir}
	env, envFile, _, err := renderWeb(cfg, p, "127.0.0.1", r.bin, r.admin, r.db)
	if err != nil {
		t.Fatalf("renderWeb: %v", err)
	}
	for _, f := range webOptionFiles(cfg.Opts, p) {
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.Path, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r.dir, fileWebEnv), envFile, 0o600); err != nil {
		t.Fatal(err)
	}
	vars := append(envListOf(env), r.lb.WebEnv(t)...)
	vars = append(vars, "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	r.starts++
	r.web = realweb.Start(t, r.bin, append([]string{"web"}, cfg.ExtraWebFlags...), vars, filepath.Join(r.dir, fmt.Sprintf("web-%d.log", r.starts)))
	realweb.WaitInfo(t, ctx, r.web, r.lb.URL)
	return string(envFile)
}

func (r *realWeb) stop() { r.web.Stop(r.t) }

func realDB(t *testing.T) concourse.DBConfig {
	pg := pgtest.Start(t, pgtest.Options{})
	pg.CreateRole(t, "concourse", "concourse-db-pw")
	pg.CreateDatabase(t, "concourse", "concourse")
	return concourse.DBConfig{Host: pg.Host(), Port: pg.Port(), User: "concourse", Password: "concourse-db-pw", Database: "concourse"}
}

// fakeOIDC is an OIDC issuer over TLS on loopback: enough discovery for dex to open the
// connector. It counts the discovery requests (dex makes them through oidc-ca-cert's file).
func fakeOIDC(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(nil)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		base := "https://" + req.Host
		switch req.URL.Path {
		case "/.well-known/openid-configuration":
			hits.Add(1)
			json.NewEncoder(w).Encode(map[string]any{
				"issuer": base, "authorization_endpoint": base + "/authorize", "token_endpoint": base + "/token",
				"jwks_uri": base + "/keys", "userinfo_endpoint": base + "/userinfo",
				"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
				"id_token_signing_alg_values_supported": []string{"RS256"},
			})
		case "/keys":
			w.Write([]byte(`{"keys":[]}`))
		default:
			http.NotFound(w, req)
		}
	})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &hits
}

// The Done-when of issue 9, logins: local users from extra-local-users log in with fly, an LDAP
// user logs in through the real slapd and lands in the main team through main-team-ldap-group,
// and the OIDC and OAuth connectors are offered with the rendered settings; retention, GC and
// proxy settings are accepted by the same web. Passwords reach web.env only as bcrypt hashes.
func TestRealWebLoginOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real Concourse web, PostgreSQL and slapd")
	}
	set := realconcourse.Require(t)
	for _, v := range realconcourse.Versions() {
		t.Run(v, func(t *testing.T) { testRealWebLoginOptions(t, set, v) })
	}
}

func testRealWebLoginOptions(t *testing.T, set realconcourse.Set, version string) {
	ldap := ldaptest.Start(t, []ldaptest.User{
		{UID: "carol", Password: "carol-ldap-pw", Mail: "carol@example.org", Name: "Carol Admin", Groups: []string{"ci-admins"}},
		{UID: "dave", Password: "dave-ldap-pw", Mail: "dave@example.org", Name: "Dave Outsider"},
	})
	oidc, oidcHits := fakeOIDC(t)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: oidc.Certificate().Raw}))
	bobHash, err := concourse.HashPassword("bob-pw-2")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newRealWeb(t, set.Concourse(version), realDB(t))
	raw := map[string]any{
		"mode": "web", "version": version,
		"extra-local-users":    "alice:alice-pw-1,bob:" + bobHash,
		"main-team-local-user": "alice, bob",
		// LDAP against the test's slapd, plain LDAP on loopback.
		"ldap-display-name": "Corp LDAP", "ldap-host": ldap.Host, "ldap-insecure-no-ssl": true,
		"ldap-bind-dn": ldap.BindDN, "ldap-bind-pw": ldap.BindPW,
		"ldap-user-search-base-dn": ldap.PeopleDN, "ldap-user-search-username": "uid",
		"ldap-user-search-id-attr": "uid", "ldap-user-search-email-attr": "mail", "ldap-user-search-name-attr": "cn",
		"ldap-user-search-filter":   "(objectClass=person)",
		"ldap-group-search-base-dn": ldap.GroupsDN, "ldap-group-search-name-attr": "cn",
		"ldap-group-search-user-attr": "uid", "ldap-group-search-group-attr": "memberUid",
		"ldap-group-search-filter": "(objectClass=posixGroup)", "main-team-ldap-group": "ci-admins",
		// OIDC, discovered over TLS through the CA written from oidc-ca-cert.
		"oidc-display-name": "Corp SSO", "oidc-issuer": oidc.URL, "oidc-client-id": "ci-oidc-client",
		"oidc-client-secret": "oidc-secret-xyz", "oidc-scope": "groups offline_access", "oidc-ca-cert": caPEM,
		"oidc-user-name-key": "preferred_username", "main-team-oidc-group": "sso-admins",
		// Generic OAuth; its provider is only contacted at login.
		"oauth-display-name": "Corp OAuth", "oauth-client-id": "ci-oauth-client", "oauth-client-secret": "oauth-secret-xyz",
		"oauth-auth-url": "https://oauth.example.invalid/authorize", "oauth-token-url": "https://oauth.example.invalid/token",
		"oauth-userinfo-url": "https://oauth.example.invalid/userinfo", "oauth-scope": "read,write",
		"oauth-ca-cert": caPEM, "oauth-skip-ssl-validation": true, "main-team-oauth-user": "erin",
		// Retention, GC and the services' proxies.
		"default-build-logs-to-retain": json.Number("10"), "max-build-logs-to-retain": json.Number("100"),
		"default-days-to-retain-build-logs": json.Number("7"), "max-days-to-retain-build-logs": json.Number("30"),
		"gc-failed-grace-period": "1h", "http-proxy": "http://127.0.0.1:9", "https-proxy": "http://127.0.0.1:9",
		"no-proxy":     "127.0.0.1,localhost,.example.invalid",
		"worker-procs": json.Number("4"), "max-concurrent-downloads": json.Number("3"),
	}
	envFile := r.start(ctx, raw)
	for _, secret := range []string{"alice-pw-1", r.admin} {
		if strings.Contains(envFile, secret) {
			t.Errorf("web.env holds a local user's password in plain text")
		}
	}
	if !webEnvHasLocalUser(t, envFile, "alice", "alice-pw-1") || !webEnvHasLocalUser(t, envFile, "admin", r.admin) {
		t.Errorf("web.env lacks the hashed local users:\n%s", envFile)
	}
	if env, _ := concourse.ParseEnvFile([]byte(envFile)); !strings.Contains(env["CONCOURSE_ADD_LOCAL_USER"], ",bob:"+bobHash) {
		t.Errorf("bob's given bcrypt hash is not passed through: %s", env["CONCOURSE_ADD_LOCAL_USER"])
	}
	if oidcHits.Load() == 0 {
		t.Errorf("the web never read the OIDC discovery document")
	}

	fly := realweb.NewFly(t, set.Fly(version), r.dir)
	for user, pw := range map[string]string{"admin": r.admin, "alice": "alice-pw-1", "bob": "bob-pw-2"} {
		if out, err := fly.Run(ctx, "login", "-c", r.lb.URL, "-n", "main", "-u", user, "-p", pw); err != nil {
			t.Errorf("fly login as %s: %v\n%s\n%s", user, err, out, r.web.LogTail())
		}
	}

	b := realweb.NewBrowser(r.lb.URL)
	conns, err := b.Connectors()
	if err != nil {
		t.Fatalf("%v\n%s", err, r.web.LogTail())
	}
	for _, c := range []string{"local", "ldap", "oidc", "oauth"} {
		if conns[c] == "" {
			t.Errorf("connector %s not offered; have %v", c, conns)
		}
	}
	_, _, page, _ := b.Get("/sky/login")
	for _, name := range []string{"Corp LDAP", "Corp SSO", "Corp OAuth"} {
		if !strings.Contains(page, name) {
			t.Errorf("the login page does not show %q", name)
		}
	}
	// OIDC and OAuth send the browser to the provider with the rendered client and scopes.
	for c, want := range map[string][]string{
		"oidc":  {oidc.URL + "/authorize?", "client_id=ci-oidc-client", "groups", "offline_access"},
		"oauth": {"https://oauth.example.invalid/authorize?", "client_id=ci-oauth-client", "scope=read+write"},
	} {
		loc, status, body, err := realweb.NewBrowser(r.lb.URL).Get(conns[c])
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(loc.String(), w) {
				t.Errorf("%s login goes to %s (status %d), want it to contain %q\n%s", c, loc, status, w, body)
			}
		}
	}
	// LDAP: carol (in ci-admins) gets the main team; dave logs in but is in no team.
	info, err := realweb.NewBrowser(r.lb.URL).PasswordLogin("ldap", "carol", "carol-ldap-pw")
	if err != nil {
		t.Fatalf("LDAP login as carol: %v\n%s", err, r.web.LogTail())
	}
	if !strings.Contains(info, `"user_id":"carol"`) || !strings.Contains(info, `"connector":"ldap"`) || !strings.Contains(info, `"teams":{"main":["owner"]}`) {
		t.Errorf("carol's /api/v1/user = %s; want user carol in team main", info)
	}
	if info, err := realweb.NewBrowser(r.lb.URL).PasswordLogin("ldap", "dave", "wrong-pw"); err == nil {
		t.Errorf("LDAP login with a wrong password succeeded: %s", info)
	}
	t.Logf("carol through LDAP: %s", info)

	// A second render keeps the hashes (no restart from a fresh salt).
	cfg, _ := parseConfig(raw)
	cfg.hashPassword = reusingHasher(filepath.Join(r.dir, fileWebEnv), filepath.Join(r.dir, fileHashChecks)).hash
	_, again, _, err := renderWeb(cfg, Paths{ConfigDir: r.dir}, "127.0.0.1", r.bin, r.admin, r.db)
	if err != nil || string(again) != envFile {
		t.Errorf("a second render differs (err %v):\n%s\nvs\n%s", err, again, envFile)
	}
}

// Encryption at rest, with the real web: a pipeline set with fly survives restarts and a key
// rotation; the database holds it sealed (not JSON) and it opens with the key in use; the
// charm's check refuses the key changes the web could not read the database with.
func TestRealWebEncryptionKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real Concourse web and PostgreSQL")
	}
	set := realconcourse.Require(t)
	for _, v := range realconcourse.Versions() {
		t.Run(v, func(t *testing.T) { testRealWebEncryptionKeys(t, set, v) })
	}
}

func testRealWebEncryptionKeys(t *testing.T, set realconcourse.Set, version string) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	db := realDB(t)
	r := newRealWeb(t, set.Concourse(version), db)
	const k1, k2 = "0123456789abcdef", "fedcba9876543210FEDCBA9876543210"
	raw := func(kv ...string) map[string]any {
		m := map[string]any{"mode": "web", "version": version}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	fly := realweb.NewFly(t, set.Fly(version), r.dir)
	login := func() {
		t.Helper()
		if out, err := fly.Run(ctx, "login", "-c", r.lb.URL, "-u", "admin", "-p", r.admin); err != nil {
			t.Fatalf("fly login: %v\n%s\n%s", err, out, r.web.LogTail())
		}
	}
	pipelineIntact := func(when string) {
		t.Helper()
		out, err := fly.Run(ctx, "get-pipeline", "-p", "enc")
		if err != nil || !strings.Contains(out, "echo sealed-config-marker") {
			t.Fatalf("%s: fly get-pipeline: %v\n%s\n%s", when, err, out, r.web.LogTail())
		}
	}
	conn, err := sql.Open("postgres", db.DSN(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// jobsSealedWith says which key seals the jobs' configs: k, "" when plain JSON.
	jobsSealedWith := func(keys ...string) string {
		t.Helper()
		var config string
		var nonce sql.NullString
		if err := conn.QueryRowContext(ctx, `SELECT config, nonce FROM jobs WHERE name = 'hello'`).Scan(&config, &nonce); err != nil {
			t.Fatal(err)
		}
		if !nonce.Valid {
			if !json.Valid([]byte(config)) {
				t.Fatalf("a plain job config is not JSON: %.80s", config)
			}
			return ""
		}
		if json.Valid([]byte(config)) || strings.Contains(config, "sealed-config-marker") {
			t.Fatalf("the job config has a nonce but reads as plain text: %.80s", config)
		}
		for _, k := range keys {
			if plain, err := concourse.Decrypt(k, config, nonce.String); err == nil && strings.Contains(string(plain), "sealed-config-marker") {
				return k
			}
		}
		t.Fatalf("the job config opens with none of the keys")
		return ""
	}
	check := func(newKey, oldKey string) error {
		return concourse.CheckEncryptionKeys(ctx, db, newKey, oldKey, 10*time.Second)
	}

	r.start(ctx, raw("encryption-key", k1))
	login()
	pipeline := filepath.Join(r.dir, "pipeline.yml")
	os.WriteFile(pipeline, []byte("jobs:\n- name: hello\n  plan:\n  - task: say\n    config:\n      platform: linux\n      run: {path: /bin/sh, args: [-c, \"echo sealed-config-marker\"]}\n"), 0o644)
	if out, err := fly.Run(ctx, "set-pipeline", "-n", "-p", "enc", "-c", pipeline); err != nil {
		t.Fatalf("fly set-pipeline: %v\n%s", err, out)
	}
	if got := jobsSealedWith(k1, k2); got != k1 {
		t.Fatalf("after set-pipeline with encryption-key the job config is sealed with %q, want k1", got)
	}
	// The check samples every table Concourse seals (a nonce column): none may be missed.
	rows, err := conn.QueryContext(ctx, `SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'nonce' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var table string
		rows.Scan(&table)
		tables = append(tables, table)
	}
	rows.Close()
	for _, table := range tables {
		column, dex := concourse.EncryptedColumn(table)
		if dex {
			continue
		}
		var n int
		conn.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2`, table, column).Scan(&n)
		if column == "" || n != 1 {
			t.Errorf("Concourse %s seals table %s; CheckEncryptionKeys samples its column %q, which it does not have", version, table, column)
		}
	}
	r.stop()
	r.start(ctx, raw("encryption-key", k1))
	login()
	pipelineIntact("restart with the same key")

	// What the charm refuses, and what it lets through.
	var p *concourse.EncryptionProblem
	if err := check(k2, ""); !errors.As(err, &p) || p.NoKey {
		t.Errorf("a new key without the old one: %v; want refused", err)
	}
	if err := check("", ""); !errors.As(err, &p) || !p.NoKey {
		t.Errorf("no key on an encrypted database: %v; want refused (no key)", err)
	}
	for _, ok := range [][2]string{{k1, ""}, {k2, k1}, {"", k1}} {
		if err := check(ok[0], ok[1]); err != nil {
			t.Errorf("check(%q, %q) = %v; want accepted", ok[0], ok[1], err)
		}
	}

	// Rotation: the new key with the old one; the web re-encrypts at start, and starts again
	// with the same pair still set (operators clear old-encryption-key later).
	r.stop()
	r.start(ctx, raw("encryption-key", k2, "old-encryption-key", k1))
	login()
	pipelineIntact("rotation to k2")
	if got := jobsSealedWith(k1, k2); got != k2 {
		t.Fatalf("after the rotation the job config is sealed with the other key")
	}
	r.stop()
	r.start(ctx, raw("encryption-key", k2, "old-encryption-key", k1))
	login()
	pipelineIntact("restart with the rotation's pair still set")
	if err := check(k1, ""); !errors.As(err, &p) {
		t.Errorf("going back to k1 alone after the rotation: %v; want refused", err)
	}

	// Decryption: the old key alone.
	r.stop()
	r.start(ctx, raw("old-encryption-key", k2))
	login()
	pipelineIntact("decryption")
	if got := jobsSealedWith(k1, k2); got != "" {
		t.Fatalf("after decrypting, the job config is still sealed")
	}
	if err := check("", ""); err != nil {
		t.Errorf("no key on a decrypted database: %v; want accepted", err)
	}
	r.stop()
}
