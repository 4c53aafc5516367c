package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/hooks"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
	"golang.org/x/crypto/ssh"
)

// binaries are built once per test process, as the charm is built for a unit.
type binaries struct{ dispatch, fakejuju, tools string }

func buildBinaries(t testing.TB) binaries {
	t.Helper()
	dir := t.TempDir()
	b := binaries{dispatch: filepath.Join(dir, "dispatch"), fakejuju: filepath.Join(dir, "fakejuju"), tools: filepath.Join(dir, "tools")}
	for out, pkg := range map[string]string{b.dispatch: ".", b.fakejuju: "../../tests/fakejuju"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=test", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, o)
		}
	}
	if o, err := exec.Command(b.fakejuju, "link", b.tools).CombinedOutput(); err != nil {
		t.Fatalf("linking hook tools: %v\n%s", err, o)
	}
	return b
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The foundation issue's acceptance: the charm binary, run as Juju runs dispatch
// (JUJU_DISPATCH_PATH=hooks/install, fake hook tools first on PATH), sets a status.
func TestDispatchInstallUnderFakeHookTools(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	b := buildBinaries(t)
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"tag_name":"v7.14.3"}`)
	}))
	defer gh.Close()
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	fj := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(b.fakejuju, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("fakejuju %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	fj("init", "--state", state, "--unit", "concourse-ci-machine/0", "--leader", "--charm-dir", repoRoot(t), "--config", "shared-storage=lxc", "--hook", "install")
	root := filepath.Join(dir, "unit", "var/lib/concourse") // the mount point exists, the marker not yet
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Exactly Juju's call: no arguments, the hook named in the environment, the tools on PATH.
	cmd := exec.Command(b.dispatch, "dispatch", "--paths-prefix", filepath.Join(dir, "unit"), "--github-api", gh.URL)
	envOut := fj("env", "--state", state)
	cmd.Env = []string{"PATH=" + b.tools + ":/usr/bin:/bin", "FAKE_JUJU_STATE=" + state}
	for _, line := range strings.Split(envOut, "\n") {
		line = strings.TrimPrefix(line, "export ")
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "JUJU_") {
			cmd.Env = append(cmd.Env, k+"="+strings.Trim(v, `'"`))
		}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dispatch install: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(strings.Join(cmd.Env, " "), "JUJU_DISPATCH_PATH=hooks/install") {
		t.Fatalf("hook environment lacks JUJU_DISPATCH_PATH: %v", cmd.Env)
	}
	show := fj("show", "--state", state)
	if !strings.Contains(show, "Waiting for shared storage") || !strings.Contains(show, ".lxc_shared_storage is missing") {
		t.Errorf("status after install:\n%s\nstderr:\n%s", show, stderr.String())
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("the install hook wrote into the install root without the shared-storage marker: %v", entries)
	}
}

func TestVersionAndRender(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"concourse-ci-machine", "version"}, func(string) string { return "" }, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != version {
		t.Errorf("version: code %d, %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	code := run(context.Background(), []string{"concourse-ci-machine", "render", "--config", "mode=all", "--config", "version=7.14.3", "--leader", "--config", "extra-web-flags=--cluster-name 'CI one'"}, func(string) string { return "" }, &out, &errb)
	if code != 0 {
		t.Fatalf("render: %d %s", code, errb.String())
	}
	for _, want := range []string{"concourse-server.service", "concourse-worker.service", `CONCOURSE_BIND_PORT="8080"`, `"CI one"`, `CONCOURSE_TSA_HOST="10.0.0.5:2222"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("render output lacks %s:\n%s", want, out.String())
		}
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"concourse-ci-machine", "render", "--config", "mode=both"}, func(string) string { return "" }, &out, &errb); code == 0 || !strings.Contains(errb.String(), `invalid mode "both"`) {
		t.Errorf("render with an invalid mode: code %d, stderr %q", code, errb.String())
	}
}

// benchUnit is a worker unit in steady state: release installed, service running, the web's TSA
// published, driven over a jujuc socket served by this process.
type benchUnit struct {
	b        binaries
	model    *jujutest.Model
	sock     string
	prefix   string
	pathDirs string
	calls    atomic.Int64
	current  atomic.Pointer[jujutest.HookContext]
}

// serveAgent answers the jujuc protocol on sock for the hook context in current (the unit agent's
// socket), counting the calls, until the test ends.
func serveAgent(tb testing.TB, sock string, calls *atomic.Int64, current *atomic.Pointer[jujutest.HookContext]) {
	tb.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go jujutest.Serve(l, func(id string) (*jujutest.HookContext, bool) {
		calls.Add(1)
		hc := current.Load()
		return hc, hc != nil && hc.ID() == id
	})
}

// steadyUnitFiles prepares what a unit in steady state has on its machine for a benchmark or a
// test of the real dispatch binary: a fake systemctl that reports every unit active (the host has
// no systemd, and must not) and the 7.14.3 release, whose bin/concourse is script, installed in
// the unit's root as the leader would have. It returns the PATH the hooks run with.
func steadyUnitFiles(tb testing.TB, bins binaries, dir, prefix, unit, script string) string {
	tb.Helper()
	fakeBin := filepath.Join(dir, "fakebin")
	os.MkdirAll(fakeBin, 0o755)
	os.WriteFile(filepath.Join(fakeBin, "systemctl"), []byte("#!/bin/sh\ncase \"$1\" in is-active) echo active;; esac\nexit 0\n"), 0o755)
	bin := filepath.Join(dir, "concourse")
	os.WriteFile(bin, []byte(script), 0o755)
	asset, err := release.Build(dir, "7.14.3", "amd64", bin, release.BuildOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	st := storage.New(storage.Options{Root: filepath.Join(prefix, "var/lib/concourse"), Unit: unit, StripPrefix: "concourse/"})
	if _, err := st.Install(context.Background(), "7.14.3", storage.Source{LocalPath: asset.Path, SHA256: asset.SHA256}); err != nil {
		tb.Fatal(err)
	}
	return bins.tools + ":" + fakeBin + ":/usr/bin:/bin"
}

func newBenchUnit(b testing.TB) *benchUnit {
	b.Helper()
	bins := buildBinaries(b)
	dir := b.TempDir()
	u := &benchUnit{b: bins, prefix: filepath.Join(dir, "unit"), sock: filepath.Join(dir, "agent.socket")}
	u.pathDirs = steadyUnitFiles(b, bins, dir, u.prefix, "concourse-ci-machine/1", "#!/bin/sh\necho 7.14.3\n")
	u.model = jujutest.NewModel("bench", "1b9e6e3c-0000-4000-8000-00000000000b")
	meta := jujutest.AppMeta{Peers: map[string]string{"peers": "concourse-ci_peers"}, Provides: map[string]string{"tsa": "concourse-ci_tsa"},
		Requires: map[string]string{"postgresql": "postgresql_client", "flight": "concourse-ci_tsa"}}
	u.model.AddApp("concourse-ci-machine", meta, map[string]any{"version": "7.14.3", "mode": "auto"})
	web := u.model.AddUnit("concourse-ci-machine")
	wk := u.model.AddUnit("concourse-ci-machine")
	peers := u.model.RelationID("concourse-ci-machine", "peers")
	// A real key: the charm refuses a tsa-public-key that is not exactly one SSH public key.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		b.Fatal(err)
	}
	tsaKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	u.model.SetUnitData(peers, web, map[string]string{"tsa-host": "10.0.0.10:2222", "tsa-public-key": tsaKey, "concourse-version": "7.14.3"})
	u.model.SetAppData(peers, "concourse-ci-machine", map[string]string{"target-version": "7.14.3", "installed-version": "7.14.3", "concourse-version": "7.14.3"})
	serveAgent(b, u.sock, &u.calls, &u.current)
	// First convergence writes the worker's files and records it as started.
	if err := u.dispatch(wk, "config-changed", "rpc"); err != nil {
		b.Fatal(err)
	}
	if s := u.model.UnitStatus(wk); s.Message != "Worker ready (v7.14.3)" {
		b.Fatalf("setup: worker status %+v", s)
	}
	return u
}

func (u *benchUnit) dispatch(unit, hook, runner string) error {
	_, err := u.dispatchWith(unit, hook, runner)
	return err
}

// dispatchWith runs one hook like the unit agent, committing its changes on success, and returns
// its stderr.
func (u *benchUnit) dispatchWith(unit, hook, runner string) (string, error) {
	hc := u.model.NewHookContext(unit, jujutest.HookInfo{Hook: hook, RelationID: -1})
	hc.AgentSocketAddress, hc.AgentSocketNetwork = u.sock, "unix"
	hc.CharmDir = filepath.Dir(u.b.dispatch)
	u.current.Store(hc)
	cmd := exec.Command(u.b.dispatch, "dispatch", "--paths-prefix", u.prefix, "--hook-tools", runner)
	cmd.Dir = hc.CharmDir
	cmd.Env = append(hc.Env(), "PATH="+u.pathDirs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		hc.Discard()
		return stderr.String(), fmt.Errorf("%s: %v\n%s", hook, err, stderr.String())
	}
	hc.Commit()
	return stderr.String(), nil
}

// BenchmarkUpdateStatusDispatch times one full update-status dispatch of a steady-state worker,
// from process start to exit: hook tools over the agent socket (rpc, the default) or forked
// (exec, each tool a process as with Juju's jujuc symlinks). It reports the median, the number of
// hook-tool calls per hook, and the median as a ratio to a floor measured in the same run (the
// same binary dispatching a hook the charm ignores: no hook-tool call), alternating with it, so
// that machines of different speed can be compared.
func BenchmarkUpdateStatusDispatch(b *testing.B) {
	u := newBenchUnit(b)
	for _, runner := range []string{"rpc", "exec"} {
		b.Run(runner, func(b *testing.B) {
			var times, floor []time.Duration
			calls := int64(0)
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := u.dispatch("concourse-ci-machine/1", "bench-floor-ignored", runner); err != nil {
					b.Fatal(err)
				}
				floor = append(floor, time.Since(start))
				before := u.calls.Load()
				start = time.Now()
				if err := u.dispatch("concourse-ci-machine/1", "update-status", runner); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
				calls += u.calls.Load() - before
			}
			med, fl := median(times), median(floor)
			b.ReportMetric(float64(med.Microseconds())/1000, "median-ms")
			b.ReportMetric(float64(fl.Microseconds())/1000, "floor-ms")
			b.ReportMetric(float64(med)/float64(fl), "x-floor")
			b.ReportMetric(float64(calls)/float64(b.N), "tool-calls/op")
		})
	}
	if s := u.model.UnitStatus("concourse-ci-machine/1"); s.Message != "Worker ready (v7.14.3)" {
		b.Errorf("status after the benchmark: %+v", s)
	}
}

// The operator commands on an install root: status names what is installed and who held the
// lock; verify passes on a good install and names the damaged file on a bad one.
func TestStorageCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "concourse")
	os.WriteFile(script, []byte("#!/bin/sh\necho 7.14.3\n"), 0o755)
	asset, err := release.Build(dir, "7.14.3", "amd64", script, release.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	st := storage.New(storage.Options{Root: root, Unit: "concourse-ci-machine/10", StripPrefix: "concourse/"})
	if _, err := st.Install(context.Background(), "7.14.3", storage.Source{LocalPath: asset.Path, SHA256: asset.SHA256}); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"concourse-ci-machine"}, args...), func(string) string { return "" }, &out, &errb)
		return out.String(), errb.String(), code
	}
	out, errs, code := cli("storage", "status", "--root", root)
	if code != 0 {
		t.Fatalf("storage status: %d %s", code, errs)
	}
	for _, want := range []string{"installed version:  7.14.3", "unit=concourse-ci-machine/10", "install lock:       free"} {
		if !strings.Contains(out, want) {
			t.Errorf("storage status lacks %q:\n%s", want, out)
		}
	}
	if out, errs, code = cli("storage", "verify", "--root", root); code != 0 || !strings.Contains(out, "Concourse 7.14.3 in "+root+": OK") {
		t.Errorf("storage verify on a good install: %d %q %q", code, out, errs)
	}
	// Damage one byte of a resource type, same size: only the full check sees it.
	victim := filepath.Join(root, "resource-types", "git", "resource_metadata.json")
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	real, _ := filepath.EvalSymlinks(victim)
	os.Chmod(real, 0o644)
	if err := os.WriteFile(real, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code = cli("storage", "verify", "--root", root); code == 0 || !strings.Contains(errs, "resource_metadata.json") {
		t.Errorf("storage verify on a damaged install: %d %q", code, errs)
	}
}

// The charm's own downloads and API calls go through the model's proxy (JUJU_CHARM_*_PROXY,
// which Juju does not apply itself), except for hosts in JUJU_CHARM_NO_PROXY.
func TestDownloadsUseTheModelProxy(t *testing.T) {
	t.Parallel()
	var seen atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.URL.Host != "releases.example.invalid" {
			t.Errorf("proxy got a request for %q", r.URL.Host)
		}
		fmt.Fprint(w, "via proxy")
	}))
	defer proxy.Close()
	direct := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "direct") }))
	defer direct.Close()
	env := map[string]string{"JUJU_CHARM_HTTP_PROXY": proxy.URL, "JUJU_CHARM_NO_PROXY": "mirror.example.invalid"}
	deps := realDeps(juju.ParseEnv(func(k string) string { return env[k] }, "dispatch"), hooks.DefaultPaths(), io.Discard)
	get := func(url string) string {
		t.Helper()
		resp, err := deps.HTTP.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get("http://releases.example.invalid/concourse.tgz"); got != "via proxy" || seen.Load() != 1 {
		t.Errorf("download = %q (proxy saw %d requests); want it through the proxy", got, seen.Load())
	}
	// Loopback never goes through the proxy (the web's readiness probe, a local mirror).
	if got := get(direct.URL); got != "direct" {
		t.Errorf("loopback request = %q; want direct", got)
	}
}
