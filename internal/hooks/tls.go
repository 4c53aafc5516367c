package hooks

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// TLS on the web node (issue 9). With tls-enabled, Concourse serves HTTPS on web-port
// (CONCOURSE_TLS_BIND_PORT) and keeps a plain listener on tls-redirect-port
// (CONCOURSE_BIND_PORT: `concourse web` always binds it). On that plain port Concourse answers a
// GET or HEAD of the UI, login and legacy paths whose Host is the external URL's host with
// 301 to the https external URL; it serves /api/ plainly, and any request naming another host
// (127.0.0.1, say) too (atc/atccmd's tlsRedirectHandler; checked with the real 7.14.3 and 8.2.5
// in tls_real_test.go). Concourse refuses to start with TLS behind an http external URL.
//
// The certificate and key are files beside web.env: the certificate is public (0644), the key
// is a secret (0640 root:concourse, never argv, the unit file, a status or a log). The charm's
// own calls to its web (readiness probe, check-status, retiring departed workers) go over HTTPS
// to loopback and accept only the configured certificate (LocalWebClient): a probe that passes
// proves users get that certificate.
const (
	fileTLSCert = "tls/web.crt"
	fileTLSKey  = "tls/web.key"
)

// webTLS is the TLS setting of the web, from the checked options.
type webTLS struct {
	On           bool
	Cert, Key    string // PEM; Key may still be a secret URI in `render`
	RedirectPort int
}

func tlsOf(cfg Config) webTLS {
	t := webTLS{On: cfg.Opts["tls-enabled"] == "true", Cert: cfg.Opts["tls-certificate"], Key: cfg.Opts["tls-key"], RedirectPort: 80}
	if n, err := strconv.Atoi(cfg.Opts["tls-redirect-port"]); err == nil && n > 0 {
		t.RedirectPort = n
	}
	return t
}

// scheme is the scheme users and the charm reach the web with.
func (t webTLS) scheme() string {
	if t.On {
		return "https"
	}
	return "http"
}

// tlsConfigError says what keeps TLS from working with cfg: the rules that need options outside
// the option table (web-port, external-url, enable-metrics). nil when TLS is off.
func tlsConfigError(cfg Config) error {
	t := tlsOf(cfg)
	if !t.On {
		return nil
	}
	switch {
	case t.Cert == "" && t.Key == "":
		return &ConfigError{"tls-enabled", "true", "needs tls-certificate and tls-key: set both (PEM; tls-key may be a Juju secret URI), or set tls-enabled=false. The tls-certificates relation is not served yet"}
	case t.Cert == "":
		return &ConfigError{"tls-certificate", "", "required when tls-enabled is true: the web's certificate in PEM, followed by its intermediate CAs"}
	case t.Key == "":
		return &ConfigError{"tls-key", "", "required when tls-enabled is true: the private key of tls-certificate in PEM, or a Juju secret URI (secret:…) holding it"}
	}
	if cfg.ExternalURL != "" {
		if u, err := url.Parse(cfg.ExternalURL); err == nil && u.Scheme != "https" {
			return &ConfigError{"external-url", cfg.ExternalURL, "must be an https URL when tls-enabled is true (Concourse refuses TLS behind an http external URL); change it to https://…, or clear it to use https://<address>:<web-port>"}
		}
	}
	p := t.RedirectPort
	switch {
	case p == cfg.WebPort:
		return &ConfigError{"tls-redirect-port", strconv.Itoa(p), "is also web-port, where HTTPS is served: choose another port (with web-port 443, the usual tls-redirect-port is 80)"}
	case p == tsaPort:
		return &ConfigError{"tls-redirect-port", strconv.Itoa(p), "2222 is the TSA port of the web node; choose another"}
	case p == metricsPort && cfg.EnableMetrics:
		return &ConfigError{"tls-redirect-port", strconv.Itoa(p), "9391 is the metrics port when enable-metrics is true; choose another"}
	}
	return nil
}

// tlsEnv are the web's TLS variables: HTTPS on web-port, the files beside web.env.
func tlsEnv(cfg Config, p Paths) []concourse.EnvVar {
	if !tlsOf(cfg).On {
		return nil
	}
	return []concourse.EnvVar{
		{Name: "CONCOURSE_TLS_BIND_PORT", Value: strconv.Itoa(cfg.WebPort)},
		{Name: "CONCOURSE_TLS_CERT", Value: filepath.Join(p.ConfigDir, fileTLSCert)},
		{Name: "CONCOURSE_TLS_KEY", Value: filepath.Join(p.ConfigDir, fileTLSKey)},
	}
}

// webTLSFiles are the certificate (public) and the key (readable by the web's group only);
// none when TLS is off.
func webTLSFiles(cfg Config, p Paths, webGID int) []fileSpec {
	t := tlsOf(cfg)
	if !t.On {
		return nil
	}
	return []fileSpec{
		{Path: filepath.Join(p.ConfigDir, fileTLSCert), Data: []byte(t.Cert + "\n"), Mode: 0o644, UID: 0, GID: 0},
		{Path: filepath.Join(p.ConfigDir, fileTLSKey), Data: []byte(t.Key + "\n"), Mode: 0o640, UID: 0, GID: webGID},
	}
}

// webListenPorts are the TCP ports the web listens on for users and workers: web-port (HTTPS
// with TLS), the redirect port with TLS, the TSA, and metrics when enabled.
func webListenPorts(cfg Config) []int {
	ports := []int{cfg.WebPort, tsaPort}
	if tlsOf(cfg).On {
		ports = append(ports, tlsOf(cfg).RedirectPort)
	}
	if cfg.EnableMetrics {
		ports = append(ports, metricsPort)
	}
	return ports
}

// localWebURL is where the charm reaches its own web: loopback, https with TLS.
func (u *unitRun) localWebURL() string {
	return fmt.Sprintf("%s://127.0.0.1:%d", tlsOf(u.cfg).scheme(), u.cfg.WebPort)
}

// LocalWebClient is the client for the charm's own calls to the web at baseURL on this unit:
// never through a proxy, and for https only the certificate the charm wrote (tls-certificate)
// is accepted. The name is not checked (the charm dials 127.0.0.1, which a certificate for the
// external name does not cover) because the certificate itself is pinned, byte for byte: a
// stronger check than a CA's signature, and never a silent skip.
func LocalWebClient(p Paths, baseURL string, timeout time.Duration) (*http.Client, error) {
	tr := &http.Transport{Proxy: nil, TLSHandshakeTimeout: timeout}
	c := &http.Client{Timeout: timeout, Transport: tr}
	if !strings.HasPrefix(baseURL, "https://") {
		return c, nil
	}
	path := filepath.Join(p.ConfigDir, fileTLSCert)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the web's certificate to trust: %w", err)
	}
	leaf, err := firstCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is VerifyConnection's pin, not the system roots and the name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf.Raw) {
				return fmt.Errorf("the web at %s presents a certificate other than tls-certificate (%s)", baseURL, describeCert(leaf))
			}
			return nil
		},
	}
	return c, nil
}

// firstCertificate is the first CERTIFICATE block of PEM data: the leaf of a chain.
func firstCertificate(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM certificate")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// describeCert names a certificate for a status: its subject and expiry, nothing secret.
func describeCert(c *x509.Certificate) string {
	name := c.Subject.CommonName
	if name == "" && len(c.DNSNames) > 0 {
		name = c.DNSNames[0]
	}
	if name == "" {
		name = "serial " + c.SerialNumber.String()
	}
	return fmt.Sprintf("%s, expires %s", name, c.NotAfter.UTC().Format("2006-01-02"))
}

// checkTLSCert accepts the web's certificate in PEM, followed by intermediates: every block a
// certificate that parses, the first (the web's own) valid now.
func checkTLSCert(v string) (string, error) {
	v = strings.TrimSpace(strings.ReplaceAll(v, "\r\n", "\n"))
	rest := []byte(v)
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return "", fmt.Errorf("expected PEM certificates (the web's first, then its intermediates); found a %s block (the key goes in tls-key)", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return "", fmt.Errorf("certificate %d does not parse: %v", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 || strings.TrimSpace(string(rest)) != "" {
		return "", errors.New("expected the web's certificate in PEM (-----BEGIN CERTIFICATE-----), then its intermediate CAs")
	}
	leaf, now := certs[0], time.Now()
	switch {
	case now.After(leaf.NotAfter):
		return "", fmt.Errorf("the certificate (%s) has expired: set a renewed one", describeCert(leaf))
	case now.Before(leaf.NotBefore):
		return "", fmt.Errorf("the certificate (%s) is not valid before %s", describeCert(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return v, nil
}

// checkTLSKey accepts one PEM private key (PKCS#1, PKCS#8 or SEC 1). Its errors never show any
// of the value.
func checkTLSKey(v string) (string, error) {
	v = strings.TrimSpace(strings.ReplaceAll(v, "\r\n", "\n"))
	b, rest := pem.Decode([]byte(v))
	if b == nil || !strings.HasSuffix(b.Type, "PRIVATE KEY") || strings.TrimSpace(string(rest)) != "" {
		return "", errors.New("expected one PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY), or a Juju secret URI (secret:…) holding it")
	}
	if b.Headers["Proc-Type"] != "" {
		return "", errors.New("the private key is encrypted: give it unencrypted (as a Juju secret URI to keep it out of the config)")
	}
	_, e1 := x509.ParsePKCS8PrivateKey(b.Bytes)
	_, e2 := x509.ParsePKCS1PrivateKey(b.Bytes)
	_, e3 := x509.ParseECPrivateKey(b.Bytes)
	if e1 != nil && e2 != nil && e3 != nil {
		return "", fmt.Errorf("the %s block does not parse as a private key", b.Type)
	}
	return v, nil
}

// checkTLSPair is the rule between tls-certificate and tls-key (once the key is resolved): the
// key must be the certificate's.
func checkTLSPair(v map[string]string) error {
	cert, key := v["tls-certificate"], v["tls-key"]
	if cert == "" || key == "" || strings.HasPrefix(key, "secret:") {
		return nil
	}
	if _, err := tls.X509KeyPair([]byte(cert), []byte(key)); err != nil {
		return &ConfigError{"tls-key", "(hidden)", "is not the private key of tls-certificate: set the key the certificate was issued for"}
	}
	return nil
}

// tlsExpiryNote warns, in the status, of a certificate that expires within 30 days.
func tlsExpiryNote(cfg Config, now time.Time) string {
	t := tlsOf(cfg)
	if !t.On || t.Cert == "" {
		return ""
	}
	leaf, err := firstCertificate([]byte(t.Cert))
	if err != nil || leaf.NotAfter.Sub(now) > 30*24*time.Hour {
		return ""
	}
	return fmt.Sprintf("tls-certificate expires on %s: set a renewed one", leaf.NotAfter.UTC().Format("2006-01-02"))
}

// removeTLSFiles removes the certificate and key once web.env no longer names them (tls-enabled
// turned off): a key must not outlive its use. It leaves them while the web.env on disk still
// refers to them (a blocked hook before web.env was rewritten), so a restart by systemd in
// between still finds them.
func (u *unitRun) removeTLSFiles() error {
	if b, err := os.ReadFile(u.path(fileWebEnv)); err == nil && bytes.Contains(b, []byte("CONCOURSE_TLS_KEY=")) {
		return nil
	}
	removed := false
	for _, rel := range []string{fileTLSKey, fileTLSCert} {
		err := os.Remove(u.path(rel))
		switch {
		case err == nil:
			removed = true
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("removing %s: %w", u.path(rel), err)
		}
	}
	if removed {
		u.act("Remove the web's TLS certificate and key: tls-enabled is false")
	}
	return nil
}
