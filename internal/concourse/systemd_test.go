package concourse

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strings"
	"sync"
	"testing"
)

type exitErr int

func (e exitErr) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitErr) ExitCode() int { return int(e) }

// fakeSystemctl answers systemctl calls from a table keyed by the joined
// arguments and records every call.
type fakeSystemctl struct {
	mu      sync.Mutex
	calls   []string
	answers map[string]struct {
		out  string
		code int
	}
}

func (f *fakeSystemctl) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := name + " " + strings.Join(args, " ")
	f.calls = append(f.calls, key)
	a := f.answers[key]
	if a.code != 0 {
		return []byte(a.out), exitErr(a.code)
	}
	return []byte(a.out), nil
}

func newFake(answers map[string]struct {
	out  string
	code int
}) *fakeSystemctl {
	return &fakeSystemctl{answers: answers}
}

type ans = struct {
	out  string
	code int
}

func TestSystemdVerbs(t *testing.T) {
	t.Parallel()
	f := newFake(nil)
	s := Systemd{Run: f.run}
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { return s.DaemonReload(ctx) },
		func() error { return s.Enable(ctx, "concourse-server.service") },
		func() error { return s.Start(ctx, "concourse-server.service") },
		func() error { return s.Restart(ctx, "concourse-worker.service") },
		func() error { return s.Stop(ctx, "concourse-worker.service") },
		func() error { return s.Disable(ctx, "concourse-worker.service") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"systemctl daemon-reload",
		"systemctl enable concourse-server.service",
		"systemctl start concourse-server.service",
		"systemctl restart concourse-worker.service",
		"systemctl stop concourse-worker.service",
		"systemctl disable concourse-worker.service",
	}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls = %q\nwant %q", f.calls, want)
	}
	if err := s.Start(ctx, "--now"); err == nil {
		t.Error("Start accepted an option as a unit name")
	}
}

func TestSystemdErrors(t *testing.T) {
	t.Parallel()
	f := newFake(map[string]ans{
		"systemctl start concourse-server.service": {"Job for concourse-server.service failed because the control process exited with error code.\n", 1},
	})
	err := Systemd{Run: f.run}.Start(context.Background(), "concourse-server.service")
	var se *SystemdError
	if !errors.As(err, &se) || se.ExitCode != 1 || !slices.Equal(se.Args, []string{"start", "concourse-server.service"}) {
		t.Fatalf("Start failing = %#v", err)
	}
	if !strings.Contains(err.Error(), "systemctl start concourse-server.service: exit status 1: Job for") {
		t.Errorf("error = %q", err)
	}
}

func TestSystemdStates(t *testing.T) {
	t.Parallel()
	f := newFake(map[string]ans{
		"systemctl is-active a.service":  {"active\n", 0},
		"systemctl is-active b.service":  {"inactive\n", 3},
		"systemctl is-active c.service":  {"failed\n", 3},
		"systemctl is-active d.service":  {"Failed to connect to bus: No such file or directory\n", 1},
		"systemctl is-enabled a.service": {"enabled\n", 0},
		"systemctl is-enabled b.service": {"disabled\n", 1},
		"systemctl is-enabled c.service": {"Failed to get unit file state for c.service: No such file or directory\n", 1},
		"systemctl is-enabled d.service": {"Failed to connect to bus: Permission denied\n", 1},
		"systemctl is-enabled e.service": {"static\n", 0},
	})
	s := Systemd{Run: f.run}
	ctx := context.Background()
	for _, tc := range []struct {
		unit        string
		active      bool
		activeErr   bool
		enabled     bool
		enabledErr  bool
		skipEnabled bool
		skipActive  bool
	}{
		{unit: "a.service", active: true, enabled: true},
		{unit: "b.service"},
		{unit: "c.service"},
		{unit: "d.service", activeErr: true, enabledErr: true},
		{unit: "e.service", enabled: true, skipActive: true},
	} {
		if !tc.skipActive {
			got, err := s.IsActive(ctx, tc.unit)
			if got != tc.active || (err != nil) != tc.activeErr {
				t.Errorf("IsActive(%s) = %v, %v", tc.unit, got, err)
			}
		}
		got, err := s.IsEnabled(ctx, tc.unit)
		if got != tc.enabled || (err != nil) != tc.enabledErr {
			t.Errorf("IsEnabled(%s) = %v, %v", tc.unit, got, err)
		}
	}
	if st, err := s.ActiveState(ctx, "c.service"); st != "failed" || err != nil {
		t.Errorf("ActiveState = %q, %v", st, err)
	}
}

func TestSystemdKill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// New systemd: --kill-whom works.
	f := newFake(nil)
	if err := (Systemd{Run: f.run}).Kill(ctx, "concourse-server.service", "SIGHUP"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.calls, []string{"systemctl kill --signal=SIGHUP --kill-whom=main concourse-server.service"}) {
		t.Errorf("calls = %q", f.calls)
	}
	// systemd 249 (Ubuntu 22.04) knows only --kill-who.
	f = newFake(map[string]ans{
		"systemctl kill --signal=SIGUSR2 --kill-whom=main concourse-worker.service": {"systemctl: unrecognized option '--kill-whom=main'\n", 1},
	})
	if err := (Systemd{Run: f.run}).Kill(ctx, "concourse-worker.service", "SIGUSR2"); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 2 || f.calls[1] != "systemctl kill --signal=SIGUSR2 --kill-who=main concourse-worker.service" {
		t.Errorf("calls = %q", f.calls)
	}
	// Other failures are not retried.
	f = newFake(map[string]ans{
		"systemctl kill --signal=SIGHUP --kill-whom=main x.service": {"Failed to kill unit x.service: Unit x.service not loaded.\n", 1},
	})
	if err := (Systemd{Run: f.run}).Kill(ctx, "x.service", "SIGHUP"); err == nil || len(f.calls) != 1 {
		t.Errorf("Kill of an unloaded unit = %v after %q", err, f.calls)
	}
	if err := (Systemd{Run: f.run}).Kill(ctx, "x.service", "HUP; rm"); err == nil {
		t.Error("Kill accepted a malformed signal")
	}
}

func TestEnsureSystemUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var calls [][]string
	run := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		calls = append(calls, append([]string{name}, args...))
		return nil, nil
	}
	// An existing user: nothing to do.
	if err := EnsureSystemUser(ctx, "root", "/root", run); err != nil || len(calls) != 0 {
		t.Fatalf("EnsureSystemUser(root) = %v, calls %q", err, calls)
	}
	name := "ccm-test-nouser"
	if _, err := user.Lookup(name); err == nil {
		t.Skipf("user %s exists on this machine", name)
	}
	if err := EnsureSystemUser(ctx, name, "/var/lib/concourse", run); err != nil {
		t.Fatal(err)
	}
	want := []string{"useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/concourse", "--shell", "/usr/sbin/nologin", name}
	if len(calls) != 1 || !slices.Equal(calls[0], want) {
		t.Errorf("calls = %q; want %q", calls, want)
	}
	// useradd exit 9 (name taken meanwhile) is success; others are errors.
	for code, wantErr := range map[int]bool{9: false, 1: true} {
		err := EnsureSystemUser(ctx, name, "/h", func(context.Context, string, ...string) ([]byte, error) {
			return []byte("useradd: failure\n"), exitErr(code)
		})
		if (err != nil) != wantErr {
			t.Errorf("useradd exit %d: %v", code, err)
		}
	}
}

func TestLookupIDs(t *testing.T) {
	t.Parallel()
	uid, gid, err := LookupIDs("root")
	if err != nil || uid != 0 || gid != 0 {
		t.Errorf("LookupIDs(root) = %d, %d, %v", uid, gid, err)
	}
	if _, _, err := LookupIDs("ccm-test-nouser"); err == nil || !strings.Contains(err.Error(), "ccm-test-nouser") {
		t.Errorf("LookupIDs of a missing user = %v", err)
	}
}
