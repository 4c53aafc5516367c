package storage

// Reproductions of the failure trials of issue 11, one input each, on the real code paths.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Item 1: what a kill late in an install leaves. Each state is reported by Problems (and Status)
// and repaired by the next Install of the same version without a download.
func TestLateCrashLeftoversReportedAndRepaired(t *testing.T) {
	t.Parallel()
	tgz := buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed)
	cases := []struct {
		name   string
		break_ func(t *testing.T, root string)
		want   string // in one of the problems
	}{
		{"upgrade-killed-before-the-marker-rename", func(t *testing.T, root string) {
			os.WriteFile(filepath.Join(root, InstalledVersionName), []byte("7.14.2"), 0o644)
			os.WriteFile(filepath.Join(root, ".tmp-.installed_version-0badc0de"), []byte("7.14.3"), 0o644)
		}, `.installed_version says "7.14.2", current is 7.14.3`},
		{"first-install-killed-before-the-bin-rename", func(t *testing.T, root string) {
			os.Remove(filepath.Join(root, "bin"))
			os.Remove(filepath.Join(root, InstalledVersionName))
			if err := os.Symlink("current/bin", filepath.Join(root, ".tmp-bin-0badc0de")); err != nil {
				t.Fatal(err)
			}
		}, "bin is missing"},
		{"only-a-stray-temp-link", func(t *testing.T, root string) {
			if err := os.Symlink("current/fly-assets", filepath.Join(root, ".tmp-fly-assets-0badc0de")); err != nil {
				t.Fatal(err)
			}
		}, ".tmp-fly-assets-0badc0de was left"},
		{"gc-killed-mid-removal", func(t *testing.T, root string) {
			os.MkdirAll(filepath.Join(root, StagingDir, "gc-7.14.2-0123abcd", "bin"), 0o755)
		}, "gc-7.14.2-0123abcd was left"},
		{"resource-types-points-elsewhere", func(t *testing.T, root string) {
			os.Remove(filepath.Join(root, "resource-types"))
			os.Symlink("versions/nowhere/resource-types", filepath.Join(root, "resource-types"))
		}, "resource-types points to versions/nowhere/resource-types"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			rs := newReleaseServer(t, "7.14.3", tgz)
			s, lg := newTestStore(t, root)
			if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); err != nil {
				t.Fatal(err)
			}
			c.break_(t, root)
			ps, err := s.Problems()
			if err != nil || !strings.Contains(strings.Join(ps, "\n"), c.want) {
				t.Fatalf("Problems = %q, %v; want one containing %q", ps, err, c.want)
			}
			st, err := s.Status()
			if err != nil || len(st.Problems) == 0 || !strings.Contains(st.String(), "DISAGREES:") {
				t.Errorf("Status does not show the disagreement (%v):\n%s", err, st)
			}
			gets := rs.tarballGets.Load()
			res, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
			if err != nil || res.Downloaded || rs.tarballGets.Load() != gets {
				t.Fatalf("repairing Install = %+v, %v (tarball requests %d -> %d); want a repair without download\n%s", res, err, gets, rs.tarballGets.Load(), lg)
			}
			if ps, err := s.Problems(); err != nil || len(ps) != 0 {
				t.Errorf("after the repair Problems = %q, %v", ps, err)
			}
			if v := checkConsistent(t, root); v != "7.14.3" || !s.linksOK() {
				t.Errorf("after the repair installed %q, links ok %v", v, s.linksOK())
			}
			if ents, _ := filepath.Glob(filepath.Join(root, tmpPrefix+"*")); len(ents) != 0 {
				t.Errorf("temp leftovers after the repair: %v", ents)
			}
		})
	}
	t.Run("an-install-in-progress-is-not-a-problem", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		rs := newReleaseServer(t, "7.14.3", tgz)
		s, _ := newTestStore(t, root)
		if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, InstalledVersionName), []byte("7.14.2"), 0o644)
		fl, _, _, err := s.lockExclusive(context.Background(), "test", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Unlock()
		if ps, err := s.Problems(); err != nil || len(ps) != 0 {
			t.Errorf("Problems while the lock is held = %q, %v; want none (the holder's work in progress)", ps, err)
		}
	})
}

// probeRelease is what a caller (the hooks) hands in: bin/concourse exists, is executable and
// prints version. Storage itself knows none of this.
func probeRelease(ctx context.Context, version, dir string) error {
	bin := filepath.Join(dir, "bin", "concourse")
	fi, err := os.Stat(bin)
	if err != nil {
		return fmt.Errorf("no bin/concourse: %w", err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("bin/concourse is not executable (mode %04o)", fi.Mode().Perm())
	}
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return fmt.Errorf("bin/concourse --version: %w", err)
	}
	if got := strings.TrimSpace(string(out)); got != version {
		return fmt.Errorf("bin/concourse --version says %q, want %q", got, version)
	}
	return nil
}

// withBinary is releaseEntries(version) with bin/concourse replaced (nil body: left out).
func withBinary(version string, body []byte, mode int64) []entry {
	var out []entry
	for _, e := range releaseEntries(version, 0) {
		if e.Name == "concourse/bin/concourse" {
			if body == nil {
				continue
			}
			e.Body, e.Mode = body, mode
		}
		out = append(out, e)
	}
	return out
}

// Item 2: a checksum-valid release without a working binary never becomes current, the refusal
// is remembered (no download loop) until the source or version changes.
func TestBrokenReleaseRefusedBeforeTheSwitch(t *testing.T) {
	t.Parallel()
	good := buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed)
	cases := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"no-binary", withBinary("8.2.5", nil, 0), "no bin/concourse"},
		{"not-executable", withBinary("8.2.5", []byte("#!/bin/sh\necho 8.2.5\n"), 0o644), "not executable"},
		{"another-version", withBinary("8.2.5", []byte("#!/bin/sh\necho 7.0.0\n"), 0o755), `says "7.0.0", want "8.2.5"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			old := newReleaseServer(t, "7.14.3", good)
			s, lg := newTestStore(t, root, func(o *Options) { o.Probe = probeRelease })
			ctx := context.Background()
			if _, err := s.Install(ctx, "7.14.3", Source{URL: old.URL()}); err != nil {
				t.Fatalf("installing the good release: %v\n%s", err, lg)
			}
			current, _ := os.Readlink(filepath.Join(root, CurrentLink))
			bad := newReleaseServer(t, "8.2.5", buildTarball(t, c.entries, gzip.BestSpeed))

			_, err := s.Install(ctx, "8.2.5", Source{URL: bad.URL()})
			var pe *ProbeError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Install = %v; want a *ProbeError saying %q", err, c.want)
			}
			if got, _ := os.Readlink(filepath.Join(root, CurrentLink)); got != current {
				t.Errorf("current = %q; want %q kept", got, current)
			}
			if st, err := s.Status(); err != nil || !strings.Contains(st.String(), "refused release:    8.2.5 from http://") {
				t.Errorf("Status does not show the refusal (%v):\n%s", err, st)
			}
			if v := checkConsistent(t, root); v != "7.14.3" {
				t.Errorf("installed %q after the refusal", v)
			}
			if n := countDirs(t, filepath.Join(root, StagingDir)); n != 0 {
				t.Errorf(".staging holds %d entries", n)
			}

			// The next hooks: refused at once, nothing downloaded.
			for range 3 {
				_, err = s.Install(ctx, "8.2.5", Source{URL: bad.URL()})
				var re *RefusedError
				if !errors.As(err, &re) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Install again = %v; want a *RefusedError repeating the reason", err)
				}
			}
			if n := bad.tarballGets.Load(); n != 1 {
				t.Errorf("refused tarball downloaded %d times; want 1", n)
			}
			// Another source for the same version (the operator changed release-sha256 or
			// release-url): tried again.
			_, err = s.Install(ctx, "8.2.5", Source{URL: bad.URL(), SHA256: sha256hex(bad.data)})
			if !errors.As(err, &pe) || bad.tarballGets.Load() != 2 {
				t.Errorf("Install from a changed source = %v after %d downloads; want a fresh download and probe", err, bad.tarballGets.Load())
			}
			// A good release clears the record.
			fixed := newReleaseServer(t, "8.2.5", buildTarball(t, releaseEntries("8.2.5", 0), gzip.BestSpeed))
			if _, err := s.Install(ctx, "8.2.5", Source{URL: fixed.URL()}); err != nil {
				t.Fatalf("installing a good 8.2.5: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, RefusalName)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("refusal record kept after a good install: %v", err)
			}
		})
	}
}

// Item 3: a mirror that accepts every Range request (206) and breaks it before the first byte.
func TestResumeStormBounded(t *testing.T) {
	t.Parallel()
	tgz := buildTarball(t, releaseEntries("7.14.3", 256<<10), gzip.BestSpeed)
	rs := newReleaseServer(t, "7.14.3", tgz)
	rs.cutEvery.Store(int64(len(tgz) / 2))
	rs.breakRanges.Store(true)
	s, lg := newTestStore(t, t.TempDir())
	start := time.Now()
	_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
	took := time.Since(start)
	var de *DownloadError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "failed 4 times in a row") {
		t.Fatalf("err = %v; want a *DownloadError: resuming failed 4 times in a row", err)
	}
	// One full body, then 4 backed-off resumes delivering nothing; no fresh attempt repeats them.
	if n, f := rs.ranges.Load(), rs.fullBodies.Load(); n != 4 || f != 1 {
		t.Errorf("%d Range requests and %d full bodies in %s; want 4 and 1", n, f, took)
	}
	if lines := strings.Count(lg.String(), "resuming with a Range request"); lines != 4 {
		t.Errorf("%d resume log lines; want 4", lines)
	}
	// Backoff 5, 10, 20 ms between the failures (the test policy): not a busy loop.
	if took < 35*time.Millisecond {
		t.Errorf("gave up after %s; the resumes were not backed off", took)
	}
	if !strings.Contains(lg.String(), "in a row without progress") {
		t.Errorf("log does not count the failures:\n%s", lg)
	}
}

// Item 4: a sidecar that hangs after its headers, and a tarball that trickles below the minimum
// progress per stall window, are both cut and reported as stalls.
func TestStallsAreCut(t *testing.T) {
	t.Parallel()
	tgz := buildTarball(t, releaseEntries("7.14.3", 256<<10), gzip.BestSpeed)
	t.Run("sidecar-hangs", func(t *testing.T) {
		t.Parallel()
		rs := newReleaseServer(t, "7.14.3", tgz)
		rs.sidecarHang.Store(true)
		s, _ := newTestStore(t, t.TempDir(), func(o *Options) {
			o.StallTimeout = 100 * time.Millisecond
			o.Retry.Total = 20 * time.Second
		})
		start := time.Now()
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		var se *StallError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "stalled") {
			t.Fatalf("err = %v; want a *StallError", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("gave up after %s; want about 4 x 100 ms", d)
		}
		if rs.tarballGets.Load() != 0 {
			t.Error("the tarball was fetched without a checksum")
		}
	})
	t.Run("tarball-trickles", func(t *testing.T) {
		t.Parallel()
		rs := newReleaseServer(t, "7.14.3", tgz)
		rs.trickle.Store(20000) // 4 KiB every 20 ms: ~20 KiB per 100 ms window, never silent
		s, _ := newTestStore(t, t.TempDir(), func(o *Options) {
			o.StallTimeout = 100 * time.Millisecond
			o.MinProgress = 64 << 10
			o.Retry.Total = 20 * time.Second
		})
		start := time.Now()
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		var se *StallError
		if !errors.As(err, &se) || se.Min != 64<<10 || se.Got >= se.Min {
			t.Fatalf("err = %v; want a *StallError below 64 KiB per window", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("gave up after %s", d)
		}
	})
}

// tarWithZeros is a valid release whose bin/containerd is n zero bytes: tiny compressed.
func tarWithZeros(t *testing.T, version string, files int, n int) []byte {
	es := releaseEntries(version, 0)
	for i := range files {
		es = append(es, entry{Name: fmt.Sprintf("concourse/bin/zeros-%d", i), Body: make([]byte, n), Mode: 0o755})
	}
	return buildTarball(t, es, gzip.BestCompression)
}

// Item 5: a checksum-valid tarball that expands far beyond a release is cut at the bound, and is
// remembered as refused; a full disk is reported as a full disk with its path.
func TestExpansionBoundedAndDiskFull(t *testing.T) {
	t.Parallel()
	t.Run("expands-beyond-the-bound", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		tgz := tarWithZeros(t, "7.14.3", 1, 8<<20) // ~8 KiB that expands to 8 MiB
		rs := newReleaseServer(t, "7.14.3", tgz)
		s, _ := newTestStore(t, root, func(o *Options) { o.MaxExpandedBytes = 2 << 20 })
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		var tl *TooLargeError
		if !errors.As(err, &tl) || tl.Entry != "concourse/bin/zeros-0" || !strings.Contains(err.Error(), "2.0 MiB") {
			t.Fatalf("err = %v (tarball %d bytes); want a *TooLargeError at zeros-0", err, len(tgz))
		}
		if errors.As(err, new(*ArchiveError)) || rs.tarballGets.Load() != 1 {
			t.Errorf("err %v after %d downloads; want one download and no \"broken as published\"", err, rs.tarballGets.Load())
		}
		nothingVisible(t, root)
		if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); !errors.As(err, new(*RefusedError)) {
			t.Errorf("second Install = %v; want *RefusedError", err)
		}
	})
	t.Run("default-bound-is-4GiB", func(t *testing.T) {
		s := New(Options{Root: t.TempDir()})
		if s.opts.MaxExpandedBytes != 4<<30 {
			t.Errorf("default MaxExpandedBytes = %d", s.opts.MaxExpandedBytes)
		}
	})
	t.Run("disk-full", func(t *testing.T) {
		t.Parallel()
		root := smallDisk(t, "size=6m")
		// Each file fits, together they do not: the later ones meet a full disk.
		tgz := tarWithZeros(t, "7.14.3", 4, 2<<20)
		rs := newReleaseServer(t, "7.14.3", tgz)
		s, lg := newTestStore(t, root)
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		var df *DiskFullError
		if !errors.As(err, &df) || !strings.HasPrefix(df.Path, root) || !strings.Contains(err.Error(), "is full") {
			t.Fatalf("err = %v; want a *DiskFullError naming a path under %s\n%s", err, root, lg)
		}
		if errors.As(err, new(*ArchiveError)) || strings.Contains(err.Error(), "broken as published") {
			t.Errorf("a full disk is blamed on the release: %v", err)
		}
		if rs.tarballGets.Load() != 1 {
			t.Errorf("%d downloads; a full disk is not retried", rs.tarballGets.Load())
		}
		if _, err := os.Stat(filepath.Join(root, RefusalName)); err == nil {
			t.Error("a full disk was recorded as a refusal of the release")
		}
		nothingVisible(t, root)
	})
	t.Run("disk-full-on-write", func(t *testing.T) {
		t.Parallel()
		// Room for the bytes, not for the files: statfs's byte count passes, and creating an
		// entry fails with ENOSPC (tmpfs out of inodes), as a disk filled by others meanwhile would.
		root := smallDisk(t, "size=64m,nr_inodes=14")
		rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed))
		s, lg := newTestStore(t, root)
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		var df *DiskFullError
		if !errors.As(err, &df) || !errors.Is(err, unix.ENOSPC) || !strings.HasPrefix(df.Path, root) {
			t.Fatalf("err = %v; want a *DiskFullError (ENOSPC) naming a path under %s\n%s", err, root, lg)
		}
		if errors.As(err, new(*ArchiveError)) || rs.tarballGets.Load() != 1 {
			t.Errorf("err = %v after %d downloads; want no \"broken as published\" and no retry", err, rs.tarballGets.Load())
		}
	})
}

// smallDisk mounts a tmpfs with opts ("size=6m") (root only; skipped elsewhere).
func smallDisk(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// Item 6: credentials in the URL reach no error, log line or manifest.
func TestCredentialsRedacted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"http://user:pw@mirror/x.tgz", "http://***@mirror/x.tgz"},
		{"https://token@mirror:8443/a/b", "https://***@mirror:8443/a/b"},
		{`GET "http://u:p@ss@host/p": EOF`, `GET "http://***@host/p": EOF`},
		{"http://mirror/x@y", "http://mirror/x@y"},
		{"no url here user:pw@host", "no url here user:pw@host"},
	} {
		if got := RedactText(c.in); got != c.want {
			t.Errorf("RedactText(%q) = %q; want %q", c.in, got, c.want)
		}
	}
	const password = "hunter2-mirror"
	tgz := buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed)
	rs := newReleaseServer(t, "7.14.3", tgz)
	withCreds := strings.Replace(rs.URL(), "http://", "http://ci:"+password+"@", 1)
	root := t.TempDir()
	s, lg := newTestStore(t, root)
	if _, err := s.Install(context.Background(), "7.14.3", Source{URL: withCreds}); err != nil {
		t.Fatal(err)
	}
	m, err := readManifest(filepath.Join(root, CurrentLink))
	if err != nil || strings.Contains(m.Source, password) || !strings.Contains(m.Source, "***@127.0.0.1") {
		t.Errorf("manifest source = %q, %v", m.Source, err)
	}
	rs.fail500.Store(100)
	rs.mu.Lock()
	rs.sum = strings.Repeat("ab", 20) + "  x\n"
	rs.mu.Unlock()
	_, err = s.Install(context.Background(), "8.2.5", Source{URL: withCreds})
	if err == nil || strings.Contains(err.Error(), password) || strings.Contains(err.Error(), "ci:") {
		t.Errorf("error carries the credentials: %v", err)
	}
	if strings.Contains(lg.String(), password) {
		t.Errorf("log carries the password:\n%s", lg)
	}
}

// Item 9: an installer waiting for the lock while another unit holds a shared lock (a waiter)
// blocks in flock(2): its CPU time stays near zero. It used to retry in a loop on every core.
func TestInstallerWaitsWithoutSpinning(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	other := New(Options{Root: root})
	hold := other.newLock(false)
	if err := hold.Lock(); err != nil { // creates the file
		t.Fatal(err)
	}
	hold.Unlock()
	shared := other.newLock(true)
	if ok, err := shared.TryRLock(); !ok || err != nil {
		t.Fatalf("TryRLock = %v, %v", ok, err)
	}
	out, err := helperCommand(t, "lockx", root, "1s").Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var took bool
	var cpuUS int64
	if _, err := fmt.Sscanf(string(out), "took=%t cpu_us=%d", &took, &cpuUS); err != nil {
		t.Fatalf("helper said %q: %v", out, err)
	}
	if took {
		t.Error("the installer took the lock while a shared lock was held")
	}
	// Measured: ~1 ms blocked in flock; the old retry loop burnt ~1 s of CPU per second waited.
	if cpuUS > 150_000 {
		t.Errorf("waiting 1 s for the lock cost %d µs of CPU; want it blocked in flock(2)", cpuUS)
	}
	t.Logf("CPU while waiting 1 s: %d µs", cpuUS)

	// And it wakes when the lock is released.
	cmd := helperCommand(t, "lockx", root, "10s")
	var buf bytes.Buffer
	cmd.Stdout = &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	shared.Unlock()
	if err := cmd.Wait(); err != nil || !strings.HasPrefix(buf.String(), "took=true") {
		t.Errorf("after the release the installer said %q, %v; want took=true", buf.String(), err)
	}
}

// Minor: group/world write bits from the tarball are not installed.
func TestModesStripped(t *testing.T) {
	t.Parallel()
	es := releaseEntries("7.14.3", 0)
	es = append(es,
		entry{Name: "concourse/open/", Type: tar.TypeDir, Mode: 0o777},
		entry{Name: "concourse/open/tool", Body: []byte("x"), Mode: 0o777},
		entry{Name: "concourse/open/data", Body: []byte("y"), Mode: 0o666})
	root := t.TempDir()
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, es, gzip.BestSpeed))
	s, _ := newTestStore(t, root)
	if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{"open": 0o755, "open/tool": 0o755, "open/data": 0o644, "bin/concourse": 0o755} {
		fi, err := os.Stat(filepath.Join(root, CurrentLink, p))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %04o", p, fi.Mode().Perm(), err, want)
		}
	}
	if err := s.VerifyFull(); err != nil {
		t.Errorf("the manifest disagrees with the stripped modes: %v", err)
	}
}

// A mirror that republishes a fixed tarball under the same URL (its .sha1 names another file) is
// tried again without an operator; while it publishes the refused one, only its sidecar is
// fetched; and a mirror that does not answer says so rather than repeating the old refusal.
func TestRefusedReleaseRepublishedUnderTheSameURL(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, lg := newTestStore(t, root, func(o *Options) { o.Probe = probeRelease })
	ctx := context.Background()
	mirror := newReleaseServer(t, "8.2.5", buildTarball(t, withBinary("8.2.5", nil, 0), gzip.BestSpeed))
	src := Source{URL: mirror.URL()}
	var pe *ProbeError
	if _, err := s.Install(ctx, "8.2.5", src); !errors.As(err, &pe) {
		t.Fatalf("Install of a release without a binary = %v; want *ProbeError", err)
	}
	for range 2 {
		var re *RefusedError
		if _, err := s.Install(ctx, "8.2.5", src); !errors.As(err, &re) {
			t.Fatalf("Install of the same published tarball = %v; want *RefusedError", err)
		}
	}
	if n := mirror.tarballGets.Load(); n != 1 {
		t.Errorf("refused tarball downloaded %d times; want 1", n)
	}

	mirror.sidecarCode.Store(http.StatusBadGateway)
	var de *DownloadError
	if _, err := s.Install(ctx, "8.2.5", src); !errors.As(err, &de) || !strings.Contains(err.Error(), "502") {
		t.Errorf("Install with the mirror failing = %v; want a *DownloadError naming the 502", err)
	}
	mirror.sidecarCode.Store(0)

	mirror.setData(buildTarball(t, releaseEntries("8.2.5", 0), gzip.BestSpeed))
	res, err := s.Install(ctx, "8.2.5", src)
	if err != nil || !res.Downloaded {
		t.Fatalf("Install after the mirror republished = %+v, %v; want a fresh install\n%s", res, err, lg)
	}
	if v := checkConsistent(t, root); v != "8.2.5" {
		t.Errorf("installed %q; want 8.2.5", v)
	}
	if _, err := os.Stat(filepath.Join(root, RefusalName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refusal record kept after the republished release installed: %v", err)
	}
}
