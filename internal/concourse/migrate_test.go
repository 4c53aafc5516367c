package concourse

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMigratorExec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	if v, err := fakeMigrator(t).SupportedVersion(ctx); err != nil || v != 1746768931 {
		t.Errorf("SupportedVersion = %d, %v", v, err)
	}
	if v, err := fakeMigrator(t, "FAKE_CURRENT=1700000000").CurrentVersion(ctx); err != nil || v != 1700000000 {
		t.Errorf("CurrentVersion = %d, %v", v, err)
	}
	if v, err := fakeMigrator(t, "FAKE_FRESH=1").CurrentVersion(ctx); err != nil || v != 0 {
		t.Errorf("CurrentVersion on a fresh DB = %d, %v; want 0, nil", v, err)
	}
	if _, err := fakeMigrator(t, "FAKE_CURRENT=garbage").CurrentVersion(ctx); err == nil || !strings.Contains(err.Error(), `"garbage"`) {
		t.Errorf("CurrentVersion with garbage output = %v", err)
	}
	if err := fakeMigrator(t).MigrateToLatest(ctx); err != nil {
		t.Errorf("MigrateToLatest = %v", err)
	}
	if err := fakeMigrator(t, "FAKE_MIGRATED_TO=1700000000").MigrateTo(ctx, 1700000000); err != nil {
		t.Errorf("MigrateTo = %v", err)
	}
	if err := fakeMigrator(t, "FAKE_MIGRATED_TO=1").MigrateTo(ctx, 1700000000); err == nil || !strings.Contains(err.Error(), "reports version 1") {
		t.Errorf("MigrateTo with a wrong report = %v", err)
	}

	err := fakeMigrator(t, "FAKE_FAIL=1").MigrateToLatest(ctx)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 1 || !strings.Contains(ce.Stderr, "failed to connect") {
		t.Fatalf("MigrateToLatest failing = %#v", err)
	}
	if !strings.Contains(err.Error(), "migrate --migrate-to-latest-version: exit status 1") {
		t.Errorf("error %q does not name the command and exit status", err)
	}
	if strings.Contains(err.Error(), "hunter2-secret") {
		t.Errorf("error %q leaks the password", err)
	}

	m := fakeMigrator(t)
	m.Env = append(m.Env, "CONCOURSE_VERSION=7.14.3")
	if err := m.MigrateToLatest(ctx); err == nil || !strings.Contains(err.Error(), "CONCOURSE_VERSION") {
		t.Errorf("MigrateToLatest with CONCOURSE_VERSION = %v; want a refusal", err)
	}
}

// A cancelled migration gets SIGTERM (so it can roll back), not SIGKILL.
func TestMigratorCancelSendsSIGTERM(t *testing.T) {
	t.Parallel()
	// 2 s leaves the helper ample time to install its SIGTERM handler.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := fakeMigrator(t, "FAKE_HANG=1").MigrateToLatest(ctx)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 3 || !strings.Contains(ce.Stderr, "rolled back on SIGTERM") {
		t.Fatalf("cancelled MigrateToLatest = %v; want exit 3 after SIGTERM", err)
	}
}

func TestMigratorFakeRunner(t *testing.T) {
	t.Parallel()
	var gotName string
	var gotArgs, gotEnv []string
	m := Migrator{
		Binary: "/var/lib/concourse/bin/concourse",
		Env:    []string{"CONCOURSE_POSTGRES_HOST=10.0.0.5", "PATH=/custom"},
		Run: func(ctx context.Context, name string, args, env []string) ([]byte, []byte, error) {
			gotName, gotArgs, gotEnv = name, args, env
			return []byte("1776182280\n"), nil, nil
		},
	}
	v, err := m.SupportedVersion(context.Background())
	if err != nil || v != 1776182280 {
		t.Fatalf("SupportedVersion = %d, %v", v, err)
	}
	if gotName != m.Binary || strings.Join(gotArgs, " ") != "migrate --supported-db-version" {
		t.Errorf("ran %s %q", gotName, gotArgs)
	}
	if strings.Join(gotEnv, " ") != "CONCOURSE_POSTGRES_HOST=10.0.0.5 PATH=/custom" {
		t.Errorf("env = %q; want exactly the given env", gotEnv)
	}
	m.Run = func(context.Context, string, []string, []string) ([]byte, []byte, error) {
		return nil, []byte("boom"), errors.New("exec: not started")
	}
	_, err = m.CurrentVersion(context.Background())
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != -1 || ce.Stderr != "boom" {
		t.Errorf("runner failure = %#v", err)
	}
}
