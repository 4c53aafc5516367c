package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// pgConfig is flag.PostgresConfig (§2.3): socket overrides host/port, user falls back to the OS user.
type pgConfig struct {
	host, socket, user, password, database, sslmode, appName string
	port                                                     int64
	caCert, clientCert, clientKey                            string
	connectTimeout                                           time.Duration
}

func pgConfigFrom(o *parsed) pgConfig {
	c := pgConfig{
		host: o.str("postgres-host"), port: o.integer("postgres-port"), socket: o.str("postgres-socket"),
		user: o.str("postgres-user"), password: o.str("postgres-password"),
		database: o.str("postgres-database"), sslmode: o.str("postgres-sslmode"),
		appName: o.str("postgres-application-name"), // empty on 7.14: the option does not exist there
		caCert:  o.str("postgres-ca-cert"), clientCert: o.str("postgres-client-cert"),
		clientKey: o.str("postgres-client-key"), connectTimeout: o.duration("postgres-connect-timeout"),
	}
	if c.user == "" {
		// libpq's rule, which the real drivers follow and the error messages show (§2.1).
		if u, err := user.Current(); err == nil {
			c.user = u.Username
		}
	}
	return c
}

// dsn renders the same sorted key='value' string as flag.PostgresConfig.ConnectionString.
func (c pgConfig) dsn() string {
	props := map[string]string{"dbname": c.database, "sslmode": c.sslmode, "user": c.user}
	if c.password != "" {
		props["password"] = c.password
	}
	if c.socket != "" {
		props["host"] = c.socket
	} else {
		props["host"] = c.host
		props["port"] = strconv.FormatInt(c.port, 10)
	}
	if c.caCert != "" {
		props["sslrootcert"] = c.caCert
	}
	if c.clientCert != "" {
		props["sslcert"] = c.clientCert
	}
	if c.clientKey != "" {
		props["sslkey"] = c.clientKey
	}
	if c.connectTimeout != 0 {
		props["connect_timeout"] = strconv.Itoa(int(c.connectTimeout.Seconds()))
	}
	if c.appName != "" {
		props["application_name"] = c.appName
	}
	var pairs []string
	for k, v := range props {
		esc := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v)
		pairs = append(pairs, fmt.Sprintf("%s='%s'", k, esc))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, " ")
}

// connectError renders a lib/pq failure in the shape pgx prints (§2.1), because charms and operators
// match on it: "failed to connect to `user=U database=D`: <addr> (<host>): <reason>".
func (c pgConfig) connectError(err error) error {
	addr, host := net.JoinHostPort(c.host, strconv.FormatInt(c.port, 10)), c.host
	if c.socket != "" {
		addr, host = fmt.Sprintf("%s/.s.PGSQL.%d", c.socket, c.port), c.socket
	}
	var reason string
	var pqErr *pq.Error
	var opErr *net.OpError
	switch {
	case errors.As(err, &pqErr) && pqErr.Code == "28P01":
		reason = "failed SASL auth: " + pgxText(pqErr)
	case errors.As(err, &pqErr):
		reason = "server error: " + pgxText(pqErr)
	case errors.As(err, &opErr):
		reason = "dial error: " + opErr.Error()
	default:
		reason = err.Error()
	}
	return fmt.Errorf("failed to connect to `user=%s database=%s`: %s (%s): %s", c.user, c.database, addr, host, reason)
}

// pgxText is pgconn.PgError's format: "SEVERITY: message (SQLSTATE code)".
func pgxText(e *pq.Error) string {
	return fmt.Sprintf("%s: %s (SQLSTATE %s)", e.Severity, e.Message, e.Code)
}

// sqlError converts query errors to pgx's text (e.g. migrate --current-db-version on a fresh DB,
// §5: `ERROR: relation "migrations_history" does not exist (SQLSTATE 42P01)`).
func sqlError(err error) error {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return errors.New(pgxText(pqErr))
	}
	return err
}

// openDB connects once and pings, so configuration errors surface at start like the real web.
func openDB(ctx context.Context, c pgConfig, maxConns int) (*sql.DB, error) {
	db, err := sql.Open("postgres", c.dsn())
	if err != nil {
		return nil, c.connectError(err)
	}
	if maxConns > 0 {
		db.SetMaxOpenConns(maxConns)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, c.connectError(err)
	}
	return db, nil
}

// migrationLockID is the advisory lock the fake's migrations take, so parallel web/migrate runs
// serialise as real ones do (§5). The value is ours.
const migrationLockID = 0x636f6e63

// schema is the fake's own bookkeeping. migrations_history has the real columns (§5) because
// charms read it through `migrate --current-db-version`; workers and access_tokens are the fake's
// stand-ins for state real web nodes share through the database.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS migrations_history (version bigint, tstamp timestamp with time zone, direction varchar, status varchar, dirty boolean)`,
	`CREATE TABLE IF NOT EXISTS workers (name text PRIMARY KEY, data jsonb NOT NULL, state text NOT NULL, ephemeral boolean NOT NULL DEFAULT false, expires timestamp with time zone)`,
	`CREATE TABLE IF NOT EXISTS access_tokens (token text PRIMARY KEY, claims jsonb NOT NULL)`,
}

// withMigrationLock runs fn on one connection holding the advisory lock.
func withMigrationLock(ctx context.Context, db *sql.DB, fn func(*sql.Conn) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLockID); err != nil {
		return sqlError(err)
	}
	// Unlock with a fresh context: the caller's may be cancelled, and a session lock outlives errors.
	defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, migrationLockID)
	for _, stmt := range schema {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return sqlError(err)
		}
	}
	return fn(conn)
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// currentDBVersion is the real migrator's rule, as the real binaries showed it: the newest
// non-failed row decides. An "up" row is the version. A "down" row of a migration this binary has
// means the one before it in this binary's list (0 before the first); a "down" row of a migration
// it does not have is reported as is. So after an 8.2 binary migrates down to 7.14's schema, the
// 7.14 binary reports the newest migration that was undone, above its own supported version (real
// 7.14.3: 1747084615), while the 8.2 binary reports 7.14's version. The stand-in knows one
// migration per release line, so it counts every version up to its supported one as its own and
// takes the newest line version below it as "the one before"; that reads histories the real
// binaries wrote the same way they do. It returns 0 for an empty history.
func currentDBVersion(ctx context.Context, q querier, f flavour) (int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT version, direction FROM migrations_history WHERE status != 'failed' ORDER BY tstamp DESC LIMIT 1`)
	if err != nil {
		return 0, sqlError(err)
	}
	defer rows.Close()
	if !rows.Next() {
		return 0, sqlError(rows.Err())
	}
	var v int64
	var dir string
	if err := rows.Scan(&v, &dir); err != nil {
		return 0, sqlError(err)
	}
	if dir != "down" {
		return v, nil
	}
	if v > f.supportedDBVersion() {
		return v, nil
	}
	var before int64
	for _, k := range f.knownMigrations() {
		if k < v {
			before = k
		}
	}
	return before, nil
}

func recordMigration(ctx context.Context, conn *sql.Conn, v int64, direction string) error {
	// clock_timestamp, not now(): several rows in one session must still order by time.
	_, err := conn.ExecContext(ctx, `INSERT INTO migrations_history (version, tstamp, direction, status, dirty) VALUES ($1, clock_timestamp(), $2, 'passed', false)`, v, direction)
	return sqlError(err)
}

// migrateTo moves the recorded schema to target, one known line at a time, like a migrator running
// each file. Like the real one it takes any target: up, it applies the migrations up to the target
// (none for a target below the first; all for one above the newest); down, it undoes those above.
func migrateTo(ctx context.Context, conn *sql.Conn, f flavour, target int64) error {
	known := f.knownMigrations()
	cur, err := currentDBVersion(ctx, conn, f)
	if err != nil {
		return err
	}
	switch {
	case target > cur:
		for _, v := range known {
			if v > cur && v <= target {
				if err := recordMigration(ctx, conn, v, "up"); err != nil {
					return err
				}
			}
		}
	case target < cur:
		for i := len(known) - 1; i >= 0; i-- {
			if v := known[i]; v > target && v <= cur {
				if err := recordMigration(ctx, conn, v, "down"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// migrateToLatest is what `web` does on start and `migrate --migrate-to-latest-version` does. An
// older binary on a newer schema does not refuse (§0.9): it leaves the schema alone.
func migrateToLatest(ctx context.Context, conn *sql.Conn, f flavour) error {
	cur, err := currentDBVersion(ctx, conn, f)
	if err != nil {
		return err
	}
	if cur >= f.supportedDBVersion() {
		return nil
	}
	return migrateTo(ctx, conn, f, f.supportedDBVersion())
}

func containsInt(list []int64, v int64) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
