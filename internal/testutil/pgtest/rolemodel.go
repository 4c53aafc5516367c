package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/lib/pq"
)

// The postgresql charm (16/stable) does not hand a related application a database it owns. What
// it creates, as its superuser "operator", was read from canonical/postgresql-single-kernel-library
// single_kernel_postgresql/utils/postgresql.py and compat/postgresql.py (2026-06):
//
//   - create_predefined_instance_roles: NOLOGIN roles charmed_stats (IN ROLE pg_monitor),
//     charmed_read (pg_read_all_data, charmed_stats), charmed_dml (pg_write_all_data,
//     charmed_read), charmed_backup (pg_checkpoint, charmed_stats), charmed_dba (CREATEDB,
//     charmed_dml), charmed_admin (charmed_dml); create_access_groups: identity_access,
//     internal_access, relation_access.
//   - set_up_database: the LOGIN CREATEDB role charmed_databases_owner (member of charmed_dml);
//     REVOKE ALL ON DATABASE postgres FROM PUBLIC; REVOKE CREATE ON SCHEMA public FROM PUBLIC;
//     installs set_up_predefined_catalog_roles() (SECURITY DEFINER, owned by operator, EXECUTE
//     only for charmed_databases_owner) and login_hook.login().
//   - create_database: SET ROLE charmed_databases_owner; CREATE DATABASE; REVOKE ALL ON DATABASE
//     FROM PUBLIC; then in the new database SET ROLE charmed_databases_owner and
//     SELECT set_up_predefined_catalog_roles(), which creates charmed_<db>_owner,
//     charmed_<db>_admin (NOINHERIT, IN ROLE owner) and charmed_<db>_dml (no privileges at all),
//     makes the owner role own schema public and hold CREATE and TEMPORARY on the database,
//     takes CREATE away from charmed_databases_owner, and sets
//     ALTER DEFAULT PRIVILEGES FOR ROLE owner GRANT SELECT ON TABLES / SELECT ON SEQUENCES /
//     EXECUTE ON FUNCTIONS TO admin. Nothing is ever granted to charmed_<db>_dml.
//   - create_user (relation user "relation-<id>", extra roles [relation_access]):
//     CREATE ROLE ... LOGIN PASSWORD ... IN ROLE charmed_<db>_admin, charmed_<db>_dml;
//     GRANT relation_access. The user owns nothing and may not CREATE in schema public.
//   - login_hook.login() (session_preload_libraries = 'login_hook' in patroni.yml): at login, a
//     direct member of charmed_<db>_admin gets SET ROLE charmed_<db>_owner.
//
// There is no event trigger that changes the owner of new tables.
//
// PostgreSQL 16 differences: the function grants charmed_<db>_owner and charmed_<db>_admin to
// charmed_admin WITH INHERIT FALSE, a 16-only option; on 15 the grant is made without it (only
// members of charmed_admin see the difference, and no test has one). The relation user's path to
// the owner role (user → admin with inheritance → owner without, since admin is NOINHERIT; SET
// allowed on both grants) behaves the same on 15 and 16. The set_user extension statements
// (grants on set_user() to charmed_dba) are left out: they concern charmed_dba only.
// login_hook is a C extension not packaged for Debian; CharmedOptions.LoginHook emulates its
// effect with a per-database role default (see there).

// CharmedOptions shape CreateCharmedDatabase.
type CharmedOptions struct {
	// RelationID names the relation user "relation-<RelationID>" as the charm does; 0 means 1.
	RelationID int
	// LoginHook emulates the charm's login hook: the relation user's sessions in this database
	// start as charmed_<db>_owner (ALTER ROLE ... IN DATABASE ... SET role, run as the superuser).
	// Without it, sessions run as the relation user, as when the hook does not escalate.
	LoginHook bool
}

// CharmedDatabase is a database and relation user set up as the postgresql charm does.
type CharmedDatabase struct {
	Database string
	User     string // relation-<id>
	Password string
	Owner    string // charmed_<db>_owner: owns schema public and what is created as it
	Admin    string // charmed_<db>_admin: the relation user's route to Owner
	DML      string // charmed_<db>_dml: granted to the relation user, holds no privileges
}

// Roles of the charm's instance-level model, created once per cluster.
var charmedInstanceRoles = []string{
	"CREATE ROLE charmed_stats NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOLOGIN IN ROLE pg_monitor",
	"CREATE ROLE charmed_read NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOLOGIN IN ROLE pg_read_all_data, charmed_stats",
	"CREATE ROLE charmed_dml NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOLOGIN IN ROLE pg_write_all_data, charmed_read",
	"CREATE ROLE charmed_backup NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOLOGIN IN ROLE pg_checkpoint",
	"GRANT charmed_stats TO charmed_backup",
	"CREATE ROLE charmed_dba NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOLOGIN IN ROLE charmed_dml",
	"CREATE ROLE charmed_admin NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOLOGIN IN ROLE charmed_dml",
	"CREATE ROLE identity_access NOLOGIN",
	"CREATE ROLE internal_access NOLOGIN",
	"CREATE ROLE relation_access NOLOGIN",
	// The charm gives it the literal password of a Python None; nobody logs in with it.
	"CREATE ROLE charmed_databases_owner LOGIN CREATEDB PASSWORD NULL",
	"GRANT charmed_dml TO charmed_databases_owner",
	"GRANT CONNECT ON DATABASE postgres TO charmed_databases_owner",
	"GRANT CONNECT ON DATABASE template1 TO charmed_databases_owner",
	"REVOKE ALL PRIVILEGES ON DATABASE postgres FROM PUBLIC",
	"REVOKE CREATE ON SCHEMA public FROM PUBLIC",
}

// catalogRolesFunction is this package's rendering of the charm's set_up_predefined_catalog_roles:
// the same statements for a relation created by the operator (session user not relation-*).
// %[1]s is "" on 16 and later, where grants to charmed_admin carry WITH INHERIT FALSE.
const catalogRolesFunction = `CREATE OR REPLACE FUNCTION set_up_predefined_catalog_roles() RETURNS VOID AS $f$
DECLARE
	db TEXT := current_database();
	owner_role TEXT := quote_ident('charmed_' || current_database() || '_owner');
	admin_role TEXT := quote_ident('charmed_' || current_database() || '_admin');
	dml_role TEXT := quote_ident('charmed_' || current_database() || '_dml');
	stmt TEXT;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'charmed_' || db || '_owner') THEN
		EXECUTE 'CREATE ROLE ' || owner_role || ' NOSUPERUSER NOCREATEDB NOCREATEROLE NOLOGIN NOREPLICATION';
		EXECUTE 'CREATE ROLE ' || admin_role || ' NOSUPERUSER NOCREATEDB NOCREATEROLE NOLOGIN NOREPLICATION NOINHERIT IN ROLE ' || owner_role;
		EXECUTE 'CREATE ROLE ' || dml_role || ' NOSUPERUSER NOCREATEDB NOCREATEROLE NOLOGIN NOREPLICATION';
		EXECUTE 'GRANT ' || owner_role || ' TO charmed_admin%[1]s';
	END IF;
	db := quote_ident(db);
	FOREACH stmt IN ARRAY ARRAY[
		'REVOKE CREATE ON DATABASE ' || db || ' FROM charmed_databases_owner',
		'ALTER SCHEMA public OWNER TO ' || owner_role,
		'GRANT CONNECT ON DATABASE ' || db || ' TO ' || admin_role || ', charmed_stats, charmed_read, charmed_dml, charmed_backup, charmed_dba, charmed_admin, charmed_databases_owner',
		'GRANT ' || admin_role || ' TO charmed_admin%[1]s',
		'GRANT CREATE, TEMPORARY ON DATABASE ' || db || ' TO ' || owner_role,
		'ALTER DEFAULT PRIVILEGES FOR ROLE ' || owner_role || ' GRANT SELECT ON TABLES TO ' || admin_role,
		'ALTER DEFAULT PRIVILEGES FOR ROLE ' || owner_role || ' GRANT EXECUTE ON FUNCTIONS TO ' || admin_role,
		'ALTER DEFAULT PRIVILEGES FOR ROLE ' || owner_role || ' GRANT SELECT ON SEQUENCES TO ' || admin_role
	] LOOP
		EXECUTE stmt;
	END LOOP;
END;
$f$ LANGUAGE plpgsql SECURITY DEFINER`

// CreateCharmedDatabase creates database name and a relation user for it exactly as the
// postgresql charm does for a postgresql_client relation (see the comment at the top of this
// file), running the charm's statements as the superuser. Safe to call from parallel subtests
// sharing a cluster; each call needs its own database name (at most 49 bytes, the charm's limit).
func (c *Cluster) CreateCharmedDatabase(t testing.TB, name string, opts CharmedOptions) CharmedDatabase {
	t.Helper()
	if len(name) > 49 {
		t.Fatalf("pgtest: database name %q is longer than the charm's 49 bytes", name)
	}
	id := opts.RelationID
	if id == 0 {
		id = 1
	}
	d := CharmedDatabase{
		Database: name, User: "relation-" + strconv.Itoa(id), Password: randomHex(t, 16),
		Owner: "charmed_" + name + "_owner", Admin: "charmed_" + name + "_admin", DML: "charmed_" + name + "_dml",
	}
	c.charmedMu.Lock()
	defer c.charmedMu.Unlock()
	if !c.charmedReady {
		c.setUpCharmedInstance(t)
		c.charmedReady = true
	}
	q := pq.QuoteIdentifier
	// CREATE DATABASE may not share a query string (an implicit transaction) with SET ROLE.
	c.execSeq(t, "postgres", "SET ROLE charmed_databases_owner", "CREATE DATABASE "+q(name), "RESET ROLE",
		"REVOKE ALL PRIVILEGES ON DATABASE "+q(name)+" FROM PUBLIC")
	c.execSeq(t, name, "SET ROLE charmed_databases_owner", "SELECT set_up_predefined_catalog_roles()", "RESET ROLE")
	c.Exec(t, "CREATE ROLE "+q(d.User)+" LOGIN PASSWORD "+pq.QuoteLiteral(d.Password)+
		" IN ROLE "+q(d.Admin)+", "+q(d.DML))
	c.Exec(t, "GRANT relation_access TO "+q(d.User))
	if opts.LoginHook {
		c.Exec(t, "ALTER ROLE "+q(d.User)+" IN DATABASE "+q(name)+" SET role = "+pq.QuoteLiteral(d.Owner))
	}
	return d
}

// setUpCharmedInstance creates the instance-level roles and installs the catalog-roles function
// in template1, so every database created afterwards has it (as the charm does).
func (c *Cluster) setUpCharmedInstance(t testing.TB) {
	t.Helper()
	for _, s := range charmedInstanceRoles {
		c.Exec(t, s)
	}
	inherit := ""
	if c.ServerVersionNum(t) >= 160000 {
		inherit = " WITH INHERIT FALSE"
	}
	c.ExecIn(t, "template1", fmt.Sprintf(catalogRolesFunction, inherit))
	c.ExecIn(t, "template1", "REVOKE EXECUTE ON FUNCTION set_up_predefined_catalog_roles() FROM PUBLIC")
	c.ExecIn(t, "template1", "GRANT EXECUTE ON FUNCTION set_up_predefined_catalog_roles() TO charmed_databases_owner")
	c.Exec(t, "REVOKE CREATE ON DATABASE template1 FROM charmed_databases_owner")
}

// ServerVersionNum is the server's version as a number (150004 for 15.4).
func (c *Cluster) ServerVersionNum(t testing.TB) int {
	t.Helper()
	var v int
	c.queryRowIn(t, "postgres", "SELECT current_setting('server_version_num')::int", &v)
	return v
}

// ExecIn runs SQL as the superuser in database db.
func (c *Cluster) ExecIn(t testing.TB, db, query string) {
	t.Helper()
	c.execSeq(t, db, query)
}

// execSeq runs statements one by one on a single superuser session in db, so a SET ROLE holds
// for the statements after it.
func (c *Cluster) execSeq(t testing.TB, db string, stmts ...string) {
	t.Helper()
	pool, err := sql.Open("postgres", c.DSN(SuperUser, c.superPass, db))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pool.Conn(ctx)
	if err != nil {
		t.Fatalf("pgtest: connecting to database %s: %v", db, err)
	}
	defer conn.Close()
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			t.Fatalf("pgtest: in database %s: %s: %v", db, s, err)
		}
	}
}

func (c *Cluster) queryRowIn(t testing.TB, db, query string, dest ...any) {
	t.Helper()
	conn, err := sql.Open("postgres", c.DSN(SuperUser, c.superPass, db))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.QueryRowContext(ctx, query).Scan(dest...); err != nil {
		t.Fatalf("pgtest: in database %s: %s: %v", db, query, err)
	}
}
