package storage

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRaceManyProcesses: 20 units install the same version into one root at
// once; exactly one downloads (reference: "Only one unit downloads").
func TestRaceManyProcesses(t *testing.T) {
	t.Parallel()
	const units = 20
	root := t.TempDir()
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 200<<10), gzip.BestSpeed))
	rs.trickle.Store(3000) // ~0.3 s download: every process starts while it runs
	type out struct {
		res InstallResult
		err error
		log string
	}
	outs := make([]out, units)
	var wg sync.WaitGroup
	for i := range units {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := helperCommand(t, "install", root, fmt.Sprintf("concourse-ci-machine/%d", i), rs.URL(), "7.14.3")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			b, err := cmd.Output()
			outs[i].log = stderr.String()
			if err != nil {
				outs[i].err = fmt.Errorf("%v: %s", err, stderr.String())
				return
			}
			outs[i].err = json.Unmarshal(b, &outs[i].res)
		}()
	}
	wg.Wait()
	downloaded := 0
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("unit %d: %v", i, o.err)
		}
		if o.res.Downloaded {
			downloaded++
		}
	}
	if got := rs.tarballGets.Load(); got != 1 {
		t.Errorf("tarball requests = %d; want exactly 1", got)
	}
	if downloaded != 1 {
		t.Errorf("%d units report a download; want 1", downloaded)
	}
	if got := readFile(t, filepath.Join(root, InstalledVersionName)); got != "7.14.3" {
		t.Errorf(".installed_version = %q", got)
	}
	if n := countDirs(t, filepath.Join(root, VersionsDir)); n != 1 {
		t.Errorf("versions = %d; want 1", n)
	}
	checkConsistent(t, root)
	waited := 0
	for _, o := range outs {
		if strings.Contains(o.log, "was installed by another unit while we waited") {
			waited++
		}
	}
	t.Logf("%d of %d units waited on the lock and woke to a finished install", waited, units)
}

// TestCrashAtRandomMoments kills an installer with SIGKILL at random moments;
// the root must always show the old (none) or the new complete release, and
// the next install must recover to exactly one complete release.
func TestCrashAtRandomMoments(t *testing.T) {
	t.Parallel()
	const trials = 60
	const version = "7.14.3"
	rs := newReleaseServer(t, version, buildTarball(t, releaseEntries(version, 300<<10), gzip.BestSpeed))
	rs.trickle.Store(1500) // ~0.15 s of download per install, so kills land mid-stream

	// One uninterrupted install gives the window to kill in.
	start := time.Now()
	cmd := helperCommand(t, "install", t.TempDir(), "concourse-ci-machine/0", rs.URL(), version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference install: %v\n%s", err, out)
	}
	window := time.Since(start)

	var mu sync.Mutex
	phases := map[string]int{}
	sem := make(chan struct{}, 6)
	var wg sync.WaitGroup
	for i := range trials {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			phase, err := crashTrial(t, rs, version, i, window)
			if err != nil {
				t.Errorf("trial %d: %v", i, err)
			}
			mu.Lock()
			phases[phase]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("install window %s; killed during: %v", window.Round(time.Millisecond), phases)
}

// crashTrial runs one kill; every third trial kills right after the download
// is verified, i.e. during fsync, rename and the switch.
func crashTrial(t *testing.T, rs *releaseServer, version string, i int, window time.Duration) (string, error) {
	root := t.TempDir()
	cmd := helperCommand(t, "install", root, fmt.Sprintf("concourse-ci-machine/%d", i), rs.URL(), version)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var logMu sync.Mutex
	var log strings.Builder
	staged := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if strings.Contains(sc.Text(), "downloaded and extracted") {
				once.Do(func() { close(staged) })
			}
		}
	}()
	if i%3 == 0 {
		select {
		case <-staged:
			time.Sleep(time.Duration(rand.Int64N(int64(3 * time.Millisecond))))
		case <-time.After(10 * time.Second):
		}
	} else {
		time.Sleep(time.Duration(rand.Int64N(int64(window))))
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-readDone
	cmd.Wait()
	logMu.Lock()
	text := log.String()
	logMu.Unlock()
	phase := "before the lock"
	for _, p := range []struct{ marker, name string }{
		{"took install lock", "download"},
		{"downloaded and extracted", "commit"},
		{"switched current", "after the switch"},
		{"installed " + version + " as", "after install"},
	} {
		if strings.Contains(text, p.marker) {
			phase = p.name
		}
	}

	// The invariant right after the kill, before anyone repairs anything.
	if err := consistent(root); err != nil {
		return phase, fmt.Errorf("after kill (%s): %v\n%s", phase, err, text)
	}
	// A fresh install always recovers.
	s, lg := newTestStore(t, root)
	if _, err := s.Install(context.Background(), version, Source{URL: rs.URL()}); err != nil {
		return phase, fmt.Errorf("recovery install (%s): %v\n%s", phase, err, lg)
	}
	if err := consistent(root); err != nil {
		return phase, fmt.Errorf("after recovery: %v", err)
	}
	if v, _ := s.Installed(); v != version {
		return phase, fmt.Errorf("after recovery installed %q", v)
	}
	if got, _ := os.ReadFile(filepath.Join(root, InstalledVersionName)); string(got) != version {
		return phase, fmt.Errorf("after recovery .installed_version = %q", got)
	}
	if n, _ := os.ReadDir(filepath.Join(root, VersionsDir)); len(n) != 1 {
		return phase, fmt.Errorf("after recovery %d version dirs; want 1", len(n))
	}
	if n, _ := os.ReadDir(filepath.Join(root, StagingDir)); len(n) != 0 {
		return phase, fmt.Errorf("after recovery .staging holds %d entries", len(n))
	}
	if !s.linksOK() {
		return phase, fmt.Errorf("after recovery bin/resource-types/fly-assets links are wrong")
	}
	return phase, nil
}

// consistent is checkConsistent returning an error (usable off the test goroutine).
func consistent(root string) error {
	s := New(Options{Root: root})
	v, err := s.Installed()
	if err != nil {
		return fmt.Errorf("Installed: %w", err)
	}
	marker, err := s.readMarker()
	if err != nil {
		return err
	}
	if v == "" {
		if marker != "" {
			return fmt.Errorf(".installed_version = %q but no current release", marker)
		}
		return nil
	}
	if err := s.VerifyFull(); err != nil {
		return fmt.Errorf("current release does not verify: %w", err)
	}
	if marker != "" && marker != v {
		return fmt.Errorf(".installed_version = %q, current = %q", marker, v)
	}
	return nil
}

// startWaiter starts the wait helper and returns after it printed whether the
// lock was busy when it started.
func startWaiter(t testing.TB, root, version string, maxWait time.Duration) (cmd *exec.Cmd, first string, rest *bufio.Reader) {
	t.Helper()
	cmd = helperCommand(t, "wait", root, version, maxWait.String())
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	rest = bufio.NewReader(stdout)
	first, err = rest.ReadString('\n')
	if err != nil {
		t.Fatalf("waiter: %v", err)
	}
	return cmd, strings.TrimSpace(first), rest
}

// parseWaiter reads "installed=<bool> at=<nanos>".
func parseWaiter(t testing.TB, r io.Reader) (bool, time.Time) {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var inst string
	var at int64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "installed=%s at=%d", &inst, &at); err != nil {
		t.Fatalf("waiter printed %q: %v", b, err)
	}
	ok, _ := strconv.ParseBool(inst)
	return ok, time.Unix(0, at)
}

// TestWaiterWaitsForInstall proves the waiter is waiting (it reports "busy"
// while we hold the lock, style.md §2.7), then installs under the lock and
// checks the waiter wakes after the release and sees the new release.
func TestWaiterWaitsForInstall(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed))
	s, lg := newTestStore(t, root)
	fl, _, _, err := s.lockExclusive(context.Background(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd, first, rest := startWaiter(t, root, "7.14.3", 30*time.Second)
	if first != "busy" {
		t.Fatalf("waiter saw the lock %q; want busy", first)
	}
	time.Sleep(100 * time.Millisecond) // the waiter is polling now
	st, err := s.stage(context.Background(), "7.14.3", Source{URL: rs.URL()}, nil)
	if err != nil {
		t.Fatalf("stage: %v\n%s", err, lg)
	}
	if _, err := s.commit(st); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	fl.Unlock()
	ok, at := parseWaiter(t, rest)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if !ok {
		t.Error("waiter reports not installed")
	}
	if at.Before(released) {
		t.Errorf("waiter proceeded %s before the release", released.Sub(at))
	}
	if d := at.Sub(released); d > 2*time.Second {
		t.Errorf("waiter woke %s after the release", d)
	}
}

func TestWaiterGivesUpAfterMaxWait(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, _ := newTestStore(t, root)
	fl, _, _, err := s.lockExclusive(context.Background(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Unlock()
	start := time.Now()
	cmd, first, rest := startWaiter(t, root, "7.14.3", 200*time.Millisecond)
	if first != "busy" {
		t.Fatalf("waiter saw %q; want busy", first)
	}
	ok, at := parseWaiter(t, rest)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("waiter failed (a timeout is not an error): %v", err)
	}
	if ok {
		t.Error("waiter reports installed")
	}
	if d := at.Sub(start); d < 200*time.Millisecond {
		t.Errorf("waiter returned after %s; want at least maxWait", d)
	}
	// A cancelled context is an error, unlike maxWait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.WaitInstalled(ctx, "7.14.3", time.Second); err == nil {
		t.Error("WaitInstalled with a cancelled ctx returned nil")
	}
}

func TestLockHolderInStatus(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, _ := newTestStore(t, root, func(o *Options) { o.Unit = "concourse-ci-machine/10" })
	fl, _, _, err := s.lockExclusive(context.Background(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Status()
	fl.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("pid=%d unit=concourse-ci-machine/10 since=", os.Getpid())
	if !st.LockHeld || !strings.HasPrefix(st.LockHolder, want) {
		t.Errorf("status lock = %v %q; want held by %q", st.LockHeld, st.LockHolder, want)
	}
	if !strings.Contains(st.String(), "held by "+want) {
		t.Errorf("String() does not show the holder:\n%s", st)
	}
	// GC does not wait for a held lock.
	fl2, _, _, _ := s.lockExclusive(context.Background(), "test", nil)
	if err := s.GC(); err != nil {
		t.Errorf("GC while locked = %v", err)
	}
	fl2.Unlock()
}
