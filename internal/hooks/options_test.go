package hooks

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

var updateConfig = flag.Bool("update-config", false, "rewrite config.yaml's generated section from the option table")

// configYAMLMarker starts the part of config.yaml written from optionTable.
const configYAMLMarker = "  # ---- Generated from internal/hooks/options.go (go test ./internal/hooks -run TestOptionTableMatchesConfigYAML -update-config); edit the table, not this.\n"

// handParsed are the options parseConfig checks by hand, outside the table.
var handParsed = []string{"mode", "version", "github-token", "release-url", "release-sha256", "shared-storage",
	"web-port", "external-url", "initial-admin-username", "log-level", "tag", "container-placement-strategy",
	"containerd-dns-proxy-enable", "containerd-dns-server", "worker-runtime", "enable-metrics", "extra-web-flags"}

type yamlOption struct {
	Type        string `yaml:"type"`
	Default     any    `yaml:"default"`
	Description string `yaml:"description"`
}

func readConfigYAML(t *testing.T) (map[string]yamlOption, []byte) {
	t.Helper()
	b, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Options map[string]yamlOption `yaml:"options"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return doc.Options, b
}

func defaultText(v any) string {
	switch d := v.(type) {
	case nil:
		return ""
	case string:
		return d
	default:
		return strings.TrimSpace(string(must(yaml.Marshal(d))))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func generatedYAML() []byte {
	var b bytes.Buffer
	b.WriteString(configYAMLMarker)
	for _, o := range optionTable() {
		y := yamlOption{Type: o.Type, Default: o.Default, Description: o.Doc}
		switch o.Type {
		case "int":
			y.Default = must(yamlInt(o.Default))
		case "boolean":
			y.Default = o.Default == "true"
		}
		var out bytes.Buffer
		enc := yaml.NewEncoder(&out)
		enc.SetIndent(2)
		if err := enc.Encode(map[string]yamlOption{o.Name: y}); err != nil {
			panic(err)
		}
		for _, line := range strings.SplitAfter(out.String(), "\n") {
			if line != "" {
				b.WriteString("  " + line)
			}
		}
	}
	return b.Bytes()
}

func yamlInt(s string) (int, error) {
	var n int
	err := yaml.Unmarshal([]byte(s), &n)
	return n, err
}

// config.yaml declares exactly the table's options (type, default, description) besides the
// hand-parsed ones, and nothing else.
func TestOptionTableMatchesConfigYAML(t *testing.T) {
	if *updateConfig {
		_, b := readConfigYAML(t)
		head, _, _ := bytes.Cut(b, []byte(configYAMLMarker))
		if err := os.WriteFile("../../config.yaml", append(head, generatedYAML()...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	declared, _ := readConfigYAML(t)
	table := optionsByName()
	if len(table) != len(optionTable()) {
		t.Fatal("the option table names an option twice")
	}
	for name, y := range declared {
		o, ok := table[name]
		if !ok {
			if !contains(handParsed, name) {
				t.Errorf("config.yaml declares %s, which neither the option table nor parseConfig handles", name)
			}
			continue
		}
		if y.Type != o.Type || defaultText(y.Default) != o.Default || strings.TrimSpace(y.Description) != o.Doc {
			t.Errorf("config.yaml %s = %s %q %q; the table says %s %q %q (run with -update-config)", name, y.Type, defaultText(y.Default), y.Description, o.Type, o.Default, o.Doc)
		}
	}
	for _, o := range optionTable() {
		if _, ok := declared[o.Name]; !ok {
			t.Errorf("the table's %s is not in config.yaml (run with -update-config)", o.Name)
		}
		if contains(handParsed, o.Name) {
			t.Errorf("%s is both in the table and parsed by hand", o.Name)
		}
		if o.Check == nil || o.Doc == "" {
			t.Errorf("%s has no check or no description", o.Name)
		}
	}
}

// Every option of the Python charm is declared with its type and default, except the ones issue
// 10 declares; the table marks exactly the Python ones as such.
func TestPythonOptionsDeclared(t *testing.T) {
	declared, _ := readConfigYAML(t)
	f, err := os.Open("testdata/python-options.tsv") // copy of ../shared/reference/python-options.tsv
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table := optionsByName()
	python := map[string]bool{}
	var missing []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "name\t") || line == "" {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 3 {
			t.Fatalf("python-options.tsv: %q is not name, type, default", line)
		}
		name, typ, def := fields[0], fields[1], fields[2]
		python[name] = true
		y, ok := declared[name]
		switch {
		case !ok:
			missing = append(missing, name)
			continue
		}
		if y.Type != typ || defaultText(y.Default) != def {
			t.Errorf("%s: config.yaml has %s %q, the Python charm %s %q", name, y.Type, defaultText(y.Default), typ, def)
		}
		if o, ok := table[name]; ok && !o.Python {
			t.Errorf("%s is a Python option; mark it Python in the table", name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("Python options not declared: %s", strings.Join(missing, ", "))
	}
	for _, o := range optionTable() {
		if o.Python && !python[o.Name] {
			t.Errorf("the table marks %s as a Python option; python-options.tsv has no such option", o.Name)
		}
	}
	if n := len(python); n != 87 {
		t.Errorf("%d Python options, want 87", n)
	}
}

// webEnvHasLocalUser says whether web.env lets user log in with password: its
// CONCOURSE_ADD_LOCAL_USER entry holds the bcrypt hash of it, never the password itself.
func webEnvHasLocalUser(t *testing.T, envFile, user, password string) bool {
	t.Helper()
	env, err := concourse.ParseEnvFile([]byte(envFile))
	if err != nil {
		t.Fatalf("web.env: %v", err)
	}
	for _, e := range strings.Split(env["CONCOURSE_ADD_LOCAL_USER"], ",") {
		name, h, _ := strings.Cut(e, ":")
		if name == user {
			if h == password {
				t.Errorf("web.env holds the password of %s in plain text", user)
			}
			return concourse.HashMatches(h, password)
		}
	}
	return false
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Each invalid value blocks with the option, the value (never a secret) and what is allowed.
func TestOptionValidation(t *testing.T) {
	t.Parallel()
	ldap := map[string]any{"ldap-host": "ldap.example.com", "ldap-bind-dn": "cn=ro,dc=example,dc=com", "ldap-bind-pw": "pw"}
	with := func(base map[string]any, kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []configCase{
		{"defaults", map[string]any{}, ""},
		{"LDAP complete", ldap, ""},
		{"LDAP without its bind password", with(ldap, "ldap-bind-pw", ""), `invalid ldap-bind-pw "": required when ldap-host is set (ldap-host turns ldap login on and needs ldap-host, ldap-bind-dn, ldap-bind-pw)`},
		{"LDAP option alone", map[string]any{"ldap-user-search-filter": "(objectClass=person)"}, `invalid ldap-host "": required when ldap-user-search-filter is set`},
		{"LDAP host with a scheme", with(ldap, "ldap-host", "ldap://ldap.example.com"), `invalid ldap-host "ldap://ldap.example.com": expected a host name or address with an optional port`},
		{"LDAP host with a port", with(ldap, "ldap-host", "10.0.0.7:389"), ""},
		{"LDAP filter unbalanced", with(ldap, "ldap-user-search-filter", "(objectClass=person"), `invalid ldap-user-search-filter "(objectClass=person": expected an LDAP filter`},
		{"LDAP filter two halves", with(ldap, "ldap-group-search-filter", "(a=b)(c=d)"), `invalid ldap-group-search-filter "(a=b)(c=d)"`},
		{"LDAP attribute with a space", with(ldap, "ldap-user-search-username", "user id"), `invalid ldap-user-search-username "user id": expected an LDAP attribute name`},
		{"LDAP DN without =", with(ldap, "ldap-user-search-base-dn", "people"), `invalid ldap-user-search-base-dn "people": expected an LDAP DN`},
		{"plain LDAP with StartTLS", with(ldap, "ldap-insecure-no-ssl", true, "ldap-start-tls", true), `invalid ldap-insecure-no-ssl "true": plain LDAP uses no TLS`},
		{"bind password hidden", with(ldap, "ldap-bind-pw", "hunter2\nx"), `invalid ldap-bind-pw "(hidden)": expected one line`},
		{"OAuth without URLs", map[string]any{"oauth-client-id": "ci", "oauth-client-secret": "s"}, `invalid oauth-auth-url "": required when oauth-client-id is set`},
		{"OAuth URL not http", map[string]any{"oauth-auth-url": "ftp://x/y"}, `invalid oauth-auth-url "ftp://x/y": expected an absolute http(s) URL`},
		{"OIDC issuer with credentials shown redacted", map[string]any{"oidc-issuer": "https://u:hunter2@x y"}, `invalid oidc-issuer "https://***@x y"`},
		{"OIDC without secret", map[string]any{"oidc-issuer": "https://sso.example.com", "oidc-client-id": "ci"}, `invalid oidc-client-secret "": required when oidc-issuer is set`},
		{"scopes with a quote", map[string]any{"oidc-scope": `groups "x"`}, `invalid oidc-scope`},
		{"CA that is not PEM", map[string]any{"oauth-ca-cert": "not a cert"}, `invalid oauth-ca-cert "not a cert": expected PEM certificates`},
		{"CA as a path on the unit", with(ldap, "ldap-ca-cert", "/etc/ssl/certs/corp.pem"), ""},
		{"CA private key refused", map[string]any{"oidc-ca-cert": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"}, `invalid oidc-ca-cert`},
		{"encryption key too short", map[string]any{"encryption-key": "short"}, `invalid encryption-key "(hidden)": expected a key of exactly 16 or 32 characters (this one has 5)`},
		{"encryption key 32", map[string]any{"encryption-key": strings.Repeat("k", 32)}, ""},
		{"same old and new key", map[string]any{"encryption-key": strings.Repeat("k", 16), "old-encryption-key": strings.Repeat("k", 16)}, `invalid old-encryption-key "(hidden)": is the same as encryption-key`},
		{"encryption key as a secret URI", map[string]any{"encryption-key": "secret:d0a1b2c3d4e5f6g7h8i9"}, ""},
		{"malformed secret URI", map[string]any{"ldap-bind-pw": "secret:nope"}, `invalid ldap-bind-pw "secret:nope": a value starting with secret: must be a Juju secret URI`},
		{"local users", map[string]any{"extra-local-users": "alice:pw1, bob:pw2"}, ""},
		{"local user without password", map[string]any{"extra-local-users": "alice:pw1,bob"}, `invalid extra-local-users "(hidden)": entry 2 is not user:password`},
		{"local user twice", map[string]any{"extra-local-users": "alice:pw1,alice:pw2"}, `user alice is listed twice`},
		{"local user with a weak bcrypt", map[string]any{"extra-local-users": "alice:$2a$04$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"}, `looks like a bcrypt hash but is not one Concourse accepts`},
		{"main team user with a space", map[string]any{"main-team-local-user": "al ice"}, `invalid main-team-local-user "al ice": expected comma-separated user names`},
		{"retention negative", map[string]any{"max-build-logs-to-retain": json.Number("-1")}, `invalid max-build-logs-to-retain "-1": expected a whole number, 0 or more`},
		{"retention not a number", map[string]any{"default-days-to-retain-build-logs": "seven"}, `invalid default-days-to-retain-build-logs "seven": expected a whole number`},
		{"default above max", map[string]any{"default-build-logs-to-retain": json.Number("50"), "max-build-logs-to-retain": json.Number("10")}, `invalid default-build-logs-to-retain "50": may not exceed max-build-logs-to-retain (10)`},
		{"grace period not a duration", map[string]any{"gc-failed-grace-period": "5 days"}, `invalid gc-failed-grace-period "5 days": expected a positive Go duration`},
		{"proxy credentials redacted", map[string]any{"http-proxy": "socks5://u:hunter2@proxy:1080"}, `invalid http-proxy "socks5://***@proxy:1080": expected a proxy URL`},
		{"no-proxy with a URL", map[string]any{"no-proxy": "localhost,http://x"}, `invalid no-proxy "localhost,http://x"`},
		{"no-proxy forms", map[string]any{"no-proxy": "localhost,.internal,10.0.0.0/8,::1,*.corp,example.com:8443"}, ""},
		{"worker-procs zero", map[string]any{"worker-procs": json.Number("0")}, `invalid worker-procs "0": expected a whole number, 1 or more`},
		{"tls-enabled not a boolean", map[string]any{"tls-enabled": "yes please"}, `invalid tls-enabled "yes please": expected true or false`},
		{"managed flag refused in extra-web-flags", map[string]any{"extra-web-flags": "--ldap-host=x"}, `invalid extra-web-flags "--ldap-host": the charm sets --ldap-host itself: use the ldap-host option`},
		{"LDAP switch still allowed in extra-web-flags", with(ldap, "extra-web-flags", "--ldap-insecure-no-ssl"), ""},
	}
	runConfigCases(t, cases)
}

// configCase is one scenario of parseConfig: the raw options and what the status says of them.
type configCase struct {
	name   string
	config map[string]any
	want   string // "" = valid; otherwise a substring of the error
}

// runConfigCases runs each case as a subtest: parseConfig accepts it (want "") or refuses it with
// an error containing want, and no message shows the test secret "hunter2".
func runConfigCases(t *testing.T, cases []configCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig(c.config)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("parseConfig: %v; want valid", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("parseConfig: %v; want %q", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the status shows a secret: %v", err)
			}
		})
	}
}

// What each option renders, web and worker: the table's variable with the checked value, and
// nothing for defaults and for options Concourse has no setting for.
func TestOptionEnv(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig(map[string]any{
		"oauth-scope": "read write", "oauth-client-id": "ci", "oauth-client-secret": "s", "oauth-auth-url": "https://o/a",
		"oauth-token-url": "https://o/t", "oauth-userinfo-url": "https://o/u", "oauth-ca-cert": "/etc/ssl/corp.pem", "ldap-ca-cert": testCAPEM(t),
		"ldap-host": "ldap:636", "ldap-bind-dn": "cn=x,dc=y", "ldap-bind-pw": "pw", "ldap-start-tls": true,
		"oidc-skip-ssl-validation": false, "max-build-logs-to-retain": json.Number("0"), "max-days-to-retain-build-logs": json.Number("9"),
		"http-proxy": "http://proxy:3128", "no-proxy": "localhost, .internal", "worker-procs": json.Number("4"), "tls-enabled": true,
		"main-team-oauth-group": "ops, dev team",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := Paths{ConfigDir: "/etc/concourse"}
	got := map[string]string{}
	for _, v := range optionEnv(cfg.Opts, roleWeb, p) {
		got[v.Name] = v.Value
	}
	want := map[string]string{
		"CONCOURSE_OAUTH_SCOPE": "read,write", "CONCOURSE_OAUTH_CA_CERT": "/etc/ssl/corp.pem", "CONCOURSE_OAUTH_CLIENT_ID": "ci",
		"CONCOURSE_OAUTH_CLIENT_SECRET": "s", "CONCOURSE_OAUTH_AUTH_URL": "https://o/a", "CONCOURSE_OAUTH_TOKEN_URL": "https://o/t",
		"CONCOURSE_OAUTH_USERINFO_URL": "https://o/u",
		"CONCOURSE_LDAP_CA_CERT":       "/etc/concourse/auth/ldap-ca.pem", "CONCOURSE_LDAP_HOST": "ldap:636",
		"CONCOURSE_LDAP_BIND_DN": "cn=x,dc=y", "CONCOURSE_LDAP_BIND_PW": "pw", "CONCOURSE_LDAP_START_TLS": "true",
		"CONCOURSE_MAX_DAYS_TO_RETAIN_BUILD_LOGS": "9", "http_proxy": "http://proxy:3128", "no_proxy": "localhost,.internal",
		"CONCOURSE_MAIN_TEAM_OAUTH_GROUP": "ops,dev team",
	}
	for _, k := range sortedNames(want) {
		if got[k] != want[k] {
			t.Errorf("web %s = %q; want %q", k, got[k], want[k])
		}
	}
	if len(got) != len(want) {
		t.Errorf("web renders %v; want exactly %v", sortedNames(got), sortedNames(want))
	}
	var worker []string
	for _, v := range optionEnv(cfg.Opts, roleWorker, p) {
		worker = append(worker, v.Name+"="+v.Value)
	}
	if strings.Join(worker, " ") != "http_proxy=http://proxy:3128 no_proxy=localhost,.internal" {
		t.Errorf("worker renders %v; want only the proxies", worker)
	}
	files := webOptionFiles(cfg.Opts, p)
	if len(files) != 1 || files[0].Path != "/etc/concourse/auth/ldap-ca.pem" || !strings.HasPrefix(string(files[0].Data), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("option files = %+v; want the LDAP CA only (the OAuth CA is a path on the unit)", files)
	}
	if n := noEffectOptions(cfg.Opts); len(n) != 1 || !strings.HasPrefix(n["worker-procs"], "4: no effect") || n["tls-enabled"] != "" {
		t.Errorf("no-effect options = %v", n)
	}
}

// testCAPEM is a self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) string {
	t.Helper()
	srv := httptest.NewTLSServer(nil)
	defer srv.Close()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

// pythonConfig is a unit of the Python charm as its operators configured it: every option of
// issue 9 set, in the forms the Python charm took (a CA as a path on the unit, a bcrypt hash in
// extra-local-users, --ldap-insecure-no-ssl through extra-web-flags).
func pythonConfig(t *testing.T) map[string]any {
	bob, err := concourse.HashPassword("bob-pw")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{
		"version": "7.14.3", "shared-storage": "lxc", "extra-web-flags": "--ldap-insecure-no-ssl",
		"extra-local-users": "alice:alice-pw,bob:" + bob, "main-team-local-user": "alice",
		"ldap-display-name": "Corp LDAP", "ldap-host": "ldap.corp:389", "ldap-bind-dn": "cn=ro,dc=corp", "ldap-bind-pw": "ldap-pw",
		"ldap-user-search-base-dn": "ou=people,dc=corp", "ldap-user-search-username": "uid", "ldap-user-search-id-attr": "uid",
		"ldap-user-search-email-attr": "mail", "ldap-user-search-name-attr": "cn", "ldap-user-search-filter": "(objectClass=person)",
		"ldap-group-search-base-dn": "ou=groups,dc=corp", "ldap-group-search-name-attr": "cn", "ldap-group-search-user-attr": "uid",
		"ldap-group-search-group-attr": "memberUid", "ldap-group-search-filter": "(objectClass=posixGroup)", "main-team-ldap-group": "ci-admins",
		"oauth-display-name": "Corp OAuth", "oauth-client-id": "oa-id", "oauth-client-secret": "oa-secret",
		"oauth-auth-url": "https://oauth.corp/authorize", "oauth-token-url": "https://oauth.corp/token", "oauth-userinfo-url": "https://oauth.corp/userinfo",
		"oauth-scope": "read", "oauth-groups-key": "groups", "oauth-user-id-key": "id", "oauth-user-name-key": "login",
		"oauth-ca-cert": "/usr/local/share/ca-certificates/corp.crt", "oauth-skip-ssl-validation": true,
		"main-team-oauth-user": "erin", "main-team-oauth-group": "oa-admins",
		"oidc-display-name": "Corp SSO", "oidc-issuer": "https://sso.corp", "oidc-client-id": "oi-id", "oidc-client-secret": "oi-secret",
		"oidc-scope": "groups", "oidc-groups-key": "groups", "oidc-user-name-key": "preferred_username",
		"oidc-ca-cert": "/usr/local/share/ca-certificates/corp.crt", "oidc-skip-ssl-validation": true,
		"main-team-oidc-user": "frank", "main-team-oidc-group": "oi-admins",
		"default-build-logs-to-retain": json.Number("20"), "max-build-logs-to-retain": json.Number("50"),
		"default-days-to-retain-build-logs": json.Number("14"), "max-days-to-retain-build-logs": json.Number("60"),
		"gc-failed-grace-period": "48h", "http-proxy": "http://proxy.corp:3128", "https-proxy": "http://proxy.corp:3128",
		// tls-enabled had no effect in the Python charm; true now needs a certificate (tls_test.go).
		"no-proxy": "localhost,.corp", "worker-procs": json.Number("2"), "max-concurrent-downloads": json.Number("5"), "tls-enabled": false,
	}
}

// The refresh scenario of issue 9: a unit configured as the Python charm would be (every
// option above set, its admin password in plaintext peer data) is refreshed to this charm. The
// model accepts only options config.yaml declares (as Juju's FilterSettings keeps only those),
// every value reaches the services as the Python charm rendered it, every login survives
// (passwords now as bcrypt), check-status says what the no-setting options do, and later hooks
// do not restart the web (the hashes are kept).
func TestRefreshFromPythonKeepsEveryOption(t *testing.T) {
	cfg := pythonConfig(t)
	w := newWorld(t, 2, cfg) // panics on an option config.yaml does not declare
	peers := w.m.RelationID(app, "peers")
	w.m.SetAppData(peers, app, map[string]string{"admin-password": "Legacy-Passw0rd"})
	for _, u := range []string{u0, u1} {
		w.mustHook(u, "upgrade-charm")
		w.mustHook(u, "config-changed")
	}
	w.settle()
	w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	for k, v := range cfg {
		if got := w.m.Config(app)[k]; rawString(got) != rawString(v) {
			t.Errorf("after the refresh %s = %v; want %v", k, got, v)
		}
	}
	envText := w.readFile(u0, fileWebEnv)
	env, err := concourse.ParseEnvFile([]byte(envText))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"CONCOURSE_LDAP_HOST": "ldap.corp:389", "CONCOURSE_LDAP_BIND_PW": "ldap-pw", "CONCOURSE_LDAP_GROUP_SEARCH_FILTER": "(objectClass=posixGroup)",
		"CONCOURSE_MAIN_TEAM_LDAP_GROUP": "ci-admins", "CONCOURSE_OAUTH_CLIENT_SECRET": "oa-secret", "CONCOURSE_OAUTH_USER_NAME_KEY": "login",
		"CONCOURSE_OAUTH_CA_CERT": "/usr/local/share/ca-certificates/corp.crt", "CONCOURSE_OAUTH_SKIP_SSL_VALIDATION": "true",
		"CONCOURSE_MAIN_TEAM_OAUTH_USER": "erin", "CONCOURSE_OIDC_ISSUER": "https://sso.corp", "CONCOURSE_OIDC_SCOPE": "groups",
		"CONCOURSE_OIDC_SKIP_SSL_VALIDATION": "true", "CONCOURSE_MAIN_TEAM_OIDC_GROUP": "oi-admins",
		"CONCOURSE_DEFAULT_BUILD_LOGS_TO_RETAIN": "20", "CONCOURSE_MAX_BUILD_LOGS_TO_RETAIN": "50",
		"CONCOURSE_DEFAULT_DAYS_TO_RETAIN_BUILD_LOGS": "14", "CONCOURSE_MAX_DAYS_TO_RETAIN_BUILD_LOGS": "60",
		"CONCOURSE_GC_FAILED_GRACE_PERIOD": "48h", "http_proxy": "http://proxy.corp:3128", "no_proxy": "localhost,.corp",
		"CONCOURSE_MAIN_TEAM_LOCAL_USER": "admin,alice",
	}
	for _, k := range sortedNames(want) {
		if env[k] != want[k] {
			t.Errorf("web.env %s = %q; want %q", k, env[k], want[k])
		}
	}
	// Every option the table renders for the web is in web.env.
	parsed, _ := parseConfig(cfg)
	for _, v := range optionEnv(parsed.Opts, roleWeb, w.paths(u0)) {
		if env[v.Name] != v.Value {
			t.Errorf("web.env %s = %q; want %q", v.Name, env[v.Name], v.Value)
		}
	}
	for user, pw := range map[string]string{"admin": "Legacy-Passw0rd", "alice": "alice-pw", "bob": "bob-pw"} {
		if !webEnvHasLocalUser(t, envText, user, pw) {
			t.Errorf("%s cannot log in with their password after the refresh", user)
		}
	}
	if strings.Contains(w.readFile(u0, "../../etc/systemd/system/"+webService), "--ldap-insecure-no-ssl") == false {
		t.Errorf("the Python charm's --ldap-insecure-no-ssl in extra-web-flags is lost")
	}
	wenv, _ := concourse.ParseEnvFile([]byte(w.readFile(u1, fileWorkerEnv)))
	if wenv["http_proxy"] != "http://proxy.corp:3128" || wenv["https_proxy"] != "http://proxy.corp:3128" || wenv["no_proxy"] != "localhost,.corp" {
		t.Errorf("worker.env proxies = %q %q %q", wenv["http_proxy"], wenv["https_proxy"], wenv["no_proxy"])
	}
	if err := w.hook(u0, jujutest.HookInfo{ActionName: "check-status"}); err != nil {
		t.Fatal(err)
	}
	acts := w.m.Actions()
	res := acts[len(acts)-1].Results
	for _, k := range []string{"worker-procs", "max-concurrent-downloads"} {
		if !strings.Contains(res["option-"+k], "no effect") {
			t.Errorf("check-status option-%s = %q; want it to say what it does here", k, res["option-"+k])
		}
	}
	starts := w.svcs[u0].count("restart "+webService) + w.svcs[u0].count("start "+webService)
	w.mustHook(u0, "update-status")
	w.mustHook(u0, "config-changed")
	if got := w.svcs[u0].count("restart "+webService) + w.svcs[u0].count("start "+webService); got != starts {
		t.Errorf("later hooks (re)started the web %d times: a fresh bcrypt salt changed web.env\n%v", got-starts, w.svcs[u0].calls)
	}
	if w.readFile(u0, fileWebEnv) != envText {
		t.Errorf("web.env changed in a later hook")
	}
}

// A secret option given as a Juju secret URI is read from the secret (granted to the
// application) and rendered like a literal; a secret the application cannot read blocks with
// the command that grants it, and the status shows the URI, never a value.
func TestSecretOptionFromJujuSecret(t *testing.T) {
	w := newWorld(t, 1, pinned)
	w.deploy()
	id := w.addPostgres()
	// A secret another application owns and granted to this one (the test model has no user
	// secrets; what the charm does is the same secret-get).
	uri := w.m.AddSecret("postgresql", map[string]string{"ldap-bind-pw": "from-the-secret-pw"}, "")
	w.m.GrantSecret(uri, id, "")
	w.m.SetConfig(app, map[string]any{"ldap-host": "ldap.corp", "ldap-bind-dn": "cn=ro,dc=corp", "ldap-bind-pw": uri})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	env, _ := concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv)))
	if env["CONCOURSE_LDAP_BIND_PW"] != "from-the-secret-pw" {
		t.Errorf("CONCOURSE_LDAP_BIND_PW = %q; want the secret's content", env["CONCOURSE_LDAP_BIND_PW"])
	}
	other := w.m.AddSecret("postgresql", map[string]string{"value": "x"}, "") // not granted
	w.m.SetConfig(app, map[string]any{"ldap-bind-pw": other})
	w.mustHook(u0, "config-changed")
	if s := w.status(u0); !strings.HasPrefix(s, "blocked: invalid ldap-bind-pw \""+other+"\": the secret cannot be read") || !strings.Contains(s, "juju grant-secret "+other+" "+app) {
		t.Errorf("status = %q; want blocked naming the secret and juju grant-secret", s)
	}
	if env2, _ := concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv))); env2["CONCOURSE_LDAP_BIND_PW"] != "from-the-secret-pw" {
		t.Errorf("an unreadable secret changed web.env")
	}
}

// The charm refuses an encryption-key change the web could not read its database with, before
// writing anything, and says how to rotate; the rotation itself (old and new key together) and
// a return to the key in use go through. The database is real (pgtest) and holds a row sealed as
// Concourse seals it (TestRealWebEncryptionKeys proves the format against the real web).
func TestEncryptionKeyChangeNeedsTheOldKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	const k1, k2 = "0123456789abcdef", "fedcba9876543210"
	db := realDB(t)
	conn, err := sql.Open("postgres", db.DSN(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	block, _ := aes.NewCipher([]byte(k1))
	gcm, _ := cipher.NewGCM(block)
	nonce := make([]byte, gcm.NonceSize())
	rand.Read(nonce)
	sealed := gcm.Seal(nil, nonce, []byte(`{"name":"hello"}`), nil)
	if _, err := conn.Exec(`CREATE TABLE jobs (name text, config text, nonce text);
INSERT INTO jobs VALUES ('hello', '` + hex.EncodeToString(sealed) + `', '` + hex.EncodeToString(nonce) + `')`); err != nil {
		t.Fatal(err)
	}

	w := newWorld(t, 1, map[string]any{"version": "7.14.3", "shared-storage": "lxc", "encryption-key": k1})
	w.deploy()
	id := w.addPostgres()
	uri := w.m.AddSecret("postgresql", map[string]string{"username": db.User, "password": db.Password}, "")
	w.m.GrantSecret(uri, id, "")
	w.queue = append(w.queue, w.m.SetAppData(id, "postgresql", map[string]string{
		"endpoints": fmt.Sprintf("%s:%d", db.Host, db.Port), "secret-user": uri})...)
	w.settle()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	before := w.readFile(u0, fileWebEnv)
	starts := w.svcs[u0].count("restart " + webService)

	for _, c := range []struct {
		name   string
		config map[string]any
		want   string // status prefix
	}{
		{"a new key alone", map[string]any{"encryption-key": k2}, "blocked: Refusing to change the web's encryption keys: the database holds rows (table jobs) that neither the encryption key nor the old encryption key decrypts. To rotate, set old-encryption-key to the key in use"},
		{"no key", map[string]any{"encryption-key": ""}, "blocked: Refusing to change the web's encryption keys: the database is encrypted (table jobs) and no encryption key is set. Set encryption-key back"},
	} {
		w.m.SetConfig(app, c.config)
		w.mustHook(u0, "config-changed")
		if s := w.status(u0); !strings.HasPrefix(s, c.want) {
			t.Errorf("%s: status %q; want %q…", c.name, s, c.want)
		}
		if strings.Contains(w.status(u0), k1) || strings.Contains(w.status(u0), k2) {
			t.Errorf("%s: the status shows a key", c.name)
		}
		if w.readFile(u0, fileWebEnv) != before || w.svcs[u0].count("restart "+webService) != starts {
			t.Errorf("%s: a refused key change was written or restarted the web", c.name)
		}
	}
	// The rotation goes through.
	w.m.SetConfig(app, map[string]any{"encryption-key": k2, "old-encryption-key": k1})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	env, _ := concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv)))
	if env["CONCOURSE_ENCRYPTION_KEY"] != k2 || env["CONCOURSE_OLD_ENCRYPTION_KEY"] != k1 || w.svcs[u0].count("restart "+webService) != starts+1 {
		t.Errorf("the rotation did not reach the web: keys %q/%q, restarts %d", env["CONCOURSE_ENCRYPTION_KEY"], env["CONCOURSE_OLD_ENCRYPTION_KEY"], w.svcs[u0].count("restart "+webService)-starts)
	}
}

// testCAPEMFixed is a fixed CA certificate, for golden files.
func testCAPEMFixed(t *testing.T) string {
	b, err := os.ReadFile("testdata/render/login-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The hooks keep a local user's hash while its password stays (through the root-only checks
// file, without a bcrypt comparison), and hash afresh when the password changes.
func TestHashCacheKeepsHashes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	envPath, checks := filepath.Join(dir, "web.env"), filepath.Join(dir, "checked")
	first := reusingHasher(envPath, checks)
	h, err := first.hash("alice", "pw-1")
	if err != nil || !concourse.HashMatches(h, "pw-1") {
		t.Fatalf("first hash %q, %v", h, err)
	}
	os.WriteFile(envPath, concourse.RenderEnv([]concourse.EnvVar{{Name: "CONCOURSE_ADD_LOCAL_USER", Value: "alice:" + h}}), 0o600)
	os.WriteFile(checks, first.file(), 0o600)
	if strings.Contains(string(first.file()), "pw-1") {
		t.Fatal("the checks file holds the password")
	}
	again := reusingHasher(envPath, checks)
	start := time.Now()
	if h2, _ := again.hash("alice", "pw-1"); h2 != h {
		t.Errorf("same password: hash %q; want the kept %q", h2, h)
	}
	if d := time.Since(start); d > 20*time.Millisecond {
		t.Logf("keeping a hash took %s: the checks file was not used?", d) // timing is only logged
	}
	if string(again.file()) != string(first.file()) {
		t.Errorf("checks file changed for an unchanged password")
	}
	if h3, _ := reusingHasher(envPath, checks).hash("alice", "pw-2"); h3 == h || !concourse.HashMatches(h3, "pw-2") {
		t.Errorf("a changed password kept the old hash")
	}
	os.Remove(checks) // without the checks file the hash is still kept (one bcrypt comparison)
	if h4, _ := reusingHasher(envPath, checks).hash("alice", "pw-1"); h4 != h {
		t.Errorf("without the checks file the hash changed")
	}
}

// TestClearedCAOptionRemovesItsFile: a login CA the operator withdraws does not stay on the
// machine; the web restarts once without it and its variable is gone.
func TestClearedCAOptionRemovesItsFile(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"version": "7.14.3"})
	w.deploy()
	w.addPostgres()
	ldap := map[string]any{"ldap-host": "ldap.corp:636", "ldap-bind-dn": "cn=ro,dc=corp", "ldap-bind-pw": "pw",
		"ldap-user-search-base-dn": "ou=people,dc=corp", "ldap-ca-cert": testCAPEM(t)}
	w.m.SetConfig(app, ldap)
	w.mustHook(u0, "config-changed")
	caFile := filepath.Join(w.paths(u0).ConfigDir, caCertOptions["ldap-ca-cert"])
	if _, err := os.Stat(caFile); err != nil {
		t.Fatalf("ldap-ca-cert was not written: %v", err)
	}
	restarts := w.svcs[u0].count("restart " + webService)
	w.m.SetConfig(app, map[string]any{"ldap-ca-cert": ""})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	if _, err := os.Stat(caFile); !os.IsNotExist(err) {
		t.Errorf("%s is still there after ldap-ca-cert was cleared (%v)", caFile, err)
	}
	if env, _ := concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv))); env["CONCOURSE_LDAP_CA_CERT"] != "" {
		t.Errorf("web.env still names the cleared CA: %q", env["CONCOURSE_LDAP_CA_CERT"])
	}
	if got := w.svcs[u0].count("restart " + webService); got != restarts+1 {
		t.Errorf("clearing the CA restarted the web %d times; want once", got-restarts)
	}
	w.mustHook(u0, "update-status")
	if got := w.svcs[u0].count("restart " + webService); got != restarts+1 {
		t.Errorf("a later hook restarted the web again")
	}
}
