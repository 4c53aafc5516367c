package storage

import (
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readOnlyView bind-mounts dir read-only at a new path, the way an LXD disk
// device with readonly=true shows the share to a unit. It needs root (and
// CAP_SYS_ADMIN); elsewhere the test is skipped, because chmod cannot make a
// directory read-only for root and a non-root EACCES is a different failure.
func readOnlyView(t *testing.T, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("read-only bind mounts need root; skipping")
	}
	view := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(view, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, view, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount here (%v); skipping", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(view, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", view, err)
		}
	})
	if err := unix.Mount("", view, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount read-only here (%v); skipping", err)
	}
	return view
}

func TestReadOnlyShare(t *testing.T) {
	t.Parallel()
	rw := t.TempDir()
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed))
	installer, lg := newTestStore(t, rw)
	ctx := context.Background()
	if _, err := installer.Install(ctx, "7.14.3", Source{URL: rs.URL()}); err != nil {
		t.Fatalf("Install: %v\n%s", err, lg)
	}
	ro := readOnlyView(t, rw)
	worker, wlg := newTestStore(t, ro, func(o *Options) { o.Unit = "concourse-ci-machine/10" })

	start := time.Now()
	if ok, err := worker.WaitInstalled(ctx, "7.14.3", 5*time.Second); !ok || err != nil {
		t.Errorf("WaitInstalled = %v, %v; want true", ok, err)
	}
	if ok, err := worker.WaitInstalled(ctx, "8.2.5", 300*time.Millisecond); ok || err != nil {
		t.Errorf("WaitInstalled(other version) = %v, %v; want false, nil", ok, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("WaitInstalled with a free lock took %s", d)
	}
	if err := worker.VerifyFull(); err != nil {
		t.Errorf("VerifyFull on read-only view: %v", err)
	}
	var nw *NotWritableError
	if err := worker.CheckWritable(); !errors.As(err, &nw) || !errors.Is(err, syscall.EROFS) {
		t.Errorf("CheckWritable = %v; want *NotWritableError(EROFS)", err)
	}
	if res, err := worker.Install(ctx, "7.14.3", Source{URL: rs.URL()}); err != nil || res.Downloaded {
		t.Errorf("Install of the installed version on read-only = %+v, %v; want a no-op", res, err)
	}
	if _, err := worker.Install(ctx, "8.2.5", Source{URL: rs.URL()}); !errors.As(err, &nw) {
		t.Errorf("Install of a new version on read-only = %v; want *NotWritableError", err)
	}
	if err := worker.GC(); !errors.As(err, &nw) {
		t.Errorf("GC on read-only = %v; want *NotWritableError", err)
	}
	local := filepath.Join(t.TempDir(), "charm-state")
	if err := worker.RecordRunning("7.14.3", local); err != nil {
		t.Fatalf("RecordRunning: %v", err)
	}
	if got := readFile(t, filepath.Join(local, "version")); got != "7.14.3" {
		t.Errorf("local record = %q", got)
	}
	if err := worker.RecordRunning("7.14.3", ""); !errors.As(err, &nw) {
		t.Errorf("RecordRunning without a fallback = %v; want *NotWritableError", err)
	}
	st, err := worker.Status()
	if err != nil || !st.Disk.ReadOnly || st.Installed != "7.14.3" {
		t.Errorf("Status = %+v, %v", st, err)
	}

	// flock works across the two mounts (same inode): a waiter on the
	// read-only view waits for an installer on the read-write one.
	fl, _, _, err := installer.lockExclusive(ctx, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := worker.newLock(true).TryRLock(); ok || err != nil {
		t.Fatalf("TryRLock on the read-only view = %v, %v; want busy", ok, err)
	}
	done := make(chan bool)
	go func() {
		ok, err := worker.WaitInstalled(ctx, "8.2.5", 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- ok
	}()
	// The waiter must be blocked in flock before the commit: a waiter that first looks after the
	// switch rightly finds 8.2.5 installed without waiting (that race made this test flaky).
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(wlg.String(), "waiting up to 20s"); {
		if time.Now().After(deadline) {
			t.Fatalf("the waiter never started waiting:\n%s", wlg)
		}
		time.Sleep(time.Millisecond)
	}
	rs2 := newReleaseServer(t, "8.2.5", buildTarball(t, releaseEntries("8.2.5", 0), gzip.BestSpeed))
	stg, err := installer.stage(ctx, "8.2.5", Source{URL: rs2.URL()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := installer.commit(stg); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-done:
		t.Fatalf("waiter returned %v while the lock was held", ok)
	case <-time.After(50 * time.Millisecond):
	}
	fl.Unlock()
	if ok := <-done; !ok {
		t.Error("waiter on the read-only view did not see 8.2.5")
	}
}

func TestReadOnlyNothingInstalled(t *testing.T) {
	t.Parallel()
	ro := readOnlyView(t, t.TempDir())
	s, _ := newTestStore(t, ro)
	start := time.Now()
	ok, err := s.WaitInstalled(context.Background(), "7.14.3", 10*time.Second)
	if ok || err != nil {
		t.Errorf("WaitInstalled = %v, %v; want false, nil", ok, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s; want an immediate answer without a lock file", d)
	}
	if v, err := s.Installed(); v != "" || err != nil {
		t.Errorf("Installed = %q, %v", v, err)
	}
	var nw *NotWritableError
	if _, err := s.Install(context.Background(), "7.14.3", Source{URL: "http://127.0.0.1:1/x.tgz"}); !errors.As(err, &nw) {
		t.Errorf("Install = %v; want *NotWritableError", err)
	}
}
