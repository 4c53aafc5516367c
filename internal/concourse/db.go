package concourse

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// DBConfig is how Concourse reaches PostgreSQL over TCP.
type DBConfig struct {
	Host     string
	Port     int
	User     string
	Password string
	Database string
	SSLMode  string // "" → Concourse's default, disable; else disable|require|verify-ca|verify-full
	// CACert is the path of the PEM CA bundle the server's certificate must chain to
	// (CONCOURSE_POSTGRES_CA_CERT; lib/pq's sslrootcert). The file must exist when Concourse
	// parses its flags (concourse-contract §2.3).
	CACert string
}

const defaultPostgresPort = 5432

// ParseEndpoints reads a PostgreSQL endpoint list as providers publish it,
// "host:port" or "host1:port1,host2:port2", and returns the first entry.
// IPv6 hosts are bracketed ("[::1]:5432"); a bare host or IPv6 address gets
// port 5432.
func ParseEndpoints(endpoints string) (host string, port int, err error) {
	first, _, _ := strings.Cut(endpoints, ",")
	first = strings.TrimSpace(first)
	if first == "" {
		return "", 0, fmt.Errorf("PostgreSQL endpoints %q name no host", endpoints)
	}
	if a, err := netip.ParseAddr(strings.Trim(first, "[]")); err == nil && !strings.Contains(first, "]:") {
		return a.String(), defaultPostgresPort, nil
	}
	h, p, err := net.SplitHostPort(first)
	if err != nil {
		var addrErr *net.AddrError
		if errors.As(err, &addrErr) && addrErr.Err == "missing port in address" {
			h, p = first, strconv.Itoa(defaultPostgresPort)
		} else {
			return "", 0, fmt.Errorf("PostgreSQL endpoint %q is not host:port: %v", first, err)
		}
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("PostgreSQL endpoint %q has an invalid port %q", first, p)
	}
	if h == "" || (!hostnameRE.MatchString(h) && !isIP(h)) {
		return "", 0, fmt.Errorf("PostgreSQL endpoint %q has an invalid host %q", first, h)
	}
	return h, port, nil
}

func isIP(s string) bool { _, err := netip.ParseAddr(s); return err == nil }

func (c DBConfig) sslMode() string {
	if c.SSLMode == "" {
		return "disable"
	}
	return c.SSLMode
}

func (c DBConfig) validate(prefix string) []error {
	var ck checker
	if c.Host == "" {
		ck.add(prefix+"Host", "CONCOURSE_POSTGRES_HOST", "a host is required")
	} else {
		ck.host(prefix+"Host", "CONCOURSE_POSTGRES_HOST", c.Host)
	}
	ck.port(prefix+"Port", "CONCOURSE_POSTGRES_PORT", c.Port)
	if c.User == "" {
		// libpq would fall back to the OS user, "concourse" or "root".
		ck.add(prefix+"User", "CONCOURSE_POSTGRES_USER", "a user is required")
	}
	if c.Database == "" {
		ck.add(prefix+"Database", "CONCOURSE_POSTGRES_DATABASE", "a database name is required")
	}
	if strings.ContainsFunc(c.User+c.Database, isControl) {
		ck.add(prefix+"User", "CONCOURSE_POSTGRES_USER", "user or database contains a control character")
	}
	if strings.ContainsFunc(c.Password, isControl) {
		ck.add(prefix+"Password", "CONCOURSE_POSTGRES_PASSWORD", "the password contains a control character")
	}
	if c.SSLMode != "" {
		ck.oneOf(prefix+"SSLMode", "CONCOURSE_POSTGRES_SSLMODE", c.SSLMode, sslModes)
	}
	if c.CACert != "" && !strings.HasPrefix(c.CACert, "/") {
		ck.add(prefix+"CACert", "CONCOURSE_POSTGRES_CA_CERT", "the CA certificate path must be absolute")
	}
	if c.CACert != "" && c.sslMode() == "disable" {
		ck.add(prefix+"CACert", "CONCOURSE_POSTGRES_CA_CERT", "a CA certificate needs an SSL mode other than disable")
	}
	return ck.errs
}

// Validate reports every bad field as a *FieldError (joined).
func (c DBConfig) Validate() error { return errors.Join(c.validate("")...) }

// Env renders the CONCOURSE_POSTGRES_* variables (for web.env and for
// `concourse migrate`). An empty password or SSL mode is omitted, never
// rendered empty.
func (c DBConfig) Env() []EnvVar {
	vars := []EnvVar{
		{"CONCOURSE_POSTGRES_HOST", c.Host},
		{"CONCOURSE_POSTGRES_PORT", strconv.Itoa(c.Port)},
		{"CONCOURSE_POSTGRES_USER", c.User},
		{"CONCOURSE_POSTGRES_DATABASE", c.Database},
	}
	if c.Password != "" {
		vars = append(vars, EnvVar{"CONCOURSE_POSTGRES_PASSWORD", c.Password})
	}
	if c.SSLMode != "" {
		vars = append(vars, EnvVar{"CONCOURSE_POSTGRES_SSLMODE", c.SSLMode})
	}
	if c.CACert != "" {
		vars = append(vars, EnvVar{"CONCOURSE_POSTGRES_CA_CERT", c.CACert})
	}
	return vars
}

// DSN is a lib/pq key=value connection string for c (values quoted, so a
// password with spaces or quotes is safe). It contains the password: never
// log it.
func (c DBConfig) DSN(connectTimeout time.Duration) string {
	q := func(s string) string {
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
	}
	parts := []string{
		"host=" + q(c.Host),
		"port=" + strconv.Itoa(c.Port),
		"user=" + q(c.User),
		"password=" + q(c.Password),
		"dbname=" + q(c.Database),
		"sslmode=" + c.sslMode(),
	}
	if c.CACert != "" {
		parts = append(parts, "sslrootcert="+q(c.CACert))
	}
	if connectTimeout > 0 {
		secs := int((connectTimeout + time.Second - 1) / time.Second)
		parts = append(parts, "connect_timeout="+strconv.Itoa(secs))
	}
	return strings.Join(parts, " ")
}

// DBErrorKind classifies why CheckDB failed, so callers can pick a status.
type DBErrorKind int

const (
	DBOther       DBErrorKind = iota
	DBAuth                    // credentials rejected (28P01) or not allowed (28000)
	DBMissing                 // database does not exist (3D000)
	DBUnreachable             // no TCP connection (refused, no route, timeout, DNS)
	DBInvalid                 // the configuration itself is wrong
)

// DBError is what CheckDB returns. It names the server, the database and the
// user, never the password.
type DBError struct {
	Host     string
	Port     int
	Database string
	User     string
	Kind     DBErrorKind
	Reason   string // the driver's message, password removed
	Err      error  // the driver's error (its text is redacted too)
}

func (e *DBError) Error() string {
	return fmt.Sprintf("PostgreSQL %s (database %q, user %q): %s: %s",
		net.JoinHostPort(e.Host, strconv.Itoa(e.Port)), e.Database, e.User, e.Reason, e.hint())
}

func (e *DBError) Unwrap() error { return e.Err }

func (e *DBError) hint() string {
	switch e.Kind {
	case DBAuth:
		return "the server rejected these credentials: check the user and password (they may have been rotated) and pg_hba.conf"
	case DBMissing:
		return "the database does not exist: create it or fix the database name"
	case DBUnreachable:
		return "the server cannot be reached: check the host, the port, firewalls and that PostgreSQL is running"
	case DBInvalid:
		return "fix the connection settings"
	}
	return "see the PostgreSQL server log"
}

// CheckDB connects to PostgreSQL as Concourse will and pings it, within
// timeout. It answers nil or a *DBError whose Kind tells wrong credentials,
// a missing database and an unreachable server apart.
func CheckDB(ctx context.Context, c DBConfig, timeout time.Duration) error {
	fail := func(kind DBErrorKind, reason string, err error) error {
		reason = redact(reason, c.Password)
		return &DBError{Host: c.Host, Port: c.Port, Database: c.Database, User: c.User, Kind: kind, Reason: reason, Err: redactedError{err, c.Password}}
	}
	if err := c.Validate(); err != nil {
		return fail(DBInvalid, err.Error(), err)
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pq.NewConnector(c.DSN(timeout))
	if err != nil {
		return fail(DBInvalid, err.Error(), err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1)
	err = db.PingContext(ctx)
	if err == nil {
		return nil
	}
	if pqErr := pq.As(err); pqErr != nil {
		msg := pqErr.Message + " (SQLSTATE " + string(pqErr.Code) + ")"
		switch pqErr.Code {
		case "28P01", "28000":
			return fail(DBAuth, msg, err)
		case "3D000":
			return fail(DBMissing, msg, err)
		}
		return fail(DBOther, msg, err)
	}
	var netErr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return fail(DBUnreachable, fmt.Sprintf("no answer within %s", timeout), err)
	case errors.As(err, &dnsErr), errors.As(err, &opErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fail(DBUnreachable, err.Error(), err)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fail(DBUnreachable, err.Error(), err)
	}
	return fail(DBOther, err.Error(), err)
}

// redactedError keeps the driver's error for errors.Is/As while making sure
// its text can never carry the password.
type redactedError struct {
	err      error
	password string
}

func (r redactedError) Error() string {
	if r.err == nil {
		return ""
	}
	return redact(r.err.Error(), r.password)
}

// redact removes a secret from a message. Very short secrets are left alone:
// replacing every "a" would garble the message and such a secret cannot be
// recognised in it anyway.
func redact(msg, secret string) string {
	if len(secret) < 4 {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "<redacted>")
}

func (r redactedError) Unwrap() error { return r.err }
