package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// The test binary is fakejuju too: linked under a tool name (or as "fakejuju") it runs main, the
// way testscript's Main registers commands by argv[0].
func TestMain(m *testing.M) {
	name := filepath.Base(os.Args[0])
	if name == "fakejuju" || slices.Contains(jujutest.ToolNames(), name) {
		main()
	}
	os.Exit(m.Run())
}

// fj runs fakejuju in-process and returns its exit code and output.
func fj(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"fakejuju"}, args...), strings.NewReader(stdin), &out, &errOut,
		func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

// toolsDir links the test binary under every tool name.
func toolsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if code, _, stderr := fj(t, nil, "", "link", dir); code != 0 {
		t.Fatalf("link: %s", stderr)
	}
	return dir
}

// tool runs a linked tool as a real process.
func tool(t *testing.T, dir string, env []string, stdin string, name string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, name), args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

func writeCharm(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"metadata.yaml": "name: concourse-ci-machine\npeers:\n  peers:\n    interface: concourse_peers\n" +
			"requires:\n  postgresql:\n    interface: postgresql_client\n",
		"config.yaml": "options:\n  mode:\n    type: string\n    default: auto\n  web-port:\n    type: int\n    default: 8080\n" +
			"  debug:\n    type: boolean\n    default: false\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFileMode(t *testing.T) {
	t.Parallel()
	charm := writeCharm(t)
	state := filepath.Join(t.TempDir(), "state.json")
	code, out, stderr := fj(t, nil, "", "init", "--state", state, "--unit", "concourse-ci-machine/10", "--leader",
		"--charm-dir", charm, "--config", "web-port=9090", "--config", "debug=true",
		"--resource", "concourse-release=/srv/concourse.tgz")
	if code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	if !strings.Contains(out, `hook "install" running`) {
		t.Errorf("init output: %q", out)
	}
	if code, _, stderr := fj(t, nil, "", "init", "--state", state, "--charm-dir", charm, "--config", "nope=1"); code == 0 {
		t.Errorf("unknown option accepted")
	} else if !strings.Contains(stderr, `no option "nope"`) {
		t.Errorf("unknown option message: %q", stderr)
	}

	dir := toolsDir(t)
	env := []string{"FAKE_JUJU_STATE=" + state}
	checks := []struct {
		tool, stdin string
		args        []string
		code        int
		stdout      string
	}{
		{"config-get", "", []string{"--format=json"}, 0, `{"debug":true,"mode":"auto","web-port":9090}` + "\n"},
		{"is-leader", "", []string{"--format=json"}, 0, "true\n"},
		{"relation-set", `{"role":"web"}`, []string{"-r", "0", "--file", "-"}, 0, ""},
		{"relation-get", "", []string{"--format=json", "-r", "0", "role", "concourse-ci-machine/10"}, 0, `"web"` + "\n"},
		{"state-set", "installed: 7.14.3\n", []string{"--file", "-"}, 0, ""},
		{"state-get", "", []string{"--format=json", "installed"}, 0, `"7.14.3"` + "\n"},
		{"status-set", "", []string{"--application=false", "active", "--", "Web ready"}, 0, ""},
		{"status-set", "", []string{"bogus"}, 2, ""},
		{"open-port", "", []string{"8080/tcp"}, 0, ""},
		{"opened-ports", "", []string{"--format=json"}, 0, "[]\n"},
		{"resource-get", "", []string{"concourse-release"}, 0, "/srv/concourse.tgz\n"},
		{"resource-get", "", []string{"other"}, 1, ""},
	}
	for _, c := range checks {
		code, stdout, stderr := tool(t, dir, env, c.stdin, c.tool, c.args...)
		if code != c.code {
			t.Errorf("%s %v: exit %d, want %d (stderr %q)", c.tool, c.args, code, c.code, stderr)
		}
		if c.code == 0 && c.stdout != "" && stdout != c.stdout {
			t.Errorf("%s %v: stdout %q, want %q", c.tool, c.args, stdout, c.stdout)
		}
	}
	// relation-get's "-" means all keys, not stdin.
	if code, out, stderr := tool(t, dir, env, "", "relation-get", "--format=json", "-r", "0", "-", "concourse-ci-machine/10"); code != 0 || !strings.Contains(out, `"role":"web"`) {
		t.Errorf("relation-get all keys: %d %q %q", code, out, stderr)
	}

	if code, out, stderr := fj(t, nil, "", "commit", "--state", state); code != 0 || !strings.Contains(out, "install: committed") {
		t.Fatalf("commit: %d %q %q", code, out, stderr)
	}
	if code, _, stderr := tool(t, dir, env, "", "is-leader"); code != 1 || !strings.Contains(stderr, "no hook is running") {
		t.Errorf("tool after commit: %d %q", code, stderr)
	}
	code, out, stderr = fj(t, nil, "", "show", "--state", state)
	if code != 0 {
		t.Fatalf("show: %s", stderr)
	}
	var shown struct {
		Apps map[string]struct {
			Units map[string]struct {
				Leader bool
				Status jujutest.Status
				Ports  []string
				State  map[string]string
			}
		} `json:"applications"`
		Relations []struct {
			UnitData map[string]map[string]string `json:"unit-data"`
		}
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("show output: %v\n%s", err, out)
	}
	u := shown.Apps["concourse-ci-machine"].Units["concourse-ci-machine/10"]
	if !u.Leader || u.Status != (jujutest.Status{Status: "active", Message: "Web ready"}) ||
		!slices.Equal(u.Ports, []string{"8080/tcp"}) || u.State["installed"] != "7.14.3" {
		t.Errorf("show unit: %+v", u)
	}
	if shown.Relations[0].UnitData["concourse-ci-machine/10"]["role"] != "web" {
		t.Errorf("show relation data: %+v", shown.Relations)
	}

	// A failed hook's writes are discarded.
	if code, _, stderr := fj(t, nil, "", "hook", "--state", state, "config-changed"); code != 0 {
		t.Fatalf("hook: %s", stderr)
	}
	if code, _, stderr := fj(t, nil, "", "hook", "--state", state, "start"); code == 0 || !strings.Contains(stderr, "still running") {
		t.Errorf("second hook while one runs: %d %q", code, stderr)
	}
	tool(t, dir, env, "", "state-delete", "installed")
	if code, _, _ := fj(t, nil, "", "discard", "--state", state); code != 0 {
		t.Fatal("discard failed")
	}
	_, out, _ = fj(t, nil, "", "show", "--state", state)
	if !strings.Contains(out, `"installed": "7.14.3"`) {
		t.Errorf("discarded state-delete was applied:\n%s", out)
	}
}

// A unit whose peers binding is in another space than its private address: the hook tools in
// file mode answer network-get per binding, keep unit-get's private address, and refuse a
// binding the charm does not declare.
func TestFileModeBindings(t *testing.T) {
	t.Parallel()
	charm := writeCharm(t)
	state := filepath.Join(t.TempDir(), "state.json")
	if code, _, stderr := fj(t, nil, "", "init", "--state", state, "--charm-dir", charm, "--binding", "monitoring=10.1.1.1"); code == 0 ||
		!strings.Contains(stderr, `no endpoint or extra-binding "monitoring"`) {
		t.Errorf("unknown binding: %d %q", code, stderr)
	}
	if code, _, stderr := fj(t, nil, "", "init", "--state", state, "--charm-dir", charm,
		"--address", "10.0.0.5", "--binding", "peers=192.168.7.5"); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	dir := toolsDir(t)
	env := []string{"FAKE_JUJU_STATE=" + state}
	for _, c := range []struct {
		tool   string
		args   []string
		stdout string
	}{
		{"unit-get", []string{"--format=json", "private-address"}, `"10.0.0.5"`},
		{"network-get", []string{"--format=json", "--ingress-address", "peers"}, `"192.168.7.5"`},
		{"network-get", []string{"--format=json", "--ingress-address", "-r", "0", "peers"}, `"192.168.7.5"`},
		{"network-get", []string{"--format=json", "--ingress-address", "postgresql"}, `"10.0.0.5"`},
		{"relation-get", []string{"--format=json", "-r", "0", "ingress-address", "concourse-ci-machine/0"}, `"192.168.7.5"`},
	} {
		code, stdout, stderr := tool(t, dir, env, "", c.tool, c.args...)
		if code != 0 || strings.TrimSpace(stdout) != c.stdout {
			t.Errorf("%s %v = %d %q %q; want %s", c.tool, c.args, code, stdout, stderr, c.stdout)
		}
	}
}

func TestRunCommand(t *testing.T) {
	t.Parallel()
	charm := writeCharm(t)
	state := filepath.Join(t.TempDir(), "state.json")
	if code, _, stderr := fj(t, nil, "", "init", "--state", state, "--unit", "concourse-ci-machine/0", "--charm-dir", charm); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	script := `set -e
test "$JUJU_DISPATCH_PATH" = hooks/install
test "$(pwd)" = "$JUJU_CHARM_DIR"
test -z "$HOME"
is-leader --format=json
status-set maintenance -- "-installing"
echo '{"k":"v"}' | state-set --file -
`
	env := map[string]string{"PATH": os.Getenv("PATH"), "HOME": "/root"}
	code, out, stderr := fj(t, env, "", "run", "--state", state, "--charm-dir", charm, "--", "/bin/sh", "-c", script)
	if code != 0 {
		t.Fatalf("run: %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if out != "false\n" || !strings.Contains(stderr, "install: committed") {
		t.Errorf("run output: %q / %q", out, stderr)
	}
	code, _, stderr = fj(t, env, "", "run", "--state", state, "--hook", "config-changed", "--", "/bin/sh", "-c", "state-delete k; exit 4")
	if code != 4 || !strings.Contains(stderr, "exit status 4; pending changes discarded") {
		t.Errorf("failing hook: %d %q", code, stderr)
	}
	_, out, _ = fj(t, nil, "", "show", "--state", state)
	if !strings.Contains(out, `"k": "v"`) || !strings.Contains(out, `"message": "-installing"`) {
		t.Errorf("state after run:\n%s", out)
	}
	code, out, stderr = fj(t, env, "", "run", "--state", state, "--action", "get-admin-password", "--param", "user=admin",
		"--", "/bin/sh", "-c", `test "$(action-get user)" = admin && action-set password=hunter2`)
	if code != 0 {
		t.Errorf("action run: %d %q %q", code, out, stderr)
	}
	_, out, _ = fj(t, nil, "", "show", "--state", state)
	if !strings.Contains(out, `"password": "hunter2"`) || !strings.Contains(out, `"status": "completed"`) {
		t.Errorf("action record in show:\n%s", out)
	}
}

func TestSocketMode(t *testing.T) {
	t.Parallel()
	m := jujutest.NewModel("ci", "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10")
	m.AddApp("concourse-ci-machine", jujutest.AppMeta{Peers: map[string]string{"peers": "concourse_peers"}}, nil)
	unit := m.AddUnit("concourse-ci-machine")
	hc := m.NewHookContext(unit, jujutest.HookInfo{Hook: "install", RelationID: -1})
	sock := filepath.Join(t.TempDir(), "agent.socket")
	hc.AgentSocketAddress = sock
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = jujutest.Serve(l, func(id string) (*jujutest.HookContext, bool) { return hc, id == hc.ID() })
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })

	dir := toolsDir(t)
	env := hc.Env()
	if code, out, stderr := tool(t, dir, env, "", "is-leader", "--format=json"); code != 0 || out != "true\n" {
		t.Errorf("is-leader: %d %q %q", code, out, stderr)
	}
	// state-set needs stdin: the client must do the handshake.
	if code, _, stderr := tool(t, dir, env, `{"k":"v"}`, "state-set", "--file", "-"); code != 0 {
		t.Errorf("state-set: %d %q", code, stderr)
	}
	if code, out, _ := tool(t, dir, env, "", "state-get", "k"); code != 0 || out != "v\n" {
		t.Errorf("state-get: %d %q", code, out)
	}
	if code, _, stderr := tool(t, dir, env, "", "status-set", "bogus"); code != 2 || !strings.HasPrefix(stderr, "ERROR invalid status") {
		t.Errorf("usage error: %d %q", code, stderr)
	}
	bad := append(slices.Clone(env), "JUJU_CONTEXT_ID=someone-else")
	if code, _, stderr := tool(t, dir, bad, "", "is-leader"); code != 1 || !strings.Contains(stderr, "bad request") {
		t.Errorf("wrong context: %d %q", code, stderr)
	}
	hc.Commit()
	if got := m.UnitState(unit); got["k"] != "v" {
		t.Errorf("state after commit: %v", got)
	}
}

func TestToolWithoutEnvironment(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	code := run([]string{"/usr/bin/is-leader"}, strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	if code != 1 || !strings.Contains(errOut.String(), "FAKE_JUJU_STATE") {
		t.Errorf("no mode: %d %q", code, errOut.String())
	}
	code = run([]string{"leader-get"}, strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	if code != 1 {
		t.Errorf("unknown tool name: %d", code)
	}
	if code, _, stderr := fj(t, nil, "", "tool", "goal-state"); code != 1 || !strings.Contains(stderr, "unknown command: goal-state") {
		t.Errorf("fakejuju tool goal-state: %d %q", code, stderr)
	}
}
