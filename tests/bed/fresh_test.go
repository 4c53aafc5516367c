package bed

import (
	"context"
	"testing"
	"time"
)

// TestMachinesAreFresh proves that the bed gives what Juju gives: a machine with nothing the charm
// would create itself, whether it is booted bare or as a unit with either kind of storage. Only
// the operator's shared disk may be mounted at /var/lib/concourse.
func TestMachinesAreFresh(t *testing.T) {
	c := newController(t)
	ch := loadEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	none, err := c.Deploy(ctx, "plain", ch, 1, map[string]any{"greeting": "hi"}, DeployOptions{Storage: StorageNone})
	if err != nil {
		t.Fatalf("cannot deploy: %v", err)
	}
	shared, err := c.Deploy(ctx, "shared", ch, 2, map[string]any{"greeting": "hi"}, DeployOptions{Storage: StorageSharedROWorkers})
	if err != nil {
		t.Fatalf("cannot deploy: %v", err)
	}
	bare, err := c.Bed.Boot(ctx, MachineOptions{})
	if err != nil {
		t.Fatalf("cannot boot: %v", err)
	}
	if err := c.Settle(ctx); err != nil {
		t.Fatalf("cannot settle: %v", err)
	}
	cases := []struct {
		name        string
		m           *Machine
		sharedMount bool
	}{
		{"bare machine", bare, false},
		{"unit with shared-storage=none", none[0].Machine, false},
		{"shared-storage leader (read-write disk)", shared[0].Machine, true},
		{"shared-storage unit (read-only disk)", shared[1].Machine, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.m.CheckFresh(ctx, tc.sharedMount); err != nil {
				t.Error(err)
			}
		})
	}
	// The check itself must see what the charm would leave, or it proves nothing.
	t.Run("the check sees the charm's traces", func(t *testing.T) {
		if _, _, code, err := bare.Exec(ctx, nil, "sh", "-c", "mkdir -p /etc/concourse && useradd --system concourse"); err != nil || code != 0 {
			t.Fatalf("cannot leave traces: %d %v", code, err)
		}
		err := bare.CheckFresh(ctx, false)
		if err == nil {
			t.Fatal("CheckFresh found nothing after /etc/concourse and the concourse user were made")
		}
		t.Logf("as expected: %v", err)
	})
}
