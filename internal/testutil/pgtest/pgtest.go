// Package pgtest starts a real, throwaway PostgreSQL cluster for tests:
// initdb in a temporary directory, run as the "postgres" OS user when the
// test runs as root, listening on a free port of a loopback (or other given)
// address, stopped and removed when the test ends.
//
// Starting a cluster takes about a second; tests that need one should start
// it once in a parent test and share it between parallel subtests. When the
// PostgreSQL binaries are missing the test is skipped with the reason, except
// under CI=true, where it fails: no suite may pass by silently skipping.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
)

// Options configure Start.
type Options struct {
	// Addr is the IP address to listen on; "" means 127.0.0.1.
	Addr string
	// TLS turns on SSL with a server certificate for Addr signed by a throwaway CA
	// (Cluster.CACertPEM), as the PostgreSQL charm does once related to a TLS provider.
	TLS bool
}

// Cluster is a running throwaway PostgreSQL.
type Cluster struct {
	addr      string
	port      int
	bin       string
	dir       string // base dir: data/, sock/, log
	superPass string
	cred      *syscall.Credential // nil when running initdb/pg_ctl as ourselves
	caPEM     []byte              // with Options.TLS

	charmedMu    sync.Mutex // CreateCharmedDatabase sets up the instance roles once
	charmedReady bool
}

// CACertPEM is the CA that signed the server certificate (nil without Options.TLS).
func (c *Cluster) CACertPEM() []byte { return c.caPEM }

// SuperUser is the cluster's superuser role.
const SuperUser = "postgres"

// Start starts a cluster and registers its shutdown with t.Cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1"
	}
	if net.ParseIP(addr) == nil {
		t.Fatalf("pgtest: Addr %q is not an IP address", addr)
	}
	bin, err := findBinDir()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %v (CI=true: install PostgreSQL, e.g. apt-get install postgresql)", err)
		}
		t.Skipf("pgtest: %v; install PostgreSQL (apt-get install postgresql) to run this test", err)
	}

	c := &Cluster{addr: addr, bin: bin, superPass: randomHex(t, 16)}
	c.dir = t.TempDir()
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root, so initdb and the server run as
		// the postgres user; it must be able to reach and own its dirs.
		cred, err := postgresCredential()
		if err != nil {
			t.Fatalf("pgtest: running as root needs a %q OS user: %v", SuperUser, err)
		}
		c.cred = cred
		// t.TempDir's parent is 0700 root; allow traversal only.
		for _, d := range []string{filepath.Dir(c.dir), c.dir} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatalf("pgtest: %v", err)
			}
		}
	}
	for _, d := range []string{c.dataDir(), c.sockDir()} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		c.chown(t, d)
	}
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.superPass+"\n"), 0o600); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c.chown(t, pwfile)

	// -N: no fsync; a throwaway cluster does not need durability.
	c.cmd(t, "initdb", "-D", c.dataDir(), "-U", SuperUser, "--pwfile="+pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "-N")
	os.Remove(pwfile)

	// Any address may connect with a password; only Addr is listened on.
	hba, err := os.OpenFile(filepath.Join(c.dataDir(), "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	fmt.Fprintf(hba, "host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
	hba.Close()

	if opts.TLS {
		c.enableTLS(t)
	}
	// A free port can be taken between our probe and the server's bind;
	// retry a few times with a new one.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c.port = freePort(t, addr)
		lastErr = c.start(t)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("pgtest: starting PostgreSQL: %v\n%s", lastErr, c.serverLog())
	}
	t.Cleanup(func() {
		// immediate: no checkpoint, the data is thrown away anyway.
		out, err := c.command("pg_ctl", "stop", "-D", c.dataDir(), "-m", "immediate", "-w", "-t", "30").CombinedOutput()
		if err != nil {
			t.Errorf("pgtest: stopping PostgreSQL: %v\n%s", err, out)
		}
	})
	return c
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) sockDir() string { return filepath.Join(c.dir, "sock") }
func (c *Cluster) logFile() string { return filepath.Join(c.dir, "sock", "server.log") }

func (c *Cluster) start(t testing.TB) error {
	conf, err := os.OpenFile(filepath.Join(c.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	// Later lines win, so each retry's port overrides the previous one.
	fmt.Fprintf(conf, "\nlisten_addresses = '%s'\nport = %d\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n",
		c.addr, c.port, c.sockDir())
	conf.Close()
	out, err := c.command("pg_ctl", "start", "-D", c.dataDir(), "-l", c.logFile(), "-w", "-t", "30").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func (c *Cluster) serverLog() string {
	b, _ := os.ReadFile(c.logFile())
	return string(b)
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=" + c.bin + ":/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

func (c *Cluster) cmd(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := c.command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("pgtest: %s: %v\n%s", name, err, out)
	}
}

func (c *Cluster) chown(t testing.TB, path string) {
	t.Helper()
	if c.cred == nil {
		return
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Host is the address the cluster listens on.
func (c *Cluster) Host() string { return c.addr }

// Port is the cluster's TCP port.
func (c *Cluster) Port() int { return c.port }

// SuperPassword is the password of SuperUser.
func (c *Cluster) SuperPassword() string { return c.superPass }

// DSN is a lib/pq connection string over TCP (password authentication).
func (c *Cluster) DSN(user, pass, db string) string {
	q := func(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'" }
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable connect_timeout=5",
		c.addr, c.port, q(user), q(pass), q(db))
}

// Exec runs SQL as the superuser.
func (c *Cluster) Exec(t testing.TB, query string) {
	t.Helper()
	db, err := sql.Open("postgres", c.DSN(SuperUser, c.superPass, "postgres"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, query); err != nil {
		t.Fatalf("pgtest: %s: %v", query, err)
	}
}

// CreateRole creates a login role with a password.
func (c *Cluster) CreateRole(t testing.TB, name, password string) {
	t.Helper()
	c.Exec(t, "CREATE ROLE "+pq.QuoteIdentifier(name)+" LOGIN PASSWORD "+pq.QuoteLiteral(password))
}

// CreateDatabase creates a database owned by owner.
func (c *Cluster) CreateDatabase(t testing.TB, name, owner string) {
	t.Helper()
	c.Exec(t, "CREATE DATABASE "+pq.QuoteIdentifier(name)+" OWNER "+pq.QuoteIdentifier(owner))
}

// findBinDir prefers the newest /usr/lib/postgresql/<v>/bin (Debian keeps
// initdb and pg_ctl off PATH there), then PATH.
func findBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		d := filepath.Dir(p)
		if isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or PATH")
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup(SuperUser)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func freePort(t testing.TB, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatalf("pgtest: finding a free port on %s: %v", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return hex.EncodeToString(b)
}
