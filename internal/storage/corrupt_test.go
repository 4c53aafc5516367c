package storage

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nothingVisible: a rejected install leaves no current, no marker, no
// versions and no staging.
func nothingVisible(t *testing.T, root string) {
	t.Helper()
	for _, p := range []string{CurrentLink, InstalledVersionName, "bin"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists after a rejected install", p)
		}
	}
	if n := countDirs(t, filepath.Join(root, VersionsDir)); n != 0 {
		t.Errorf("versions has %d entries after a rejected install", n)
	}
	if n := countDirs(t, filepath.Join(root, StagingDir)); n != 0 {
		t.Errorf(".staging has %d entries after a rejected install", n)
	}
}

func TestRejectsBadTarballs(t *testing.T) {
	t.Parallel()
	base := releaseEntries("7.14.3", 0)
	with := func(extra ...entry) []entry { return append(append([]entry{}, base...), extra...) }
	cases := []struct {
		name    string
		entries []entry
		reason  string // substring of UnsafePathError.Reason
	}{
		{"dotdot", with(entry{Name: "concourse/../x", Body: []byte("x")}), `".." component`},
		{"dotdot-deep", with(entry{Name: "concourse/bin/../../../etc/passwd", Body: []byte("x")}), `".." component`},
		{"absolute", with(entry{Name: "/etc/cron.d/evil", Body: []byte("x")}), "absolute path"},
		{"outside-root", with(entry{Name: "other/file", Body: []byte("x")}), "outside the tarball root"},
		{"symlink-absolute", with(entry{Name: "concourse/bin/sh", Type: tar.TypeSymlink, Linkname: "/bin/sh"}), "absolute path"},
		{"symlink-escape", with(entry{Name: "concourse/bin/up", Type: tar.TypeSymlink, Linkname: "../../x"}), "escapes"},
		{"symlink-chain", with(
			entry{Name: "concourse/a", Type: tar.TypeSymlink, Linkname: "."},
			entry{Name: "concourse/a/b", Type: tar.TypeSymlink, Linkname: ".."}), "goes through the symlink"},
		{"symlink-dotdot-inside", with(entry{Name: "concourse/x", Type: tar.TypeSymlink, Linkname: "bin/../.."}), `".." after a name`},
		{"hardlink-escape", with(entry{Name: "concourse/bin/pw", Type: tar.TypeLink, Linkname: "/etc/passwd"}), "absolute path"},
		{"hardlink-unknown", with(entry{Name: "concourse/bin/pw", Type: tar.TypeLink, Linkname: "concourse/nope"}), "not a file extracted earlier"},
		{"device", with(entry{Name: "concourse/bin/null", Type: tar.TypeChar}), "device and fifo"},
		{"fifo", with(entry{Name: "concourse/bin/fifo", Type: tar.TypeFifo}), "device and fifo"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			rs := newReleaseServer(t, "7.14.3", buildTarball(t, c.entries, gzip.BestSpeed))
			s, _ := newTestStore(t, root)
			_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
			var ue *UnsafePathError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v; want *UnsafePathError", err)
			}
			if !strings.Contains(ue.Reason, c.reason) {
				t.Errorf("reason = %q; want it to mention %q", ue.Reason, c.reason)
			}
			if !strings.Contains(err.Error(), "nothing was installed") {
				t.Errorf("error text %q does not say nothing was installed", err)
			}
			if rs.tarballGets.Load() != 1 {
				t.Errorf("an unsafe tarball was fetched %d times; want 1 (no retry)", rs.tarballGets.Load())
			}
			nothingVisible(t, root)
			// Nothing escaped either.
			if _, err := os.Lstat(filepath.Join(filepath.Dir(root), "x")); err == nil {
				t.Error("file written outside the root")
			}
		})
	}
}

func TestSafeLinksAccepted(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	es := append(releaseEntries("7.14.3", 0),
		entry{Name: "concourse/bin/runc.real", Type: tar.TypeLink, Linkname: "concourse/bin/runc"},
		entry{Name: "concourse/bin/docker-runc", Type: tar.TypeSymlink, Linkname: "runc"},
		entry{Name: "concourse/fly-assets/git-meta", Type: tar.TypeSymlink, Linkname: "../resource-types/git/resource_metadata.json"},
	)
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, es, gzip.BestSpeed))
	s, lg := newTestStore(t, root)
	if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); err != nil {
		t.Fatalf("Install: %v\n%s", err, lg)
	}
	if err := s.VerifyFull(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "fly-assets/git-meta")); !strings.Contains(got, `"git"`) {
		t.Errorf("symlink content = %q", got)
	}
}

func TestRejectsBadChecksums(t *testing.T) {
	t.Parallel()
	tgz := buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed)
	cases := []struct {
		name   string
		setup  func(rs *releaseServer)
		src    func(rs *releaseServer) Source
		algo   string
		reason string // "" = a mismatch
		gets   int64  // tarball requests expected
	}{
		{"wrong-sha1", func(rs *releaseServer) {
			rs.mu.Lock()
			rs.sum = strings.Repeat("ab", 20) + "  " + rs.asset + "\n"
			rs.mu.Unlock()
		}, nil, "sha1", "", 1}, // a mismatch is not transient: one download, no retries
		{"missing-sidecar", func(rs *releaseServer) { rs.sidecarCode.Store(404) }, nil, "sha1", "missing", 0},
		{"malformed-sidecar", func(rs *releaseServer) {
			rs.mu.Lock()
			rs.sum = "not a checksum\n"
			rs.mu.Unlock()
		}, nil, "sha1", "malformed", 0},
		{"wrong-sha256", nil, func(rs *releaseServer) Source {
			return Source{URL: rs.URL(), SHA256: strings.Repeat("0", 64)}
		}, "sha256", "", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			rs := newReleaseServer(t, "7.14.3", tgz)
			if c.setup != nil {
				c.setup(rs)
			}
			src := Source{URL: rs.URL()}
			if c.src != nil {
				src = c.src(rs)
			}
			s, _ := newTestStore(t, root)
			_, err := s.Install(context.Background(), "7.14.3", src)
			var ce *ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v; want *ChecksumError", err)
			}
			var de *DownloadError
			if !errors.As(err, &de) || de.URL != rs.URL() {
				t.Errorf("err = %v; want a *DownloadError naming the URL", err)
			}
			if ce.Algo != c.algo || !strings.Contains(ce.Reason, c.reason) {
				t.Errorf("ChecksumError = %+v; want algo %s, reason ~%q", ce, c.algo, c.reason)
			}
			if got := rs.tarballGets.Load(); got != c.gets {
				t.Errorf("tarball requests = %d; want %d", got, c.gets)
			}
			nothingVisible(t, root)
		})
	}
}

func TestTruncatedBodyRejected(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	tgz := buildTarball(t, releaseEntries("7.14.3", 100<<10), gzip.BestSpeed)
	rs := newReleaseServer(t, "7.14.3", tgz)
	// The server's sidecar matches the whole file, but the file it serves is
	// cut short and says so in Content-Length: a truncated upload.
	rs.mu.Lock()
	rs.data = tgz[:len(tgz)/2]
	rs.mu.Unlock()
	s, _ := newTestStore(t, root)
	_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
	// The digest of what was served differs: downloading the same short file again cannot help.
	var de *DownloadError
	if !errors.As(err, &de) || de.Attempts != 1 || !errors.As(err, new(*ChecksumError)) {
		t.Fatalf("err = %v; want a *DownloadError after 1 attempt wrapping a *ChecksumError", err)
	}
	if got := rs.tarballGets.Load(); got != 1 {
		t.Errorf("tarball requests = %d; want 1", got)
	}
	if !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("error %q does not say the stream ended early", err)
	}
	nothingVisible(t, root)
}

func TestBitFlipDetectedAndRepaired(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed))
	s, lg := newTestStore(t, root)
	ctx := context.Background()
	if _, err := s.Install(ctx, "7.14.3", Source{URL: rs.URL()}); err != nil {
		t.Fatal(err)
	}
	damagedDir, _ := os.Readlink(filepath.Join(root, CurrentLink))
	gdn := filepath.Join(root, "bin/gdn")
	b, _ := os.ReadFile(gdn)
	b[1000] ^= 0x04
	if err := os.WriteFile(gdn, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyQuick(nil); err != nil {
		t.Errorf("VerifyQuick = %v; a bit flip keeps size and mode", err)
	}
	err := s.VerifyFull()
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.HasSuffix(ce.Path, "bin/gdn") || !strings.Contains(ce.Reason, "sha256") {
		t.Fatalf("VerifyFull = %v; want *CorruptError for bin/gdn", err)
	}
	res, err := s.Install(ctx, "7.14.3", Source{URL: rs.URL()})
	if err != nil || !res.Downloaded {
		t.Fatalf("repair Install = %+v, %v\n%s", res, err, lg)
	}
	if err := s.VerifyFull(); err != nil {
		t.Errorf("after repair VerifyFull = %v", err)
	}
	if got, _ := os.Readlink(filepath.Join(root, PreviousLink)); got != damagedDir {
		t.Errorf("previous -> %q; want the damaged %q kept for running processes", got, damagedDir)
	}

	// A size change is visible to the quick check, so Install repairs it
	// even from a fresh Store (another hook invocation).
	os.WriteFile(filepath.Join(root, "fly-assets/fly-linux-amd64.tgz"), []byte("short"), 0o644)
	fresh, _ := newTestStore(t, root)
	if err := fresh.VerifyQuick(nil); !errors.As(err, &ce) {
		t.Fatalf("VerifyQuick = %v; want *CorruptError", err)
	}
	if ok, err := fresh.WaitInstalled(ctx, "7.14.3", 0); ok || !errors.As(err, &ce) {
		t.Errorf("WaitInstalled on a damaged install = %v, %v; want false, *CorruptError", ok, err)
	}
	if res, err := fresh.Install(ctx, "7.14.3", Source{URL: rs.URL()}); err != nil || !res.Downloaded {
		t.Fatalf("repair Install = %+v, %v", res, err)
	}
	checkConsistent(t, root)
	// A failing probe (the binary does not run) also marks it for repair.
	if err := fresh.VerifyQuick(func(string) error { return errors.New("exec format error") }); !errors.As(err, &ce) {
		t.Fatalf("VerifyQuick with failing probe = %v", err)
	}
	if res, err := fresh.Install(ctx, "7.14.3", Source{URL: rs.URL()}); err != nil || !res.Downloaded {
		t.Fatalf("Install after a failed probe = %+v, %v", res, err)
	}
}

// A tarball published broken (its checksum matches, its content does not extract) is rejected
// after one download, not retried: another attempt would fetch the same bytes.
func TestBrokenAsPublishedNotRetried(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	tgz := buildTarball(t, releaseEntries("7.14.3", 64<<10), gzip.BestSpeed)
	broken := append([]byte(nil), tgz...)
	for i := len(broken) / 3; i < len(broken)/3+64; i++ {
		broken[i] ^= 0xff // damage the deflate stream itself
	}
	rs := newReleaseServer(t, "7.14.3", broken) // the sidecar is computed over the broken file
	s, _ := newTestStore(t, root)
	_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
	var ae *ArchiveError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v; want *ArchiveError", err)
	}
	if !strings.Contains(err.Error(), "matches its checksum but is not a valid release tarball") {
		t.Errorf("error text: %v", err)
	}
	if got := rs.tarballGets.Load(); got != 1 {
		t.Errorf("tarball requests = %d; want 1 (no retry)", got)
	}
	nothingVisible(t, root)
}
