package concourse

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// pgClientBin is the directory of the host's pg_dump and pg_restore (the test skips without
// them, as pgtest does without a server).
func pgClientBin(t *testing.T) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_restore")); err == nil {
			return dirs[i]
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("pg_dump/pg_restore not found in /usr/lib/postgresql/*/bin (CI=true: install postgresql-client)")
	}
	t.Skip("pg_dump/pg_restore not found in /usr/lib/postgresql/*/bin; install postgresql-client")
	return ""
}

// runRestore runs RestoreCommand's text through a shell, as an operator pastes it, with the
// password in PGPASSWORD (pg_restore would otherwise ask for it).
func runRestore(t *testing.T, ctx context.Context, bin, command, password string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "PGPASSWORD=" + password, "LC_ALL=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", command, err, out)
	}
}

func dbEnvOf(db DBConfig) []string {
	var env []string
	for _, v := range db.Env() {
		env = append(env, v.Name+"="+v.Value)
	}
	return env
}

// TestBackupRestoresOldRelease is the upgrade test for the backup: a database migrated
// by the real 7.14.3 is dumped by Backup (as the relation user of a postgresql-charm-shaped
// database), the real 8.2.5 migrates it, and the dump, restored with RestoreCommand into a fresh
// database, is one the real 7.14.3 runs on: its schema version is 7.14.3's, the data is there,
// and a 7.14.3 web starts on it and answers /api/v1/info.
func TestBackupRestoresOldRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real Concourse migrations and a real web")
	}
	set := realconcourse.Require(t)
	pgBin := pgClientBin(t)
	old, next := set.Concourse("7.14.3"), set.Concourse("8.2.5")
	pg := pgtest.Start(t, pgtest.Options{})
	d := pg.CreateCharmedDatabase(t, "concourse", pgtest.CharmedOptions{RelationID: 31})
	db := DBConfig{Host: pg.Host(), Port: pg.Port(), User: d.User, Password: d.Password, Database: d.Database}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	if _, err := PrepareRoleModel(ctx, db, 0); err != nil {
		t.Fatal(err)
	}
	oldM := Migrator{Binary: old, Env: dbEnvOf(db)}
	if err := oldM.MigrateToLatest(ctx); err != nil {
		t.Fatal(err)
	}
	oldSchema, err := oldM.SupportedVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := SchemaVersion(ctx, db); err != nil || got != oldSchema {
		t.Fatalf("SchemaVersion after the 7.14.3 migration = %d, %v; want 7.14.3's %d", got, err, oldSchema)
	}
	// A row the restore must bring back.
	s := openSession(t, pg, d.User, d.Password, d.Database, false)
	s.exec(`INSERT INTO teams (name, auth) VALUES ('backup-marker', '{}')`)

	dir := filepath.Join(t.TempDir(), "backups")
	start := time.Now()
	path, err := Backup(ctx, db, dir, 3, filepath.Join(pgBin, "pg_dump"))
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup of the 7.14.3 database: %s, %d bytes, %s", filepath.Base(path), fi.Size(), time.Since(start).Round(time.Millisecond))
	want := regexp.MustCompile(`^concourse-` + strconv.FormatInt(oldSchema, 10) + `-[0-9]{8}T[0-9]{6}Z\.dump$`)
	if !want.MatchString(filepath.Base(path)) || filepath.Dir(path) != dir {
		t.Errorf("dump path %s; want %s/%s", path, dir, want)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("dump mode %04o, want 0600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("backup dir holds %d entries, want the dump alone (no temporary file left)", len(entries))
	}

	// The upgrade the backup guards.
	newM := Migrator{Binary: next, Env: dbEnvOf(db)}
	start = time.Now()
	if err := newM.MigrateToLatest(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("8.2.5 migration: %s", time.Since(start).Round(time.Millisecond))
	if got, _ := SchemaVersion(ctx, db); got <= oldSchema {
		t.Fatalf("after the 8.2.5 migration the schema is %d, not newer than %d", got, oldSchema)
	}

	// Restore into a fresh database of a new relation, exactly with the printed command.
	fresh := pg.CreateCharmedDatabase(t, "concourse_restored", pgtest.CharmedOptions{RelationID: 32})
	db2 := DBConfig{Host: pg.Host(), Port: pg.Port(), User: fresh.User, Password: fresh.Password, Database: fresh.Database}
	if _, err := PrepareRoleModel(ctx, db2, 0); err != nil {
		t.Fatal(err)
	}
	command := RestoreCommand(path, db2)
	if strings.Contains(command, fresh.Password) {
		t.Fatalf("RestoreCommand carries the password: %s", command)
	}
	t.Logf("restore: %s", command)
	start = time.Now()
	runRestore(t, ctx, pgBin, command, fresh.Password)
	t.Logf("restore: %s", time.Since(start).Round(time.Millisecond))
	if _, err := PrepareRoleModel(ctx, db2, 0); err != nil {
		t.Fatal(err)
	}

	restoredM := Migrator{Binary: old, Env: dbEnvOf(db2)}
	if got, err := restoredM.CurrentVersion(ctx); err != nil || got != oldSchema {
		t.Fatalf("7.14.3 migrate --current-db-version on the restored database = %d, %v; want %d", got, err, oldSchema)
	}
	var marker int
	s2 := openSession(t, pg, fresh.User, fresh.Password, fresh.Database, false)
	if err := s2.conn.QueryRowContext(s2.ctx, `SELECT count(*) FROM teams WHERE name = 'backup-marker'`).Scan(&marker); err != nil || marker != 1 {
		t.Fatalf("restored teams has %d backup-marker rows (%v), want 1", marker, err)
	}

	// The operator's case: the same command into the database 8.2.5 migrated (its web stopped)
	// puts 7.14.3's schema back there too, although 8.2.5 added tables and constraints the dump
	// does not name.
	runRestore(t, ctx, pgBin, RestoreCommand(path, db), d.Password)
	if _, err := PrepareRoleModel(ctx, db, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := oldM.CurrentVersion(ctx); err != nil || got != oldSchema {
		t.Fatalf("after restoring in place, 7.14.3 migrate --current-db-version = %d, %v; want %d", got, err, oldSchema)
	}
	if err := s.conn.QueryRowContext(s.ctx, `SELECT count(*) FROM teams WHERE name = 'backup-marker'`).Scan(&marker); err != nil || marker != 1 {
		t.Fatalf("restored in place, teams has %d backup-marker rows (%v), want 1", marker, err)
	}
	if _, err := os.Stat(path + ".sql"); err == nil {
		t.Errorf("the restore left %s.sql behind", path)
	}

	wdir := t.TempDir()
	realweb.GenerateKeys(t, ctx, old, wdir)
	lb := realweb.NewLoopback(t)
	env := append([]string{
		"CONCOURSE_ADD_LOCAL_USER=admin:restored-admin-pw",
		"CONCOURSE_MAIN_TEAM_LOCAL_USER=admin",
		"CONCOURSE_SESSION_SIGNING_KEY=" + filepath.Join(wdir, "session_signing_key"),
		"CONCOURSE_TSA_HOST_KEY=" + filepath.Join(wdir, "tsa_host_key"),
		"CONCOURSE_TSA_AUTHORIZED_KEYS=" + filepath.Join(wdir, "worker_key.pub"),
	}, lb.WebEnv(t)...)
	web := realweb.Start(t, old, []string{"web"}, append(env, dbEnvOf(db2)...), filepath.Join(wdir, "web.log"))
	realweb.WaitInfo(t, ctx, web, lb.URL)
	info, err := Info(ctx, nil, lb.URL)
	if err != nil || info.Version != "7.14.3" {
		t.Fatalf("the web on the restored database: %+v, %v", info, err)
	}
	// Still up after its first component runs (a schema it cannot use fails them at once).
	time.Sleep(3 * time.Second)
	if web.Exited() {
		t.Fatalf("the 7.14.3 web on the restored database exited:\n%s", web.LogTail())
	}
	if strings.Contains(web.LogTail(), "SQLSTATE") {
		t.Errorf("the 7.14.3 web on the restored database logs SQL errors:\n%s", web.LogTail())
	}
	web.Stop(t)
}

// TestBackupFilesAndRetention covers what Backup does with files around pg_dump, against a
// real cluster and the host's pg_dump: names, retention, foreign files, the password's path,
// and a failed dump leaving nothing behind.
func TestBackupFilesAndRetention(t *testing.T) {
	pgBin := pgClientBin(t)
	pg := pgtest.Start(t, pgtest.Options{})
	const pass = "backup-secret-pw-42"
	pg.CreateRole(t, "ci", pass)
	pg.CreateDatabase(t, "ci", "ci")
	db := DBConfig{Host: pg.Host(), Port: pg.Port(), User: "ci", Password: pass, Database: "ci"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pgDump := filepath.Join(pgBin, "pg_dump")

	t.Run("a never migrated database is schema 0", func(t *testing.T) {
		dir := t.TempDir()
		p, err := Backup(ctx, db, dir, 0, pgDump)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`/concourse-0-[0-9]{8}T[0-9]{6}Z\.dump$`).MatchString(p) {
			t.Errorf("path %s", p)
		}
	})

	t.Run("dumps beyond keep are removed, newest kept, other files untouched", func(t *testing.T) {
		dir := t.TempDir()
		olds := []string{"concourse-5-20240101T000000Z.dump", "concourse-9-20250101T000000Z.dump", "concourse-9-20250101T000000Z-1.dump"}
		for _, n := range append(olds, "notes.txt", "concourse-latest.dump") {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var made []string
		for range 2 {
			p, err := Backup(ctx, db, dir, 3, pgDump)
			if err != nil {
				t.Fatal(err)
			}
			made = append(made, p)
		}
		if made[0] == made[1] {
			t.Fatalf("two dumps got one name %s", made[0])
		}
		got, err := Backups(dir)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{made[1], made[0], filepath.Join(dir, olds[2])}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("dumps left, newest first:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for _, n := range []string{"notes.txt", "concourse-latest.dump"} {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				t.Errorf("a file Backup did not make was touched: %v", err)
			}
		}
	})

	t.Run("the password reaches pg_dump in its environment, never in argv", func(t *testing.T) {
		dir, rec := t.TempDir(), filepath.Join(t.TempDir(), "rec")
		// A pg_dump that records what it got and then runs the real one.
		fake := filepath.Join(t.TempDir(), "pg_dump")
		script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + rec + ".argv\nenv > " + rec + ".env\nexec " + pgDump + " \"$@\"\n"
		if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("JUJU_UNIT_NAME", "concourse/0") // a hook variable
		if _, err := Backup(ctx, db, dir, 0, fake); err != nil {
			t.Fatal(err)
		}
		argv, _ := os.ReadFile(rec + ".argv")
		env, _ := os.ReadFile(rec + ".env")
		if strings.Contains(string(argv), pass) {
			t.Errorf("pg_dump's argv holds the password:\n%s", argv)
		}
		if !strings.Contains(string(env), "PGPASSWORD="+pass+"\n") {
			t.Errorf("pg_dump's environment lacks PGPASSWORD:\n%s", env)
		}
		if strings.Contains(string(env), "JUJU_UNIT_NAME") {
			t.Errorf("pg_dump inherited the caller's environment:\n%s", env)
		}
	})

	t.Run("a failed dump leaves no file and names the problem without the password", func(t *testing.T) {
		dir := t.TempDir()
		// SchemaVersion connects first; a wrong password fails there, so make pg_dump fail on
		// its own: a pg_dump that writes half a dump and exits 1.
		bad := filepath.Join(t.TempDir(), "pg_dump")
		if err := os.WriteFile(bad, []byte("#!/bin/sh\nprintf PGDMP-partial\necho \"pg_dump: error: connection to server failed: password $PGPASSWORD\" >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Backup(ctx, db, dir, 1, bad)
		if err == nil || !strings.Contains(err.Error(), "connection to server failed") {
			t.Fatalf("Backup with a failing pg_dump: %v", err)
		}
		if strings.Contains(err.Error(), pass) {
			t.Errorf("the error carries the password: %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("a failed dump left %d files in %s", len(entries), dir)
		}
	})

	t.Run("a wrong password is refused before pg_dump runs", func(t *testing.T) {
		dir := t.TempDir()
		wrong := db
		wrong.Password = "not-the-password"
		_, err := Backup(ctx, wrong, dir, 1, pgDump)
		if err == nil || strings.Contains(err.Error(), "not-the-password") {
			t.Fatalf("Backup with a wrong password: %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("left %d files", len(entries))
		}
	})
}

func TestRestoreCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		db   DBConfig
		path string
		want string
	}{
		{"plain", DBConfig{Host: "10.1.2.3", Port: 5432, User: "relation-7", Password: "s3cr3t-pw", Database: "concourse"},
			"/b/concourse-1746768931-20261202T013300Z.dump",
			"umask 077 && pg_restore --no-owner --no-privileges --file=/b/concourse-1746768931-20261202T013300Z.dump.sql /b/concourse-1746768931-20261202T013300Z.dump && " +
				"psql --no-psqlrc --single-transaction --set=ON_ERROR_STOP=1 --host=10.1.2.3 --port=5432 --username=relation-7 --dbname=concourse " +
				"--command='DROP SCHEMA public CASCADE' --command='CREATE SCHEMA public' --command='GRANT USAGE ON SCHEMA public TO PUBLIC' " +
				"--file=/b/concourse-1746768931-20261202T013300Z.dump.sql && rm /b/concourse-1746768931-20261202T013300Z.dump.sql"},
		{"TLS with a CA and a path that needs quoting", DBConfig{Host: "db.example", Port: 5433, User: "u", Password: "s3cr3t-pw", Database: "c i", SSLMode: "verify-ca", CACert: "/etc/concourse/pg ca.pem"},
			"/b/it's.dump",
			`umask 077 && pg_restore --no-owner --no-privileges --file='/b/it'\''s.dump.sql' '/b/it'\''s.dump' && ` +
				`PGSSLMODE=verify-ca PGSSLROOTCERT='/etc/concourse/pg ca.pem' psql --no-psqlrc --single-transaction --set=ON_ERROR_STOP=1 --host=db.example --port=5433 --username=u --dbname='c i' ` +
				`--command='DROP SCHEMA public CASCADE' --command='CREATE SCHEMA public' --command='GRANT USAGE ON SCHEMA public TO PUBLIC' ` +
				`--file='/b/it'\''s.dump.sql' && rm '/b/it'\''s.dump.sql'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RestoreCommand(tc.path, tc.db)
			if got != tc.want {
				t.Errorf("RestoreCommand =\n%s\nwant\n%s", got, tc.want)
			}
			if strings.Contains(got, tc.db.Password) {
				t.Errorf("carries the password")
			}
		})
	}
}
