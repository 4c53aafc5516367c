// Package realweb runs the real Concourse web (and worker) as child processes of a test, on
// loopback, with keys from `concourse generate-key`, and drives them with the real fly and with
// an HTTP client that walks the browser login through dex. Every process is the test's child,
// stopped by pid when the test ends. Shared by the real-binary tests of internal/concourse and
// internal/hooks (it started as the helpers of concourse's rolemodel_test.go).
package realweb

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Child is a process the test started; its output goes to a log file.
type Child struct {
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
	once sync.Once
}

// Start runs bin args with exactly env, output to logPath, and stops it when t ends.
func Start(t testing.TB, bin string, args, env []string, logPath string) *Child {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s %s: %v", bin, strings.Join(args, " "), err)
	}
	c := &Child{Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(c.done) }()
	t.Cleanup(func() { c.Stop(t) })
	return c
}

// Stop sends SIGTERM to the child's pid, then SIGKILL after 20 s; it waits for the exit.
func (c *Child) Stop(t testing.TB) {
	c.once.Do(func() {
		_ = c.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			t.Logf("pid %d ignored SIGTERM for 20s; killing it", c.Cmd.Process.Pid)
			_ = c.Cmd.Process.Kill()
			<-c.done
		}
	})
}

// Exited says whether the child has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Wait waits at most d for the child to exit by itself.
func (c *Child) Wait(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// LogTail is the end of the child's output, for failure messages.
func (c *Child) LogTail() string {
	b, _ := os.ReadFile(c.Log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(bytes.TrimSpace(b))
}

// WaitFor polls check every 500 ms until it succeeds, p exits or limit passes.
func WaitFor(t testing.TB, ctx context.Context, p *Child, limit time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if p.Exited() {
			t.Fatalf("waiting for %s: the process exited (%v)\n%s", what, p.Cmd.ProcessState, p.LogTail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting for %s: %v after %s\n%s", what, err, limit, p.LogTail())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// UnmountUnder detaches every mount below dir, deepest first (houdini workers leave bind mounts).
func UnmountUnder(t testing.TB, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("reading mountinfo: %v", err)
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		// Field 5 is the mount point, with spaces and the like octal-escaped.
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", m, err)
		}
	}
}

// StartHoudiniWorker runs `concourse worker` named name with the houdini runtime (no
// containers, so it runs without Garden), registering with the TSA on 127.0.0.1:tsaPort with the
// keys GenerateKeys wrote into keyDir; every listener is on loopback and a free port, volumes go
// under workDir (created if missing) and output to logPath. extraEnv is appended last, so it adds
// variables or overrides these (a later assignment wins in exec's environment). Houdini, run as
// root, bind-mounts volumes under workDir and leaves them after exiting, so the UnmountUnder
// cleanup is registered before the worker's own: cleanups run last-in first-out, so it runs after
// the worker has stopped. Safe to call again with the same workDir to restart a worker.
func StartHoudiniWorker(t testing.TB, bin, name, keyDir string, tsaPort int, workDir, logPath string, extraEnv ...string) *Child {
	t.Helper()
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { UnmountUnder(t, workDir) })
	env := []string{
		"CONCOURSE_NAME=" + name,
		"CONCOURSE_RUNTIME=houdini",
		"CONCOURSE_WORK_DIR=" + workDir,
		"CONCOURSE_TSA_HOST=127.0.0.1:" + strconv.Itoa(tsaPort),
		"CONCOURSE_TSA_PUBLIC_KEY=" + filepath.Join(keyDir, "tsa_host_key.pub"),
		"CONCOURSE_TSA_WORKER_PRIVATE_KEY=" + filepath.Join(keyDir, "worker_key"),
		"CONCOURSE_BAGGAGECLAIM_DRIVER=naive",
		"CONCOURSE_LOG_LEVEL=info",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	}
	for _, bind := range []string{"CONCOURSE_BIND", "CONCOURSE_DEBUG_BIND", "CONCOURSE_HEALTHCHECK_BIND", "CONCOURSE_BAGGAGECLAIM_BIND", "CONCOURSE_BAGGAGECLAIM_DEBUG_BIND"} {
		env = append(env, bind+"_IP=127.0.0.1", bind+"_PORT="+strconv.Itoa(FreePort(t)))
	}
	return Start(t, bin, []string{"worker"}, append(env, extraEnv...), logPath)
}

// GenerateKeys writes the keys a web and a worker need into dir with `concourse generate-key`:
// session_signing_key (rsa), tsa_host_key and worker_key (ssh), with their .pub files.
func GenerateKeys(t testing.TB, ctx context.Context, bin, dir string) {
	t.Helper()
	for name, typ := range map[string]string{"session_signing_key": "rsa", "tsa_host_key": "ssh", "worker_key": "ssh"} {
		if out, err := exec.CommandContext(ctx, bin, "generate-key", "-t", typ, "-f", filepath.Join(dir, name)).CombinedOutput(); err != nil {
			t.Fatalf("concourse generate-key -t %s: %v\n%s", typ, err, out)
		}
	}
}

// Loopback are the variables that keep a web's listeners on loopback and free ports, to append
// after the charm's rendered ones (a later assignment wins in exec's environment).
type Loopback struct {
	WebPort, TSAPort int
	URL              string
}

// NewLoopback picks the ports.
func NewLoopback(t testing.TB) Loopback {
	l := Loopback{WebPort: FreePort(t), TSAPort: FreePort(t)}
	l.URL = fmt.Sprintf("http://127.0.0.1:%d", l.WebPort)
	return l
}

// WebEnv are the loopback overrides for `concourse web`.
func (l Loopback) WebEnv(t testing.TB) []string {
	return []string{
		"CONCOURSE_BIND_IP=127.0.0.1",
		"CONCOURSE_BIND_PORT=" + strconv.Itoa(l.WebPort),
		"CONCOURSE_EXTERNAL_URL=" + l.URL,
		"CONCOURSE_PEER_ADDRESS=127.0.0.1",
		"CONCOURSE_DEBUG_BIND_IP=127.0.0.1",
		"CONCOURSE_DEBUG_BIND_PORT=" + strconv.Itoa(FreePort(t)),
		"CONCOURSE_TSA_BIND_IP=127.0.0.1",
		"CONCOURSE_TSA_BIND_PORT=" + strconv.Itoa(l.TSAPort),
		"CONCOURSE_TSA_DEBUG_BIND_IP=127.0.0.1",
		"CONCOURSE_TSA_DEBUG_BIND_PORT=" + strconv.Itoa(FreePort(t)),
	}
}

// WaitInfo waits until the web at url answers /api/v1/info.
func WaitInfo(t testing.TB, ctx context.Context, web *Child, url string) {
	t.Helper()
	WaitFor(t, ctx, web, 90*time.Second, "the web's /api/v1/info", func() error {
		resp, err := http.Get(url + "/api/v1/info")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	})
}

// Fly runs the real fly against one target with its own HOME.
type Fly struct {
	Bin, Home, Target string
}

// NewFly makes a fly with a fresh HOME under dir.
func NewFly(t testing.TB, bin, dir string) Fly {
	home := filepath.Join(dir, "fly-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	return Fly{Bin: bin, Home: home, Target: "t"}
}

// Run runs fly -t <target> args and returns its combined output.
func (f Fly) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, f.Bin, append([]string{"-t", f.Target}, args...)...)
	cmd.Env = []string{"HOME=" + f.Home, "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Browser walks the web's login as a browser does: /sky/login, dex's connector list, a
// connector's form, and back, keeping cookies.
type Browser struct {
	URL    string
	Client *http.Client
}

// NewBrowser is a cookie-keeping client for the web at url that does not follow redirects to
// hosts other than the web's own (an OAuth provider's authorize URL is returned, not visited).
func NewBrowser(webURL string) *Browser {
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(webURL)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host != u.Host || len(via) > 15 {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return &Browser{URL: webURL, Client: c}
}

// Get fetches path (or an absolute URL) and returns the final response's URL, status and body.
func (b *Browser) Get(path string) (*url.URL, int, string, error) {
	target := path
	if !strings.HasPrefix(path, "http") {
		target = b.URL + path
	}
	resp, err := b.Client.Get(target)
	if err != nil {
		return nil, 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
		l, err := resp.Request.URL.Parse(loc)
		if err == nil {
			return l, resp.StatusCode, string(body), nil
		}
	}
	return resp.Request.URL, resp.StatusCode, string(body), nil
}

var connectorLinkRE = regexp.MustCompile(`href="(/sky/issuer/auth/([A-Za-z0-9_-]+)\?[^"]*)"`)

// Connectors opens the login and returns the connectors dex offers, by id, with the path that
// starts each (the rendered settings are what that path leads to).
func (b *Browser) Connectors() (map[string]string, error) {
	u, status, body, err := b.Get("/sky/login")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range connectorLinkRE.FindAllStringSubmatch(body, -1) {
		out[m[2]] = html.UnescapeString(m[1])
	}
	if len(out) == 0 {
		// With one connector dex skips the list and goes straight to it.
		if m := regexp.MustCompile(`/sky/issuer/auth/([A-Za-z0-9_-]+)`).FindStringSubmatch(u.Path); m != nil {
			out[m[1]] = u.RequestURI()
			return out, nil
		}
		return nil, fmt.Errorf("no connector on %s (status %d):\n%s", u, status, cut(body, 2000))
	}
	return out, nil
}

var formActionRE = regexp.MustCompile(`<form[^>]*action="([^"]*)"`)

// PasswordLogin logs in through the password form of connector (ldap or local) and returns the
// user's name as /api/v1/user reports it, proving the session works.
func (b *Browser) PasswordLogin(connector, user, password string) (string, error) {
	conns, err := b.Connectors()
	if err != nil {
		return "", err
	}
	start, ok := conns[connector]
	if !ok {
		return "", fmt.Errorf("connector %s not offered (have %v)", connector, conns)
	}
	u, _, body, err := b.Get(start)
	if err != nil {
		return "", err
	}
	action := u.String()
	if m := formActionRE.FindStringSubmatch(body); m != nil {
		a, err := u.Parse(html.UnescapeString(m[1]))
		if err == nil {
			action = a.String()
		}
	}
	resp, err := b.Client.PostForm(action, url.Values{"login": {user}, "password": {password}})
	if err != nil {
		return "", err
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	req, _ := http.NewRequest("GET", b.URL+"/api/v1/user", nil)
	r2, err := b.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer r2.Body.Close()
	info, _ := io.ReadAll(r2.Body)
	if r2.StatusCode != http.StatusOK {
		return "", fmt.Errorf("after posting the %s form (%s, status %d): /api/v1/user says %s\n%s", connector, resp.Request.URL, resp.StatusCode, r2.Status, cut(string(page), 1500))
	}
	return string(info), nil
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// EchoPipeline writes a pipeline with one job, hello, whose task (no image: houdini runs it on the
// worker) prints msg, and returns its path.
func EchoPipeline(t testing.TB, dir, msg string) string {
	t.Helper()
	p := filepath.Join(dir, "pipeline.yml")
	yml := "jobs:\n- name: hello\n  plan:\n  - task: say\n    config:\n      platform: linux\n" +
		"      run: {path: /bin/sh, args: [-c, \"echo " + msg + "\"]}\n"
	if err := os.WriteFile(p, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
