package concourse

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// The postgresql charm (16/stable) does not make the relation user own its database. It creates
// charmed_<db>_owner, which owns schema public and alone may CREATE in it; the relation user is a
// member of charmed_<db>_admin (NOINHERIT, itself a member of the owner role: the user may
// SET ROLE to the owner but does not hold its privileges) and of charmed_<db>_dml, which holds no
// privileges. Its login hook is meant to SET ROLE to the owner at every login; when it does not,
// Concourse's sessions run as the bare relation user: migrations fail ("permission denied for
// schema public"), and tables created as the owner can be read (default privileges for admin)
// but not written: dex's INSERT into auth_request fails and nobody can log in.
//
// Granting DML on existing tables, as the Python charm did, is not enough: Concourse creates
// tables at run time (triggers on teams and pipelines create team_build_events_<id> and
// pipeline_build_events_<id>, and drop them again), which needs CREATE in schema public and
// ownership. So every Concourse session must run as the owner role, which is what the charm's
// role model intends ("auto-escalated to the *_owner user, which will own every object").
// PrepareRoleModel makes that so with a per-database default of the relation user's own
// session (ALTER ROLE ... IN DATABASE ... SET role), which any role may set for itself, which
// applies to every driver and process (migrate, web, dex), and which disappears with the user.
// It also grants DML on everything the owner has and will create to charmed_<db>_dml, so that a
// session which is not escalated (an already-running web, a pooler that resets the session) can
// still read and write, and so that a new relation user (after re-relating) inherits them.

// RoleModel says what PrepareRoleModel found and changed.
type RoleModel struct {
	Owner string // charmed_<db>_owner; "" when the database is not in the charm's role model
	DML   string // the role granted DML: charmed_<db>_dml, or the user when that role is absent
	// DefaultRoleSet is true when this call made the user's sessions start as Owner.
	DefaultRoleSet bool
	// TablesGranted and SequencesGranted count objects that lacked a DML grant and got one.
	TablesGranted, SequencesGranted int
}

// Changed reports whether the call changed anything.
func (m RoleModel) Changed() bool {
	return m.DefaultRoleSet || m.TablesGranted > 0 || m.SequencesGranted > 0
}

// PrepareRoleModel connects as c.User and, if the database is in the postgresql charm's role
// model (the user does not own the database, charmed_<db>_owner exists and the user may SET ROLE
// to it), makes the user's sessions in this database start as the owner role and grants DML on
// every table and sequence in schema public (now and, by default privileges, later) to
// charmed_<db>_dml. It is idempotent, needs no superuser, and does nothing on a PostgreSQL where
// the user owns the database. Call it before migrating and before every web start. Errors are
// *DBError and never contain the password.
func PrepareRoleModel(ctx context.Context, c DBConfig, timeout time.Duration) (RoleModel, error) {
	fail := func(kind DBErrorKind, reason string, err error) error {
		reason = redact(reason, c.Password)
		return &DBError{Host: c.Host, Port: c.Port, Database: c.Database, User: c.User, Kind: kind, Reason: reason, Err: redactedError{err, c.Password}}
	}
	if err := c.Validate(); err != nil {
		return RoleModel{}, fail(DBInvalid, err.Error(), err)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	connector, err := pq.NewConnector(c.DSN(timeout))
	if err != nil {
		return RoleModel{}, fail(DBInvalid, err.Error(), err)
	}
	pool := sql.OpenDB(connector)
	defer pool.Close()
	// One session: SET ROLE holds for the statements after it.
	conn, err := pool.Conn(ctx)
	if err == nil {
		defer conn.Close()
		var m RoleModel
		if m, err = prepareRoleModel(ctx, conn, c.Database); err == nil {
			return m, nil
		}
	}
	kind, reason := DBOther, err.Error()
	if pe := pq.As(err); pe != nil {
		reason += " (SQLSTATE " + string(pe.Code) + ")"
		switch pe.Code {
		case "28P01", "28000":
			kind = DBAuth
		case "3D000":
			kind = DBMissing
		}
	}
	return RoleModel{}, fail(kind, "preparing the database for Concourse: "+reason, err)
}

// errNoSetRole is returned when the owner role exists but the user may not become it.
var errNoSetRole = errors.New("not allowed to SET ROLE")

func prepareRoleModel(ctx context.Context, conn *sql.Conn, database string) (RoleModel, error) {
	var m RoleModel
	exec := func(what, q string) error {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	// A login hook or a default set by an earlier call may have made us the owner already;
	// check and alter as the user itself (ALTER ROLE on oneself is what needs no privilege).
	if err := exec("dropping any escalated role", "SET ROLE NONE"); err != nil {
		return m, err
	}
	owner := "charmed_" + database + "_owner"
	dml := "charmed_" + database + "_dml"
	var (
		user                string
		version             int
		ownsDB, hasOwner    bool
		hasDML, canSetOwner bool
		defaultRole         sql.NullString
	)
	// pg_has_role's SET mode is new in 16, where MEMBER no longer implies that SET ROLE works.
	err := conn.QueryRowContext(ctx, `
SELECT session_user, current_setting('server_version_num')::int,
       (SELECT datdba FROM pg_database WHERE datname = current_database()) = (SELECT oid FROM pg_roles WHERE rolname = session_user),
       EXISTS (SELECT FROM pg_roles WHERE rolname = $1),
       EXISTS (SELECT FROM pg_roles WHERE rolname = $2),
       (SELECT cfg FROM pg_db_role_setting s, unnest(s.setconfig) cfg
         WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = session_user)
           AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND cfg LIKE 'role=%' LIMIT 1)`, owner, dml).
		Scan(&user, &version, &ownsDB, &hasOwner, &hasDML, &defaultRole)
	if err != nil {
		return m, fmt.Errorf("reading the database's roles: %w", err)
	}
	if ownsDB || !hasOwner {
		return m, nil // a plain PostgreSQL: the user owns what it creates
	}
	mode := "MEMBER"
	if version >= 160000 {
		mode = "SET"
	}
	if err := conn.QueryRowContext(ctx, "SELECT pg_has_role(session_user, $1, '"+mode+"')", owner).Scan(&canSetOwner); err != nil {
		return m, fmt.Errorf("checking membership of %s: %w", owner, err)
	}
	if !canSetOwner {
		return m, fmt.Errorf("%w %s, the role that owns schema public: the tables Concourse creates would be unusable; "+
			"relate the charm to PostgreSQL again so that the postgresql charm grants this user %s", errNoSetRole, owner, "charmed_"+database+"_admin")
	}
	m.Owner, m.DML = owner, dml
	if !hasDML {
		m.DML = user
	}

	if want := "role=" + owner; !defaultRole.Valid || defaultRole.String != want {
		// The value is a plain string to the server: quote it as a literal, not an identifier.
		if err := exec("making "+owner+" the default role of "+user,
			"ALTER ROLE SESSION_USER IN DATABASE "+pq.QuoteIdentifier(database)+" SET role = "+pq.QuoteLiteral(owner)); err != nil {
			return m, err
		}
		m.DefaultRoleSet = true
	}

	if err := exec("switching to "+owner, "SET ROLE "+pq.QuoteIdentifier(owner)); err != nil {
		return m, err
	}
	// Count first so that an unchanged database is not rewritten (GRANT updates pg_class rows
	// even when nothing changes) and so that the result says what happened.
	missing := func(check, kinds, privs string) (int, error) {
		var n int
		err := conn.QueryRowContext(ctx, `
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = ANY ($1::"char"[]) AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = $2)
   AND NOT (SELECT bool_and(`+check+`($3, c.oid, p)) FROM unnest($4::text[]) p)`,
			"{"+kinds+"}", owner, m.DML, "{"+privs+"}").Scan(&n)
		return n, err
	}
	q := pq.QuoteIdentifier
	var errs []error
	if m.TablesGranted, err = missing("has_table_privilege", "r,p,v,m,f", "SELECT,INSERT,UPDATE,DELETE"); err != nil {
		return m, fmt.Errorf("listing tables without grants to %s: %w", m.DML, err)
	}
	if m.TablesGranted > 0 {
		errs = append(errs, exec("granting DML on the tables of schema public to "+m.DML,
			"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "+q(m.DML)))
	}
	if m.SequencesGranted, err = missing("has_sequence_privilege", "S", "USAGE,SELECT,UPDATE"); err != nil {
		return m, fmt.Errorf("listing sequences without grants to %s: %w", m.DML, err)
	}
	if m.SequencesGranted > 0 {
		errs = append(errs, exec("granting the sequences of schema public to "+m.DML,
			"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "+q(m.DML)))
	}
	// For what later migrations (an upgrade) and the web itself create as the owner.
	errs = append(errs,
		exec("setting default privileges on tables for "+m.DML,
			"ALTER DEFAULT PRIVILEGES FOR ROLE "+q(owner)+" IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "+q(m.DML)),
		exec("setting default privileges on sequences for "+m.DML,
			"ALTER DEFAULT PRIVILEGES FOR ROLE "+q(owner)+" IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO "+q(m.DML)),
		exec("leaving "+owner, "RESET ROLE"))
	if err := errors.Join(errs...); err != nil {
		return m, err
	}
	return m, nil
}

// String is a one-line account of m for logs.
func (m RoleModel) String() string {
	if m.Owner == "" {
		return "the user owns the database: nothing to prepare"
	}
	var parts []string
	if m.DefaultRoleSet {
		parts = append(parts, "sessions now start as "+m.Owner)
	}
	if m.TablesGranted > 0 || m.SequencesGranted > 0 {
		parts = append(parts, fmt.Sprintf("granted %s DML on %d tables and %d sequences", m.DML, m.TablesGranted, m.SequencesGranted))
	}
	if len(parts) == 0 {
		return "sessions start as " + m.Owner + " and " + m.DML + " holds DML on every table: nothing to change"
	}
	return strings.Join(parts, "; ")
}
