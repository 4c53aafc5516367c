package juju_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// The test binary plays the hook tools (os/exec's helper-process pattern): linked under a tool
// name it prints what it received as JSON, or fails as FAKE_TOOL_EXIT/FAKE_TOOL_STDERR say.
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case "is-leader", "relation-set", "status-set":
		helperTool()
	}
	os.Exit(m.Run())
}

type helperReport struct {
	Argv0 string   `json:"argv0"`
	Args  []string `json:"args"`
	Stdin string   `json:"stdin"`
	Cwd   string   `json:"cwd"`
}

func helperTool() {
	stdin, _ := io.ReadAll(os.Stdin)
	cwd, _ := os.Getwd()
	if code, _ := strconv.Atoi(os.Getenv("FAKE_TOOL_EXIT")); code != 0 {
		fmt.Fprint(os.Stderr, os.Getenv("FAKE_TOOL_STDERR"))
		os.Exit(code)
	}
	_ = json.NewEncoder(os.Stdout).Encode(helperReport{
		Argv0: filepath.Base(os.Args[0]), Args: os.Args[1:], Stdin: string(stdin), Cwd: cwd,
	})
	os.Exit(0)
}

// toolsDir links the test binary under the given tool names in a fresh directory.
func toolsDir(t *testing.T, tools ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tool := range tools {
		if err := os.Symlink(exe, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestExecRunner(t *testing.T) {
	t.Parallel()
	dir := toolsDir(t, "is-leader", "relation-set", "status-set")
	cwd := t.TempDir()
	r := juju.ExecRunner{Env: []string{"PATH=" + dir}, Dir: cwd}

	t.Run("stdin-and-args", func(t *testing.T) {
		t.Parallel()
		out, err := r.Run(t.Context(), "relation-set", []string{"-r", "5", "--file", "-"}, []byte(`{"a":"b"}`))
		if err != nil {
			t.Fatal(err)
		}
		var rep helperReport
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("parsing %q: %v", out, err)
		}
		want := helperReport{Argv0: "relation-set", Args: []string{"-r", "5", "--file", "-"}, Stdin: `{"a":"b"}`, Cwd: cwd}
		if !reflect.DeepEqual(rep, want) {
			t.Errorf("want %+v, got %+v", want, rep)
		}
	})
	t.Run("nil-stdin-is-empty", func(t *testing.T) {
		t.Parallel()
		out, err := r.Run(t.Context(), "is-leader", []string{"--format=json"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var rep helperReport
		_ = json.Unmarshal(out, &rep)
		if rep.Stdin != "" {
			t.Errorf("stdin: want empty, got %q", rep.Stdin)
		}
	})
	t.Run("tool-error", func(t *testing.T) {
		t.Parallel()
		fail := juju.ExecRunner{Env: []string{"PATH=" + dir, "FAKE_TOOL_EXIT=1",
			"FAKE_TOOL_STDERR=ERROR setting application status: this unit is not the leader\n"}}
		_, err := fail.Run(t.Context(), "status-set", []string{"--application=true", "active", "--", ""}, nil)
		toolErr, ok := errors.AsType[*juju.ToolError](err)
		if !ok {
			t.Fatalf("want *juju.ToolError, got %T %v", err, err)
		}
		if toolErr.ExitCode != 1 || toolErr.Tool != "status-set" || !errors.Is(err, juju.ErrNotLeader) {
			t.Errorf("got %+v", toolErr)
		}
		want := "running status-set: exit status 1: ERROR setting application status: this unit is not the leader"
		if err.Error() != want {
			t.Errorf("message:\nwant %q\n got %q", want, err.Error())
		}
	})
	t.Run("usage-error", func(t *testing.T) {
		t.Parallel()
		fail := juju.ExecRunner{Env: []string{"PATH=" + dir, "FAKE_TOOL_EXIT=2", "FAKE_TOOL_STDERR=ERROR invalid status \"error\"\n"}}
		_, err := fail.Run(t.Context(), "status-set", []string{"error"}, nil)
		toolErr, ok := errors.AsType[*juju.ToolError](err)
		if !ok || !toolErr.IsUsage() {
			t.Errorf("want a usage ToolError, got %v", err)
		}
	})
	t.Run("missing-tool", func(t *testing.T) {
		t.Parallel()
		_, err := r.Run(t.Context(), "secret-get", nil, nil)
		if !errors.Is(err, exec.ErrNotFound) {
			t.Errorf("want exec.ErrNotFound, got %v", err)
		}
		if _, ok := errors.AsType[*juju.ToolError](err); ok {
			t.Errorf("a missing tool is not a tool verdict: %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := r.Run(ctx, "is-leader", nil, nil); err == nil {
			t.Error("want an error from a cancelled context")
		}
	})
}

func TestToolErrorClassification(t *testing.T) {
	t.Parallel()
	sentinels := []error{juju.ErrRelationNotFound, juju.ErrSecretNotFound, juju.ErrNotLeader, juju.ErrPermissionDenied, juju.ErrNoNetworkConfig}
	cases := []struct {
		tool, stderr string
		code         int
		want         error // nil: matches none
	}{
		{"relation-get", "ERROR invalid value \"db:9\" for option -r: relation not found\n", 2, juju.ErrRelationNotFound},
		{"network-get", "ERROR relation not found\n", 1, juju.ErrRelationNotFound},
		{"secret-get", "ERROR secret \"d0k6v1r0ib7s73f4q1ug\" not found\n", 1, juju.ErrSecretNotFound},
		{"secret-info-get", "ERROR Secret With Label \"x\" NOT FOUND\n", 1, juju.ErrSecretNotFound},
		{"resource-get", "ERROR resource \"concourse\" not found\n", 1, nil}, // not a secret tool
		{"status-set", "ERROR setting application status: this unit is not the leader\n", 1, juju.ErrNotLeader},
		{"relation-set", "ERROR cannot write relation settings\n", 1, juju.ErrNotLeader},
		{"leader-set", "ERROR cannot write leadership settings: not leader\n", 1, juju.ErrNotLeader},
		{"secret-get", "ERROR permission denied\n", 1, juju.ErrPermissionDenied},
		{"credential-get", "ERROR access denied\n", 1, juju.ErrPermissionDenied},
		{"config-get", "ERROR connection is shut down\n", 1, nil},
		{"network-get", "ERROR no network config found for binding \"metrics\"\n", 1, juju.ErrNoNetworkConfig},
		{"relation-get", "ERROR no network config\n", 1, nil}, // only network-get answers so
	}
	for _, tc := range cases {
		err := fmt.Errorf("wrapped: %w", &juju.ToolError{Tool: tc.tool, ExitCode: tc.code, Stderr: tc.stderr})
		for _, s := range sentinels {
			if got, want := errors.Is(err, s), s == tc.want; got != want {
				t.Errorf("%s %q: errors.Is(%v) = %t, want %t", tc.tool, tc.stderr, s, got, want)
			}
		}
	}
}

func TestParsePort(t *testing.T) {
	t.Parallel()
	good := map[string]juju.Port{
		"80": {80, 80, "tcp"}, "80/tcp": {80, 80, "tcp"}, "53/UDP": {53, 53, "udp"},
		"8000-8100/tcp": {8000, 8100, "tcp"}, "icmp": {Protocol: "icmp"},
	}
	for s, want := range good {
		got, err := juju.ParsePort(s)
		if err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "70000", "80/sctp", "90-80/tcp", "x/tcp"} {
		if _, err := juju.ParsePort(s); err == nil {
			t.Errorf("ParsePort(%q): want an error", s)
		}
	}
	if s := (juju.Port{From: 8000, To: 8100, Protocol: "udp"}).String(); s != "8000-8100/udp" {
		t.Errorf("String: got %q", s)
	}
}
