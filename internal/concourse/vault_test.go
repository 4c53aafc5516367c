package concourse

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testCert makes a self-signed certificate and its key, PEM-encoded.
func vaultTestCert(t *testing.T, cn string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

func vaultEnvMap(vars []EnvVar) map[string]string {
	m := map[string]string{}
	for _, v := range vars {
		m[v.Name] = v.Value
	}
	return m
}

// The vault-kv relation: what the Vault charm hands over becomes an AppRole login, the
// relation's CA as a file, and the mount as the prefix; only the auth params are secret.
func TestVaultEnvFromVaultKVRelation(t *testing.T) {
	ca, _ := vaultTestCert(t, "vault CA")
	c := AppRoleVault("https://10.0.0.7:8200/", ca, "charm-concourse-ci-machine-concourse", "role-1234", "secret-5678")
	c.Files.CACert = "/etc/concourse/vault/ca.pem"
	r, err := VaultEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"CONCOURSE_VAULT_URL":          "https://10.0.0.7:8200",
		"CONCOURSE_VAULT_PATH_PREFIX":  "/charm-concourse-ci-machine-concourse",
		"CONCOURSE_VAULT_CA_CERT":      "/etc/concourse/vault/ca.pem",
		"CONCOURSE_VAULT_AUTH_BACKEND": "approle",
		"CONCOURSE_VAULT_AUTH_PARAM":   "role_id:role-1234,secret_id:secret-5678",
	}
	if got := vaultEnvMap(r.Env); !maps.Equal(got, want) {
		t.Errorf("env = %v\nwant %v", got, want)
	}
	if !slices.IsSortedFunc(r.Env, func(a, b EnvVar) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("env is not sorted: %v", r.Env)
	}
	if !slices.Equal(r.Secret, []string{"CONCOURSE_VAULT_AUTH_PARAM"}) {
		t.Errorf("secret = %v", r.Secret)
	}
	if len(r.Files) != 1 || r.Files[0].Path != "/etc/concourse/vault/ca.pem" || string(r.Files[0].Content) != ca || r.Files[0].Secret {
		t.Errorf("files = %+v", r.Files)
	}
	for _, name := range vaultEnvNamesOf(r.Env) {
		if !slices.Contains(VaultEnvNames(), name) {
			t.Errorf("%s is not listed by VaultEnvNames, so the hooks could not remove it", name)
		}
	}
}

// The manual vault-* options, every one set (with a client token instead of a backend).
func TestVaultEnvEveryOption(t *testing.T) {
	ca, _ := vaultTestCert(t, "vault CA")
	cert, key := vaultTestCert(t, "concourse-web")
	c := VaultConfig{
		URL:                "https://vault.example.com:8200",
		PathPrefix:         "/secrets/concourse",
		LookupTemplates:    []string{" /{{.Team}}/{{.Pipeline}}/{{.Secret}}", "", "/{{.Team}}/{{.Secret}}", "/{{.Team}}/{{.Secret}}"},
		SharedPath:         "shared",
		Namespace:          "ci/team-a",
		CACert:             ca,
		ClientCert:         cert,
		ClientKey:          key,
		Files:              VaultFilePaths{CACert: "/v/ca.pem", ClientCert: "/v/client.pem", ClientKey: "/v/client.key"},
		ServerName:         "vault.internal",
		InsecureSkipVerify: true,
		ClientToken:        "hvs.tok3n",
		AuthBackendMaxTTL:  30 * time.Minute,
		KVMountCache:       true,
	}
	r, err := VaultEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"CONCOURSE_VAULT_URL":                   "https://vault.example.com:8200",
		"CONCOURSE_VAULT_PATH_PREFIX":           "/secrets/concourse",
		"CONCOURSE_VAULT_LOOKUP_TEMPLATES":      "/{{.Team}}/{{.Pipeline}}/{{.Secret}},/{{.Team}}/{{.Secret}}",
		"CONCOURSE_VAULT_SHARED_PATH":           "shared",
		"CONCOURSE_VAULT_NAMESPACE":             "ci/team-a",
		"CONCOURSE_VAULT_CA_CERT":               "/v/ca.pem",
		"CONCOURSE_VAULT_CLIENT_CERT":           "/v/client.pem",
		"CONCOURSE_VAULT_CLIENT_KEY":            "/v/client.key",
		"CONCOURSE_VAULT_SERVER_NAME":           "vault.internal",
		"CONCOURSE_VAULT_INSECURE_SKIP_VERIFY":  "true",
		"CONCOURSE_VAULT_CLIENT_TOKEN":          "hvs.tok3n",
		"CONCOURSE_VAULT_AUTH_BACKEND_MAX_TTL":  "30m0s",
		"CONCOURSE_VAULT_ENABLE_KV_MOUNT_CACHE": "true",
	}
	if got := vaultEnvMap(r.Env); !maps.Equal(got, want) {
		t.Errorf("env = %v\nwant %v", got, want)
	}
	if !slices.Equal(r.Secret, []string{"CONCOURSE_VAULT_CLIENT_TOKEN"}) {
		t.Errorf("secret = %v", r.Secret)
	}
	var secretFiles []string
	for _, f := range r.Files {
		if f.Secret {
			secretFiles = append(secretFiles, f.Path)
		}
	}
	if len(r.Files) != 3 || !slices.Equal(secretFiles, []string{"/v/client.key"}) {
		t.Errorf("files = %+v; want three, the key alone secret", r.Files)
	}
	if err := CheckEnv(r.Env); err != nil {
		t.Error(err)
	}
}

func TestVaultEnvRejects(t *testing.T) {
	ca, caKey := vaultTestCert(t, "vault CA")
	cert, key := vaultTestCert(t, "client")
	_, otherKey := vaultTestCert(t, "other")
	const secretID, token = "s3cr3t-1d", "hvs.s3cr3t"
	base := func() VaultConfig {
		c := AppRoleVault("https://127.0.0.1:8200", ca, "kv", "role", secretID)
		c.Files.CACert = "/v/ca.pem"
		return c
	}
	tests := []struct {
		name      string
		change    func(*VaultConfig)
		field     string
		reasonHas string
	}{
		{"no URL", func(c *VaultConfig) { c.URL = "" }, "URL", "required"},
		{"URL without a scheme", func(c *VaultConfig) { c.URL = "vault:8200" }, "URL", "https://"},
		{"URL with the API path", func(c *VaultConfig) { c.URL = "https://vault:8200/v1" }, "URL", "only a scheme"},
		{"URL with a bad port", func(c *VaultConfig) { c.URL = "https://vault:99999" }, "URL", "invalid port"},
		{"relative prefix", func(c *VaultConfig) { c.PathPrefix = "concourse" }, "PathPrefix", "start with '/'"},
		{"prefix ending in /", func(c *VaultConfig) { c.PathPrefix = "/concourse/" }, "PathPrefix", "end with '/'"},
		{"prefix with an empty segment", func(c *VaultConfig) { c.PathPrefix = "/a//b" }, "PathPrefix", "empty"},
		{"prefix with a comma", func(c *VaultConfig) { c.PathPrefix = "/a,b" }, "PathPrefix", "','"},
		{"template not rooted", func(c *VaultConfig) { c.LookupTemplates = []string{"{{.Team}}/{{.Secret}}"} }, "LookupTemplates[0]", "start with '/'"},
		{"template without the secret", func(c *VaultConfig) { c.LookupTemplates = []string{"/{{.Team}}/x"} }, "LookupTemplates[0]", "{{.Secret}}"},
		{"template with an unknown field", func(c *VaultConfig) { c.LookupTemplates = []string{"/ok/{{.Secret}}", "/{{.Org}}/{{.Secret}}"} }, "LookupTemplates[1]", "only {{.Team}}"},
		{"template that does not parse", func(c *VaultConfig) { c.LookupTemplates = []string{"/{{.Team}/{{.Secret}}"} }, "LookupTemplates[0]", "does not parse"},
		{"shared path escaping the prefix", func(c *VaultConfig) { c.SharedPath = "../other" }, "SharedPath", "'..'"},
		{"CA that is no PEM", func(c *VaultConfig) { c.CACert = "not a certificate" }, "CACert", "no PEM certificate"},
		{"CA that is a key", func(c *VaultConfig) { c.CACert = caKey }, "CACert", "EC PRIVATE KEY"},
		{"CA without a path", func(c *VaultConfig) { c.Files.CACert = "" }, "Files.CACert", "required"},
		{"CA with a relative path", func(c *VaultConfig) { c.Files.CACert = "ca.pem" }, "Files.CACert", "not absolute"},
		{"client cert without key", func(c *VaultConfig) { c.ClientCert = cert }, "ClientCert", "both or neither"},
		{"client cert with another key", func(c *VaultConfig) {
			c.ClientCert, c.ClientKey = cert, otherKey
			c.Files.ClientCert, c.Files.ClientKey = "/v/c.pem", "/v/c.key"
		}, "ClientCert", "do not form a pair"},
		{"client key without a path", func(c *VaultConfig) { c.ClientCert, c.ClientKey = cert, key; c.Files.ClientCert = "/v/c.pem" }, "Files.ClientKey", "required"},
		{"no way to log in", func(c *VaultConfig) { c.AuthBackend, c.AuthParams = "", nil }, "AuthBackend", "client token or an auth backend"},
		{"token and backend", func(c *VaultConfig) { c.ClientToken = token }, "ClientToken", "not both"},
		{"token with a newline", func(c *VaultConfig) { c.AuthBackend, c.AuthParams, c.ClientToken = "", nil, token+"\n" }, "ClientToken", "whitespace"},
		{"params without a backend", func(c *VaultConfig) { c.AuthBackend, c.ClientToken = "", token }, "AuthParams", "set the backend"},
		{"param value with a comma", func(c *VaultConfig) { c.AuthParams[1].Value = secretID + ",x" }, "AuthParams[1]", "list separator"},
		{"param name with a colon", func(c *VaultConfig) { c.AuthParams[0].Name = "role:id" }, "AuthParams[0]", "without ':'"},
		{"param given twice", func(c *VaultConfig) { c.AuthParams = append(c.AuthParams, VaultAuthParam{"role_id", "x"}) }, "AuthParams[2]", "twice"},
		{"param without a value", func(c *VaultConfig) { c.AuthParams[1].Value = "" }, "AuthParams[1]", "no value"},
		{"max TTL below a second", func(c *VaultConfig) { c.AuthBackendMaxTTL = 500 * time.Millisecond }, "AuthBackendMaxTTL", "below one second"},
		{"bad server name", func(c *VaultConfig) { c.ServerName = "vault internal" }, "ServerName", "host name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(&c)
			r, err := VaultEnv(c)
			if err == nil {
				t.Fatalf("VaultEnv = %+v, want an error on %s", r.Env, tt.field)
			}
			var fe *FieldError
			found := false
			for _, e := range vaultUnjoin(err) {
				if errors.As(e, &fe) && fe.Field == tt.field && strings.Contains(fe.Reason, tt.reasonHas) {
					found = true
				}
			}
			if !found {
				t.Errorf("error %q does not name %s with %q", err, tt.field, tt.reasonHas)
			}
			for _, s := range []string{secretID, token, key, otherKey, caKey} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error shows a secret: %v", err)
				}
			}
		})
	}
}

func vaultUnjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestSecretCacheEnv(t *testing.T) {
	tests := []struct {
		name    string
		c       SecretCacheConfig
		want    map[string]string
		wantErr string
	}{
		{"off", SecretCacheConfig{}, map[string]string{"CONCOURSE_SECRET_CACHE_ENABLED": "false"}, ""},
		// Durations of a disabled cache would do nothing: they are not rendered.
		{"off with durations", SecretCacheConfig{Duration: time.Minute, NotFoundDuration: time.Second},
			map[string]string{"CONCOURSE_SECRET_CACHE_ENABLED": "false"}, ""},
		{"on with Concourse's defaults", SecretCacheConfig{Enabled: true}, map[string]string{"CONCOURSE_SECRET_CACHE_ENABLED": "true"}, ""},
		{"on with durations", SecretCacheConfig{Enabled: true, Duration: 5 * time.Minute, NotFoundDuration: time.Minute},
			map[string]string{"CONCOURSE_SECRET_CACHE_ENABLED": "true", "CONCOURSE_SECRET_CACHE_DURATION": "5m0s",
				"CONCOURSE_SECRET_CACHE_DURATION_NOTFOUND": "1m0s"}, ""},
		{"negative", SecretCacheConfig{Enabled: true, Duration: -time.Second}, nil, "Duration (CONCOURSE_SECRET_CACHE_DURATION): -1s is negative"},
		{"sub-second", SecretCacheConfig{Enabled: true, NotFoundDuration: time.Millisecond}, nil, "NotFoundDuration (CONCOURSE_SECRET_CACHE_DURATION_NOTFOUND): 1ms is below one second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars, err := SecretCacheEnv(tt.c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := vaultEnvMap(vars); !maps.Equal(got, tt.want) {
				t.Errorf("env = %v, want %v", got, tt.want)
			}
			for _, n := range vaultEnvNamesOf(vars) {
				if !slices.Contains(SecretCacheEnvNames(), n) {
					t.Errorf("%s is not listed by SecretCacheEnvNames", n)
				}
			}
		})
	}
}

// The client key is written readable by its group only; a second write of the same content
// changes nothing (no needless web restart).
func TestWriteVaultFiles(t *testing.T) {
	dir := t.TempDir()
	ca, _ := vaultTestCert(t, "vault CA")
	cert, key := vaultTestCert(t, "client")
	c := AppRoleVault("https://127.0.0.1:8200", ca, "kv", "role", "secret")
	c.ClientCert, c.ClientKey = cert, key
	c.Files = VaultFilePaths{filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")}
	r, err := VaultEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	changed, err := WriteVaultFiles(r, -1, -1)
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	for path, mode := range map[string]os.FileMode{c.Files.CACert: 0o644, c.Files.ClientCert: 0o644, c.Files.ClientKey: 0o640} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	if b, _ := os.ReadFile(c.Files.ClientKey); string(b) != key {
		t.Errorf("the key file holds %q", b)
	}
	if changed, err := WriteVaultFiles(r, -1, -1); err != nil || changed {
		t.Errorf("second write: changed=%v err=%v, want no change", changed, err)
	}
}

func vaultEnvNamesOf(vars []EnvVar) []string {
	var out []string
	for _, v := range vars {
		out = append(out, v.Name)
	}
	return out
}

func TestParseVaultAuthParams(t *testing.T) {
	got, err := ParseVaultAuthParams(" role_id:r-1, secret_id:a:b ,,")
	want := []VaultAuthParam{{"role_id", "r-1"}, {"secret_id", "a:b"}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseVaultAuthParams = %q, %v; want %q", got, err, want)
	}
	if _, err := ParseVaultAuthParams("role_id:r,s3cr3t"); err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "auth param 2") {
		t.Errorf("an entry without ':' gives %v; want an error naming entry 2 without its text", err)
	}
}
