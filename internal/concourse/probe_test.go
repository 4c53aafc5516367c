package concourse

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A release is probed in staging before it may become current (issue 11, item 2), and every call
// of its binary is bounded: one was seen hanging for more than 7 minutes.
func TestProbeRelease(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		script string // "" = no bin/concourse
		mode   os.FileMode
		want   string // "" = success
	}{
		{"works", "#!/bin/sh\necho 8.2.5\n", 0o755, ""},
		{"missing", "", 0, "has no concourse/bin/concourse"},
		{"not-executable", "#!/bin/sh\necho 8.2.5\n", 0o644, "not executable (mode 0644)"},
		{"another-version", "#!/bin/sh\necho 7.0.0\n", 0o755, `--version says "7.0.0", want "8.2.5"`},
		{"fails", "#!/bin/sh\nexit 3\n", 0o755, "exit status 3"},
		{"hangs", "#!/bin/sh\nexec sleep 30\n", 0o755, "no answer within 300ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if c.script != "" {
				os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
				if err := os.WriteFile(filepath.Join(dir, "bin", "concourse"), []byte(c.script), c.mode); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			err := ProbeRelease(context.Background(), "8.2.5", dir, 300*time.Millisecond)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("probe took %s", d)
			}
			if c.want == "" {
				if err != nil {
					t.Errorf("ProbeRelease = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ProbeRelease = %v; want %q", err, c.want)
			}
		})
	}
}

func TestMigratorCallsAreBounded(t *testing.T) {
	t.Parallel()
	var seen []time.Duration
	hang := func(ctx context.Context, name string, args, env []string) ([]byte, []byte, error) {
		dl, _ := ctx.Deadline()
		seen = append(seen, time.Until(dl))
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	m := Migrator{Binary: "/x/concourse", Run: hang, QueryTimeout: 50 * time.Millisecond, MigrateTimeout: 80 * time.Millisecond}
	if _, err := m.SupportedVersion(context.Background()); err == nil || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Errorf("SupportedVersion against a hung binary = %v", err)
	}
	if err := m.MigrateToLatest(context.Background()); err == nil || !strings.Contains(err.Error(), "no answer within 80ms") {
		t.Errorf("MigrateToLatest against a hung binary = %v", err)
	}
	// The defaults bound them too.
	seen = nil
	d := Migrator{Binary: "/x/concourse", Run: func(ctx context.Context, name string, args, env []string) ([]byte, []byte, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			t.Errorf("%v runs without a deadline", args)
		}
		seen = append(seen, time.Until(dl))
		return []byte("1\n"), nil, nil
	}}
	d.SupportedVersion(context.Background())
	d.MigrateToLatest(context.Background())
	if len(seen) != 2 || seen[0] > DefaultQueryTimeout || seen[0] < DefaultQueryTimeout-time.Minute || seen[1] < DefaultMigrateTimeout-time.Minute {
		t.Errorf("default deadlines %v; want ~%s and ~%s", seen, DefaultQueryTimeout, DefaultMigrateTimeout)
	}
}
