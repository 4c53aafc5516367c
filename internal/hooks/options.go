package hooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// The option table: one entry per option of the auth, encryption, retention, proxy and
// no-setting groups (issue 9). An entry drives everything about its option: parseConfig
// validates it (Check), renderWeb/renderWorker render it (Role, Env), `render` prints it, secrets
// are kept to web.env and may come from a Juju secret (Secret), and options_test.go holds
// config.yaml (Type, Default, Doc) and the Python charm's python-options.tsv (Python) to it.
// Adding an option is one entry here and a scenario in options_test.go.

// optRole is where an option's value goes.
type optRole uint8

const (
	roleNone   optRole = 0 // kept so the value survives a refresh; Concourse has no setting for it
	roleWeb    optRole = 1 << iota
	roleWorker         // worker.env
)

type option struct {
	Name    string
	Type    string // config.yaml type: string, int, boolean
	Default string // config.yaml default, as text
	Role    optRole
	// Env is the variable the checked value becomes; "" when renderWeb renders the option itself
	// (local users) or nothing does (roleNone).
	Env string
	// Secret: rendered only into web.env (0640 root:concourse, read by systemd for the service,
	// never argv or the unit file: `concourse web` has no *_FILE form of these flags), never
	// shown in a status or log, and accepted as a Juju secret URI (see resolveOptionSecrets).
	Secret bool
	// Python: the Python charm declares it, with this type and default.
	Python bool
	// Check turns the operator's (trimmed, non-default) value into what is rendered, or says
	// what is allowed. "" renders nothing.
	Check func(v string) (string, error)
	Doc   string
}

// caCertOptions are the options whose value is a CA certificate: Concourse takes a file path,
// so PEM text is written to its own file beside web.env (the Python charm passed the value
// through, so a path on the unit keeps working).
var caCertOptions = map[string]string{
	"ldap-ca-cert":  "auth/ldap-ca.pem",
	"oauth-ca-cert": "auth/oauth-ca.pem",
	"oidc-ca-cert":  "auth/oidc-ca.pem",
}

// noSetting explains, for check-status, what an option Concourse has no setting for does here.
var noSetting = map[string]string{
	"worker-procs":             "no effect: Concourse has no worker-procs setting (the Python charm rendered CONCOURSE_WORKER_PROCS, which Concourse ignores); kept so the value survives a refresh",
	"max-concurrent-downloads": "no effect: Concourse has no such setting (the Python charm did not use it either); kept so the value survives a refresh",
}

func optionTable() []option {
	return slices.Concat(baseOptions(), vaultOptions(), workerOptions(), gpuOptions(), upgradeOptions(), lifecycleOptions()) // vault.go, worker.go, gpu.go, upgrade.go, lifecycle.go
}

func baseOptions() []option {
	text := checkText
	str := func(name, env, doc string, check func(string) (string, error)) option {
		return option{Name: name, Type: "string", Role: roleWeb, Env: env, Python: true, Check: check, Doc: doc}
	}
	secret := func(o option) option { o.Secret = true; return o }
	boolean := func(name, env, doc string) option {
		return option{Name: name, Type: "boolean", Default: "false", Role: roleWeb, Env: env, Python: true, Check: checkSwitch, Doc: doc}
	}
	retain := func(name, env, doc string) option {
		return option{Name: name, Type: "int", Default: "0", Role: roleWeb, Env: env, Python: true, Check: checkCount, Doc: doc}
	}
	added := func(o option) option { o.Python = false; return o }
	return []option{
		// Local users and the main team.
		secret(str("extra-local-users", "", "Further local users, comma-separated user:password (a password may be given as its bcrypt hash, cost 10 or more). Passwords are rendered bcrypt-hashed. Accepts a Juju secret URI (secret:…) whose content holds the list.", checkLocalUsers)),
		str("main-team-local-user", "", "Comma-separated local users (initial-admin-username or extra-local-users) who are members of the main team, besides the admin user, who always is (the charm's actions log in as it).", checkUserList),
		str("main-team-ldap-group", "CONCOURSE_MAIN_TEAM_LDAP_GROUP", "Comma-separated LDAP groups whose members are members of the main team.", checkGroupList),
		str("main-team-oauth-user", "CONCOURSE_MAIN_TEAM_OAUTH_USER", "Comma-separated OAuth users who are members of the main team.", checkGroupList),
		str("main-team-oauth-group", "CONCOURSE_MAIN_TEAM_OAUTH_GROUP", "Comma-separated OAuth groups whose members are members of the main team.", checkGroupList),
		str("main-team-oidc-user", "CONCOURSE_MAIN_TEAM_OIDC_USER", "Comma-separated OIDC users who are members of the main team.", checkGroupList),
		str("main-team-oidc-group", "CONCOURSE_MAIN_TEAM_OIDC_GROUP", "Comma-separated OIDC groups whose members are members of the main team.", checkGroupList),

		// LDAP (dex's LDAP connector). Set ldap-host, ldap-bind-dn and ldap-bind-pw to turn it on.
		str("ldap-display-name", "CONCOURSE_LDAP_DISPLAY_NAME", "Name of the LDAP login shown on the login page.", text),
		str("ldap-host", "CONCOURSE_LDAP_HOST", "LDAP server, host or host:port (default port 636 with TLS, 389 with ldap-insecure-no-ssl). Setting it turns LDAP login on; ldap-bind-dn and ldap-bind-pw are then required.", checkHostPort),
		str("ldap-bind-dn", "CONCOURSE_LDAP_BIND_DN", "DN the web binds as to search users and groups (typically a read-only user).", checkDN),
		secret(str("ldap-bind-pw", "CONCOURSE_LDAP_BIND_PW", "Password of ldap-bind-dn, or a Juju secret URI (secret:…) holding it.", checkSecretText)),
		str("ldap-user-search-base-dn", "CONCOURSE_LDAP_USER_SEARCH_BASE_DN", "Base DN of the user search, e.g. ou=people,dc=example,dc=com.", checkDN),
		str("ldap-user-search-username", "CONCOURSE_LDAP_USER_SEARCH_USERNAME", "Attribute matched against the login name, e.g. uid.", checkAttr),
		str("ldap-user-search-id-attr", "CONCOURSE_LDAP_USER_SEARCH_ID_ATTR", "Attribute holding the user id (Concourse's default: uid).", checkAttr),
		str("ldap-user-search-email-attr", "CONCOURSE_LDAP_USER_SEARCH_EMAIL_ATTR", "Attribute holding the email address (Concourse's default: mail).", checkAttr),
		str("ldap-user-search-name-attr", "CONCOURSE_LDAP_USER_SEARCH_NAME_ATTR", "Attribute holding the display name.", checkAttr),
		str("ldap-user-search-filter", "CONCOURSE_LDAP_USER_SEARCH_FILTER", "Filter of the user search, e.g. (objectClass=person).", checkFilter),
		str("ldap-group-search-base-dn", "CONCOURSE_LDAP_GROUP_SEARCH_BASE_DN", "Base DN of the group search, e.g. ou=groups,dc=example,dc=com.", checkDN),
		str("ldap-group-search-name-attr", "CONCOURSE_LDAP_GROUP_SEARCH_NAME_ATTR", "Attribute holding a group's name, e.g. cn.", checkAttr),
		str("ldap-group-search-user-attr", "CONCOURSE_LDAP_GROUP_SEARCH_USER_ATTR", "User attribute a group lists its members by, e.g. uid or DN.", checkAttr),
		str("ldap-group-search-group-attr", "CONCOURSE_LDAP_GROUP_SEARCH_GROUP_ATTR", "Group attribute listing its members, e.g. memberUid or member.", checkAttr),
		str("ldap-group-search-filter", "CONCOURSE_LDAP_GROUP_SEARCH_FILTER", "Filter of the group search, e.g. (objectClass=posixGroup).", checkFilter),
		added(str("ldap-ca-cert", "CONCOURSE_LDAP_CA_CERT", "CA certificate (PEM) of the LDAP server, written to a file on the web units; an absolute path of a file on the units also works. Not in the Python charm.", checkCACert)),
		added(boolean("ldap-insecure-no-ssl", "CONCOURSE_LDAP_INSECURE_NO_SSL", "Talk plain LDAP (no TLS) to ldap-host. Not in the Python charm (which took --ldap-insecure-no-ssl in extra-web-flags, still accepted).")),
		added(boolean("ldap-start-tls", "CONCOURSE_LDAP_START_TLS", "Connect on the plain port, then negotiate TLS (StartTLS). Not in the Python charm.")),
		added(boolean("ldap-insecure-skip-verify", "CONCOURSE_LDAP_INSECURE_SKIP_VERIFY", "Do not verify the LDAP server's certificate. Not in the Python charm.")),

		// Generic OAuth2.
		str("oauth-display-name", "CONCOURSE_OAUTH_DISPLAY_NAME", "Name of the OAuth login shown on the login page.", text),
		str("oauth-client-id", "CONCOURSE_OAUTH_CLIENT_ID", "OAuth client id. Setting it turns OAuth login on; oauth-client-secret, oauth-auth-url, oauth-token-url and oauth-userinfo-url are then required.", checkToken),
		secret(str("oauth-client-secret", "CONCOURSE_OAUTH_CLIENT_SECRET", "OAuth client secret, or a Juju secret URI (secret:…) holding it.", checkSecretText)),
		str("oauth-auth-url", "CONCOURSE_OAUTH_AUTH_URL", "Authorization URL of the OAuth provider.", checkHTTPURL),
		str("oauth-token-url", "CONCOURSE_OAUTH_TOKEN_URL", "Token URL of the OAuth provider.", checkHTTPURL),
		str("oauth-userinfo-url", "CONCOURSE_OAUTH_USERINFO_URL", "UserInfo URL of the OAuth provider.", checkHTTPURL),
		str("oauth-scope", "CONCOURSE_OAUTH_SCOPE", "Further scopes to request, comma- or space-separated.", checkScopes),
		str("oauth-groups-key", "CONCOURSE_OAUTH_GROUPS_KEY", "Claim mapped to Concourse groups (Concourse's default: groups).", checkToken),
		str("oauth-user-id-key", "CONCOURSE_OAUTH_USER_ID_KEY", "Claim mapped to the user id (Concourse's default: user_id).", checkToken),
		str("oauth-user-name-key", "CONCOURSE_OAUTH_USER_NAME_KEY", "Claim mapped to the user name (Concourse's default: user_name).", checkToken),
		str("oauth-ca-cert", "CONCOURSE_OAUTH_CA_CERT", "CA certificate (PEM) of the OAuth provider, written to a file on the web units; an absolute path of a file on the units also works.", checkCACert),
		boolean("oauth-skip-ssl-validation", "CONCOURSE_OAUTH_SKIP_SSL_VALIDATION", "Do not verify the OAuth provider's certificate."),

		// Generic OIDC.
		str("oidc-display-name", "CONCOURSE_OIDC_DISPLAY_NAME", "Name of the OIDC login shown on the login page.", text),
		str("oidc-issuer", "CONCOURSE_OIDC_ISSUER", "OIDC issuer URL (its /.well-known/openid-configuration is read when the web starts). Setting it turns OIDC login on; oidc-client-id and oidc-client-secret are then required.", checkHTTPURL),
		str("oidc-client-id", "CONCOURSE_OIDC_CLIENT_ID", "OIDC client id.", checkToken),
		secret(str("oidc-client-secret", "CONCOURSE_OIDC_CLIENT_SECRET", "OIDC client secret, or a Juju secret URI (secret:…) holding it.", checkSecretText)),
		str("oidc-scope", "CONCOURSE_OIDC_SCOPE", "Further scopes to request besides openid, comma- or space-separated (Concourse's default: openid, profile, email).", checkScopes),
		str("oidc-groups-key", "CONCOURSE_OIDC_GROUPS_KEY", "Claim mapped to Concourse groups (Concourse's default: groups).", checkToken),
		str("oidc-user-name-key", "CONCOURSE_OIDC_USER_NAME_KEY", "Claim mapped to the user name (Concourse's default: username).", checkToken),
		str("oidc-ca-cert", "CONCOURSE_OIDC_CA_CERT", "CA certificate (PEM) of the OIDC issuer, written to a file on the web units; an absolute path of a file on the units also works.", checkCACert),
		boolean("oidc-skip-ssl-validation", "CONCOURSE_OIDC_SKIP_SSL_VALIDATION", "Do not verify the OIDC issuer's certificate."),

		// Encryption at rest.
		secret(str("encryption-key", "CONCOURSE_ENCRYPTION_KEY", "Key (16 or 32 characters) Concourse encrypts pipeline configs and credentials with in the database, or a Juju secret URI (secret:…) holding it. To change it, set old-encryption-key to the current key in the same change; to stop encrypting, move the key to old-encryption-key and clear this one. A change the database could not be read with is refused.", checkEncryptionKey)),
		added(secret(str("old-encryption-key", "CONCOURSE_OLD_ENCRYPTION_KEY", "The key the database is encrypted with now, while rotating: with encryption-key the web re-encrypts everything with the new key at its next start; alone, it decrypts everything. Or a Juju secret URI (secret:…). The Python charm read but did not declare it.", checkEncryptionKey))),

		// Build logs and garbage collection.
		retain("default-build-logs-to-retain", "CONCOURSE_DEFAULT_BUILD_LOGS_TO_RETAIN", "Build logs kept per job unless the job says otherwise; 0 keeps all."),
		retain("max-build-logs-to-retain", "CONCOURSE_MAX_BUILD_LOGS_TO_RETAIN", "Upper bound on build logs kept per job, overriding jobs' own settings; 0 sets none."),
		retain("default-days-to-retain-build-logs", "CONCOURSE_DEFAULT_DAYS_TO_RETAIN_BUILD_LOGS", "Days build logs are kept unless the job says otherwise; 0 keeps them forever."),
		retain("max-days-to-retain-build-logs", "CONCOURSE_MAX_DAYS_TO_RETAIN_BUILD_LOGS", "Upper bound on the days build logs are kept, overriding jobs' own settings; 0 sets none."),
		str("gc-failed-grace-period", "CONCOURSE_GC_FAILED_GRACE_PERIOD", "How long failed containers are kept before garbage collection, a Go duration such as 120h or 30m (empty: Concourse's 120h).", checkDuration),

		// Proxies of the services (the charm's own downloads use the model's juju-*-proxy).
		{Name: "http-proxy", Type: "string", Role: roleWeb | roleWorker, Env: "http_proxy", Python: true, Check: checkProxyURL,
			Doc: "HTTP proxy of the web and worker services (http_proxy), e.g. http://proxy:3128. The charm's own downloads use the model's juju-http-proxy instead."},
		{Name: "https-proxy", Type: "string", Role: roleWeb | roleWorker, Env: "https_proxy", Python: true, Check: checkProxyURL,
			Doc: "HTTPS proxy of the web and worker services (https_proxy). The charm's own downloads use the model's juju-https-proxy instead."},
		{Name: "no-proxy", Type: "string", Role: roleWeb | roleWorker, Env: "no_proxy", Python: true, Check: checkNoProxy,
			Doc: "Comma-separated hosts, domains (.example.com), IP addresses and CIDRs the services reach without a proxy (no_proxy)."},

		// TLS on the web node (tls.go renders these itself: they are files and ports, not variables).
		{Name: "tls-enabled", Type: "boolean", Default: "false", Role: roleWeb, Python: true, Check: checkSwitch,
			Doc: "Serve HTTPS on web-port with tls-certificate and tls-key (both required). Plain HTTP moves to tls-redirect-port, where Concourse redirects browsers to the https URL (its API also answers there, unencrypted: expose only web-port to untrusted networks). The default URL becomes https://<address>:<web-port>; an external-url must then be https. For the usual ports set web-port=443 (tls-redirect-port is 80 by default). The charm's own calls to the web use HTTPS and trust only tls-certificate. The Python charm declared this option without effect."},
		{Name: "tls-certificate", Type: "string", Role: roleWeb, Check: checkTLSCert,
			Doc: "Certificate of the web node in PEM, followed by its intermediate CAs, for tls-enabled. Its names should cover the URL users reach (external-url, or the unit's address). Checked when set: it must parse, match tls-key and not be expired; the status warns 30 days before it expires. Not in the Python charm."},
		{Name: "tls-key", Type: "string", Role: roleWeb, Secret: true, Check: checkTLSKey,
			Doc: "Private key of tls-certificate in PEM (unencrypted), or a Juju secret URI (secret:…) holding it (recommended: config values are readable by anyone who can read the model's config). Written to a file readable only by root and the concourse group, never shown. Not in the Python charm."},
		{Name: "tls-redirect-port", Type: "int", Default: "80", Role: roleWeb, Check: checkPort,
			Doc: "With tls-enabled, the port of Concourse's plain-HTTP listener, which redirects browsers to the https URL on web-port (Concourse always keeps a plain listener). Opened with web-port. Not in the Python charm."},

		// Options Concourse has no setting for: declared so a refresh keeps their values.
		{Name: "worker-procs", Type: "int", Default: "1", Role: roleNone, Python: true, Check: checkPositive,
			Doc: "No effect: Concourse has no such setting (the Python charm rendered CONCOURSE_WORKER_PROCS, which Concourse ignores). Declared so a refresh keeps the value; check-status lists it."},
		{Name: "max-concurrent-downloads", Type: "int", Default: "10", Role: roleNone, Python: true, Check: checkPositive,
			Doc: "No effect: Concourse has no such setting (the Python charm did not use it either). Declared so a refresh keeps the value; check-status lists it."},
	}
}

// optionsByName indexes the table.
func optionsByName() map[string]option {
	out := map[string]option{}
	for _, o := range optionTable() {
		out[o.Name] = o
	}
	return out
}

// secretURIRE is a Juju secret URI: secret:<id> or secret://<model-uuid>/<id> (juju-contract §6).
var secretURIRE = regexp.MustCompile(`^secret:(//[0-9a-f-]+/)?[0-9a-v]{20}$`)

// parseOptions checks every table option of raw, in table order, into the values to render
// (non-default ones only), then the rules between options. raw values are config-get's.
func parseOptions(raw map[string]any) (map[string]string, error) {
	out := map[string]string{}
	for _, o := range optionTable() {
		v, err := optionValue(o, raw[o.Name])
		if err != nil {
			return nil, err
		}
		if v != "" {
			out[o.Name] = v
		}
	}
	if err := checkOptionRules(out); err != nil {
		return nil, err
	}
	return out, nil
}

// optionValue checks one option's value; the error is a *ConfigError that never shows a secret.
func optionValue(o option, rawV any) (string, error) {
	v := strings.TrimSpace(rawString(rawV))
	if o.Type == "boolean" {
		if rawV == nil || v == "" {
			v = o.Default
		}
		if _, err := rawBool(rawV); rawV != nil && err != nil {
			return "", &ConfigError{o.Name, v, "expected true or false"}
		}
	}
	if o.Type == "int" {
		if rawV == nil || v == "" {
			v = o.Default
		}
		if _, err := rawInt(rawV, 0); err != nil {
			return "", &ConfigError{o.Name, v, "expected a whole number"}
		}
	}
	if v == "" || (o.Type == "int" && v == o.Default && o.Role == roleNone) {
		return "", nil
	}
	if o.Secret && strings.HasPrefix(v, "secret:") {
		if !secretURIRE.MatchString(v) {
			return "", &ConfigError{o.Name, v, "a value starting with secret: must be a Juju secret URI such as secret:cs0abcdefghijklmnopq (juju add-secret, then juju grant-secret to this application)"}
		}
		return v, nil // checked once resolved (resolveOptionSecrets)
	}
	checked, err := o.Check(v)
	var ce *ConfigError
	if errors.As(err, &ce) {
		return "", ce // the check chose what to show (extra-worker-flags: the flag, not its value)
	}
	if err != nil {
		shown := v
		if o.Secret || strings.Contains(v, "PRIVATE KEY") { // a key pasted into the wrong option too
			shown = "(hidden)"
		} else if strings.Contains(o.Name, "proxy") || strings.HasSuffix(o.Name, "-url") || o.Name == "oidc-issuer" {
			shown = storage.RedactText(v)
		}
		return "", &ConfigError{o.Name, shown, err.Error()}
	}
	return checked, nil
}

// checkOptionRules are the rules between options: a login provider needs its required settings
// (Concourse refuses to start without them: "(Required)" in `concourse web --help`), and the
// retention defaults may not exceed the maxima.
func checkOptionRules(v map[string]string) error {
	groups := []struct {
		prefix, turnOn string
		required       []string
	}{
		{"ldap-", "ldap-host", []string{"ldap-host", "ldap-bind-dn", "ldap-bind-pw"}},
		{"oauth-", "oauth-client-id", []string{"oauth-client-id", "oauth-client-secret", "oauth-auth-url", "oauth-token-url", "oauth-userinfo-url"}},
		{"oidc-", "oidc-issuer", []string{"oidc-issuer", "oidc-client-id", "oidc-client-secret"}},
	}
	for _, g := range groups {
		var set []string
		for _, o := range optionTable() {
			if strings.HasPrefix(o.Name, g.prefix) && v[o.Name] != "" {
				set = append(set, o.Name)
			}
		}
		if len(set) == 0 {
			continue
		}
		for _, r := range g.required {
			if v[r] == "" {
				return &ConfigError{r, "", fmt.Sprintf("required when %s is set (%s turns %s login on and needs %s)", set[0], g.turnOn, strings.TrimSuffix(g.prefix, "-"), strings.Join(g.required, ", "))}
			}
		}
	}
	if v["ldap-insecure-no-ssl"] != "" && (v["ldap-start-tls"] != "" || v["ldap-ca-cert"] != "" || v["ldap-insecure-skip-verify"] != "") {
		return &ConfigError{"ldap-insecure-no-ssl", "true", "plain LDAP uses no TLS: clear ldap-start-tls, ldap-ca-cert and ldap-insecure-skip-verify, or set ldap-insecure-no-ssl to false"}
	}
	for _, p := range [][2]string{{"default-build-logs-to-retain", "max-build-logs-to-retain"}, {"default-days-to-retain-build-logs", "max-days-to-retain-build-logs"}} {
		def, _ := strconv.Atoi(v[p[0]])
		limit, _ := strconv.Atoi(v[p[1]])
		if limit > 0 && def > limit {
			return &ConfigError{p[0], strconv.Itoa(def), fmt.Sprintf("may not exceed %s (%d)", p[1], limit)}
		}
	}
	if err := checkTLSPair(v); err != nil {
		return err
	}
	if v["encryption-key"] != "" && v["encryption-key"] == v["old-encryption-key"] {
		return &ConfigError{"old-encryption-key", "(hidden)", "is the same as encryption-key: to rotate, set old-encryption-key to the key in use and encryption-key to the new one; clear old-encryption-key once the web has restarted"}
	}
	return nil
}

// optionEnv renders the table's variables for one role, sorted by the table's order. Secrets
// not resolved yet (render knows no Juju) show as a placeholder naming the URI.
func optionEnv(opts map[string]string, role optRole, p Paths) []concourse.EnvVar {
	var out []concourse.EnvVar
	for _, o := range optionTable() {
		v := opts[o.Name]
		if o.Env == "" || o.Role&role == 0 || v == "" {
			continue
		}
		if rel, ok := caCertOptions[o.Name]; ok && !filepath.IsAbs(v) {
			v = filepath.Join(p.ConfigDir, rel)
		}
		if o.Secret && strings.HasPrefix(v, "secret:") {
			v = "<content of " + v + ">"
		}
		out = append(out, concourse.EnvVar{Name: o.Env, Value: v})
	}
	return out
}

// webOptionFiles are the files the web's options need beside web.env: CA certificates given as
// PEM. They are public; written 0644 and hashed into the web's inputs (a new CA restarts it).
func webOptionFiles(opts map[string]string, p Paths) []fileSpec {
	var out []fileSpec
	for _, o := range optionTable() {
		rel, ok := caCertOptions[o.Name]
		if v := opts[o.Name]; ok && v != "" && !filepath.IsAbs(v) {
			out = append(out, fileSpec{Path: filepath.Join(p.ConfigDir, rel), Data: []byte(v + "\n"), Mode: 0o644, UID: 0, GID: 0})
		}
	}
	return out
}

// removeStaleOptionFiles removes the CA files of login options that no longer give PEM text
// (cleared, or now a path on the unit), once the web runs without them: a certificate the
// operator withdrew should not stay on the machine as if it were still trusted.
func (u *unitRun) removeStaleOptionFiles(kept []fileSpec) error {
	keep := map[string]bool{}
	for _, f := range kept {
		keep[f.Path] = true
	}
	for _, name := range sortedKeys(caCertOptions) {
		path := filepath.Join(u.deps.Paths.ConfigDir, caCertOptions[name])
		if keep[path] {
			continue
		}
		switch err := os.Remove(path); {
		case err == nil:
			u.act("Remove %s: %s no longer holds a certificate", path, name)
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("removing %s: %w", path, err)
		}
	}
	return nil
}

// extraLocalUsers splits the checked extra-local-users value into users.
func extraLocalUsers(v string) []concourse.LocalUser {
	var out []concourse.LocalUser
	for _, e := range splitList(v) {
		name, pw, _ := strings.Cut(e, ":")
		out = append(out, concourse.LocalUser{Name: name, Password: pw})
	}
	return out
}

// noEffectOptions lists, for check-status, the set options Concourse has no setting for.
func noEffectOptions(opts map[string]string) map[string]string {
	out := map[string]string{}
	for name, why := range noSetting {
		if v := opts[name]; v != "" {
			out[name] = v + ": " + why
		}
	}
	return out
}

// ---- value checks: each returns the rendered value or what is allowed.

func checkText(v string) (string, error) {
	if strings.ContainsFunc(v, isCtl) {
		return "", errors.New("expected one line of text without control characters")
	}
	return v, nil
}

func checkSecretText(v string) (string, error) {
	if strings.ContainsFunc(v, isCtl) {
		return "", errors.New("expected one line without control characters, or a Juju secret URI (secret:…)")
	}
	return v, nil
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

func checkSwitch(v string) (string, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return "", errors.New("expected true or false")
	}
	if !b {
		return "", nil
	}
	return "true", nil
}

func checkCount(v string) (string, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return "", errors.New("expected a whole number, 0 or more (0: not set)")
	}
	if n == 0 {
		return "", nil
	}
	return strconv.Itoa(n), nil
}

func checkPort(v string) (string, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return "", errors.New("expected a port number from 1 to 65535")
	}
	return strconv.Itoa(n), nil
}

func checkPositive(v string) (string, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return "", errors.New("expected a whole number, 1 or more")
	}
	return strconv.Itoa(n), nil
}

func checkDuration(v string) (string, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return "", errors.New("expected a positive Go duration such as 120h, 90m or 1h30m, or empty")
	}
	return v, nil
}

var (
	attrRE  = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+)$`)
	tokenRE = regexp.MustCompile(`^[^\s,'"\\]+$`)
)

func checkAttr(v string) (string, error) {
	if !attrRE.MatchString(v) {
		return "", errors.New("expected an LDAP attribute name such as uid, cn or memberUid")
	}
	return v, nil
}

func checkToken(v string) (string, error) {
	if !tokenRE.MatchString(v) || strings.ContainsFunc(v, isCtl) {
		return "", errors.New("expected one word without spaces, commas, quotes or backslashes")
	}
	return v, nil
}

func checkDN(v string) (string, error) {
	if !strings.Contains(v, "=") || strings.ContainsFunc(v, isCtl) {
		return "", errors.New("expected an LDAP DN such as cn=admin,dc=example,dc=com")
	}
	return v, nil
}

// checkFilter accepts an LDAP filter: parenthesised, with balanced parentheses.
func checkFilter(v string) (string, error) {
	bad := errors.New("expected an LDAP filter in parentheses such as (objectClass=person)")
	if !strings.HasPrefix(v, "(") || !strings.HasSuffix(v, ")") || strings.ContainsFunc(v, isCtl) {
		return "", bad
	}
	depth := 0
	for i, r := range v {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		}
		if depth < 0 || (depth == 0 && i != len(v)-1) {
			return "", bad
		}
	}
	if depth != 0 {
		return "", bad
	}
	return v, nil
}

// checkHostPort accepts host or host:port, the form --ldap-host takes (no scheme).
func checkHostPort(v string) (string, error) {
	bad := errors.New("expected a host name or address with an optional port, such as ldap.example.com or 10.0.0.7:389 (no ldap:// prefix)")
	host := v
	if h, port, err := net.SplitHostPort(v); err == nil {
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 1 || n > 65535 {
			return "", bad
		}
		host = h
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return v, nil
	}
	if !hostnameRE.MatchString(host) {
		return "", bad
	}
	return v, nil
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

func checkHTTPURL(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(v, " \t,") {
		return "", errors.New("expected an absolute http(s) URL such as https://login.example.com/oauth/authorize")
	}
	return v, nil
}

func checkProxyURL(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(v, " \t,") {
		return "", errors.New("expected a proxy URL such as http://proxy.example.com:3128")
	}
	return v, nil
}

func checkNoProxy(v string) (string, error) {
	var out []string
	for _, e := range splitList(v) {
		host := strings.TrimPrefix(e, ".")
		if h, port, err := net.SplitHostPort(host); err == nil {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				host = "" // not a host:port
			} else {
				host = h
			}
		}
		_, _, cidrErr := net.ParseCIDR(e)
		_, ipErr := netip.ParseAddr(host)
		if e != "*" && cidrErr != nil && ipErr != nil && !hostnameRE.MatchString(strings.TrimPrefix(host, "*.")) {
			return "", errors.New("expected comma-separated host names, .domains, IP addresses or CIDRs such as localhost,.internal,10.0.0.0/8")
		}
		out = append(out, e)
	}
	return strings.Join(out, ","), nil
}

// checkScopes takes scopes separated by commas or spaces and renders them comma-separated, the
// list form Concourse reads from the environment.
func checkScopes(v string) (string, error) {
	words := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	for _, w := range words {
		if _, err := checkToken(w); err != nil {
			return "", errors.New("expected scopes separated by commas or spaces, such as openid,groups")
		}
	}
	return strings.Join(words, ","), nil
}

func checkUserList(v string) (string, error) {
	names := splitList(v)
	for _, n := range names {
		if strings.ContainsAny(n, ":") || strings.ContainsFunc(n, func(r rune) bool { return r == ' ' || isCtl(r) }) {
			return "", errors.New("expected comma-separated user names without ':' or spaces")
		}
	}
	return strings.Join(names, ","), nil
}

func checkGroupList(v string) (string, error) {
	names := splitList(v)
	for _, n := range names {
		if strings.ContainsFunc(n, isCtl) {
			return "", errors.New("expected comma-separated names without control characters")
		}
	}
	return strings.Join(names, ","), nil
}

// checkLocalUsers accepts user:password entries separated by commas; a password may be its
// bcrypt hash (cost ≥ 10). The error names the bad entry's user, never a password.
func checkLocalUsers(v string) (string, error) {
	var out []string
	seen := map[string]bool{}
	for i, e := range splitList(v) {
		name, pw, ok := strings.Cut(e, ":")
		switch {
		case !ok || name == "" || pw == "":
			return "", fmt.Errorf("entry %d is not user:password (comma-separated entries; a password may not contain ',')", i+1)
		case !isName(name):
			return "", fmt.Errorf("user name %q of entry %d: expected %s", cut(name, 32), i+1, adminUserChars)
		case strings.ContainsFunc(pw, isCtl):
			return "", fmt.Errorf("the password of %s contains a control character", name)
		case strings.HasPrefix(pw, "$2") && !concourse.IsBcrypt(pw):
			return "", fmt.Errorf("the password of %s looks like a bcrypt hash but is not one Concourse accepts (60 characters, $2a$/$2b$/$2y$, cost 10 or more)", name)
		case seen[name]:
			return "", fmt.Errorf("user %s is listed twice", name)
		}
		seen[name] = true
		out = append(out, name+":"+pw)
	}
	return strings.Join(out, ","), nil
}

// checkCACert accepts PEM certificates (written to a file) or the absolute path of one on the
// units (the Python charm's form).
func checkCACert(v string) (string, error) {
	if filepath.IsAbs(v) && !strings.ContainsAny(v, "\n,") {
		return filepath.Clean(v), nil
	}
	rest := []byte(strings.ReplaceAll(v, "\r\n", "\n"))
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return "", fmt.Errorf("expected PEM certificates; found a %s block", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return "", fmt.Errorf("certificate %d does not parse: %v", n+1, err)
		}
		n++
	}
	if n == 0 || strings.TrimSpace(string(rest)) != "" {
		return "", errors.New("expected PEM certificates (-----BEGIN CERTIFICATE-----), or the absolute path of a CA file on the units")
	}
	return strings.TrimSpace(strings.ReplaceAll(v, "\r\n", "\n")), nil
}

func checkEncryptionKey(v string) (string, error) {
	if !concourse.ValidEncryptionKey(v) || strings.ContainsFunc(v, isCtl) {
		return "", fmt.Errorf("expected a key of exactly 16 or 32 characters (this one has %d), or a Juju secret URI (secret:…)", len(v))
	}
	return v, nil
}

// ---- what the web needs at hook time: secrets, hashes, the encryption check.

// resolveOptionSecrets replaces every secret option given as a Juju secret URI by its content
// (the key named after the option, or the secret's only key), checked like a literal value. A
// secret the application cannot read blocks with the command that grants it.
func (u *unitRun) resolveOptionSecrets(ctx context.Context, cfg Config) (Config, error) {
	opts := make(map[string]string, len(cfg.Opts))
	for k, v := range cfg.Opts {
		opts[k] = v
	}
	for _, o := range optionTable() {
		uri := opts[o.Name]
		if !o.Secret || !strings.HasPrefix(uri, "secret:") {
			continue
		}
		content, err := u.juju.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Refresh: true})
		if err != nil {
			return cfg, &ConfigError{o.Name, uri, fmt.Sprintf("the secret cannot be read (%v): grant it with juju grant-secret %s %s", err, uri, u.f.Env.AppName)}
		}
		v, ok := content[o.Name]
		if !ok && len(content) == 1 {
			for _, only := range content {
				v, ok = only, true
			}
		}
		if !ok {
			return cfg, &ConfigError{o.Name, uri, fmt.Sprintf("the secret has %d keys and none is named %s: give it one key, or one named %s", len(content), o.Name, o.Name)}
		}
		checked, err := o.Check(strings.TrimSpace(v))
		if err != nil {
			return cfg, &ConfigError{o.Name, uri, "the secret's content: " + err.Error()}
		}
		opts[o.Name] = checked
	}
	if err := checkOptionRules(opts); err != nil {
		return cfg, err
	}
	cfg.Opts = opts
	cfg.hashes = reusingHasher(u.path(fileWebEnv), u.path(fileHashChecks))
	cfg.hashPassword = cfg.hashes.hash
	return cfg, nil
}

// fileHashChecks remembers, root-only, that a local user's hash in web.env is the hash of the
// password the charm has now: sha256(hash, password) per user, so a hook need not spend a bcrypt
// comparison (66 ms at cost 10 on the project's machine) per user to keep the hash. It reveals
// nothing to root that root cannot read already (config-get, the admin password secret).
const fileHashChecks = "keys/local-users.checked"

// hashCache hashes local users' passwords with bcrypt, keeping the hash web.env already holds
// for a user while it still matches: bcrypt salts afresh, and a new hash in every hook would
// restart the web in every hook.
type hashCache struct {
	prev    map[string]string // user → hash in the current web.env
	checked map[string]string // user → check of (hash, password) from fileHashChecks
	now     map[string]string // the checks of this hook's hashes
}

func reusingHasher(envPath, checksPath string) *hashCache {
	c := &hashCache{prev: map[string]string{}, checked: map[string]string{}, now: map[string]string{}}
	if b, err := os.ReadFile(envPath); err == nil {
		if env, err := concourse.ParseEnvFile(b); err == nil {
			for _, e := range strings.Split(env["CONCOURSE_ADD_LOCAL_USER"], ",") {
				if name, h, ok := strings.Cut(e, ":"); ok {
					c.prev[name] = h
				}
			}
		}
	}
	if b, err := os.ReadFile(checksPath); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, sum, ok := strings.Cut(line, " "); ok {
				c.checked[name] = sum
			}
		}
	}
	return c
}

func hashCheck(hash, password string) string {
	sum := sha256.Sum256([]byte(hash + "\x00" + password))
	return hex.EncodeToString(sum[:])
}

func (c *hashCache) hash(user, password string) (string, error) {
	if concourse.IsBcrypt(password) {
		// Given as a hash (extra-local-users, or the admin's kept hash, relcache.go): keep the
		// check already recorded for it, so the checks file does not change back and forth.
		if c.prev[user] == password && c.checked[user] != "" {
			c.now[user] = c.checked[user]
		}
		return password, nil
	}
	h := c.prev[user]
	if h == "" || (c.checked[user] != hashCheck(h, password) && !concourse.HashMatches(h, password)) {
		var err error
		if h, err = concourse.HashPassword(password); err != nil {
			return "", err
		}
	}
	c.now[user] = hashCheck(h, password)
	return h, nil
}

// file is fileHashChecks' content for this hook's hashes.
func (c *hashCache) file() []byte {
	var b strings.Builder
	for _, user := range sortedKeys(c.now) {
		b.WriteString(user + " " + c.now[user] + "\n")
	}
	return []byte(b.String())
}

// placeholderHash is what `render` shows for a hashed password: render knows no secret.
func placeholderHash(user, password string) (string, error) {
	if concourse.IsBcrypt(password) {
		return password, nil
	}
	return "<bcrypt of " + user + "'s password>", nil
}

// webLocalUsers hashes the admin's and extra-local-users' passwords for web.env.
func webLocalUsers(cfg Config, adminPassword string) (admin string, extra []concourse.LocalUser, err error) {
	hash := cfg.hashPassword
	if hash == nil {
		hash = func(_, pw string) (string, error) {
			if concourse.IsBcrypt(pw) {
				return pw, nil
			}
			return concourse.HashPassword(pw)
		}
	}
	if admin, err = hash(cfg.AdminUser, adminPassword); err != nil {
		return "", nil, err
	}
	v := cfg.Opts["extra-local-users"]
	if strings.HasPrefix(v, "secret:") {
		// Only `render` gets here: the hooks resolve the secret first.
		return admin, []concourse.LocalUser{{Name: "<users-from-" + strings.ReplaceAll(v, ":", "-") + ">", Password: "<bcrypt>"}}, nil
	}
	for _, lu := range extraLocalUsers(v) {
		h, err := hash(lu.Name, lu.Password)
		if err != nil {
			return "", nil, err
		}
		extra = append(extra, concourse.LocalUser{Name: lu.Name, Password: h})
	}
	return admin, extra, nil
}

// encryptionRefusal checks, before web.env changes, that the web will be able to read what it
// encrypted: the database's encrypted rows must open with encryption-key or old-encryption-key.
// It runs before anything is written (not as a step of the plan, whose file writes come first):
// a refused key must not wait in web.env for the next restart. The database itself is the record
// of which key it is encrypted with, so nothing is remembered and a unit refreshed from the
// Python charm is covered too. It runs only when web.env is about to change and a key is set
// or the current web.env has one (a key being removed). "" means go ahead.
func (u *unitRun) encryptionRefusal(ctx context.Context, cfg Config, db concourse.DBConfig, envFile []byte) string {
	newKey, oldKey := cfg.Opts["encryption-key"], cfg.Opts["old-encryption-key"]
	current, _ := os.ReadFile(u.path(fileWebEnv))
	if bytes.Equal(current, envFile) || (newKey == "" && oldKey == "" && !bytes.Contains(current, []byte("ENCRYPTION_KEY="))) {
		return ""
	}
	err := concourse.CheckEncryptionKeys(ctx, db, newKey, oldKey, 10*time.Second)
	var p *concourse.EncryptionProblem
	switch {
	case errors.As(err, &p) && p.NoKey:
		return fmt.Sprintf("Refusing to change the web's encryption keys: %v. Set encryption-key back to the key in use; to stop encrypting, set old-encryption-key to it and leave encryption-key empty", err)
	case errors.As(err, &p):
		return fmt.Sprintf("Refusing to change the web's encryption keys: %v. To rotate, set old-encryption-key to the key in use and encryption-key to the new one in the same change", err)
	case err != nil:
		return fmt.Sprintf("Cannot check the database's encryption before changing the web: %v", err)
	}
	return ""
}

// hashOfFiles hashes the paths and contents of files, for a service's inputs.
func hashOfFiles(files []fileSpec) string {
	var b []byte
	for _, f := range files {
		b = append(append(append(b, f.Path...), 0), f.Data...)
	}
	return hashOf(b)
}
