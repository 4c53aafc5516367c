package juju_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// fallbackRunner counts the calls that reach the fallback.
type fallbackRunner struct{ calls []string }

func (r *fallbackRunner) Run(_ context.Context, tool string, _ []string, _ []byte) ([]byte, error) {
	r.calls = append(r.calls, tool)
	return []byte("true\n"), nil
}

func serveModel(t *testing.T) (*jujutest.Model, *jujutest.HookContext, string) {
	t.Helper()
	m := jujutest.NewModel("test", "1b9e6e3c-0000-4000-8000-000000000002")
	m.AddApp("concourse-ci-machine", jujutest.AppMeta{Peers: map[string]string{"peers": "concourse-ci_peers"}}, map[string]any{"mode": "auto"})
	unit := m.AddUnit("concourse-ci-machine")
	hc := m.NewHookContext(unit, jujutest.HookInfo{Hook: "update-status", RelationID: -1})
	sock := filepath.Join(t.TempDir(), "agent.socket")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go jujutest.Serve(l, func(id string) (*jujutest.HookContext, bool) { return hc, id == hc.ID() })
	return m, hc, sock
}

func TestRPCRunnerTalksJujuc(t *testing.T) {
	t.Parallel()
	m, hc, sock := serveModel(t)
	fb := &fallbackRunner{}
	env := juju.Env{AgentSocketAddress: sock, AgentSocketNetwork: "unix", ContextID: hc.ID(), UnitName: "concourse-ci-machine/0", AppName: "concourse-ci-machine"}
	r := juju.NewRPCRunner(env, "/var/lib/juju/agents/unit-concourse-ci-machine-0/charm", fb)
	defer r.(*juju.RPCRunner).Close()
	c := juju.NewClient(r, env)
	ctx := context.Background()
	leader, err := c.IsLeader(ctx)
	if err != nil || !leader {
		t.Fatalf("IsLeader = %v, %v", leader, err)
	}
	if err := c.SetStatus(ctx, juju.Status{Name: juju.StatusActive, Message: "-starts with a dash"}); err != nil {
		t.Fatal(err)
	}
	if got := m.UnitStatus("concourse-ci-machine/0"); got.Message != "-starts with a dash" {
		t.Errorf("status over RPC = %+v", got)
	}
	// stdin travels with the request (relation-set --file -).
	id := m.RelationID("concourse-ci-machine", "peers")
	if err := c.SetRelationData(ctx, id, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.RelationData(ctx, id, "concourse-ci-machine/0"); got["k"] != "v" {
		t.Errorf("own pending relation data = %v", got)
	}
	// A tool failure is a ToolError classified like an exec'd tool's.
	_, err = c.RelationData(ctx, 999, "concourse-ci-machine/0")
	if !errors.Is(err, juju.ErrRelationNotFound) {
		t.Errorf("relation-get on a missing relation: %v", err)
	}
	if len(fb.calls) != 0 {
		t.Errorf("fallback used while the socket works: %v", fb.calls)
	}
}

func TestRPCRunnerFallsBack(t *testing.T) {
	t.Parallel()
	_, hc, sock := serveModel(t)
	for _, c := range []struct {
		name string
		env  juju.Env
	}{
		{"no socket", juju.Env{AgentSocketAddress: filepath.Join(t.TempDir(), "missing.socket"), AgentSocketNetwork: "unix", ContextID: hc.ID()}},
		{"rejected context", juju.Env{AgentSocketAddress: sock, AgentSocketNetwork: "unix", ContextID: "someone-else"}},
	} {
		fb := &fallbackRunner{}
		r := juju.NewRPCRunner(c.env, "/charm", fb)
		for i := 0; i < 2; i++ {
			out, err := r.Run(context.Background(), "is-leader", []string{"--format=json"}, nil)
			if err != nil || strings.TrimSpace(string(out)) != "true" {
				t.Errorf("%s: run %d = %q, %v", c.name, i, out, err)
			}
		}
		if len(fb.calls) != 2 {
			t.Errorf("%s: fallback calls = %v; want 2", c.name, fb.calls)
		}
	}
	// Without a unix socket in the environment there is nothing to try.
	fb := &fallbackRunner{}
	if r := juju.NewRPCRunner(juju.Env{AgentSocketNetwork: "tcp", AgentSocketAddress: "127.0.0.1:1", ContextID: "x"}, "/charm", fb); r != juju.Runner(fb) {
		t.Errorf("tcp socket: got %T; want the fallback itself", r)
	}
}
