package vaulttest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"
)

type client struct {
	t     *testing.T
	s     *Server
	http  *http.Client
	token string
	ns    string
}

func (c *client) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	req, err := http.NewRequest(method, c.s.URL+path, bytes.NewReader(b))
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("X-Vault-Token", c.token)
	}
	if c.ns != "" {
		req.Header.Set("X-Vault-Namespace", c.ns)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		c.t.Fatalf("%s %s: the body is not JSON: %v", method, path, err)
	}
	return resp.StatusCode, out
}

func (c *client) login(secretID string) int {
	c.t.Helper()
	status, out := c.do("PUT", "/v1/auth/approle/login", map[string]string{"role_id": c.s.RoleID(), "secret_id": secretID})
	if status == http.StatusOK {
		c.token = out["auth"].(map[string]any)["client_token"].(string)
	}
	return status
}

// A KV v2 mount as the Vault charm makes it: reads need a token from an AppRole login, the
// preflight says version 2, the secret sits under data/, and a rotated secret-id refuses the
// old one.
func TestKVv2AppRole(t *testing.T) {
	s := Start(t, Options{Mount: "charm-app-concourse"})
	s.Put("main/p/greeting", map[string]any{"value": "hi"})
	c := &client{t: t, s: s, http: http.DefaultClient}

	if status, _ := c.do("GET", "/v1/charm-app-concourse/data/main/p/greeting", nil); status != http.StatusForbidden {
		t.Errorf("a read without a token: %d, want 403", status)
	}
	if status := c.login("wrong"); status != http.StatusBadRequest {
		t.Errorf("login with a wrong secret id: %d, want 400", status)
	}
	if status := c.login(s.SecretID()); status != http.StatusOK {
		t.Fatalf("login: %d", status)
	}
	status, out := c.do("GET", "/v1/sys/internal/ui/mounts/charm-app-concourse/main/p/greeting", nil)
	if status != 200 || out["data"].(map[string]any)["path"] != "charm-app-concourse/" ||
		out["data"].(map[string]any)["options"].(map[string]any)["version"] != "2" {
		t.Errorf("preflight: %d %v", status, out)
	}
	status, out = c.do("GET", "/v1/charm-app-concourse/data/main/p/greeting", nil)
	if status != 200 || out["data"].(map[string]any)["data"].(map[string]any)["value"] != "hi" {
		t.Errorf("read: %d %v", status, out)
	}
	if status, _ := c.do("GET", "/v1/charm-app-concourse/data/main/greeting", nil); status != http.StatusNotFound {
		t.Errorf("a missing secret: %d, want 404", status)
	}
	status, out = c.do("GET", "/v1/auth/token/lookup-self", nil)
	if status != 200 || out["data"].(map[string]any)["renewable"] != true {
		t.Errorf("lookup-self: %d %v", status, out)
	}
	if status, _ := c.do("PUT", "/v1/auth/token/renew-self", map[string]int{"increment": 0}); status != 200 {
		t.Errorf("renew-self: %d", status)
	}
	if got, want := s.Reads(), []string{"main/p/greeting", "main/greeting"}; !slices.Equal(got, want) {
		t.Errorf("Reads = %v, want %v", got, want)
	}

	old := s.SecretID()
	s.RotateSecretID()
	if status := c.login(old); status != http.StatusBadRequest {
		t.Errorf("login with the rotated-out secret id: %d, want 400", status)
	}
	if status := c.login(s.SecretID()); status != http.StatusOK {
		t.Errorf("login with the new secret id: %d", status)
	}
	s.RevokeTokens()
	if status, _ := c.do("GET", "/v1/charm-app-concourse/data/main/p/greeting", nil); status != http.StatusForbidden {
		t.Errorf("a read with a revoked token: %d, want 403", status)
	}
	logins := s.Logins()
	if len(logins) != 4 || logins[0].OK || !logins[1].OK || logins[2].OK || logins[2].SecretID != old || !logins[3].OK {
		t.Errorf("Logins = %+v", logins)
	}
}

// A KV v1 mount in a namespace: the preflight has no version, the secret is read directly,
// requests without the namespace find nothing, and tokens expire with their TTL.
func TestKVv1NamespaceTTL(t *testing.T) {
	s := Start(t, Options{KVVersion: 1, Namespace: "team-a", TokenTTL: time.Second})
	s.Put("main/greeting", map[string]any{"value": "v1"})
	c := &client{t: t, s: s, http: http.DefaultClient}
	if status := c.login(s.SecretID()); status != http.StatusNotFound {
		t.Errorf("login outside the namespace: %d, want 404", status)
	}
	c.ns = "team-a"
	if status := c.login(s.SecretID()); status != http.StatusOK {
		t.Fatalf("login: %d", status)
	}
	status, out := c.do("GET", "/v1/sys/internal/ui/mounts/concourse/main/greeting", nil)
	if _, has := out["data"].(map[string]any)["options"].(map[string]any)["version"]; status != 200 || has {
		t.Errorf("preflight of a v1 mount: %d %v", status, out)
	}
	status, out = c.do("GET", "/v1/concourse/main/greeting", nil)
	if status != 200 || out["data"].(map[string]any)["value"] != "v1" {
		t.Errorf("read: %d %v", status, out)
	}
	time.Sleep(1100 * time.Millisecond)
	if status, _ := c.do("GET", "/v1/concourse/main/greeting", nil); status != http.StatusForbidden {
		t.Errorf("a read with an expired token: %d, want 403", status)
	}
}

// TLS with a client certificate: the fake's CA verifies the server, and a client without the
// certificate is refused at the handshake.
func TestTLSClientCert(t *testing.T) {
	s := Start(t, Options{TLS: true, ClientCert: true})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CACertPEM) {
		t.Fatal("CACertPEM holds no certificate")
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := noCert.Get(s.URL + "/v1/sys/health"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate got through")
	}
	pair, err := tls.X509KeyPair(s.ClientCertPEM, s.ClientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	c := &client{t: t, s: s, http: withCert}
	if status, out := c.do("GET", "/v1/sys/health", nil); status != 200 || out["sealed"] != false {
		t.Errorf("health: %d %v", status, out)
	}
	if reqs := s.Requests(); len(reqs) != 1 || reqs[0].ClientCert != "concourse-web" {
		t.Errorf("Requests = %+v", reqs)
	}
}
