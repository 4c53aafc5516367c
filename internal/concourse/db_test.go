package concourse

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
)

func TestParseEndpoints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		host string
		port int
		err  string
	}{
		{"10.0.0.5:5432", "10.0.0.5", 5432, ""},
		{"10.0.0.5:6432,10.0.0.6:5432", "10.0.0.5", 6432, ""},
		{" db.example.com:5433 , x:1", "db.example.com", 5433, ""},
		{"[::1]:5432", "::1", 5432, ""},
		{"[fd00::5]:6000,[fd00::6]:6000", "fd00::5", 6000, ""},
		{"10.0.0.5", "10.0.0.5", 5432, ""},
		{"db", "db", 5432, ""},
		{"::1", "::1", 5432, ""},
		{"[::1]", "::1", 5432, ""},
		{"", "", 0, "name no host"},
		{",10.0.0.5:5432", "", 0, "name no host"},
		{"10.0.0.5:abc", "", 0, "invalid port"},
		{"10.0.0.5:0", "", 0, "invalid port"},
		{"10.0.0.5:70000", "", 0, "invalid port"},
		{":5432", "", 0, "invalid host"},
		{"bad host:5432", "", 0, "invalid host"},
	} {
		host, port, err := ParseEndpoints(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseEndpoints(%q) = %q, %d, %v; want error %q", tc.in, host, port, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("ParseEndpoints(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestDBConfigDSN(t *testing.T) {
	t.Parallel()
	c := DBConfig{Host: "10.0.0.5", Port: 5432, User: "u", Password: `it's a \ pass`, Database: "atc"}
	want := `host='10.0.0.5' port=5432 user='u' password='it\'s a \\ pass' dbname='atc' sslmode=disable connect_timeout=3`
	if got := c.DSN(2500 * time.Millisecond); got != want {
		t.Errorf("DSN = %s\nwant  %s", got, want)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// TestCheckDB runs against a real throwaway PostgreSQL (DEVELOPERS.md: never
// a mock). One cluster serves all subtests.
func TestCheckDB(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{})
	const password = "Corr3ct-Horse-Battery"
	pg.CreateRole(t, "concourse", password)
	pg.CreateDatabase(t, "atc", "concourse")
	good := DBConfig{Host: pg.Host(), Port: pg.Port(), User: "concourse", Password: password, Database: "atc"}

	for _, tc := range []struct {
		name    string
		mutate  func(*DBConfig)
		kind    DBErrorKind
		mention []string
	}{
		{"good", func(*DBConfig) {}, -1, nil},
		{"good-explicit-sslmode-disable", func(c *DBConfig) { c.SSLMode = "disable" }, -1, nil},
		{"wrong-password", func(c *DBConfig) { c.Password = "Wr0ng-Horse-Battery" }, DBAuth,
			[]string{"28P01", "password authentication failed", "check the user and password"}},
		{"unknown-user", func(c *DBConfig) { c.User = "nobody_here" }, DBAuth, []string{"nobody_here", "28P01"}},
		{"missing-database", func(c *DBConfig) { c.Database = "no_such_db" }, DBMissing,
			[]string{"3D000", `"no_such_db"`, "does not exist"}},
		{"unreachable", func(c *DBConfig) { c.Port = closedPort(t) }, DBUnreachable, []string{"cannot be reached", "refused"}},
		{"invalid", func(c *DBConfig) { c.SSLMode = "prefer" }, DBInvalid, []string{"SSLMode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tc.mutate(&c)
			err := CheckDB(context.Background(), c, 10*time.Second)
			if tc.kind == -1 {
				if err != nil {
					t.Fatalf("CheckDB = %v; want nil", err)
				}
				return
			}
			var dbErr *DBError
			if !errors.As(err, &dbErr) {
				t.Fatalf("CheckDB = %v (%T); want a *DBError", err, err)
			}
			if dbErr.Kind != tc.kind {
				t.Errorf("Kind = %d; want %d (%v)", dbErr.Kind, tc.kind, err)
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, s := range append(tc.mention, net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), `database "`+c.Database+`"`, `user "`+c.User+`"`) {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
			// The password never shows, in the message or the wrapped error.
			for _, p := range []string{password, c.Password} {
				if strings.Contains(msg, p) || strings.Contains(errors.Unwrap(err).Error(), p) {
					t.Errorf("error %q leaks the password", msg)
				}
			}
		})
	}
}

func TestCheckDBTimeout(t *testing.T) {
	t.Parallel()
	// A listener that accepts but never answers: the startup packet gets no
	// reply, so only the timeout ends the attempt.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c := DBConfig{Host: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port, User: "u", Password: "secret-pw", Database: "atc"}
	start := time.Now()
	err = CheckDB(context.Background(), c, 500*time.Millisecond)
	var dbErr *DBError
	if !errors.As(err, &dbErr) || dbErr.Kind != DBUnreachable {
		t.Fatalf("CheckDB against a silent server = %v; want DBUnreachable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("CheckDB took %s despite a 500ms timeout", d)
	}
}

// A server with TLS (the PostgreSQL charm related to a TLS provider): verify-ca with the CA the
// relation hands over connects; a wrong CA is refused before any password is sent.
func TestCheckDBTLS(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{TLS: true})
	pg.CreateRole(t, "concourse", "Tls-Horse-Battery")
	pg.CreateDatabase(t, "atc", "concourse")
	dir := t.TempDir()
	goodCA, otherCA := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other.pem")
	os.WriteFile(goodCA, pg.CACertPEM(), 0o644)
	other := pgtest.Start(t, pgtest.Options{TLS: true}) // a CA that did not sign this server
	os.WriteFile(otherCA, other.CACertPEM(), 0o644)
	c := DBConfig{Host: pg.Host(), Port: pg.Port(), User: "concourse", Password: "Tls-Horse-Battery", Database: "atc", SSLMode: "verify-ca", CACert: goodCA}
	if err := CheckDB(context.Background(), c, 10*time.Second); err != nil {
		t.Fatalf("verify-ca with the right CA: %v", err)
	}
	env := map[string]string{}
	for _, v := range c.Env() {
		env[v.Name] = v.Value
	}
	if env["CONCOURSE_POSTGRES_SSLMODE"] != "verify-ca" || env["CONCOURSE_POSTGRES_CA_CERT"] != goodCA {
		t.Errorf("env = %v", env)
	}
	c.CACert = otherCA
	err := CheckDB(context.Background(), c, 10*time.Second)
	if err == nil || strings.Contains(err.Error(), c.Password) {
		t.Errorf("verify-ca with another CA: %v; want a refusal without the password", err)
	}
	if err := (DBConfig{Host: "h", Port: 1, User: "u", Database: "d", CACert: goodCA}).Validate(); err == nil {
		t.Error("a CA certificate with sslmode disable was accepted")
	}
}
