package concourse

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// DefaultBackupTimeout bounds one pg_dump: a Concourse database of a few GiB dumps in minutes;
// an hour is where waiting longer only hides a hang (the migration it guards is bounded the same).
const DefaultBackupTimeout = time.Hour

// backupTimeFormat sorts lexically in time order, has no ':' (safe in any file name) and is UTC.
const backupTimeFormat = "20060102T150405Z"

// backupNameRE is the name Backup gives a dump: concourse-<schema>-<UTC time>[-<n>].dump, where
// <n> separates two dumps made within one second.
var backupNameRE = regexp.MustCompile(`^concourse-([0-9]+)-([0-9]{8}T[0-9]{6}Z)(?:-([0-9]+))?\.dump$`)

// Backup dumps the Concourse database before a migration, as the relation user (db), with
// pgDump (the pg_dump binary: on a unit the charm installs postgresql-client; it must be at
// least the server's major version, which pg_dump checks itself):
//
//   - pg_dump -Fc (custom format: compressed, restorable table by table with pg_restore) writes
//     to a temporary file in dir created 0600, which is fsynced and only then linked to its final
//     name <dir>/concourse-<schema>-<UTC time>.dump, so a crash or a failed dump never leaves a
//     file that looks like a backup; the directory is fsynced after the link;
//   - <schema> is the database's Concourse schema version (migrations_history, 0 for a database
//     Concourse never migrated): it says which release the dump belongs to;
//   - the password goes to pg_dump in PGPASSWORD, never in argv (argv is world-readable in /proc),
//     and pg_dump inherits nothing else from the hook's environment (no PGSERVICE, PGHOST, …);
//   - after the new dump exists, dumps of this naming beyond the newest keep are removed
//     (keep <= 0 keeps every dump); other files in dir are never touched.
//
// A hook calls it (when the backup option is on) after stopping every web and before
// `concourse migrate`, and on error does not migrate: a status names the error. It returns the
// dump's path, for the status and for RestoreCommand. Bounded by DefaultBackupTimeout on top of ctx.
func Backup(ctx context.Context, db DBConfig, dir string, keep int, pgDump string) (string, error) {
	if err := db.Validate(); err != nil {
		return "", fmt.Errorf("backing up the database: %w", err)
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("backup directory %q must be an absolute path", dir)
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultBackupTimeout)
	defer cancel()
	schema, err := SchemaVersion(ctx, db)
	if err != nil {
		return "", fmt.Errorf("backing up the database: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating the backup directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".concourse-backup-*.tmp") // 0600
	if err != nil {
		return "", fmt.Errorf("creating the backup file: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := runPGDump(ctx, db, pgDump, tmp); err != nil {
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	path, err := linkBackup(tmp.Name(), dir, schema, time.Now())
	if err != nil {
		return "", err
	}
	done = true
	os.Remove(tmp.Name())
	if err := syncDir(dir); err != nil {
		return path, err
	}
	if keep > 0 {
		if err := pruneBackups(dir, keep); err != nil {
			// The new dump exists and is complete; an old one left behind costs only space.
			return path, fmt.Errorf("dump %s written, but removing older dumps: %w", path, err)
		}
	}
	return path, nil
}

// runPGDump runs pg_dump -Fc into out, with exactly the environment it needs.
func runPGDump(ctx context.Context, db DBConfig, pgDump string, out *os.File) error {
	args := []string{"--format=custom", "--no-password",
		"--host=" + db.Host, "--port=" + strconv.Itoa(db.Port),
		"--username=" + db.User, "--dbname=" + db.Database}
	env := []string{"PGSSLMODE=" + db.sslMode(), "PGCONNECT_TIMEOUT=10", "PGAPPNAME=concourse-ci-machine-backup",
		"LC_ALL=C", "TZ=UTC", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if db.Password != "" {
		env = append(env, "PGPASSWORD="+db.Password)
	}
	if db.CACert != "" {
		env = append(env, "PGSSLROOTCERT="+db.CACert)
	}
	cmd := exec.CommandContext(ctx, pgDump, args...)
	cmd.Env = env
	cmd.Stdout = out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// SIGTERM lets pg_dump close its connection; its output is thrown away either way.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		msg := redact(strings.TrimSpace(stderr.String()), db.Password)
		if strings.Contains(msg, "server version mismatch") {
			msg += " (install a postgresql-client at least as new as the server)"
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s, stopped: %w", DefaultBackupTimeout, err)
		}
		return &CommandError{Cmd: pgDump, Args: args, ExitCode: code, Stderr: msg, Err: err}
	}
	return nil
}

// linkBackup gives the complete dump tmp its final name without ever replacing a file (link(2)
// fails on an existing name), adding -1, -2, … for dumps made within the same second.
func linkBackup(tmp, dir string, schema int64, now time.Time) (string, error) {
	base := fmt.Sprintf("concourse-%d-%s", schema, now.UTC().Format(backupTimeFormat))
	for n := 0; n < 100; n++ {
		name := base + ".dump"
		if n > 0 {
			name = fmt.Sprintf("%s-%d.dump", base, n)
		}
		p := filepath.Join(dir, name)
		err := os.Link(tmp, p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("naming the dump %s: %w", p, err)
		}
	}
	return "", fmt.Errorf("naming the dump: 100 dumps named %s* already exist", filepath.Join(dir, base))
}

// Backups lists the dumps Backup made in dir, newest first. A missing dir has none.
func Backups(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing backups: %w", err)
	}
	type dump struct {
		name, stamp string
		n           int
	}
	var dumps []dump
	for _, e := range entries {
		m := backupNameRE.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		n, _ := strconv.Atoi(m[3])
		dumps = append(dumps, dump{e.Name(), m[2], n})
	}
	// By time, not by schema: after a downgrade the newest dump has the older schema.
	sort.Slice(dumps, func(i, j int) bool {
		if dumps[i].stamp != dumps[j].stamp {
			return dumps[i].stamp > dumps[j].stamp
		}
		return dumps[i].n > dumps[j].n
	})
	out := make([]string, len(dumps))
	for i, d := range dumps {
		out[i] = filepath.Join(dir, d.name)
	}
	return out, nil
}

// pruneBackups removes Backup's dumps in dir beyond the newest keep.
func pruneBackups(dir string, keep int) error {
	dumps, err := Backups(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range dumps[min(keep, len(dumps)):] {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SchemaVersion reads the database's Concourse schema version as `concourse migrate
// --current-db-version` reports it, without a concourse binary: the newest migrations_history
// row that did not fail; when that row is a "down" migration, the schema sits at the version
// below it, which is the newest other passed version in the history. A database Concourse
// never migrated is at 0.
func SchemaVersion(ctx context.Context, db DBConfig) (int64, error) {
	conn, err := sql.Open("postgres", db.DSN(10*time.Second))
	if err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	defer conn.Close()
	var v int64
	var direction string
	err = conn.QueryRowContext(ctx, `SELECT version, direction FROM migrations_history
		WHERE status <> 'failed' ORDER BY tstamp DESC LIMIT 1`).Scan(&v, &direction)
	var pqErr *pq.Error
	switch {
	case errors.As(err, &pqErr) && pqErr.Code == "42P01": // undefined_table
		return 0, nil
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("reading the schema version from %s/%s: %w", db.Host, db.Database, redactedError{err, db.Password})
	}
	if direction == "down" {
		var below sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT max(version) FROM migrations_history
			WHERE status <> 'failed' AND direction = 'up' AND version < $1`, v).Scan(&below); err != nil {
			return 0, fmt.Errorf("reading the schema version from %s/%s: %w", db.Host, db.Database, redactedError{err, db.Password})
		}
		v = below.Int64
	}
	return v, nil
}

// RestoreCommand is the command an operator runs to put the dump at path back into the database
// of db, for the status of a failed upgrade ("… restore with: <command>") and the action that
// reports backups. Every web must be stopped first, and the release that made the dump
// (concourse-<schema>-…: the old release's schema) is the one to start afterwards, after
// PrepareRoleModel (which the web hook runs before every start anyway).
//
// It holds no password: pg_restore and psql ask for the relation user's (from the postgresql
// relation's secret) or read PGPASSWORD. It is two steps joined by &&, so nothing touches the
// database unless the dump reads back completely:
//
//  1. pg_restore turns the dump into SQL beside it (<path>.sql, 0600 under umask 077), --no-owner --no-privileges so
//     that everything is created as the session's role, which under the postgresql charm's role
//     model is the database's owner role (the relation user may not create objects as itself);
//  2. psql, in one transaction that stops at the first error, drops and recreates schema
//     public and runs that SQL. Dropping the schema, not the dump's objects one by one
//     (pg_restore --clean), is what makes it work on a database a newer release migrated: a
//     newer schema has tables and constraints the old dump does not name, and --clean stops
//     on them (seen with 8.2.5's builds_rerun_of_fkey1). On error nothing changed.
func RestoreCommand(path string, db DBConfig) string {
	env := ""
	if db.SSLMode != "" && db.SSLMode != "disable" {
		env = "PGSSLMODE=" + shellQuote(db.SSLMode) + " "
		if db.CACert != "" {
			env += "PGSSLROOTCERT=" + shellQuote(db.CACert) + " "
		}
	}
	var b strings.Builder
	sqlFile := shellQuote(path + ".sql")
	fmt.Fprintf(&b, "umask 077 && pg_restore --no-owner --no-privileges --file=%s %s && %spsql --no-psqlrc --single-transaction --set=ON_ERROR_STOP=1 --host=%s --port=%d --username=%s --dbname=%s "+
		"--command='DROP SCHEMA public CASCADE' --command='CREATE SCHEMA public' --command='GRANT USAGE ON SCHEMA public TO PUBLIC' --file=%s && rm %s",
		sqlFile, shellQuote(path), env, shellQuote(db.Host), db.Port, shellQuote(db.User), shellQuote(db.Database), sqlFile, sqlFile)
	return b.String()
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@=,+", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
