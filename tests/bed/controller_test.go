package bed

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

func newController(t *testing.T) *Controller {
	t.Helper()
	Require(t)
	return NewController(t, ControllerOptions{ToolsDir: *toolsDir})
}

func loadEcho(t *testing.T) *Charm {
	t.Helper()
	ch, err := LoadCharm(echoCharmDir, t.TempDir())
	if err != nil {
		t.Fatalf("cannot load the echo charm: %v", err)
	}
	return ch
}

// check is one composable assertion on the bed; it returns a "got …; want …" error.
type check func(c *Controller) error

func hasStatus(unit, status, message string) check {
	return func(c *Controller) error {
		got := c.Model.UnitStatus(unit)
		if got.Status != status || got.Message != message {
			return fmt.Errorf("%s status = %s %q; want %s %q", unit, got.Status, got.Message, status, message)
		}
		return nil
	}
}

func fileIs(unit, path, want string) check {
	return func(c *Controller) error {
		got, err := c.Unit(unit).ReadFile(path)
		if err != nil || string(got) != want {
			return fmt.Errorf("%s:%s = %q, %v; want %q", unit, path, got, err, want)
		}
		return nil
	}
}

func ranHooks(unit string, want ...string) check {
	return func(c *Controller) error {
		got := c.Unit(unit).HookNames()
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s hooks = %q; want %q", unit, got, want)
		}
		return nil
	}
}

func settle(t *testing.T, c *Controller, checks ...check) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := c.Settle(ctx); err != nil {
		t.Fatalf("cannot settle: %v", err)
	}
	t.Logf("settled in %s", time.Since(start).Round(time.Millisecond))
	for _, chk := range checks {
		if err := chk(c); err != nil {
			t.Error(err)
		}
	}
}

// TestEchoCharm drives the whole hook path through real containers: dispatch runs inside, its
// hook tools reach the controller over the bind-mounted socket, commits cause events on the
// other units, a failing hook is discarded and retried, and a virtual provider app talks to the
// charm over a relation.
func TestEchoCharm(t *testing.T) {
	c := newController(t)
	ch := loadEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	units, err := c.Deploy(ctx, "echo", ch, 2, map[string]any{"greeting": "hi", "fail-once": "start"}, DeployOptions{Storage: StorageShared})
	if err != nil {
		t.Fatalf("cannot deploy: %v", err)
	}
	t.Logf("deployed 2 units in %s (boots %s, %s)", time.Since(start).Round(time.Millisecond),
		units[0].BootTime.Round(time.Millisecond), units[1].BootTime.Round(time.Millisecond))

	t.Run("deploy", func(t *testing.T) {
		settle(t, c,
			// juju-contract §4.1, and start fails once and is retried (§1.4).
			ranHooks("echo/0", "install", "peers-relation-created", "leader-elected", "config-changed",
				"start!", "start", "peers-relation-joined(echo/1)", "peers-relation-changed(echo/1)"),
			ranHooks("echo/1", "install", "peers-relation-created", "leader-settings-changed", "config-changed",
				"start!", "start", "peers-relation-joined(echo/0)", "peers-relation-changed(echo/0)"),
			hasStatus("echo/0", "active", "peers-relation-changed ok"),
			fileIs("echo/0", "/var/lib/echo/greeting-echo-1", "hi"),
			fileIs("echo/1", "/var/lib/echo/greeting-echo-0", "hi"),
		)
		// The failed start's relation-set was discarded.
		id := c.Model.RelationID("echo", "peers")
		if v, ok := c.Model.UnitData(id, "echo/0")["discarded"]; ok {
			t.Errorf("echo/0 peer databag has discarded=%q from a failed hook", v)
		}
		// Both units see one shared /var/lib/concourse.
		s0, err0 := c.Unit("echo/0").Stat("/var/lib/concourse")
		s1, err1 := c.Unit("echo/1").Stat("/var/lib/concourse")
		if err0 != nil || err1 != nil || s0.Ino != s1.Ino || s0.Dev != s1.Dev {
			t.Errorf("shared storage: %+v %v, %+v %v; want one inode", s0, err0, s1, err1)
		}
	})

	t.Run("config-propagates", func(t *testing.T) {
		c.Config("echo", map[string]any{"greeting": "bonjour"})
		settle(t, c,
			fileIs("echo/0", "/var/lib/echo/greeting-echo-1", "bonjour"),
			fileIs("echo/1", "/var/lib/echo/greeting-echo-0", "bonjour"),
		)
		got := c.Unit("echo/1").HookNames()
		want := []string{"config-changed", "peers-relation-changed(echo/0)"}
		if !slices.Equal(got[len(got)-2:], want) {
			t.Errorf("echo/1 last hooks = %q; want %q", got, want)
		}
	})

	t.Run("virtual-provider", func(t *testing.T) {
		c.DeployVirtual("postgresql", jujutest.AppMeta{Provides: map[string]string{"database": "postgresql_client"}}, 1,
			func(h *jujutest.HookContext, info jujutest.HookInfo) error {
				if info.Hook != "database-relation-joined" {
					return nil
				}
				res := h.Run("relation-set", []string{"-r", fmt.Sprint(info.RelationID), "--app", "endpoints=" + c.Bed.HostIP() + ":5432"}, nil)
				if res.Code != 0 {
					return fmt.Errorf("relation-set: %s", res.Stderr)
				}
				return nil
			})
		if _, err := c.Integrate("echo:db", "postgresql:database"); err != nil {
			t.Fatal(err)
		}
		settle(t, c,
			fileIs("echo/0", "/var/lib/echo/endpoints", `"`+c.Bed.HostIP()+`:5432"`),
			fileIs("echo/1", "/var/lib/echo/endpoints", `"`+c.Bed.HostIP()+`:5432"`),
		)
	})

	t.Run("action", func(t *testing.T) {
		rec, err := c.RunAction(ctx, "echo/1", "echo", map[string]any{"message": "ping"})
		if err != nil || rec.Status != "completed" || rec.Results["echo"] != "ping" {
			t.Errorf("action = %+v, %v; want completed echo=ping", rec, err)
		}
	})

	t.Run("leader-moves", func(t *testing.T) {
		c.SetLeader("echo", "echo/1")
		settle(t, c)
		last := func(u string) string { h := c.Unit(u).HookNames(); return h[len(h)-1] }
		if last("echo/1") != "leader-elected" || last("echo/0") != "leader-settings-changed" {
			t.Errorf("last hooks %q, %q; want leader-elected, leader-settings-changed", last("echo/1"), last("echo/0"))
		}
	})

	t.Run("status", func(t *testing.T) {
		st := c.Status()
		t.Logf("\n%s", st)
		row, ok := st.Unit("echo/1")
		if !ok || !row.Leader || row.Agent != "idle" || row.Address != units[1].IP {
			t.Errorf("status row %+v; want leader, idle, %s", row, units[1].IP)
		}
	})

	t.Run("remove-unit", func(t *testing.T) {
		if err := c.RemoveUnit("echo/0"); err != nil {
			t.Fatal(err)
		}
		settle(t, c)
		h := c.Unit("echo/0").HookNames()
		if !slices.Contains(h, "stop") || !slices.Contains(h, "remove") || units[0].Running() {
			t.Errorf("echo/0 hooks %q, running %v; want stop, remove and a stopped machine", h, units[0].Running())
		}
		h1 := strings.Join(c.Unit("echo/1").HookNames(), " ")
		if !strings.Contains(h1, "peers-relation-departed(echo/0)") {
			t.Errorf("echo/1 hooks %s; want peers-relation-departed(echo/0)", h1)
		}
	})
}

// TestSharedROWorkers: the first unit mounts the shared directory read-write, later units
// read-only, all seeing the same files.
func TestSharedROWorkers(t *testing.T) {
	c := newController(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	units, err := c.Deploy(ctx, "echo", loadEcho(t), 2, nil, DeployOptions{Storage: StorageSharedROWorkers})
	if err != nil {
		t.Fatalf("cannot deploy: %v", err)
	}
	more, err := c.AddUnit(ctx, "echo", 1)
	if err != nil {
		t.Fatalf("cannot add a unit: %v", err)
	}
	settle(t, c, hasStatus("echo/2", "active", "peers-relation-changed ok"))
	if err := units[0].WriteFile("/var/lib/concourse/.installed_version", []byte("7.14.3\n"), 0o644); err != nil {
		t.Fatalf("writing on the read-write unit: %v", err)
	}
	for _, u := range []*Unit{units[1], more[0]} {
		got, err := u.ReadFile("/var/lib/concourse/.installed_version")
		if err != nil || string(got) != "7.14.3\n" {
			t.Errorf("%s reads %q, %v; want the shared file", u.Name, got, err)
		}
		if _, stderr, code, _ := u.Exec(ctx, nil, "touch", "/var/lib/concourse/x"); code == 0 {
			t.Errorf("%s could write the read-only shared directory", u.Name)
		} else if !strings.Contains(string(stderr), "Read-only file system") {
			t.Errorf("%s touch: %s", u.Name, stderr)
		}
	}
	// add-unit: the new unit gets the §4.2 sequence; the existing ones see it join.
	if err := ranHooks("echo/2", "install", "peers-relation-created", "leader-settings-changed", "config-changed", "start",
		"peers-relation-joined(echo/0)", "peers-relation-changed(echo/0)",
		"peers-relation-joined(echo/1)", "peers-relation-changed(echo/1)")(c); err != nil {
		t.Error(err)
	}
}
