package bed

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMachines boots two containers on one bridge and checks what scenarios rely on: static
// addresses, reachability over the bridge only, a shared read-write bind seen as one inode, a
// read-only bind, exec with a replaced environment and a working directory.
func TestMachines(t *testing.T) {
	b := New(t, Options{})
	shared := filepath.Join(b.Dir(), "shared")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	ms, err := b.BootAll(ctx, []MachineOptions{
		{Binds: []Bind{{Source: shared, Target: "/var/lib/concourse"}}},
		{Binds: []Bind{{Source: shared, Target: "/var/lib/concourse", ReadOnly: true}}},
	})
	if err != nil {
		t.Fatalf("cannot boot machines: %v", err)
	}
	t.Logf("booted %d machines in %s (each: %s, %s)", len(ms), time.Since(start).Round(time.Millisecond),
		ms[0].BootTime.Round(time.Millisecond), ms[1].BootTime.Round(time.Millisecond))
	a, c := ms[0], ms[1]
	for _, m := range ms {
		if len(m.Failed) > 0 {
			t.Errorf("%s booted degraded: %v", m.Name, m.Failed)
		}
	}

	t.Run("addresses", func(t *testing.T) {
		for _, m := range ms {
			out, _, code, err := m.Exec(ctx, nil, "ip", "-4", "-o", "addr", "show", "dev", "host0")
			if err != nil || code != 0 || !strings.Contains(string(out), " "+m.IP+"/24 ") {
				t.Errorf("%s: ip addr = %q, %d, %v; want %s/24", m.Name, out, code, err, m.IP)
			}
			host, _ := m.ReadFile("/etc/hostname")
			if strings.TrimSpace(string(host)) != m.Name {
				t.Errorf("%s: /etc/hostname = %q", m.Name, host)
			}
		}
	})

	t.Run("network", func(t *testing.T) {
		l, err := net.Listen("tcp", b.HostIP()+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		got := make(chan string, 1)
		go func() {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			line, _ := bufio.NewReader(conn).ReadString('\n')
			got <- conn.RemoteAddr().(*net.TCPAddr).IP.String() + " " + strings.TrimSpace(line)
		}()
		port := l.Addr().(*net.TCPAddr).Port
		_, stderr, code, err := a.Exec(ctx, nil, "bash", "-c", "echo hello >/dev/tcp/"+b.HostIP()+"/"+itoa(port))
		if err != nil || code != 0 {
			t.Fatalf("connect to host: %d %v %s", code, err, stderr)
		}
		select {
		case g := <-got:
			if g != a.IP+" hello" {
				t.Errorf("host got %q; want %q", g, a.IP+" hello")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("host listener got nothing")
		}
		// Nothing listens on port 1 of the other container: "refused" proves the packet got
		// there and back over the bridge (an unreachable host would time out instead).
		_, stderr, _, _ = a.Exec(ctx, nil, "timeout", "5", "bash", "-c", "echo >/dev/tcp/"+c.IP+"/1")
		if !strings.Contains(string(stderr), "Connection refused") {
			t.Errorf("connect %s -> %s:1: %s; want Connection refused", a.Name, c.IP, stderr)
		}
	})

	t.Run("shared-storage", func(t *testing.T) {
		if err := a.WriteFile("/var/lib/concourse/.installed_version", []byte("7.14.3\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		sa, err1 := a.Stat("/var/lib/concourse/.installed_version")
		sc, err2 := c.Stat("/var/lib/concourse/.installed_version")
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if sa.Ino != sc.Ino || sa.Dev != sc.Dev {
			t.Errorf("inode %d:%d on %s, %d:%d on %s; want the same file", sa.Dev, sa.Ino, a.Name, sc.Dev, sc.Ino, c.Name)
		}
		// Stat through nsenter agrees with the openat2 path.
		out, _, _, _ := c.Exec(ctx, nil, "stat", "-c", "%i", "/var/lib/concourse/.installed_version")
		if strings.TrimSpace(string(out)) != itoa(int(sa.Ino)) {
			t.Errorf("stat -c %%i = %q; want %d", out, sa.Ino)
		}
		err := c.WriteFile("/var/lib/concourse/x", nil, 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("write on the read-only bind: %v; want EROFS", err)
		}
		_, stderr, code, _ := c.Exec(ctx, nil, "touch", "/var/lib/concourse/y")
		if code == 0 || !strings.Contains(string(stderr), "Read-only file system") {
			t.Errorf("touch on the read-only bind: exit %d %s", code, stderr)
		}
	})

	t.Run("exec", func(t *testing.T) {
		res, err := a.Run(ctx, Cmd{Argv: []string{"sh", "-c", "pwd; env | sort; cat"}, Env: []string{"A=1"}, Dir: "/etc", Stdin: []byte("in\n")})
		if err != nil || res.Exit != 0 {
			t.Fatalf("run: %v %d %s", err, res.Exit, res.Stderr)
		}
		lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
		want := []string{"/etc", "A=1", defaultPath, "PWD=/etc", "in"}
		if strings.Join(lines, "|") != strings.Join(want, "|") {
			t.Errorf("output %q; want %q", lines, want)
		}
		_, _, code, err := a.Exec(ctx, nil, "sh", "-c", "exit 7")
		if err != nil || code != 7 {
			t.Errorf("exit 7: %d %v", code, err)
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, _, _, err := a.Exec(short, nil, "sleep", "30"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("cancelled exec: %v", err)
		}
		out, _, _, _ := a.Exec(ctx, nil, "sh", "-c", "pgrep -x sleep || echo none")
		if strings.TrimSpace(string(out)) != "none" {
			t.Errorf("sleep survived the cancel: %s", out)
		}
		if _, err := a.Systemctl(ctx, "is-active", "systemd-journald.service"); err != nil {
			t.Error(err)
		}
		if _, err := a.Systemctl(ctx, "is-active", "no-such.service"); err == nil {
			t.Error("systemctl is-active no-such.service succeeded")
		}
	})

	t.Run("teardown", func(t *testing.T) {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if leaks := b.Leaks(); len(leaks) > 0 {
			t.Errorf("leaked after Close: %v", leaks)
		}
		// The shared directory belongs to the test and survives.
		if _, err := os.Stat(filepath.Join(shared, ".installed_version")); err != nil {
			t.Error(err)
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }
