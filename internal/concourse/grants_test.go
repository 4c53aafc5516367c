package concourse

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
)

// roleModelSession is one connection of the relation user.
type roleModelSession struct {
	t    *testing.T
	ctx  context.Context
	conn *sql.Conn
}

// openSession connects as user; unescalated drops whatever role the session started as, as a
// session does whose login hook did not fire (or a pooler that reset it).
func openSession(t *testing.T, pg *pgtest.Cluster, user, pass, db string, unescalated bool) *roleModelSession {
	t.Helper()
	pool, err := sql.Open("postgres", pg.DSN(user, pass, db))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	conn, err := pool.Conn(ctx)
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(func() { conn.Close(); pool.Close(); cancel() })
	s := &roleModelSession{t, ctx, conn}
	if unescalated {
		s.exec("SET ROLE NONE")
	}
	return s
}

func (s *roleModelSession) exec(q string) {
	s.t.Helper()
	if err := s.try(q); err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
}

func (s *roleModelSession) try(q string) error {
	_, err := s.conn.ExecContext(s.ctx, q)
	return err
}

func (s *roleModelSession) currentUser() string {
	s.t.Helper()
	var u string
	if err := s.conn.QueryRowContext(s.ctx, "SELECT current_user").Scan(&u); err != nil {
		s.t.Fatal(err)
	}
	return u
}

func isDenied(err error) bool {
	pe := pq.As(err)
	return pe != nil && pe.Code == "42501"
}

// A migration as Concourse's do it: a table with a serial key, and a trigger that creates a
// table at run time, as Concourse's teams/pipelines triggers create *_build_events_<id>.
const fakeMigration1 = `
CREATE TABLE auth_request (id serial PRIMARY KEY, v text);
CREATE TABLE teams (id serial PRIMARY KEY, name text);
CREATE FUNCTION on_team_insert() RETURNS trigger AS $$
BEGIN EXECUTE format('CREATE TABLE IF NOT EXISTS team_build_events_%s (x int)', NEW.id); RETURN NULL; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER team_build_events AFTER INSERT ON teams FOR EACH ROW EXECUTE PROCEDURE on_team_insert();`

// The schema of a later release.
const fakeMigration2 = `CREATE TABLE resource_caches (id bigserial PRIMARY KEY, v text);`

func TestPrepareRoleModel(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	cfgFor := func(user, pass, db string) DBConfig {
		return DBConfig{Host: pg.Host(), Port: pg.Port(), User: user, Password: pass, Database: db}
	}

	t.Run("without the login hook: migrations fail until prepared, then sessions run as the owner", func(t *testing.T) {
		d := pg.CreateCharmedDatabase(t, "nohook", pgtest.CharmedOptions{RelationID: 11})
		before := openSession(t, pg, d.User, d.Password, d.Database, false)
		if err := before.try(fakeMigration1); !isDenied(err) {
			t.Fatalf("migrating as the bare relation user: %v; want permission denied for schema public", err)
		}

		m, err := PrepareRoleModel(ctx, cfgFor(d.User, d.Password, d.Database), 0)
		if err != nil {
			t.Fatal(err)
		}
		if m.Owner != d.Owner || m.DML != d.DML || !m.DefaultRoleSet {
			t.Fatalf("first call = %+v; want the owner and dml roles, default role set", m)
		}
		migrate := openSession(t, pg, d.User, d.Password, d.Database, false)
		if u := migrate.currentUser(); u != d.Owner {
			t.Fatalf("a new session starts as %q, want %q", u, d.Owner)
		}
		migrate.exec(fakeMigration1)
		// Runtime DDL, as the web does on set-pipeline, works as the owner...
		migrate.exec("INSERT INTO teams (name) VALUES ('main')")
		// ...and never as the bare user, whatever is granted: this is why sessions must escalate.
		bare := openSession(t, pg, d.User, d.Password, d.Database, true)
		if err := bare.try("INSERT INTO teams (name) VALUES ('other')"); !isDenied(err) {
			t.Fatalf("runtime DDL as the bare relation user: %v; want permission denied", err)
		}
		// DML by a session that did not escalate works through charmed_<db>_dml (default privileges).
		bare.exec("INSERT INTO auth_request (v) VALUES ('dex')")

		again, err := PrepareRoleModel(ctx, cfgFor(d.User, d.Password, d.Database), 0)
		if err != nil || again.Changed() {
			t.Fatalf("second call = %+v, %v; want nothing changed", again, err)
		}

		// An upgrade's migration creates a table: the default privileges cover it.
		migrate.exec(fakeMigration2)
		bare.exec("INSERT INTO resource_caches (v) VALUES ('x')")
		third, err := PrepareRoleModel(ctx, cfgFor(d.User, d.Password, d.Database), 0)
		if err != nil || third.Changed() {
			t.Fatalf("call after the upgrade = %+v, %v; want nothing changed", third, err)
		}
	})

	t.Run("login hook escalated the migration but not the web: existing tables get grants", func(t *testing.T) {
		d := pg.CreateCharmedDatabase(t, "hooked", pgtest.CharmedOptions{RelationID: 12, LoginHook: true})
		openSession(t, pg, d.User, d.Password, d.Database, false).exec(fakeMigration1)
		web := openSession(t, pg, d.User, d.Password, d.Database, true)
		if err := web.try("INSERT INTO auth_request (v) VALUES ('dex')"); !isDenied(err) {
			t.Fatalf("dex's INSERT before preparing: %v; want permission denied (the issue)", err)
		}

		m, err := PrepareRoleModel(ctx, cfgFor(d.User, d.Password, d.Database), 0)
		if err != nil {
			t.Fatal(err)
		}
		// Two tables and two sequences lacked grants; the hook had already set the default role.
		if m.DefaultRoleSet || m.TablesGranted != 2 || m.SequencesGranted != 2 {
			t.Fatalf("PrepareRoleModel = %+v; want 2 tables and 2 sequences granted, default role untouched", m)
		}
		web.exec("INSERT INTO auth_request (v) VALUES ('dex')")
		web.exec("UPDATE auth_request SET v = 'y'")
		web.exec("DELETE FROM auth_request")
		if again, err := PrepareRoleModel(ctx, cfgFor(d.User, d.Password, d.Database), 0); err != nil || again.Changed() {
			t.Fatalf("second call = %+v, %v; want nothing changed", again, err)
		}
	})

	t.Run("a user that owns its database: nothing to do", func(t *testing.T) {
		pg.CreateRole(t, "plainuser", "plain-secret")
		pg.CreateDatabase(t, "plaindb", "plainuser")
		m, err := PrepareRoleModel(ctx, cfgFor("plainuser", "plain-secret", "plaindb"), 0)
		if err != nil || m != (RoleModel{}) {
			t.Fatalf("PrepareRoleModel = %+v, %v; want a no-op", m, err)
		}
		s := openSession(t, pg, "plainuser", "plain-secret", "plaindb", false)
		var n int
		if err := s.conn.QueryRowContext(s.ctx, "SELECT count(*) FROM pg_db_role_setting WHERE setrole = 'plainuser'::regrole").Scan(&n); err != nil || n != 0 {
			t.Fatalf("role settings after a no-op = %d, %v; want none", n, err)
		}
	})

	t.Run("a user that may not become the owner: a clear error without the password", func(t *testing.T) {
		d := pg.CreateCharmedDatabase(t, "revoked", pgtest.CharmedOptions{RelationID: 13})
		// What the postgresql charm's remove_user_from_databases leaves, plus CONNECT.
		pg.Exec(t, `REVOKE "charmed_revoked_admin" FROM "relation-13"`)
		pg.Exec(t, `GRANT CONNECT ON DATABASE revoked TO "relation-13"`)
		_, err := PrepareRoleModel(ctx, cfgFor(d.User, d.Password, d.Database), 0)
		var dbErr *DBError
		if !errors.As(err, &dbErr) || !strings.Contains(err.Error(), "SET ROLE charmed_revoked_owner") ||
			!strings.Contains(err.Error(), "relate the charm to PostgreSQL again") {
			t.Fatalf("err = %v; want a *DBError naming the owner role and the fix", err)
		}
		if strings.Contains(err.Error(), d.Password) {
			t.Fatalf("the error carries the password: %v", err)
		}
	})

	t.Run("wrong password: an authentication error without the password", func(t *testing.T) {
		d := pg.CreateCharmedDatabase(t, "wrongpw", pgtest.CharmedOptions{RelationID: 14})
		_, err := PrepareRoleModel(ctx, cfgFor(d.User, "not-"+d.Password, d.Database), 0)
		var dbErr *DBError
		if !errors.As(err, &dbErr) || dbErr.Kind != DBAuth || strings.Contains(err.Error(), d.Password) {
			t.Fatalf("err = %v; want a DBAuth *DBError without the password", err)
		}
	})
}
