package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Binaries built once by TestMain and only read afterwards. Each sits at <prefix>/bin/concourse
// next to resource-types/ and fly-assets/, so asset discovery (§1.3) is exercised for real.
var (
	bin714 string // -X main.version=7.14.3
	bin825 string // -X main.version=8.2.5
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakeconcourse-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		for _, b := range []struct {
			dst *string
			ver string
		}{{&bin714, "7.14.3"}, {&bin825, "8.2.5"}} {
			p, err := buildFake(filepath.Join(dir, b.ver), b.ver)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			*b.dst = p
		}
		return m.Run()
	}()
	os.Exit(code)
}

func buildFake(prefixParent, ver string) (string, error) {
	prefix := filepath.Join(prefixParent, "concourse")
	out := filepath.Join(prefix, "bin", "concourse")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+ver, "-o", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building fake concourse %s: %v\n%s", ver, err, b)
	}
	files := map[string]string{
		"resource-types/git/resource_metadata.json":  `{"type":"git","version":"1.18.0","privileged":false,"unique_version_history":false}`,
		"resource-types/git/rootfs.tgz":              "not really a tgz",
		"resource-types/time/resource_metadata.json": `{"type":"time","version":"1.9.0","privileged":false,"unique_version_history":false}`,
		"resource-types/time/rootfs.tgz":             "not really a tgz",
		"fly-assets/fly-linux-amd64.tgz":             flyTgzFixture(),
	}
	for name, content := range files {
		p := filepath.Join(prefix, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	return out, nil
}

// flyFixture is the `fly` inside the fixture's fly-linux-amd64.tgz, which the web's /api/v1/cli
// unpacks and serves.
const flyFixture = "#!/bin/sh\necho fly fixture\n"

func flyTgzFixture() string {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "fly", Mode: 0o755, Size: int64(len(flyFixture)), Typeflag: tar.TypeReg})
	tw.Write([]byte(flyFixture))
	tw.Close()
	gz.Close()
	return buf.String()
}

// keySet is one deployment's keys, written the way the charm writes them.
type keySet struct {
	dir                                    string
	tsaHost, tsaHostPub, worker, workerPub string
	session, authorized                    string
	workerKey                              *rsa.PrivateKey
	tsaHostKey                             *rsa.PrivateKey
}

func newRSA(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func authorizedLine(t *testing.T, k *rsa.PrivateKey) []byte {
	t.Helper()
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(pub)
}

// newKeys writes a TSA host key (PKCS#1), a worker key (generate-key's mislabelled form), a session
// key (PKCS#8) and authorized_worker_keys containing the worker key.
func newKeys(t *testing.T) *keySet {
	t.Helper()
	dir := t.TempDir()
	ks := &keySet{
		dir: dir, tsaHost: filepath.Join(dir, "tsa_host_key"), tsaHostPub: filepath.Join(dir, "tsa_host_key.pub"),
		worker: filepath.Join(dir, "worker_key"), workerPub: filepath.Join(dir, "worker_key.pub"),
		session: filepath.Join(dir, "session_signing_key"), authorized: filepath.Join(dir, "authorized_worker_keys"),
		workerKey: newRSA(t), tsaHostKey: newRSA(t),
	}
	writePEM(t, ks.tsaHost, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(ks.tsaHostKey))
	writePEM(t, ks.worker, "PRIVATE KEY", x509.MarshalPKCS1PrivateKey(ks.workerKey))
	der, err := x509.MarshalPKCS8PrivateKey(newRSA(t))
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, ks.session, "PRIVATE KEY", der)
	for path, content := range map[string][]byte{
		ks.tsaHostPub: authorizedLine(t, ks.tsaHostKey),
		ks.workerPub:  authorizedLine(t, ks.workerKey),
		ks.authorized: authorizedLine(t, ks.workerKey),
	} {
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ks
}

// proc is a running fake with its stdout log lines collected for waitLog.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr bytes.Buffer
	mu     sync.Mutex
	lines  []string
	added  chan struct{} // closed and replaced whenever a line arrives
	done   chan struct{}
	err    error
}

func start(t *testing.T, bin string, env map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), added: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/tmp"}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedBuffer{mu: &p.mu, b: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.added)
			p.added = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s %v stdout:\n%s\nstderr:\n%s", filepath.Base(bin), args, strings.Join(p.snapshot(), "\n"), p.stderrText())
		}
	})
	return p
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (p *proc) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

func (p *proc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// logLine is one lager JSON line.
type logLine struct {
	Level   string         `json:"level"`
	Source  string         `json:"source"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data"`
}

// waitLog waits (bounded) for a log line with the given message whose text also contains every
// extra string; it returns the parsed line.
func (p *proc) waitLog(message string, contains ...string) logLine {
	p.t.Helper()
	return p.waitLogN(1, message, contains...)
}

// waitLogN is waitLog for the n-th matching line.
func (p *proc) waitLogN(n int, message string, contains ...string) logLine {
	p.t.Helper()
	deadline := time.After(20 * time.Second)
	seen := 0
	for {
		p.mu.Lock()
		lines, added := p.lines[seen:], p.added
		seen = len(p.lines)
		p.mu.Unlock()
	lines:
		for _, l := range lines {
			var ll logLine
			if json.Unmarshal([]byte(l), &ll) != nil || ll.Message != message {
				continue
			}
			for _, c := range contains {
				if !strings.Contains(l, c) {
					continue lines
				}
			}
			if n--; n == 0 {
				return ll
			}
		}
		select {
		case <-added:
		case <-p.done:
			p.t.Fatalf("process exited (%v) before logging %q %q; stderr: %s", p.err, message, contains, p.stderrText())
		case <-deadline:
			p.t.Fatalf("no log %q containing %q within 20s", message, contains)
		}
	}
}

// stop sends sig and waits (bounded) for the exit code.
func (p *proc) stop(sig syscall.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	return p.wait()
}

func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.t.Fatalf("process did not exit within 60s")
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.err)
	return -1
}

// runBin runs the fake to completion (bounded) and returns stdout, stderr and the exit code.
func runBin(t *testing.T, bin string, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	p := start(t, bin, env, args...)
	code := p.wait()
	return strings.Join(p.snapshot(), "\n"), p.stderrText(), code
}
