package hooks

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// testTLSPair is a self-signed certificate for 127.0.0.1 and localhost valid between from and
// until, and its key, in PEM.
func testTLSPair(t testing.TB, cn string, from, until time.Time) (certPEM, keyPEM string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: from, NotAfter: until, DNSNames: []string{cn, "localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}))
}

func validTLSPair(t testing.TB, cn string) (string, string) {
	return testTLSPair(t, cn, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
}

// fixedTLSPair is testdata/tls: a certificate for ci.example.com valid until 2099, for goldens.
func fixedTLSPair(t testing.TB) (string, string) {
	t.Helper()
	c, err := os.ReadFile("testdata/tls/web.crt")
	if err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile("testdata/tls/web.key")
	if err != nil {
		t.Fatal(err)
	}
	return string(c), string(k)
}

// What an operator can get wrong with TLS, and what the status then says: each value is
// refused at parse (the option table) or at render (the rules with web-port and external-url),
// and a secret never appears in the message.
func TestTLSOptionValidation(t *testing.T) {
	t.Parallel()
	cert, key := validTLSPair(t, "ci.example.com")
	otherCert, otherKey := validTLSPair(t, "other.example.com")
	expired, expiredKey := testTLSPair(t, "old.example.com", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	future, futureKey := testTLSPair(t, "soon.example.com", time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour))
	encrypted := "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END EC PRIVATE KEY-----"
	on := func(kv ...any) map[string]any {
		m := map[string]any{"mode": "web", "tls-enabled": true}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name string
		raw  map[string]any
		want string // "" = accepted
	}{
		{"a valid pair", on("tls-certificate", cert, "tls-key", key), ""},
		{"a valid pair, CRLF line ends", on("tls-certificate", strings.ReplaceAll(cert, "\n", "\r\n"), "tls-key", strings.ReplaceAll(key, "\n", "\r\n")), ""},
		{"the key as a Juju secret, checked once read", on("tls-certificate", cert, "tls-key", "secret:d0a1b2c3d4e5f6g7h8i9"), ""},
		{"an https external URL", on("tls-certificate", cert, "tls-key", key, "external-url", "https://ci.example.com"), ""},
		{"web-port 443, redirect from 80", on("tls-certificate", cert, "tls-key", key, "web-port", 443), ""},
		{"a certificate without tls-enabled has no effect", map[string]any{"tls-certificate": cert}, ""},
		{"tls-enabled alone", on(), `invalid tls-enabled "true": needs tls-certificate and tls-key: set both (PEM; tls-key may be a Juju secret URI), or set tls-enabled=false. The tls-certificates relation is not served yet`},
		{"no key", on("tls-certificate", cert), `invalid tls-key "": required when tls-enabled is true`},
		{"no certificate", on("tls-key", key), `invalid tls-certificate "": required when tls-enabled is true`},
		{"the certificate is not PEM", on("tls-certificate", "hello", "tls-key", key), `invalid tls-certificate "hello": expected the web's certificate in PEM`},
		{"the key pasted as the certificate", on("tls-certificate", key, "tls-key", key), `found a EC PRIVATE KEY block (the key goes in tls-key)`},
		{"an expired certificate", on("tls-certificate", expired, "tls-key", expiredKey), `the certificate (old.example.com, expires ` + time.Now().Add(-24*time.Hour).UTC().Format("2006-01-02") + `) has expired: set a renewed one`},
		{"a certificate not valid yet", on("tls-certificate", future, "tls-key", futureKey), `the certificate (soon.example.com, expires`},
		{"the key of another certificate", on("tls-certificate", cert, "tls-key", otherKey), `invalid tls-key "(hidden)": is not the private key of tls-certificate`},
		{"the certificate as the key", on("tls-certificate", otherCert, "tls-key", otherCert), `invalid tls-key "(hidden)": expected one PEM private key`},
		{"an encrypted key", on("tls-certificate", cert, "tls-key", encrypted), `invalid tls-key "(hidden)": the private key is encrypted`},
		{"an http external URL", on("tls-certificate", cert, "tls-key", key, "external-url", "http://ci.example.com"), `invalid external-url "http://ci.example.com": must be an https URL when tls-enabled is true`},
		{"the redirect port is web-port", on("tls-certificate", cert, "tls-key", key, "web-port", 80), `invalid tls-redirect-port "80": is also web-port`},
		{"the redirect port is the TSA's", on("tls-certificate", cert, "tls-key", key, "tls-redirect-port", 2222), `invalid tls-redirect-port "2222": 2222 is the TSA port`},
		{"the redirect port is the metrics port", on("tls-certificate", cert, "tls-key", key, "tls-redirect-port", 9391, "enable-metrics", true), `invalid tls-redirect-port "9391": 9391 is the metrics port`},
		{"the redirect port out of range", on("tls-certificate", cert, "tls-key", key, "tls-redirect-port", 70000), `invalid tls-redirect-port "70000": expected a port number from 1 to 65535`},
		{"a TLS flag in extra-web-flags", map[string]any{"extra-web-flags": "--tls-cert=/etc/ssl/ci.pem"}, "use the tls-enabled, tls-certificate and tls-key options"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseConfig(c.raw)
			if err == nil {
				cfg.hashPassword = placeholderHash
				_, _, _, err = renderWeb(cfg, Paths{ConfigDir: "/etc/concourse"}, "10.0.0.5", "/bin/concourse", "pw", concourse.DBConfig{Host: "10.0.0.9", Port: 5432, User: "u", Password: "p", Database: "concourse"})
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error = %v; want it to contain %q", err, c.want)
			}
			if err != nil && (strings.Contains(err.Error(), "BEGIN EC PRIVATE KEY") || strings.Contains(err.Error(), strings.Split(key, "\n")[1][:20])) {
				t.Errorf("the message shows the key: %v", err)
			}
		})
	}
}

// What a TLS web gets, as `render` prints it: HTTPS on web-port, the plain listener on the
// redirect port, the https URL, the certificate's file, the key's file unshown, the ports.
func TestTLSRenderGolden(t *testing.T) {
	t.Parallel()
	cert, key := fixedTLSPair(t)
	var out bytes.Buffer
	err := Render(&out, RenderInput{Config: map[string]any{"mode": "web", "version": "8.2.5", "web-port": 443,
		"tls-enabled": true, "tls-certificate": cert, "tls-key": key}, Leader: true, Unit: "concourse-ci-machine/10",
		Address: "10.0.0.5", Paths: DefaultPaths(), DBHost: "10.0.0.9", DBPort: 5432})
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "render", "web-tls.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestTLSRenderGolden -update)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("render differs from %s:\n--- got\n%s\n--- want\n%s", golden, out.Bytes(), want)
	}
	for _, line := range []string{`CONCOURSE_BIND_PORT="80"`, `CONCOURSE_TLS_BIND_PORT="443"`, `CONCOURSE_EXTERNAL_URL="https://10.0.0.5:443"`,
		`CONCOURSE_TLS_CERT="/etc/concourse/tls/web.crt"`, `CONCOURSE_TLS_KEY="/etc/concourse/tls/web.key"`,
		"# ports opened: 443/tcp (web, HTTPS), 80/tcp (HTTP, redirects to HTTPS), 2222/tcp (TSA)"} {
		if !bytes.Contains(want, []byte(line)) {
			t.Errorf("the golden file lacks %q", line)
		}
	}
	if bytes.Contains(want, []byte("PRIVATE KEY")) {
		t.Errorf("render prints the key")
	}
}

// The charm's client for its own web trusts exactly the configured certificate: the web with
// it answers; a web presenting another certificate (even one for the right name) is refused,
// as is a missing certificate file; plain http needs no file.
func TestLocalWebClientPinsTheCertificate(t *testing.T) {
	t.Parallel()
	cert, key := validTLSPair(t, "127.0.0.1")
	other, otherKey := validTLSPair(t, "127.0.0.1")
	serve := func(certPEM, keyPEM string) *httptest.Server {
		pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"version":"8.2.5"}`))
		}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	p := Paths{ConfigDir: t.TempDir()}
	if _, err := LocalWebClient(p, "https://127.0.0.1:1", time.Second); err == nil || !strings.Contains(err.Error(), "reading the web's certificate") {
		t.Errorf("no certificate file: %v; want an error naming it", err)
	}
	if c, err := LocalWebClient(p, "http://127.0.0.1:1", time.Second); err != nil || c.Transport.(*http.Transport).TLSClientConfig != nil {
		t.Errorf("http: %v; want a plain client", err)
	}
	os.MkdirAll(filepath.Join(p.ConfigDir, "tls"), 0o755)
	if err := os.WriteFile(filepath.Join(p.ConfigDir, fileTLSCert), []byte(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		srv  *httptest.Server
		ok   bool
	}{{"the configured certificate", serve(cert, key), true}, {"another certificate", serve(other, otherKey), false}} {
		client, err := LocalWebClient(p, c.srv.URL, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		info, err := concourse.Info(context.Background(), client, c.srv.URL)
		switch {
		case c.ok && (err != nil || info.Version != "8.2.5"):
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "presents a certificate other than tls-certificate")):
			t.Errorf("%s: %v; want refused", c.name, err)
		}
	}
}

// The hooks' side: tls-enabled writes the certificate (0644) and the key (0640, group concourse)
// beside web.env, moves Concourse's plain listener to the redirect port, serves HTTPS on
// web-port, and the status shows the https URL; the key is in no status, log, env or unit file.
// Turning it off again removes both files and goes back to http.
func TestTLSWorldOnAndOff(t *testing.T) {
	cert, key := validTLSPair(t, "127.0.2.10")
	w := newWorld(t, 1, map[string]any{"version": "7.14.3"})
	w.deploy()
	pg := w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")

	w.m.SetConfig(app, map[string]any{"tls-enabled": true})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, `blocked: Invalid web configuration: invalid tls-enabled "true": needs tls-certificate and tls-key: set both (PEM; tls-key may be a Juju secret URI), or set tls-enabled=false. The tls-certificates relation is not served yet`)
	if env, _ := concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv))); env["CONCOURSE_TLS_BIND_PORT"] != "" {
		t.Errorf("a blocked TLS change reached web.env")
	}

	// A secret another application owns and granted to this one, as in TestSecretOptionFromJujuSecret.
	uri := w.m.AddSecret("postgresql", map[string]string{"tls-key": key}, "")
	w.m.GrantSecret(uri, pg, "")
	w.m.SetConfig(app, map[string]any{"tls-certificate": cert, "tls-key": uri})
	restarts := w.svcs[u0].count("restart " + webService)
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "active: Web server ready (v7.14.3) https://127.0.2.10:8080")
	if got := w.svcs[u0].count("restart " + webService); got != restarts+1 {
		t.Errorf("turning TLS on restarted the web %d times; want once", got-restarts)
	}
	cfgDir := w.paths(u0).ConfigDir
	for rel, mode := range map[string]os.FileMode{fileTLSCert: 0o644, fileTLSKey: 0o640} {
		st, err := os.Stat(filepath.Join(cfgDir, rel))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v; want %v", rel, err, st, mode)
		}
	}
	if w.readFile(u0, fileTLSKey) != strings.TrimSpace(key)+"\n" || w.readFile(u0, fileTLSCert) != strings.TrimSpace(cert)+"\n" {
		t.Errorf("the TLS files do not hold the configured certificate and the secret's key")
	}
	envText := w.readFile(u0, fileWebEnv)
	env, _ := concourse.ParseEnvFile([]byte(envText))
	for k, want := range map[string]string{
		"CONCOURSE_BIND_PORT": "80", "CONCOURSE_TLS_BIND_PORT": "8080", "CONCOURSE_EXTERNAL_URL": "https://127.0.2.10:8080",
		"CONCOURSE_TLS_CERT": filepath.Join(cfgDir, fileTLSCert), "CONCOURSE_TLS_KEY": filepath.Join(cfgDir, fileTLSKey),
	} {
		if env[k] != want {
			t.Errorf("web.env %s = %q; want %q", k, env[k], want)
		}
	}
	// Juju opens what the web listens on: HTTPS on web-port and the plain port that redirects.
	if got := w.m.OpenedPorts(u0); !slices.Contains(got, "80/tcp") || !slices.Contains(got, "8080/tcp") {
		t.Errorf("opened ports with TLS = %q; want 8080/tcp (HTTPS) and 80/tcp (the redirect)", got)
	}
	keyLine := strings.Split(strings.TrimSpace(key), "\n")[1]
	unit, _ := os.ReadFile(filepath.Join(w.paths(u0).SystemdDir, webService))
	for where, text := range map[string]string{"web.env": envText, "the unit file": string(unit), "the log": w.stderr.String(), "the status": w.status(u0)} {
		if strings.Contains(text, keyLine) {
			t.Errorf("%s holds the private key", where)
		}
	}
	if err := w.hook(u0, jujutest.HookInfo{ActionName: "check-status"}); err != nil {
		t.Fatal(err)
	}
	acts := w.m.Actions()
	res := acts[len(acts)-1].Results
	if res["tls"] != "https on port 8080, plain HTTP on 80 redirects to it" || !strings.HasPrefix(res["tls-certificate"], "127.0.2.10, expires ") {
		t.Errorf("check-status tls = %q, tls-certificate = %q", res["tls"], res["tls-certificate"])
	}
	if _, ok := res["option-tls-enabled"]; ok {
		t.Errorf("check-status still calls tls-enabled an option without effect: %q", res["option-tls-enabled"])
	}
	// A later hook changes nothing.
	restarts = w.svcs[u0].count("restart " + webService)
	w.mustHook(u0, "update-status")
	if got := w.svcs[u0].count("restart " + webService); got != restarts {
		t.Errorf("update-status restarted the TLS web")
	}

	w.m.SetConfig(app, map[string]any{"tls-enabled": false})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	for _, rel := range []string{fileTLSCert, fileTLSKey} {
		if _, err := os.Stat(filepath.Join(cfgDir, rel)); !os.IsNotExist(err) {
			t.Errorf("%s is still there after tls-enabled=false (%v)", rel, err)
		}
	}
	env, _ = concourse.ParseEnvFile([]byte(w.readFile(u0, fileWebEnv)))
	if env["CONCOURSE_BIND_PORT"] != "8080" || env["CONCOURSE_TLS_BIND_PORT"] != "" || env["CONCOURSE_EXTERNAL_URL"] != "http://127.0.2.10:8080" {
		t.Errorf("after tls-enabled=false web.env = %v", env)
	}
}

// The charm reaches its own web over https on loopback with TLS, and the ports it listens on.
func TestTLSLocalURLAndPorts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		opts  map[string]string
		port  int
		url   string
		ports []int
	}{
		{"plain", nil, 8080, "http://127.0.0.1:8080", []int{8080, tsaPort}},
		{"TLS on 443", map[string]string{"tls-enabled": "true", "tls-redirect-port": "80"}, 443, "https://127.0.0.1:443", []int{443, tsaPort, 80}},
		{"TLS on 8443, redirect from 8080", map[string]string{"tls-enabled": "true", "tls-redirect-port": "8080"}, 8443, "https://127.0.0.1:8443", []int{8443, tsaPort, 8080}},
	} {
		u := &unitRun{cfg: Config{WebPort: c.port, Opts: c.opts}}
		if got := u.localWebURL(); got != c.url {
			t.Errorf("%s: local URL %s; want %s", c.name, got, c.url)
		}
		if got := webListenPorts(u.cfg); !equalInts(got, c.ports) {
			t.Errorf("%s: ports %v; want %v", c.name, got, c.ports)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The status warns of a certificate that expires within 30 days, and only then.
func TestTLSExpiryNote(t *testing.T) {
	t.Parallel()
	now := time.Now()
	soon, _ := testTLSPair(t, "ci", now.Add(-time.Hour), now.Add(10*24*time.Hour))
	later, _ := testTLSPair(t, "ci", now.Add(-time.Hour), now.Add(90*24*time.Hour))
	on := func(c string) Config {
		return Config{Opts: map[string]string{"tls-enabled": "true", "tls-certificate": c}}
	}
	if n := tlsExpiryNote(on(soon), now); !strings.HasPrefix(n, "tls-certificate expires on "+now.Add(10*24*time.Hour).UTC().Format("2006-01-02")) {
		t.Errorf("10 days left: note %q", n)
	}
	if n := tlsExpiryNote(on(later), now); n != "" {
		t.Errorf("90 days left: note %q; want none", n)
	}
	if n := tlsExpiryNote(Config{Opts: map[string]string{"tls-certificate": soon}}, now); n != "" {
		t.Errorf("TLS off: note %q; want none", n)
	}
}
