package bed

import (
	"context"
	"fmt"
	"strings"
)

// FreshMachinePaths are what the charm creates on a unit. A machine as Juju gives it has none of
// them, so the bed's images and mounts must not either: a test bed that pre-created the install
// root once passed every test of a charm that could not install on a real machine.
var FreshMachinePaths = []string{
	"/var/lib/concourse",
	"/var/lib/concourse-worker",
	"/var/lib/concourse-charm",
	"/etc/concourse",
	"/etc/systemd/system/concourse-server.service",
	"/etc/systemd/system/concourse-worker.service",
}

// FreshMachineUsers are the accounts the charm adds.
var FreshMachineUsers = []string{"concourse"}

// CheckFresh reports every trace of the charm on m: a path of FreshMachinePaths, a user of
// FreshMachineUsers, or a mount at /var/lib/concourse (only an operator's disk device may put one
// there, and the caller says whether one is expected).
func (m *Machine) CheckFresh(ctx context.Context, sharedMount bool) error {
	var found []string
	for _, p := range FreshMachinePaths {
		if sharedMount && p == "/var/lib/concourse" {
			continue
		}
		if _, err := m.Stat(p); err == nil {
			found = append(found, p)
		}
	}
	for _, u := range FreshMachineUsers {
		if _, _, code, err := m.Exec(ctx, nil, "getent", "passwd", u); err != nil {
			return fmt.Errorf("%s: getent passwd %s: %w", m.Name, u, err)
		} else if code == 0 {
			found = append(found, "user "+u)
		}
	}
	mounts, _, code, err := m.Exec(ctx, nil, "findmnt", "-n", "-o", "TARGET", "/var/lib/concourse")
	if err != nil {
		return fmt.Errorf("%s: findmnt: %w", m.Name, err)
	}
	if mounted := code == 0 && strings.TrimSpace(string(mounts)) != ""; mounted != sharedMount {
		found = append(found, fmt.Sprintf("mount at /var/lib/concourse: %t, want %t", mounted, sharedMount))
	}
	if len(found) > 0 {
		return fmt.Errorf("%s is not a fresh machine: %s", m.Name, strings.Join(found, ", "))
	}
	return nil
}
