package storage

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A machine as Juju gives it has no /var/lib/concourse: the first hook must create the install
// root instead of failing its write probe (issue 8: the default deployment never installed).
func TestCheckWritableOnAFreshMachine(t *testing.T) {
	cases := []struct {
		name   string
		root   string // below a fresh temp dir
		create bool   // the root exists, empty, before the check
	}{
		{"no /var/lib/concourse", "var/lib/concourse", false},
		{"no /var/lib either", "fresh/var/lib/concourse", false},
		{"an empty LXD disk device mount point", "var/lib/concourse", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), tc.root)
			if tc.create {
				if err := os.MkdirAll(root, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			s := New(Options{Root: root, Unit: "concourse-ci-machine/0"})
			if err := s.CheckWritable(); err != nil {
				t.Fatalf("CheckWritable on %s: %v", root, err)
			}
			if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
				t.Fatalf("root after CheckWritable: %v, %v", fi, err)
			}
			if left, _ := os.ReadDir(root); len(left) != 0 {
				t.Fatalf("the write probe left %d entries in %s", len(left), root)
			}
		})
	}
}

// In lxc mode a missing root means the share is not mounted: CheckShared refuses it, and nothing
// creates a local directory where the mount should be.
func TestCheckSharedRefusesAMissingRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "var", "lib", "concourse")
	s := New(Options{Root: root, Unit: "concourse-ci-machine/1"})
	var ue *UnavailableError
	if err := s.CheckShared(); !errors.As(err, &ue) {
		t.Fatalf("CheckShared on a missing root = %v, want *UnavailableError", err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("CheckShared created %s: %v", root, err)
	}
}
