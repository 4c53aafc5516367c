package hooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Vault as the web's credential manager (issue 10): the vault-* options (the Python charm's
// names, types and defaults), or the vault-kv relation with the Vault charm, which hands each
// web unit AppRole credentials for a KV v2 mount made for this application.
//
// The relation wins over the options, as in the Python charm (its precedence: "relation data
// fully replaces manual vault-* options"), so a refresh of a unit that had both keeps working;
// the options it shadows are named in the status, so none is silently without effect. The
// options about where secrets sit in the mount (lookup templates, shared path) and how the web
// uses Vault (max TTL, KV mount cache) still apply with the relation.

// The vault-kv interface (canonical/vault-k8s-operator lib vault_kv.py, LIBPATCH 16).
const (
	epVault = "vault-kv"

	keyVaultMountSuffix = "mount_suffix"   // requirer app bag (leader)
	keyVaultEgress      = "egress_subnet"  // requirer unit bag: comma-joined CIDRs
	keyVaultNonce       = "nonce"          // requirer unit bag: random hex kept per unit
	keyVaultURL         = "vault_url"      // provider app bag
	keyVaultCA          = "ca_certificate" // provider app bag, PEM
	keyVaultMount       = "mount"          // provider app bag: charm-<app>-<suffix>
	keyVaultCreds       = "credentials"    // provider app bag: JSON nonce → secret id

	vaultMountSuffix = "concourse"
)

// Files the Vault settings point at, under Paths.ConfigDir: fixed names, so a cleared option's
// file can be found and removed.
var vaultFileNames = concourse.VaultFilePaths{CACert: "vault/ca.pem", ClientCert: "vault/client.pem", ClientKey: "vault/client-key.pem"}

// VaultFacts is what the vault-kv relation offers this unit.
type VaultFacts struct {
	RelationID int
	RemoteApp  string
	Egress     string // this unit's egress subnets on the relation, comma-joined
	URL, CA    string
	Mount      string
	RoleID     string
	SecretID   string
	// SecretErr: the provider listed credentials for our nonce but they cannot be read.
	SecretErr error
	NewNonce  bool // the nonce was made in this hook
}

// complete says whether the provider has handed over everything the web needs.
func (v *VaultFacts) complete() bool {
	return v != nil && v.URL != "" && v.Mount != "" && v.RoleID != "" && v.SecretID != "" && v.SecretErr == nil
}

// vaultFacts reads the vault-kv relation for a web unit: the provider's app bag and, when it
// lists credentials for this unit's nonce, their secret (--refresh, so a rotation is followed
// by whichever hook comes first). The unit's nonce is kept in its local state, made on the
// first hook that sees the relation (NewNonce: the state must be saved).
func (h *handler) vaultFacts(ctx context.Context, kept *relationCache, live map[int]bool, st *LocalState) (*VaultFacts, error) {
	ids, err := h.liveIDs(ctx, epVault)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	for _, id := range ids {
		live[id] = true
	}
	v := &VaultFacts{RelationID: ids[0]}
	if st.VaultNonce == "" {
		if st.VaultNonce, err = newVaultNonce(h.deps.Random); err != nil {
			return nil, err
		}
		v.NewNonce = true
	}
	nonce := st.VaultNonce
	if v.RemoteApp, err = h.relationApp(ctx, kept, v.RelationID); err != nil {
		return nil, fmt.Errorf("reading the Vault application: %w", err)
	}
	n, err := h.juju.NetworkGetRelation(ctx, epVault, v.RelationID)
	switch {
	case errors.Is(err, juju.ErrNoNetworkConfig):
		h.logf("no network config for %s: publishing no egress subnet", epVault)
	case err != nil:
		return nil, err
	default:
		v.Egress = strings.Join(n.EgressSubnets, ",")
	}
	if v.RemoteApp == "" {
		return v, nil
	}
	remote, err := h.juju.AppRelationData(ctx, v.RelationID, v.RemoteApp)
	if err != nil {
		return nil, fmt.Errorf("reading %s's application data: %w", v.RemoteApp, err)
	}
	v.URL, v.CA, v.Mount = strings.TrimSpace(remote[keyVaultURL]), strings.TrimSpace(remote[keyVaultCA]), strings.TrimSpace(remote[keyVaultMount])
	var creds map[string]string
	if raw := remote[keyVaultCreds]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &creds); err != nil {
			v.SecretErr = fmt.Errorf("the provider's credentials are not a JSON map of nonce to secret id: %v", err)
			return v, nil
		}
	}
	if uri := creds[nonce]; uri != "" && nonce != "" {
		content, err := h.juju.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Refresh: true})
		if err != nil {
			v.SecretErr = err
		} else {
			v.RoleID, v.SecretID = content["role-id"], content["role-secret-id"]
		}
	}
	return v, nil
}

// newVaultNonce is the random hex a unit identifies itself with on vault-kv.
func newVaultNonce(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	b := make([]byte, 16)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("generating the vault-kv nonce: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// vaultWrites is what a web unit publishes on vault-kv: its nonce and egress subnets, and (the
// leader) the mount suffix. Other units publish nothing there: workers need no Vault.
func (u *unitRun) vaultWrites() []relationWrite {
	v := u.f.Vault
	if v == nil || !u.role.Web {
		return nil
	}
	if v.NewNonce {
		u.changed = true // the nonce made in this hook is kept with the state it is saved in
	}
	out := []relationWrite{{ID: v.RelationID, Data: map[string]string{keyVaultNonce: u.state.VaultNonce, keyVaultEgress: v.Egress},
		What: fmt.Sprintf("the Vault nonce on relation %d", v.RelationID)}}
	if u.f.Leader {
		out = append(out, relationWrite{ID: v.RelationID, App: true, Data: map[string]string{keyVaultMountSuffix: vaultMountSuffix},
			What: fmt.Sprintf("the Vault mount request on relation %d", v.RelationID)})
	}
	return out
}

// vaultFromRelation is the Vault the relation gives, or nil while it gives none (the status
// says what is missing).
func (u *unitRun) vaultFromRelation() *concourse.VaultConfig {
	v := u.f.Vault
	switch {
	case v == nil:
		return nil
	case v.SecretErr != nil:
		u.status.note(fmt.Sprintf("Vault credentials on the vault-kv relation unreadable: %v", v.SecretErr))
		return nil
	case !v.complete():
		u.status.note("waiting for Vault credentials on the vault-kv relation")
		return nil
	}
	c := concourse.AppRoleVault(v.URL, v.CA, v.Mount, v.RoleID, v.SecretID)
	return &c
}

// vaultOptionNames are the options of the Vault group, in table order.
func vaultOptionNames() []string {
	var out []string
	for _, o := range vaultOptions() {
		out = append(out, o.Name)
	}
	return out
}

// shadowedByRelation are the options the vault-kv relation replaces: where Vault is and how the
// web logs in.
var shadowedByRelation = []string{"vault-url", "vault-ca-cert", "vault-client-cert", "vault-client-key", "vault-client-token",
	"vault-auth-backend", "vault-auth-param", "vault-namespace", "vault-path-prefix"}

// webVault renders the web's Vault and secret-cache settings: the variables for web.env, the
// files they name, and the options the relation shadows. With neither the relation nor
// vault-url, no Vault variable is rendered; other vault-* options then are an error (they would
// do nothing). The secret cache is always rendered, as the Python charm did.
func webVault(cfg Config, p Paths) (env []concourse.EnvVar, files []concourse.VaultFile, shadowed []string, err error) {
	o := cfg.Opts
	cache, err := concourse.SecretCacheEnv(concourse.SecretCacheConfig{
		Enabled: o["secret-cache-enabled"] == "true", Duration: mustDuration(o["secret-cache-duration"]),
		NotFoundDuration: mustDuration(o["secret-cache-duration-notfound"]),
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("secret cache: %w", err)
	}
	var c concourse.VaultConfig
	source := "the vault-* options"
	if cfg.vaultKV != nil {
		c, source = *cfg.vaultKV, "the vault-kv relation"
		for _, name := range shadowedByRelation {
			if o[name] != "" {
				shadowed = append(shadowed, name)
			}
		}
	} else {
		if o["vault-url"] == "" {
			for _, name := range vaultOptionNames() {
				if name != "vault-enable-kv-mount-cache" && !strings.HasPrefix(name, "secret-cache-") && o[name] != "" {
					shown := o[name]
					if optionsByName()[name].Secret {
						shown = "(hidden)"
					}
					return nil, nil, nil, &ConfigError{name, shown, "is set but no Vault is: set vault-url, or relate a Vault (juju integrate <app> vault:vault-kv), or clear it"}
				}
			}
			return cache, nil, nil, nil
		}
		c.URL, c.Namespace, c.PathPrefix = o["vault-url"], o["vault-namespace"], o["vault-path-prefix"]
		c.ClientToken, c.AuthBackend = o["vault-client-token"], o["vault-auth-backend"]
		if c.AuthParams, err = concourse.ParseVaultAuthParams(o["vault-auth-param"]); err != nil {
			return nil, nil, nil, &ConfigError{"vault-auth-param", "(hidden)", err.Error()}
		}
		if v := o["vault-ca-cert"]; !filepath.IsAbs(v) {
			c.CACert = v
		}
		if cert, key := o["vault-client-cert"], o["vault-client-key"]; !filepath.IsAbs(cert) && !filepath.IsAbs(key) {
			c.ClientCert, c.ClientKey = cert, key
		} else if cert == "" || key == "" || !filepath.IsAbs(cert) || !filepath.IsAbs(key) {
			return nil, nil, nil, &ConfigError{"vault-client-cert", "", "give vault-client-cert and vault-client-key both as PEM or both as absolute paths on the units"}
		}
	}
	if c.CACert != "" && !strings.HasSuffix(c.CACert, "\n") {
		c.CACert += "\n" // a PEM file ends with a newline
	}
	c.Files = concourse.VaultFilePaths{CACert: filepath.Join(p.ConfigDir, vaultFileNames.CACert),
		ClientCert: filepath.Join(p.ConfigDir, vaultFileNames.ClientCert), ClientKey: filepath.Join(p.ConfigDir, vaultFileNames.ClientKey)}
	if v := o["vault-lookup-templates"]; v != "" {
		c.LookupTemplates = strings.Split(v, ",")
	}
	c.SharedPath = o["vault-shared-path"]
	c.AuthBackendMaxTTL = mustDuration(o["vault-auth-backend-max-ttl"])
	c.KVMountCache = o["vault-enable-kv-mount-cache"] == "true"
	// render knows no Juju: a secret given as a URI is shown as such, validated with a stand-in.
	unresolved := map[string]string{}
	if uri := c.ClientToken; strings.HasPrefix(uri, "secret:") {
		c.ClientToken, unresolved["CONCOURSE_VAULT_CLIENT_TOKEN"] = "stand-in", uri
	}
	if uri := o["vault-auth-param"]; strings.HasPrefix(uri, "secret:") && cfg.vaultKV == nil {
		c.AuthParams, unresolved["CONCOURSE_VAULT_AUTH_PARAM"] = []concourse.VaultAuthParam{{Name: "stand-in", Value: "x"}}, uri
	}
	if strings.HasPrefix(c.ClientKey, "secret:") {
		return nil, nil, nil, &ConfigError{"vault-client-key", c.ClientKey, "render cannot read Juju secrets: give the key as PEM to see the files"}
	}
	r, err := concourse.VaultEnv(c)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("Vault settings from %s: %w", source, err)
	}
	env = r.Env
	if cfg.vaultKV == nil {
		// The Python charm's form: files already on the units, named as they are.
		for name, v := range map[string]string{"CONCOURSE_VAULT_CA_CERT": o["vault-ca-cert"], "CONCOURSE_VAULT_CLIENT_CERT": o["vault-client-cert"], "CONCOURSE_VAULT_CLIENT_KEY": o["vault-client-key"]} {
			if filepath.IsAbs(v) {
				env = append(env, concourse.EnvVar{Name: name, Value: filepath.Clean(v)})
			}
		}
	}
	for i, e := range env {
		if uri, ok := unresolved[e.Name]; ok {
			env[i].Value = "<content of " + uri + ">"
		}
	}
	env = append(env, cache...)
	slices.SortStableFunc(env, func(a, b concourse.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	return env, r.Files, shadowed, nil
}

// mustDuration reads a duration the option table checked already ("" → 0).
func mustDuration(v string) time.Duration {
	d, _ := time.ParseDuration(v)
	return d
}

// webVaultFiles are the Vault files of cfg as the web's files (public ones 0644, the client key
// 0640 root:concourse), and removes the Vault files it no longer renders, so a cleared option
// leaves nothing behind.
func (u *unitRun) webVaultFiles(cfg Config) ([]fileSpec, error) {
	_, files, shadowed, err := webVault(cfg, u.deps.Paths)
	if err != nil {
		return nil, err
	}
	if len(shadowed) > 0 {
		u.status.note(fmt.Sprintf("%s ignored: the vault-kv relation provides Vault", strings.Join(shadowed, ", ")))
	}
	var out []fileSpec
	keep := map[string]bool{}
	for _, f := range files {
		spec := fileSpec{Path: f.Path, Data: f.Content, Mode: 0o644, UID: 0, GID: 0}
		if f.Secret {
			spec.Mode, spec.GID = 0o640, u.webGID
		}
		out = append(out, spec)
		keep[f.Path] = true
	}
	for _, rel := range []string{vaultFileNames.CACert, vaultFileNames.ClientCert, vaultFileNames.ClientKey} {
		p := u.path(rel)
		if keep[p] {
			continue
		}
		if err := os.Remove(p); err == nil {
			u.act("Remove %s: no longer configured", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing %s: %w", p, err)
		}
	}
	if len(out) > 0 {
		if err := os.MkdirAll(u.path("vault"), 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", u.path("vault"), err)
		}
	}
	return out, nil
}

// vaultOptions are the Vault and secret-cache options: the Python charm's, with its names,
// types and defaults. Their values reach web.env through webVault (Env ""), never optionEnv.
func vaultOptions() []option {
	str := func(name, doc string, check func(string) (string, error)) option {
		return option{Name: name, Type: "string", Role: roleWeb, Python: true, Check: check, Doc: doc}
	}
	secret := func(o option) option { o.Secret = true; return o }
	withDefault := func(o option, d string) option { o.Default = d; return o }
	return []option{
		str("vault-url", "URL of the Vault server, https://host:8200, turning Vault on as Concourse's credential manager; with a vault-kv relation the relation's Vault is used instead.", checkVaultURLOption),
		str("vault-auth-backend", "Auth method the web logs in to Vault with, e.g. approle or cert (with vault-auth-param); or give vault-client-token.", checkVaultWord),
		str("vault-auth-backend-max-ttl", "Force a fresh Vault login this often, a Go duration such as 1h (empty: renew the token while it can be).", checkDuration),
		secret(str("vault-auth-param", "Parameters of the Vault login, comma-separated name:value, e.g. role_id:…,secret_id:…; or a Juju secret URI (secret:…) holding them.", checkVaultAuthParam)),
		str("vault-ca-cert", "CA certificate (PEM) of the Vault server, written to a file on the web units; an absolute path of a file on the units also works (the Python charm's form).", checkCACert),
		str("vault-client-cert", "Client certificate (PEM, or an absolute path on the units) for TLS authentication to Vault; with vault-client-key.", checkPEMOrPath),
		secret(str("vault-client-key", "Key of vault-client-cert (PEM, or an absolute path on the units), or a Juju secret URI (secret:…) holding the PEM.", checkPEMOrPath)),
		secret(str("vault-client-token", "Vault token the web uses as it is (renewed while it can be), or a Juju secret URI (secret:…) holding it; or use vault-auth-backend.", checkVaultWord)),
		str("vault-lookup-templates", "Comma-separated paths tried for each ((var)) below the path prefix, using {{.Team}}, {{.Pipeline}} and {{.Secret}} (Concourse's default: /{{.Team}}/{{.Pipeline}}/{{.Secret}},/{{.Team}}/{{.Secret}}).", checkVaultTemplates),
		str("vault-namespace", "Vault Enterprise namespace of the login and the reads.", checkVaultWord),
		str("vault-path-prefix", "Path under which Concourse looks up credentials, starting with / (Concourse's default: /concourse).", checkVaultWord),
		str("vault-shared-path", "Path below the prefix tried last for every team, for credentials all teams share.", checkVaultWord),
		{Name: "vault-enable-kv-mount-cache", Type: "boolean", Default: "true", Role: roleWeb, Python: true, Check: checkSwitch,
			Doc: "Cache the KV version check of each Vault mount (Concourse 8.2 and later; earlier releases ignore it). Rendered only when Vault is configured."},
		{Name: "secret-cache-enabled", Type: "boolean", Default: "true", Role: roleWeb, Python: true, Check: checkSwitch,
			Doc: "Cache the credential manager's answers in the web's memory."},
		withDefault(str("secret-cache-duration", "How long a credential found is cached, a Go duration such as 5m (less when its lease is shorter); empty: Concourse's 1m.", checkDuration), "5m"),
		withDefault(str("secret-cache-duration-notfound", "How long a credential not found is cached, a Go duration such as 1m; empty: Concourse's 10s.", checkDuration), "1m"),
	}
}

func checkVaultURLOption(v string) (string, error) {
	if _, err := concourse.VaultEnv(concourse.VaultConfig{URL: v, ClientToken: "t"}); err != nil {
		return "", errors.New("expected the Vault server's URL, https://host:8200 (a scheme, a host and a port only)")
	}
	return strings.TrimRight(v, "/"), nil
}

// checkVaultWord accepts one word: a path, a backend, a token (VaultEnv checks the form).
func checkVaultWord(v string) (string, error) {
	if strings.ContainsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || isCtl(r) }) || strings.Contains(v, ",") {
		return "", errors.New("expected one word without spaces, commas or control characters")
	}
	return v, nil
}

func checkVaultAuthParam(v string) (string, error) {
	params, err := concourse.ParseVaultAuthParams(v)
	if err != nil {
		return "", fmt.Errorf("expected comma-separated name:value pairs: %v", err)
	}
	if strings.ContainsFunc(v, isCtl) || len(params) == 0 {
		return "", errors.New("expected comma-separated name:value pairs without control characters")
	}
	var out []string
	for _, p := range params {
		out = append(out, p.Name+":"+p.Value)
	}
	return strings.Join(out, ","), nil
}

func checkVaultTemplates(v string) (string, error) {
	var out []string
	for _, t := range splitList(v) {
		if _, err := concourse.VaultEnv(concourse.VaultConfig{URL: "https://v:8200", ClientToken: "t", LookupTemplates: []string{t}}); err != nil {
			return "", fmt.Errorf("each template starts with / and uses {{.Secret}} (and may use {{.Team}}, {{.Pipeline}}): %q does not", t)
		}
		out = append(out, t)
	}
	return strings.Join(out, ","), nil
}

// checkPEMOrPath accepts PEM text or an absolute path on the units; the pair is checked
// together by VaultEnv.
func checkPEMOrPath(v string) (string, error) {
	if filepath.IsAbs(v) && !strings.ContainsAny(v, "\n,") {
		return filepath.Clean(v), nil
	}
	if !strings.Contains(v, "-----BEGIN ") {
		return "", errors.New("expected PEM (-----BEGIN …), or the absolute path of a file on the units")
	}
	return strings.TrimSpace(strings.ReplaceAll(v, "\r\n", "\n")) + "\n", nil
}
