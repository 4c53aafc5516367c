package release

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// GitHubHosts are the names a charm with default options reaches: the API for "latest" and the
// release downloads.
var GitHubHosts = []string{"api.github.com", "github.com"}

// Proxy is the model's HTTPS proxy of a machine that has no internet, as a TLS-inspecting
// corporate proxy is: it accepts CONNECT for GitHubHosts only, terminates TLS with certificates
// from its own CA, and answers from a release Server. A charm with every option at its default
// then installs exactly as it would from GitHub, through JUJU_CHARM_HTTPS_PROXY, once the
// machine trusts CAPEM (what cloudinit-userdata ca-certs does on a real model).
type Proxy struct {
	CAPEM []byte // the CA certificate, PEM

	ln      net.Listener
	backend http.Handler
	caCert  *x509.Certificate
	caKey   *ecdsa.PrivateKey
	tlsConf *tls.Config

	mu       sync.Mutex
	certs    map[string]*tls.Certificate
	conns    map[net.Conn]struct{}
	refused  []string
	closed   bool
	handlers sync.WaitGroup
}

// ListenProxy starts a proxy on addr ("<bridge-ip>:0") in front of backend.
func ListenProxy(addr string, backend http.Handler) (*Proxy, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ccm test bed proxy CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating the proxy CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{
		CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		ln:    ln, backend: backend, caCert: ca, caKey: key,
		certs: map[string]*tls.Certificate{}, conns: map[net.Conn]struct{}{},
	}
	p.tlsConf = &tls.Config{GetCertificate: p.certFor, MinVersion: tls.VersionTLS12}
	go p.serve()
	return p, nil
}

// URL is the proxy's address as the model's juju-https-proxy names it.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Refused lists the CONNECT targets the proxy turned away: a charm that dials anything but
// GitHub from a default deployment shows up here.
func (p *Proxy) Refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.refused)
}

// Close stops the proxy and every tunnel it holds.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.handlers.Wait()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.handlers.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.handlers.Done()
			defer func() {
				p.mu.Lock()
				delete(p.conns, c)
				p.mu.Unlock()
				c.Close()
			}()
			p.tunnel(c)
		}()
	}
}

// tunnel answers one CONNECT and serves the intercepted TLS connection from the backend.
func (p *Proxy) tunnel(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	host, _, _ := net.SplitHostPort(req.Host)
	if req.Method != http.MethodConnect || !slices.Contains(GitHubHosts, host) {
		p.mu.Lock()
		p.refused = append(p.refused, req.Method+" "+req.Host)
		p.mu.Unlock()
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	if _, err := fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	tc := tls.Server(&bufferedConn{Conn: c, r: br}, p.tlsConf)
	if err := tc.Handshake(); err != nil {
		return
	}
	// One connection, served until the client closes it; downloads are long, so no deadline
	// beyond the idle one.
	srv := &http.Server{Handler: p.backend, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
	srv.Serve(&oneConnListener{conn: tc})
}

func (p *Proxy) certFor(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := hello.ServerName
	if !slices.Contains(GitHubHosts, name) {
		return nil, fmt.Errorf("proxy: no certificate for %q", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.certs[name]; c != nil {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(p.certs) + 2)),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	p.certs[name] = c
	return c, nil
}

// bufferedConn reads first what the CONNECT parser buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// oneConnListener hands one connection to http.Server, then reports closed once it is done.
type oneConnListener struct {
	mu   sync.Mutex
	conn net.Conn
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.done == nil {
		l.done = make(chan struct{})
	}
	c := l.conn
	l.conn = nil
	done := l.done
	l.mu.Unlock()
	if c != nil {
		return &closeNotifyConn{Conn: c, done: done}, nil
	}
	<-done
	return nil, errors.New("proxy: tunnel closed")
}

func (l *oneConnListener) Close() error { return nil }
func (l *oneConnListener) Addr() net.Addr {
	return &net.TCPAddr{}
}

// closeNotifyConn ends the listener's Accept when the served connection closes.
type closeNotifyConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *closeNotifyConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}
