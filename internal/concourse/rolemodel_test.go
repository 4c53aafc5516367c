package concourse

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// TestRoleModelRealConcourse runs the real Concourse 7.14.3 against a database set up as the
// postgresql charm (16/stable) sets one up, with the login hook not escalating: the relation user
// cannot migrate until PrepareRoleModel ran; after it, the web starts, a local user logs in, a
// pipeline is set and a build runs on a houdini worker; then 8.2.5's migrations (an upgrade)
// still leave every table owned by the owner role and writable through charmed_<db>_dml.
func TestRoleModelRealConcourse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Concourse web and worker processes")
	}
	set := realconcourse.Require(t)
	bin, flyBin := set.Concourse("7.14.3"), set.Fly("7.14.3")
	pg := pgtest.Start(t, pgtest.Options{})
	d := pg.CreateCharmedDatabase(t, "concourse", pgtest.CharmedOptions{RelationID: 21})
	db := DBConfig{Host: pg.Host(), Port: pg.Port(), User: d.User, Password: d.Password, Database: d.Database}
	var dbEnv []string
	for _, v := range db.Env() {
		dbEnv = append(dbEnv, v.Name+"="+v.Value)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// Without the fix: the relation user may not create Concourse's tables.
	err := Migrator{Binary: bin, Env: dbEnv}.MigrateToLatest(ctx)
	if err == nil || !strings.Contains(err.Error(), "permission denied for schema public") {
		t.Fatalf("migrating before PrepareRoleModel: %v; want permission denied for schema public", err)
	}
	if strings.Contains(err.Error(), d.Password) {
		t.Fatalf("the migration error carries the password: %v", err)
	}

	// The fix, as the web hook runs it before migrating and before every web start.
	m, err := PrepareRoleModel(ctx, db, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PrepareRoleModel: %s", m)
	start := time.Now()
	if err := (Migrator{Binary: bin, Env: dbEnv}).MigrateToLatest(ctx); err != nil {
		t.Fatalf("migrating after PrepareRoleModel: %v", err)
	}
	t.Logf("concourse 7.14.3 migrate: %s", time.Since(start).Round(time.Millisecond))
	if m, err := PrepareRoleModel(ctx, db, 0); err != nil || m.Changed() {
		t.Fatalf("PrepareRoleModel after migrating = %+v, %v; want nothing to change", m, err)
	}

	dir := t.TempDir()
	realweb.GenerateKeys(t, ctx, bin, dir)
	lb := realweb.NewLoopback(t)
	const adminPass = "role-model-admin-pw"
	webEnv := []string{
		"CONCOURSE_ADD_LOCAL_USER=admin:" + adminPass,
		"CONCOURSE_MAIN_TEAM_LOCAL_USER=admin",
	}
	webEnv = append(webEnv, lb.WebEnv(t)...)
	webEnv = append(webEnv,
		"CONCOURSE_SESSION_SIGNING_KEY="+filepath.Join(dir, "session_signing_key"),
		"CONCOURSE_TSA_HOST_KEY="+filepath.Join(dir, "tsa_host_key"),
		"CONCOURSE_TSA_AUTHORIZED_KEYS="+filepath.Join(dir, "worker_key.pub"),
		"CONCOURSE_LOG_LEVEL=info",
	)
	webEnv = append(webEnv, dbEnv...)
	web := realweb.Start(t, bin, []string{"web"}, webEnv, filepath.Join(dir, "web.log"))
	realweb.WaitInfo(t, ctx, web, lb.URL)

	fly := realweb.NewFly(t, flyBin, dir)
	fly.Target = "rm"
	// Login needs dex to INSERT into auth_request (the symptom).
	if out, err := fly.Run(ctx, "login", "-c", lb.URL, "-u", "admin", "-p", adminPass); err != nil {
		t.Fatalf("fly login: %v\n%s\n%s", err, out, web.LogTail())
	}
	pipeline := realweb.EchoPipeline(t, dir, "hello-from-role-model")
	// set-pipeline makes Concourse create pipeline_build_events_<id> (runtime DDL).
	for _, args := range [][]string{
		{"set-pipeline", "-n", "-p", "rm", "-c", pipeline},
		{"unpause-pipeline", "-p", "rm"},
	} {
		if out, err := fly.Run(ctx, args...); err != nil {
			t.Fatalf("fly %s: %v\n%s\n%s", args[0], err, out, web.LogTail())
		}
	}

	worker := realweb.StartHoudiniWorker(t, bin, "role-model-worker", dir, lb.TSAPort, filepath.Join(dir, "worker"), filepath.Join(dir, "worker.log"))
	realweb.WaitFor(t, ctx, worker, 90*time.Second, "the worker to be running", func() error {
		out, err := fly.Run(ctx, "workers")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "role-model-worker" && strings.Contains(line, "running") {
				return nil
			}
		}
		return fmt.Errorf("fly workers: %s", strings.TrimSpace(out))
	})
	start = time.Now()
	out, err := fly.Run(ctx, "trigger-job", "-j", "rm/hello", "-w")
	if err != nil || !strings.Contains(out, "hello-from-role-model") {
		t.Fatalf("fly trigger-job -w: %v\n%s\nworker:\n%s\nweb:\n%s", err, out, worker.LogTail(), web.LogTail())
	}
	t.Logf("build: %s", time.Since(start).Round(time.Millisecond))
	worker.Stop(t)
	web.Stop(t)

	// An upgrade: 8.2.5's migrations add tables; PrepareRoleModel runs first, as the hook does.
	if _, err := PrepareRoleModel(ctx, db, 0); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := (Migrator{Binary: set.Concourse("8.2.5"), Env: dbEnv}).MigrateToLatest(ctx); err != nil {
		t.Fatalf("migrating to 8.2.5: %v", err)
	}
	t.Logf("concourse 8.2.5 migrate: %s", time.Since(start).Round(time.Millisecond))

	// Every table, dex's and the runtime ones included, belongs to the owner role, and a session
	// that did not escalate can still write them through charmed_<db>_dml.
	s := openSession(t, pg, d.User, d.Password, d.Database, true)
	var foreign, total, notWritable int
	var pipelineEvents bool
	err = s.conn.QueryRowContext(s.ctx, `
SELECT count(*) FILTER (WHERE tableowner <> $1), count(*),
       count(*) FILTER (WHERE NOT has_table_privilege($2, format('public.%I', tablename), 'INSERT,UPDATE,DELETE')),
       bool_or(tablename LIKE 'pipeline_build_events_%')
  FROM pg_tables WHERE schemaname = 'public'`, d.Owner, d.DML).Scan(&foreign, &total, &notWritable, &pipelineEvents)
	if err != nil {
		t.Fatal(err)
	}
	if foreign != 0 || notWritable != 0 || !pipelineEvents || total < 50 {
		t.Fatalf("of %d tables, %d not owned by %s and %d not writable by %s; pipeline_build_events_* present: %v",
			total, foreign, d.Owner, notWritable, d.DML, pipelineEvents)
	}
	// Dex's table, written as dex does, by a session that is not the owner (no rows: the
	// privilege check is what matters).
	s.exec("INSERT INTO auth_request SELECT * FROM auth_request WHERE false")
}
