package concourse

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Vault as Concourse's credential manager (`concourse web --help`, "Vault Credential Management",
// the same in 7.14.3 and 8.2.5 but for --vault-enable-kv-mount-cache, 8.2+). The web logs in
// (a client token, or an auth backend such as AppRole with its params), then resolves each
// ((var)) of a pipeline by reading <path-prefix><lookup template> for each template in order,
// then <path-prefix>/<shared-path>/<var>; a KV v2 mount is detected by a preflight request and
// read under its data/ segment.

// VaultConfig is what VaultEnv renders: the vault-* options, or what the vault-kv relation
// hands over (AppRoleVault). Zero values leave Concourse's defaults.
type VaultConfig struct {
	// URL of the Vault server, http(s)://host[:port] (required). Without a port Concourse
	// looks the host up in DNS SRV records first.
	URL string
	// PathPrefix is where the credentials live ("" → Concourse's /concourse); with the vault-kv
	// relation, "/" + the mount. It starts with '/' and names a path (no trailing '/').
	PathPrefix string
	// LookupTemplates are tried in order below PathPrefix ("" → Concourse's
	// /{{.Team}}/{{.Pipeline}}/{{.Secret}} then /{{.Team}}/{{.Secret}}). Each starts with '/',
	// uses only {{.Team}}, {{.Pipeline}} and {{.Secret}}, and must use {{.Secret}}.
	LookupTemplates []string
	// SharedPath, below PathPrefix, is tried last for every team ("" → none).
	SharedPath string
	// Namespace is a Vault Enterprise namespace for the login and the reads ("" → none).
	Namespace string

	// CACert is the PEM of the CA(s) that sign the server's certificate ("" → the system's
	// roots); written to Files.CACert. ClientCert and ClientKey are a PEM certificate and its
	// key for TLS client authentication (both or neither), written to Files.ClientCert and
	// Files.ClientKey.
	CACert, ClientCert, ClientKey string
	Files                         VaultFilePaths
	// ServerName is the TLS SNI and verification name when it differs from the URL's host.
	ServerName string
	// InsecureSkipVerify turns off the server certificate check (tests, never production).
	InsecureSkipVerify bool

	// ClientToken is a Vault token used as it is (renewed while it can be). Secret.
	ClientToken string
	// AuthBackend is the auth method's mount ("approle", "cert", …) the web logs in with,
	// POSTing AuthParams to /v1/auth/<backend>/login. Exactly one of ClientToken and
	// AuthBackend is required.
	AuthBackend string
	// AuthParams are the login's parameters, e.g. role_id and secret_id for AppRole. Secret:
	// rendered as one "name:value,…" variable, so no value may hold ','.
	AuthParams []VaultAuthParam
	// AuthBackendMaxTTL forces a fresh login that often (0 → renew the token while it can be,
	// then log in again when its lease ends).
	AuthBackendMaxTTL time.Duration

	// KVMountCache caches the KV version preflight per mount (8.2+; 7.x ignores the variable).
	KVMountCache bool
}

// VaultAuthParam is one --vault-auth-param NAME:VALUE. Concourse splits each at its first ':',
// so a value may hold ':' (a secret_id "abc:def:ghi" reached the login whole with the real
// 7.14.3), but not ',', which separates the list.
type VaultAuthParam struct{ Name, Value string }

// ParseVaultAuthParams reads the vault-auth-param option's form, "name:value,name:value" (what
// CONCOURSE_VAULT_AUTH_PARAM takes). Blank entries are skipped; VaultEnv checks the rest. Errors
// name the entry by position and never show a value. Spaces around names and values are dropped.
func ParseVaultAuthParams(s string) ([]VaultAuthParam, error) {
	var out []VaultAuthParam
	for i, entry := range strings.Split(s, ",") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		name, value, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("auth param %d is not name:value", i+1)
		}
		out = append(out, VaultAuthParam{strings.TrimSpace(name), strings.TrimSpace(value)})
	}
	return out, nil
}

// VaultFilePaths are where the caller writes the PEM files of a VaultConfig (absolute paths; one
// is needed for each PEM given).
type VaultFilePaths struct{ CACert, ClientCert, ClientKey string }

// VaultFile is a file VaultEnv's variables point at, for the caller to write (WriteFileAtomic)
// before the web starts. Secret files are to be readable by the web's group only (0640
// root:concourse, as web.env), the others may be world-readable.
type VaultFile struct {
	Path    string
	Content []byte
	Secret  bool
}

// VaultRendered is what VaultEnv returns.
type VaultRendered struct {
	Env   []EnvVar    // sorted by name
	Files []VaultFile // in the order CA cert, client cert, client key
	// Secret names the variables of Env whose values are secrets: keep them in web.env (never in
	// argv, the unit file, a status or a log).
	Secret []string
}

// AppRoleVault is the VaultConfig for what the Vault charm hands over on the vault-kv relation:
// its URL and CA, the KV mount made for this application, and one unit's AppRole credentials
// (role-id and role-secret-id). Credentials live at /<mount>/<team>/<pipeline>/<var>.
func AppRoleVault(vaultURL, caCertPEM, mount, roleID, secretID string) VaultConfig {
	return VaultConfig{
		URL:         vaultURL,
		CACert:      caCertPEM,
		PathPrefix:  "/" + strings.Trim(mount, "/"),
		AuthBackend: "approle",
		AuthParams:  []VaultAuthParam{{"role_id", roleID}, {"secret_id", secretID}},
	}
}

// The variables VaultEnv and SecretCacheEnv may render: the hooks remove every one of them
// from web.env when Vault or the cache is turned off.
const (
	envVaultURL          = "CONCOURSE_VAULT_URL"
	envVaultPathPrefix   = "CONCOURSE_VAULT_PATH_PREFIX"
	envVaultLookup       = "CONCOURSE_VAULT_LOOKUP_TEMPLATES"
	envVaultSharedPath   = "CONCOURSE_VAULT_SHARED_PATH"
	envVaultNamespace    = "CONCOURSE_VAULT_NAMESPACE"
	envVaultCACert       = "CONCOURSE_VAULT_CA_CERT"
	envVaultClientCert   = "CONCOURSE_VAULT_CLIENT_CERT"
	envVaultClientKey    = "CONCOURSE_VAULT_CLIENT_KEY"
	envVaultServerName   = "CONCOURSE_VAULT_SERVER_NAME"
	envVaultInsecure     = "CONCOURSE_VAULT_INSECURE_SKIP_VERIFY"
	envVaultClientToken  = "CONCOURSE_VAULT_CLIENT_TOKEN"
	envVaultAuthBackend  = "CONCOURSE_VAULT_AUTH_BACKEND"
	envVaultAuthParam    = "CONCOURSE_VAULT_AUTH_PARAM"
	envVaultAuthMaxTTL   = "CONCOURSE_VAULT_AUTH_BACKEND_MAX_TTL"
	envVaultKVMountCache = "CONCOURSE_VAULT_ENABLE_KV_MOUNT_CACHE"

	envSecretCacheEnabled  = "CONCOURSE_SECRET_CACHE_ENABLED"
	envSecretCacheDuration = "CONCOURSE_SECRET_CACHE_DURATION"
	envSecretCacheNotFound = "CONCOURSE_SECRET_CACHE_DURATION_NOTFOUND"
)

// VaultEnvNames are every variable VaultEnv can render.
func VaultEnvNames() []string {
	return []string{envVaultURL, envVaultPathPrefix, envVaultLookup, envVaultSharedPath, envVaultNamespace,
		envVaultCACert, envVaultClientCert, envVaultClientKey, envVaultServerName, envVaultInsecure,
		envVaultClientToken, envVaultAuthBackend, envVaultAuthParam, envVaultAuthMaxTTL, envVaultKVMountCache}
}

// SecretCacheEnvNames are every variable SecretCacheEnv can render.
func SecretCacheEnvNames() []string {
	return []string{envSecretCacheEnabled, envSecretCacheDuration, envSecretCacheNotFound}
}

// vaultTemplateFields are the fields Concourse hands a lookup template (creds.SecretLookupParams).
type vaultTemplateFields struct{ Team, Pipeline, Secret string }

// VaultEnv validates c and renders its variables for web.env, the files they point at and which
// variables are secret. Every problem is a *FieldError (joined) naming the VaultConfig field; no
// error carries a token, an auth parameter's value or a key.
func VaultEnv(c VaultConfig) (VaultRendered, error) {
	var ck checker
	var out VaultRendered
	set := func(name, value string) { out.Env = append(out.Env, EnvVar{name, value}) }

	switch u, err := checkVaultURL(c.URL); {
	case c.URL == "":
		ck.add("URL", envVaultURL, "a Vault URL is required (https://host:8200)")
	case err != nil:
		ck.add("URL", envVaultURL, "%v", err)
	default:
		set(envVaultURL, u)
	}

	if c.PathPrefix != "" {
		if err := checkVaultPath(c.PathPrefix, true); err != nil {
			ck.add("PathPrefix", envVaultPathPrefix, "%v", err)
		} else {
			set(envVaultPathPrefix, c.PathPrefix)
		}
	}
	var templates []string
	for i, tmpl := range c.LookupTemplates {
		tmpl = strings.TrimSpace(tmpl)
		if tmpl == "" {
			continue
		}
		if err := checkLookupTemplate(tmpl); err != nil {
			ck.add(fmt.Sprintf("LookupTemplates[%d]", i), envVaultLookup, "%v", err)
			continue
		}
		if !slices.Contains(templates, tmpl) {
			templates = append(templates, tmpl)
		}
	}
	if len(templates) > 0 {
		set(envVaultLookup, strings.Join(templates, ","))
	}
	if c.SharedPath != "" {
		if err := checkVaultPath(c.SharedPath, false); err != nil {
			ck.add("SharedPath", envVaultSharedPath, "%v", err)
		} else {
			set(envVaultSharedPath, c.SharedPath)
		}
	}
	if c.Namespace != "" {
		if err := checkVaultPath(c.Namespace, false); err != nil {
			ck.add("Namespace", envVaultNamespace, "%v", err)
		} else {
			set(envVaultNamespace, c.Namespace)
		}
	}

	pemFile := func(field, env, content, path string, secret bool, check func(string) error) {
		if content == "" {
			return
		}
		ck.absPath("Files."+field, env, path, true)
		if err := check(content); err != nil {
			ck.add(field, env, "%v", err)
			return
		}
		set(env, path)
		out.Files = append(out.Files, VaultFile{Path: path, Content: []byte(content), Secret: secret})
	}
	pemFile("CACert", envVaultCACert, c.CACert, c.Files.CACert, false, checkCACerts)
	switch {
	case (c.ClientCert == "") != (c.ClientKey == ""):
		ck.add("ClientCert", envVaultClientCert, "a client certificate and its key go together: give both or neither")
	case c.ClientCert != "":
		if _, err := tls.X509KeyPair([]byte(c.ClientCert), []byte(c.ClientKey)); err != nil {
			// crypto/tls's errors name PEM blocks and key types, never key material.
			ck.add("ClientCert", envVaultClientCert, "the client certificate and key do not form a pair: %v", err)
			break
		}
		ok := func(string) error { return nil }
		pemFile("ClientCert", envVaultClientCert, c.ClientCert, c.Files.ClientCert, false, ok)
		pemFile("ClientKey", envVaultClientKey, c.ClientKey, c.Files.ClientKey, true, ok)
	}
	if c.ServerName != "" {
		ck.host("ServerName", envVaultServerName, c.ServerName)
		set(envVaultServerName, c.ServerName)
	}
	if c.InsecureSkipVerify {
		set(envVaultInsecure, "true")
	}

	switch {
	case c.ClientToken == "" && c.AuthBackend == "":
		ck.add("AuthBackend", envVaultAuthBackend, "Vault needs a client token or an auth backend (approle with role_id and secret_id params): Concourse refuses to start with neither")
	case c.ClientToken != "" && c.AuthBackend != "":
		// Concourse would silently use the token and never log in.
		ck.add("ClientToken", envVaultClientToken, "give a client token or an auth backend, not both: the token would win and the backend never be used")
	}
	if c.ClientToken != "" {
		if strings.ContainsFunc(c.ClientToken, isSpaceOrControl) {
			ck.add("ClientToken", envVaultClientToken, "the token contains whitespace or control characters")
		} else {
			set(envVaultClientToken, c.ClientToken)
			out.Secret = append(out.Secret, envVaultClientToken)
		}
	}
	if c.AuthBackend != "" {
		if err := checkVaultPath(c.AuthBackend, false); err != nil {
			ck.add("AuthBackend", envVaultAuthBackend, "%v", err)
		} else {
			set(envVaultAuthBackend, strings.Trim(c.AuthBackend, "/"))
		}
	}
	if len(c.AuthParams) > 0 {
		if c.AuthBackend == "" {
			ck.add("AuthParams", envVaultAuthParam, "auth params are only sent to an auth backend: set the backend too")
		}
		var entries []string
		seen := map[string]bool{}
		for i, p := range c.AuthParams {
			field := fmt.Sprintf("AuthParams[%d]", i)
			switch {
			case p.Name == "" || strings.ContainsAny(p.Name, ":,") || strings.ContainsFunc(p.Name, isSpaceOrControl):
				ck.add(field, envVaultAuthParam, "param name %q must be non-empty without ':', ',' or whitespace", p.Name)
			case seen[p.Name]:
				ck.add(field, envVaultAuthParam, "param %s is given twice", p.Name)
			case p.Value == "":
				ck.add(field, envVaultAuthParam, "param %s has no value", p.Name)
			case strings.Contains(p.Value, ","):
				// One NAME:VALUE list split on ',' with no escaping.
				ck.add(field, envVaultAuthParam, "the value of param %s contains ',', which Concourse reads as a list separator", p.Name)
			case strings.ContainsFunc(p.Value, isControl):
				ck.add(field, envVaultAuthParam, "the value of param %s contains a control character", p.Name)
			default:
				entries = append(entries, p.Name+":"+p.Value)
			}
			seen[p.Name] = true
		}
		if len(entries) == len(c.AuthParams) {
			set(envVaultAuthParam, strings.Join(entries, ","))
			out.Secret = append(out.Secret, envVaultAuthParam)
		}
	}
	if c.AuthBackendMaxTTL != 0 {
		if c.AuthBackendMaxTTL < time.Second {
			ck.add("AuthBackendMaxTTL", envVaultAuthMaxTTL, "%s is below one second: leave it 0 to renew the token instead", c.AuthBackendMaxTTL)
		} else {
			set(envVaultAuthMaxTTL, c.AuthBackendMaxTTL.String())
		}
	}
	if c.KVMountCache {
		set(envVaultKVMountCache, "true")
	}

	env, err := finish(out.Env, nil, &ck) // checked and sorted like WebEnv's
	if err != nil {
		return VaultRendered{}, err
	}
	out.Env = env
	return out, nil
}

// checkVaultURL accepts http(s)://host[:port] (a path would be sent before /v1 and is no
// Vault API) and drops a trailing '/'.
func checkVaultURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q must start with https:// (or http://)", s)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.Trim(u.Path, "/") != "" {
		return "", fmt.Errorf("%q may carry only a scheme, a host and a port (the API lives at /v1 of the server)", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q has an invalid port", s)
		}
	}
	if strings.ContainsAny(s, ", \t\n\r") {
		return "", fmt.Errorf("%q contains a comma or whitespace", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// checkVaultPath accepts a Vault path: segments of printable characters without whitespace or
// ',', no empty, "." or ".." segment; rooted (a leading '/') when rooted is set.
func checkVaultPath(p string, rooted bool) error {
	if rooted && !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q must start with '/'", p)
	}
	if strings.ContainsAny(p, ",{}") || strings.ContainsFunc(p, isSpaceOrControl) {
		return fmt.Errorf("path %q may not contain ',', braces, whitespace or control characters", p)
	}
	trimmed := strings.TrimPrefix(p, "/")
	if rooted && strings.HasSuffix(p, "/") {
		return fmt.Errorf("path %q may not end with '/'", p)
	}
	trimmed = strings.TrimSuffix(trimmed, "/")
	if trimmed == "" {
		return fmt.Errorf("path %q names nothing", p)
	}
	for _, seg := range strings.Split(trimmed, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("path %q has an empty, '.' or '..' segment", p)
		}
	}
	return nil
}

// checkLookupTemplate parses tmpl as Concourse does (text/template) and runs it on sample values,
// which catches a field Concourse does not provide; the result must be a path that uses the
// secret's name, or every ((var)) would read the same secret.
func checkLookupTemplate(tmpl string) error {
	if !strings.HasPrefix(tmpl, "/") {
		return fmt.Errorf("template %q must start with '/'", tmpl)
	}
	if strings.ContainsAny(tmpl, ",") || strings.ContainsFunc(tmpl, isControl) {
		return fmt.Errorf("template %q may not contain ',' (the list separator) or control characters", tmpl)
	}
	t, err := template.New("lookup").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return fmt.Errorf("template %q does not parse: %v", tmpl, err)
	}
	var b strings.Builder
	const marker = "SECRETNAMEMARKER"
	if err := t.Execute(&b, vaultTemplateFields{Team: "team", Pipeline: "pipeline", Secret: marker}); err != nil {
		return fmt.Errorf("template %q may use only {{.Team}}, {{.Pipeline}} and {{.Secret}}: %v", tmpl, err)
	}
	if !strings.Contains(b.String(), marker) {
		return fmt.Errorf("template %q does not use {{.Secret}}: every ((var)) would read the same secret", tmpl)
	}
	if err := checkVaultPath(b.String(), true); err != nil {
		return fmt.Errorf("template %q does not make a path: %v", tmpl, err)
	}
	return nil
}

// checkCACerts accepts PEM holding at least one certificate and nothing else.
func checkCACerts(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("the CA certificate holds a %q PEM block: give certificates only", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("the CA certificate's block %d does not parse: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("the CA certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("the CA certificate has text after its last PEM block")
	}
	return nil
}

// SecretCacheConfig is Concourse's in-memory cache of credential-manager answers, for any
// credential manager. Zero durations leave Concourse's defaults (1m for found, 10s for not found).
type SecretCacheConfig struct {
	Enabled bool
	// Duration bounds how long a found secret is reused (less if its lease is shorter).
	Duration time.Duration
	// NotFoundDuration is how long a "not found" is reused.
	NotFoundDuration time.Duration
}

// SecretCacheEnv validates c and renders its variables. The durations only apply to an enabled
// cache, so they are rendered only then; CONCOURSE_SECRET_CACHE_ENABLED is always rendered, so
// web.env says which way it is.
func SecretCacheEnv(c SecretCacheConfig) ([]EnvVar, error) {
	var ck checker
	vars := []EnvVar{{envSecretCacheEnabled, strconv.FormatBool(c.Enabled)}}
	for _, d := range []struct {
		field, env string
		v          time.Duration
	}{
		{"Duration", envSecretCacheDuration, c.Duration},
		{"NotFoundDuration", envSecretCacheNotFound, c.NotFoundDuration},
	} {
		switch {
		case d.v < 0:
			ck.add(d.field, d.env, "%s is negative", d.v)
		case d.v > 0 && d.v < time.Second:
			ck.add(d.field, d.env, "%s is below one second: Concourse would query the credential manager for nearly every use", d.v)
		case d.v > 0 && c.Enabled:
			vars = append(vars, EnvVar{d.env, d.v.String()})
		}
	}
	if err := ck.err(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(vars, func(a, b EnvVar) int { return strings.Compare(a.Name, b.Name) })
	return vars, nil
}

// WriteVaultFiles writes r's files with WriteFileAtomic: secret ones 0640, the others 0644,
// owned by uid:gid (root and the web's group in production). It reports whether any changed,
// which needs a web restart: Concourse reads them only at start.
func WriteVaultFiles(r VaultRendered, uid, gid int) (changed bool, err error) {
	for _, f := range r.Files {
		perm := os.FileMode(0o644)
		if f.Secret {
			perm = 0o640
		}
		c, err := WriteFileAtomic(f.Path, f.Content, perm, uid, gid)
		if err != nil {
			return changed, fmt.Errorf("writing the Vault file %s: %w", f.Path, err)
		}
		changed = changed || c
	}
	return changed, nil
}
