// Package vaulttest is a fake of the part of the Vault HTTP API that `concourse web` calls, on
// loopback, for tests of the charm's Vault settings against the real Concourse binary.
//
// No Vault (or OpenBao) server can be had from the package registries of these machines, so this
// fake stands in. It implements exactly the endpoints the real web was seen to call (the package
// test and internal/concourse's vault tests record them), with the response shapes Vault
// documents (https://developer.hashicorp.com/vault/api-docs):
//
//	POST|PUT /v1/auth/approle/login           {"role_id","secret_id"} → {"auth":{"client_token",…}}
//	GET      /v1/auth/token/lookup-self       → {"data":{"renewable","ttl",…}}
//	POST|PUT /v1/auth/token/renew-self        → {"auth":{…}}
//	GET      /v1/sys/internal/ui/mounts/<p>   the KV version preflight → {"data":{"path","type","options":{"version"}}}
//	GET      /v1/<mount>/data/<p>             KV v2 read → {"data":{"data":{…},"metadata":{…}}}
//	GET      /v1/<mount>/<p>                  KV v1 read → {"data":{…}}
//	GET      /v1/sys/health                   → {"initialized":true,"sealed":false,…}
//
// Everything else answers 404 with Vault's error shape and is recorded, so a test can see a call
// the fake does not know. Tokens are checked (X-Vault-Token), and so is the namespace
// (X-Vault-Namespace) when Options.Namespace is set. TLS, with a CA the fake generates, and
// client certificates are optional.
package vaulttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options shape the fake. The zero value is a plain-HTTP Vault with one KV v2 mount "concourse"
// and one AppRole with random ids.
type Options struct {
	// Mount is the KV mount's path without slashes ("concourse", or what the Vault charm makes:
	// charm-<app>-<suffix>); "" → "concourse".
	Mount string
	// KVVersion is 1 or 2; 0 → 2 (the Vault charm enables KV v2).
	KVVersion int
	// RoleID and SecretID are the AppRole's credentials; "" → random.
	RoleID, SecretID string
	// TokenTTL is the lease of the tokens the login issues; 0 → 1h (what the Vault charm gives
	// its AppRoles: token_ttl=1h, token_max_ttl=1h).
	TokenTTL time.Duration
	// Namespace, when set, is the only X-Vault-Namespace the fake serves (Vault Enterprise).
	Namespace string
	// TLS serves HTTPS with a certificate for 127.0.0.1 signed by a CA the fake generates.
	TLS bool
	// ClientCert (with TLS) requires a client certificate signed by the fake's CA; the fake
	// makes one (Server.ClientCertPEM, Server.ClientKeyPEM).
	ClientCert bool
}

// Request is one request the fake received.
type Request struct {
	Method, Path string
	Namespace    string // X-Vault-Namespace
	TokenValid   bool   // X-Vault-Token named a token the fake issued and still honours
	Status       int    // what the fake answered
	// ClientCert is the subject CN of the TLS client certificate, if one was presented.
	ClientCert string
}

// Login is one AppRole login attempt, with the credentials as sent (test data, not secrets).
type Login struct {
	RoleID, SecretID string
	OK               bool
}

// Server is a running fake Vault.
type Server struct {
	URL string // http(s)://127.0.0.1:port, the form --vault-url takes
	// CACertPEM is the CA that signed the server (and client) certificates; nil without TLS.
	CACertPEM []byte
	// ClientCertPEM and ClientKeyPEM are a client certificate the server accepts (Options.ClientCert).
	ClientCertPEM, ClientKeyPEM []byte

	opts Options
	srv  *httptest.Server

	mu       sync.Mutex
	roleID   string
	secretID string
	secrets  map[string]map[string]any // path under the mount → data
	versions map[string]int
	tokens   map[string]time.Time // issued token → its lease end
	requests []Request
	logins   []Login
}

// Start runs the fake on a free loopback port until t ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Mount == "" {
		opts.Mount = "concourse"
	}
	opts.Mount = strings.Trim(opts.Mount, "/")
	if opts.KVVersion == 0 {
		opts.KVVersion = 2
	}
	if opts.KVVersion != 1 && opts.KVVersion != 2 {
		t.Fatalf("vaulttest: KVVersion %d is neither 1 nor 2", opts.KVVersion)
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.ClientCert && !opts.TLS {
		t.Fatal("vaulttest: ClientCert needs TLS")
	}
	s := &Server{
		opts:     opts,
		roleID:   opts.RoleID,
		secretID: opts.SecretID,
		secrets:  map[string]map[string]any{},
		versions: map[string]int{},
		tokens:   map[string]time.Time{},
	}
	if s.roleID == "" {
		s.roleID = randomID()
	}
	if s.secretID == "" {
		s.secretID = randomID()
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	if opts.TLS {
		s.srv.TLS = s.tlsConfig(t)
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// RoleID is the AppRole's role_id.
func (s *Server) RoleID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roleID
}

// SecretID is the AppRole's current secret_id.
func (s *Server) SecretID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secretID
}

// RotateSecretID issues a new secret_id and destroys the old one (as the Vault charm does when
// it regenerates a unit's credentials); tokens already issued stay valid. It returns the new id.
func (s *Server) RotateSecretID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secretID = randomID()
	return s.secretID
}

// RevokeTokens revokes every token issued so far, so a client must log in again.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Put writes data at path under the mount (e.g. "main/pipeline/greeting"), as
// `vault kv put <mount>/<path> k=v…` does; a KV v2 write adds a version.
func (s *Server) Put(path string, data map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path = strings.Trim(path, "/")
	s.secrets[path] = data
	s.versions[path]++
}

// Delete removes the secret at path, as `vault kv metadata delete` does (every version).
func (s *Server) Delete(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path = strings.Trim(path, "/")
	delete(s.secrets, path)
	delete(s.versions, path)
}

// Requests are the requests received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Logins are the AppRole login attempts so far, in order.
func (s *Server) Logins() []Login {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Login(nil), s.logins...)
}

// Reads are the KV paths (under the mount, without KV v2's data/ segment) read with a valid
// token so far, found or not, in order.
func (s *Server) Reads() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	prefix := "/v1/" + s.opts.Mount + "/"
	for _, r := range s.requests {
		if r.Method != http.MethodGet || !r.TokenValid || !strings.HasPrefix(r.Path, prefix) {
			continue
		}
		p := strings.TrimPrefix(r.Path, prefix)
		if s.opts.KVVersion == 2 {
			var ok bool
			if p, ok = strings.CutPrefix(p, "data/"); !ok {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := Request{Method: r.Method, Path: r.URL.Path, Namespace: r.Header.Get("X-Vault-Namespace")}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		rec.ClientCert = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	token := r.Header.Get("X-Vault-Token")
	if end, ok := s.tokens[token]; ok && time.Now().Before(end) {
		rec.TokenValid = true
	}
	status, body := s.route(r, token, rec.TokenValid)
	rec.Status = status
	s.requests = append(s.requests, rec)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// vaultError is Vault's error body.
func vaultError(msgs ...string) map[string]any {
	if msgs == nil {
		msgs = []string{}
	}
	return map[string]any{"errors": msgs}
}

// envelope is Vault's response wrapper around data or auth.
func envelope(data, auth any, lease int) map[string]any {
	return map[string]any{
		"request_id": randomID(), "lease_id": "", "renewable": false, "lease_duration": lease,
		"data": data, "wrap_info": nil, "warnings": nil, "auth": auth,
	}
}

func (s *Server) route(r *http.Request, token string, tokenValid bool) (int, any) {
	p := r.URL.Path
	write := r.Method == http.MethodPost || r.Method == http.MethodPut
	if p == "/v1/sys/health" && r.Method == http.MethodGet {
		return http.StatusOK, map[string]any{
			"initialized": true, "sealed": false, "standby": false, "performance_standby": false,
			"replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
			"server_time_utc": time.Now().Unix(), "version": "1.15.6", "cluster_name": "vaulttest",
			"cluster_id": "00000000-0000-0000-0000-000000000000",
		}
	}
	if ns := r.Header.Get("X-Vault-Namespace"); s.opts.Namespace != "" && strings.Trim(ns, "/") != s.opts.Namespace {
		// The mount and the AppRole live in the namespace only.
		return http.StatusNotFound, vaultError(fmt.Sprintf("no handler for route %q. route entry not found.", strings.TrimPrefix(p, "/v1/")))
	}
	switch {
	case p == "/v1/auth/approle/login" && write:
		var in struct {
			RoleID   string `json:"role_id"`
			SecretID string `json:"secret_id"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&in); err != nil {
			return http.StatusBadRequest, vaultError("failed to parse JSON input: " + err.Error())
		}
		ok := in.RoleID == s.roleID && in.SecretID == s.secretID
		s.logins = append(s.logins, Login{RoleID: in.RoleID, SecretID: in.SecretID, OK: ok})
		switch {
		case in.RoleID == "":
			return http.StatusBadRequest, vaultError("missing role_id")
		case in.RoleID != s.roleID:
			return http.StatusBadRequest, vaultError("invalid role ID")
		case in.SecretID != s.secretID:
			return http.StatusBadRequest, vaultError("invalid secret id")
		}
		tok := "hvs." + randomID()
		s.tokens[tok] = time.Now().Add(s.opts.TokenTTL)
		return http.StatusOK, envelope(nil, s.auth(tok), 0)
	case !tokenValid:
		return http.StatusForbidden, vaultError("permission denied")
	case p == "/v1/auth/token/lookup-self" && r.Method == http.MethodGet:
		ttl := int(time.Until(s.tokens[token]).Seconds())
		return http.StatusOK, envelope(map[string]any{
			"accessor": "acc-" + token[len(token)-8:], "creation_ttl": int(s.opts.TokenTTL.Seconds()),
			"display_name": "approle", "entity_id": "", "expire_time": s.tokens[token].UTC().Format(time.RFC3339Nano),
			"explicit_max_ttl": 0, "id": token, "meta": map[string]any{"role_name": "concourse"}, "num_uses": 0,
			"orphan": true, "path": "auth/approle/login", "policies": []string{"default", "concourse"},
			"renewable": true, "ttl": ttl, "type": "service",
		}, nil, 0)
	case p == "/v1/auth/token/renew-self" && write:
		// Renewal cannot pass the token's max TTL, which here is its TTL: the lease is what remains.
		return http.StatusOK, envelope(nil, s.auth(token), 0)
	case strings.HasPrefix(p, "/v1/sys/internal/ui/mounts/") && r.Method == http.MethodGet:
		rest := strings.TrimPrefix(p, "/v1/sys/internal/ui/mounts/")
		if rest != s.opts.Mount && !strings.HasPrefix(rest, s.opts.Mount+"/") {
			return http.StatusForbidden, vaultError(fmt.Sprintf("preflight capability check returned 403, please ensure client's policies grant access to path %q", rest))
		}
		options := map[string]any{}
		if s.opts.KVVersion == 2 {
			options["version"] = "2"
		}
		return http.StatusOK, envelope(map[string]any{
			"accessor": "kv_0000", "config": map[string]any{"default_lease_ttl": 0, "max_lease_ttl": 0},
			"description": "", "external_entropy_access": false, "local": false, "options": options,
			"path": s.opts.Mount + "/", "plugin_version": "", "running_plugin_version": "v0.16.1+builtin",
			"seal_wrap": false, "type": "kv", "uuid": "00000000-0000-0000-0000-000000000001",
		}, nil, 0)
	case strings.HasPrefix(p, "/v1/"+s.opts.Mount+"/") && r.Method == http.MethodGet:
		rest := strings.TrimPrefix(p, "/v1/"+s.opts.Mount+"/")
		if s.opts.KVVersion == 2 {
			var ok bool
			if rest, ok = strings.CutPrefix(rest, "data/"); !ok {
				return http.StatusNotFound, vaultError()
			}
		}
		data, ok := s.secrets[strings.Trim(rest, "/")]
		if !ok {
			return http.StatusNotFound, vaultError()
		}
		if s.opts.KVVersion == 1 {
			return http.StatusOK, envelope(data, nil, 2764800)
		}
		return http.StatusOK, envelope(map[string]any{
			"data": data,
			"metadata": map[string]any{
				"created_time": time.Now().UTC().Format(time.RFC3339Nano), "custom_metadata": nil,
				"deletion_time": "", "destroyed": false, "version": s.versions[strings.Trim(rest, "/")],
			},
		}, nil, 0)
	}
	return http.StatusNotFound, vaultError()
}

func (s *Server) auth(token string) map[string]any {
	lease := int(time.Until(s.tokens[token]).Seconds())
	return map[string]any{
		"client_token": token, "accessor": "acc-" + token[len(token)-8:],
		"policies": []string{"default", "concourse"}, "token_policies": []string{"default", "concourse"},
		"metadata": map[string]any{"role_name": "concourse"}, "lease_duration": lease,
		"renewable": true, "entity_id": "", "token_type": "service", "orphan": true,
	}
}

// tlsConfig makes the CA, the server certificate for 127.0.0.1 and, with ClientCert, a client
// certificate, and returns the server's TLS settings.
func (s *Server) tlsConfig(t testing.TB) *tls.Config {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vaulttest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	s.CACertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ip bool) ([]byte, []byte) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
		}
		if ip {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	certPEM, keyPEM := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, true)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.opts.ClientCert {
		s.ClientCertPEM, s.ClientKeyPEM = leaf(3, "concourse-web", x509.ExtKeyUsageClientAuth, false)
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return k
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
