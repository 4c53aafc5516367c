package concourse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunCommandFunc runs name with args and exactly env (nothing inherited) and
// returns what it printed. An error carrying ExitCode() int (as
// *exec.ExitError does) is reported with that exit code.
type RunCommandFunc func(ctx context.Context, name string, args []string, env []string) (stdout, stderr []byte, err error)

// Migrator drives `concourse migrate` (contract §5). Running migrations as a
// separate blocking step before starting web is what BOSH and the Helm chart
// do, so a long v7→v8 migration is awaited instead of being killed mid-way by
// a restart (contract §8.1, §8.2).
type Migrator struct {
	Binary string   // the concourse binary
	Env    []string // CONCOURSE_POSTGRES_* (and encryption keys); see DBConfig.Env
	Run    RunCommandFunc
	// QueryTimeout bounds the schema-version queries (default DefaultQueryTimeout);
	// MigrateTimeout bounds a migration (default DefaultMigrateTimeout). A binary
	// that hangs (a broken release, an unreachable database) must not hold a hook for ever.
	QueryTimeout, MigrateTimeout time.Duration
}

const (
	// DefaultQueryTimeout: --supported-db-version needs no database and answers
	// in milliseconds; --current-db-version is one connection and one query.
	DefaultQueryTimeout = 2 * time.Minute
	// DefaultMigrateTimeout: the longest real migrations (v7 -> v8 on large
	// build histories) take tens of minutes; an hour is the point where waiting
	// longer only hides a hang. A timed-out migrate gets SIGTERM and
	// migrateStopGrace to roll its transaction back.
	DefaultMigrateTimeout = time.Hour
)

// CommandError reports a failed command: the binary, its arguments and what
// it wrote to stderr. The environment (which holds the DB password) is never
// part of it.
type CommandError struct {
	Cmd      string
	Args     []string
	ExitCode int // -1 when the command did not exit normally
	Stderr   string
	Err      error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s %s", e.Cmd, strings.Join(e.Args, " "))
	if e.ExitCode >= 0 {
		msg += fmt.Sprintf(": exit status %d", e.ExitCode)
	} else if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

var migratedRE = regexp.MustCompile(`Successfully migrated to version: (\d+)`)

// SupportedVersion is the newest schema version the binary knows; it needs no
// database.
func (m Migrator) SupportedVersion(ctx context.Context) (int64, error) {
	out, err := m.run(ctx, "--supported-db-version")
	if err != nil {
		return 0, err
	}
	return parseVersionOutput(m.Binary, "--supported-db-version", out)
}

// CurrentVersion is the database's schema version; 0 means a database that
// Concourse never migrated (the migrations table does not exist yet).
func (m Migrator) CurrentVersion(ctx context.Context) (int64, error) {
	out, err := m.run(ctx, "--current-db-version")
	if err != nil {
		var ce *CommandError
		// Contract §5: a never-migrated database answers with SQLSTATE 42P01.
		if errors.As(err, &ce) && strings.Contains(ce.Stderr, `relation "migrations_history" does not exist`) {
			return 0, nil
		}
		return 0, err
	}
	return parseVersionOutput(m.Binary, "--current-db-version", out)
}

// MigrateToLatest applies every migration the binary has (silent on success).
func (m Migrator) MigrateToLatest(ctx context.Context) error {
	_, err := m.run(ctx, "--migrate-to-latest-version")
	return err
}

// MigrateTo moves the schema to version v, up or down; a downgrade must be run
// by the newer binary before the older one starts (contract §5).
func (m Migrator) MigrateTo(ctx context.Context, v int64) error {
	arg := "--migrate-db-to-version=" + strconv.FormatInt(v, 10)
	out, err := m.run(ctx, arg)
	if err != nil {
		return err
	}
	match := migratedRE.FindSubmatch(out)
	if match == nil {
		return fmt.Errorf("%s migrate %s: unexpected output %q", m.Binary, arg, truncate(string(out), 200))
	}
	if got, _ := strconv.ParseInt(string(match[1]), 10, 64); got != v {
		return fmt.Errorf("%s migrate %s: reports version %d", m.Binary, arg, got)
	}
	return nil
}

func parseVersionOutput(bin, arg string, out []byte) (int64, error) {
	s := strings.TrimSpace(string(out))
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s migrate %s: expected a schema version, got %q", bin, arg, truncate(s, 200))
	}
	return v, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (m Migrator) run(ctx context.Context, arg string) ([]byte, error) {
	timeout := m.QueryTimeout
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	if strings.HasPrefix(arg, "--migrate-") {
		timeout = m.MigrateTimeout
		if timeout <= 0 {
			timeout = DefaultMigrateTimeout
		}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"migrate", arg}
	env, err := commandEnv(m.Env)
	if err != nil {
		return nil, err
	}
	run := m.Run
	if run == nil {
		run = execCommand
	}
	stdout, stderr, err := run(ctx, m.Binary, args, env)
	if err != nil {
		code := -1
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		if parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// Our bound, not the caller's: say so (the exit code, after SIGTERM, stays).
			err = fmt.Errorf("no answer within %s, stopped: %w", timeout, err)
		}
		return nil, &CommandError{Cmd: m.Binary, Args: args, ExitCode: code,
			Stderr: redactEnv(string(stderr), env), Err: err}
	}
	return stdout, nil
}

// commandEnv never inherits the hook's environment: Juju sets variables that
// mean nothing to Concourse, and an inherited CONCOURSE_VERSION would make it
// panic (contract §0.4). PATH is added when the caller did not set one.
func commandEnv(env []string) ([]string, error) {
	out := make([]string, 0, len(env)+1)
	hasPath := false
	for _, kv := range env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !envNameRE.MatchString(name) {
			return nil, fmt.Errorf("environment entry %q is not NAME=value", name)
		}
		if name == "CONCOURSE_VERSION" {
			return nil, errors.New("CONCOURSE_VERSION may never be set: it makes every concourse subcommand panic")
		}
		hasPath = hasPath || name == "PATH"
		out = append(out, kv)
	}
	if !hasPath {
		out = append(out, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return out, nil
}

// redactEnv removes secret values (variables whose name says PASSWORD, KEY,
// SECRET or TOKEN) from command output before it becomes an error message.
func redactEnv(s string, env []string) string {
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		up := strings.ToUpper(name)
		if strings.Contains(up, "PASSWORD") || strings.Contains(up, "KEY") || strings.Contains(up, "SECRET") || strings.Contains(up, "TOKEN") {
			s = redact(s, val)
		}
	}
	return s
}

// migrateStopGrace is how long a cancelled migrate gets after SIGTERM before
// it is killed: each migration runs in a transaction and a clean exit rolls
// it back, whereas SIGKILL mid-migration has left half-applied schemas
// (contract §8.2).
const migrateStopGrace = 30 * time.Second

func execCommand(ctx context.Context, name string, args []string, env []string) ([]byte, []byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = migrateStopGrace
	err := cmd.Run()
	return stdout.Bytes(), stderr.Bytes(), err
}
