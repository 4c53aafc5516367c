package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

// TestCharmedDatabase checks that the role model behaves as the postgresql charm's does for a
// relation user: it cannot create in schema public, it may SET ROLE to the owner role, it reads
// what the owner creates (default privileges for charmed_<db>_admin) but may not write it, and
// with the login hook its sessions start as the owner.
func TestCharmedDatabase(t *testing.T) {
	c := Start(t, Options{})
	plain := c.CreateCharmedDatabase(t, "concourse", CharmedOptions{RelationID: 7})
	hooked := c.CreateCharmedDatabase(t, "hooked", CharmedOptions{RelationID: 8, LoginHook: true})
	if plain.User != "relation-7" || plain.Owner != "charmed_concourse_owner" || plain.DML != "charmed_concourse_dml" {
		t.Fatalf("names = %+v", plain)
	}

	session := func(d CharmedDatabase) (*sql.Conn, context.Context) {
		t.Helper()
		pool, err := sql.Open("postgres", c.DSN(d.User, d.Password, d.Database))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		conn, err := pool.Conn(ctx)
		if err != nil {
			t.Fatalf("connecting as %s: %v", d.User, err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, ctx
	}
	current := func(conn *sql.Conn, ctx context.Context) string {
		t.Helper()
		var u string
		if err := conn.QueryRowContext(ctx, "SELECT current_user").Scan(&u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	wantDenied := func(err error, what string) {
		t.Helper()
		if pe := (*pq.Error)(nil); !errors.As(err, &pe) || pe.Code != "42501" {
			t.Fatalf("%s: %v; want permission denied (42501)", what, err)
		}
	}

	conn, ctx := session(plain)
	if u := current(conn, ctx); u != plain.User {
		t.Fatalf("without the login hook current_user = %q, want %q", u, plain.User)
	}
	_, err := conn.ExecContext(ctx, "CREATE TABLE t (x int)")
	wantDenied(err, "relation user creating a table in public")
	for _, s := range []string{"SET ROLE " + plain.Owner, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)", "RESET ROLE"} {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("relation user reading the owner's table: %d, %v; want 1 row (admin's default SELECT)", n, err)
	}
	_, err = conn.ExecContext(ctx, "INSERT INTO t VALUES (2)")
	wantDenied(err, "relation user inserting into the owner's table")
	var owner, dmlACL string
	if err := conn.QueryRowContext(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 't'").Scan(&owner); err != nil || owner != plain.Owner {
		t.Fatalf("owner of t = %q, %v; want %q", owner, err, plain.Owner)
	}
	if err := conn.QueryRowContext(ctx, "SELECT coalesce(array_to_string(relacl, ','), '') FROM pg_class WHERE relname = 't'").Scan(&dmlACL); err != nil {
		t.Fatal(err)
	}
	if want := plain.DML + "="; strings.Contains(dmlACL, want) {
		t.Fatalf("ACL of t = %q: the charm grants nothing to %s", dmlACL, plain.DML)
	}

	hconn, hctx := session(hooked)
	if u := current(hconn, hctx); u != hooked.Owner {
		t.Fatalf("with the login hook current_user = %q, want %q", u, hooked.Owner)
	}
	if _, err := hconn.ExecContext(hctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatalf("creating a table as the escalated relation user: %v", err)
	}
	// The relation user of one database has no way into another's.
	_, err = hconn.ExecContext(hctx, "SET ROLE "+plain.Owner)
	wantDenied(err, "relation-8 taking concourse's owner role")
}
