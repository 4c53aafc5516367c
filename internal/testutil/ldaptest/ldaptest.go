// Package ldaptest starts a throwaway OpenLDAP server (Debian's slapd) for a test: its own
// config and database in a temp dir, listening on a free loopback port, killed by pid when the
// test ends. Tests that need it skip when slapd is not installed, except under CI=true, where
// they fail (apt-get install slapd ldap-utils).
package ldaptest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running slapd with one suffix, an admin (the bind user) and the users and groups
// given to Start.
type Server struct {
	Host   string // 127.0.0.1:port, the form --ldap-host takes
	BaseDN string // dc=example,dc=org
	BindDN string // cn=admin,<BaseDN>
	BindPW string
	// PeopleDN and GroupsDN hold the users (uid=<name>) and the groups (cn=<name>, posixGroup
	// with memberUid).
	PeopleDN, GroupsDN string
}

// User is a person entry; Groups are the groups listing it (by memberUid).
type User struct {
	UID, Password, Mail, Name string
	Groups                    []string
}

// Require returns the path of slapd, or skips t (fails it under CI=true) when it is missing.
func Require(t testing.TB) string {
	t.Helper()
	for _, tool := range []string{"slapd", "slapadd"} {
		if _, err := lookPath(tool); err != nil {
			msg := fmt.Sprintf("ldaptest: %s not found (apt-get install slapd ldap-utils)", tool)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + " (CI=true: these tests must run)")
			}
			t.Skip(msg)
		}
	}
	p, _ := lookPath("slapd")
	return p
}

func lookPath(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", tool)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// Start runs slapd with users loaded, and stops it when t ends.
func Start(t testing.TB, users []User) *Server {
	t.Helper()
	slapd := Require(t)
	slapadd, _ := lookPath("slapadd")
	dir := t.TempDir()
	s := &Server{BaseDN: "dc=example,dc=org", BindPW: "ldap-admin-pw-" + strconv.Itoa(os.Getpid())}
	s.BindDN = "cn=admin," + s.BaseDN
	s.PeopleDN = "ou=people," + s.BaseDN
	s.GroupsDN = "ou=groups," + s.BaseDN
	dbDir := filepath.Join(dir, "db")
	if err := os.Mkdir(dbDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "slapd.conf")
	writeFile(t, conf, fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile %[1]s/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 16777216
suffix "%[2]s"
rootdn "%[3]s"
rootpw %[4]s
directory %[5]s
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read
`, dir, s.BaseDN, s.BindDN, s.BindPW, dbDir))
	ldif := filepath.Join(dir, "data.ldif")
	writeFile(t, ldif, s.ldif(users))
	if out, err := exec.Command(slapadd, "-f", conf, "-l", ldif).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}
	port := freePort(t)
	s.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var logBuf bytes.Buffer
	cmd := exec.Command(slapd, "-d", "0", "-h", "ldap://"+s.Host+"/", "-f", conf)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting slapd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Host, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-done:
			t.Fatalf("slapd exited: %v\n%s", cmd.ProcessState, logBuf.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd does not listen on %s: %v", s.Host, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Server) ldif(users []User) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n", s.BaseDN)
	fmt.Fprintf(&b, "dn: %s\nobjectClass: organizationalUnit\nou: people\n\n", s.PeopleDN)
	fmt.Fprintf(&b, "dn: %s\nobjectClass: organizationalUnit\nou: groups\n\n", s.GroupsDN)
	groups := map[string][]string{}
	var order []string
	for i, u := range users {
		fmt.Fprintf(&b, "dn: uid=%s,%s\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: %s\ncn: %s\nsn: %s\nmail: %s\nuidNumber: %d\ngidNumber: %d\nhomeDirectory: /home/%s\nuserPassword: %s\n\n",
			u.UID, s.PeopleDN, u.UID, u.Name, u.Name, u.Mail, 10000+i, 10000+i, u.UID, u.Password)
		for _, g := range u.Groups {
			if _, ok := groups[g]; !ok {
				order = append(order, g)
			}
			groups[g] = append(groups[g], u.UID)
		}
	}
	for i, g := range order {
		fmt.Fprintf(&b, "dn: cn=%s,%s\nobjectClass: posixGroup\ncn: %s\ngidNumber: %d\n", g, s.GroupsDN, g, 20000+i)
		for _, m := range groups[g] {
			fmt.Fprintf(&b, "memberUid: %s\n", m)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func writeFile(t testing.TB, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
