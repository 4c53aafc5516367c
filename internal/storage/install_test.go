package storage

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestInstallFreshRoot(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 0), gzip.DefaultCompression))
	var progress atomic.Int64
	s, lg := newTestStore(t, root, func(o *Options) {
		o.Progress = func(done, total int64) { progress.Add(1) }
	})
	res, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
	if err != nil {
		t.Fatalf("Install: %v\n%s", err, lg)
	}
	if !res.Downloaded || res.Bytes == 0 {
		t.Errorf("result = %+v; want Downloaded with bytes", res)
	}
	if got := readFile(t, filepath.Join(root, InstalledVersionName)); got != "7.14.3" {
		t.Errorf(".installed_version = %q; want %q (no newline)", got, "7.14.3")
	}
	if got := readFile(t, s.BinaryPath()); !strings.Contains(got, "7.14.3") {
		t.Errorf("bin/concourse = %q", got)
	}
	for _, name := range []string{"bin", "resource-types", "fly-assets"} {
		if tgt, err := os.Readlink(filepath.Join(root, name)); err != nil || tgt != "current/"+name {
			t.Errorf("%s -> %q, %v; want current/%s", name, tgt, err, name)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "resource-types/git/resource_metadata.json")); err != nil {
		t.Error(err)
	}
	if fi, err := os.Stat(s.BinaryPath()); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("binary mode = %v, %v; want 0755", fi.Mode(), err)
	}
	if v, err := s.Installed(); err != nil || v != "7.14.3" {
		t.Errorf("Installed() = %q, %v", v, err)
	}
	// Every directory on the way to the binary is traversable by other users: the web service
	// runs as an unprivileged user.
	real, err := filepath.EvalSymlinks(s.BinaryPath())
	if err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(real); d != root && d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o005 != 0o005 {
			t.Errorf("%s mode = %v, %v; want others r-x", d, fi.Mode(), err)
		}
	}
	if err := s.VerifyFull(); err != nil {
		t.Errorf("VerifyFull: %v", err)
	}
	if err := s.VerifyQuick(func(bin string) error {
		if !strings.HasPrefix(bin, filepath.Join(root, VersionsDir)) {
			t.Errorf("probe got %s; want the binary inside versions/", bin)
		}
		return nil
	}); err != nil {
		t.Errorf("VerifyQuick: %v", err)
	}
	if countDirs(t, filepath.Join(root, StagingDir)) != 0 {
		t.Error(".staging not empty")
	}
	if progress.Load() == 0 || progress.Load() > 102 {
		t.Errorf("progress called %d times; want 1..102", progress.Load())
	}
	if !strings.Contains(readFile(t, filepath.Join(root, LockName)), "unit=concourse-ci-machine/0") {
		t.Errorf("lock file lacks holder info: %q", readFile(t, filepath.Join(root, LockName)))
	}
	for _, want := range []string{"concourse-ci-machine/0: took install lock", "downloaded and extracted", "installed 7.14.3 as"} {
		if !strings.Contains(lg.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, lg)
		}
	}

	// Idempotent: no lock, no download.
	res, err = s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
	if err != nil || res.Downloaded {
		t.Fatalf("second Install = %+v, %v; want no download", res, err)
	}
	if n := rs.tarballGets.Load(); n != 1 {
		t.Errorf("tarball requests = %d; want 1", n)
	}
}

func TestUpgradeKeepsPreviousAndGC(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, lg := newTestStore(t, root)
	ctx := context.Background()
	install := func(v string) {
		t.Helper()
		rs := newReleaseServer(t, v, buildTarball(t, releaseEntries(v, 0), gzip.BestSpeed))
		if _, err := s.Install(ctx, v, Source{URL: rs.URL()}); err != nil {
			t.Fatalf("Install %s: %v\n%s", v, err, lg)
		}
	}
	install("7.14.3")
	first, _ := os.Readlink(filepath.Join(root, CurrentLink))
	install("8.2.5")
	if got, _ := os.Readlink(filepath.Join(root, PreviousLink)); got != first {
		t.Errorf("previous -> %q; want %q", got, first)
	}
	if got := readFile(t, filepath.Join(root, InstalledVersionName)); got != "8.2.5" {
		t.Errorf(".installed_version = %q", got)
	}
	// A unit still runs 7.14.3: GC must keep it even after it leaves previous.
	other, _ := newTestStore(t, root, func(o *Options) { o.Unit = "concourse-ci-machine/10" })
	if err := other.RecordRunning("7.14.3", ""); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "worker/concourse-ci-machine-10/version")); got != "7.14.3" {
		t.Errorf("record = %q", got)
	}
	install("8.3.0")
	if n := countDirs(t, filepath.Join(root, VersionsDir)); n != 3 {
		t.Errorf("versions = %d; want 3 (current, previous, recorded)", n)
	}
	if err := other.RecordRunning("8.3.0", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, VersionsDir))
	var names []string
	for _, e := range ents {
		names = append(names, versionOfDir(e.Name()))
	}
	if strings.Join(names, ",") != "8.2.5,8.3.0" {
		t.Errorf("after GC versions = %v; want 8.2.5 (previous) and 8.3.0 (current)", names)
	}
	st, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Installed != "8.3.0" || len(st.Versions) != 2 || st.LockHeld || st.Records["concourse-ci-machine-10"] != "8.3.0" {
		t.Errorf("status = %+v", st)
	}
	out := st.String()
	for _, want := range []string{"installed version:  8.3.0", "(current)", "(previous)", "install lock:       free", "concourse-ci-machine-10", "disk:"} {
		if !strings.Contains(out, want) {
			t.Errorf("Status.String() lacks %q:\n%s", want, out)
		}
	}
	// A unit that leaves stops protecting its release.
	if err := other.RecordRunning("8.2.5", ""); err != nil {
		t.Fatal(err)
	}
	install("9.0.0")
	if n := countDirs(t, filepath.Join(root, VersionsDir)); n != 3 {
		t.Errorf("versions = %d; want 3 (9.0.0 current, 8.3.0 previous, 8.2.5 recorded)", n)
	}
	if err := other.ForgetRunning(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "worker/concourse-ci-machine-10")); !os.IsNotExist(err) {
		t.Errorf("record still there after ForgetRunning: %v", err)
	}
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if n := countDirs(t, filepath.Join(root, VersionsDir)); n != 2 {
		t.Errorf("versions after the unit left = %d; want 2 (current, previous)", n)
	}
}

// The old Python charm merged releases into <Root>/bin (reference §7.2).
func TestLegacyBinMovedAside(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin/concourse"), []byte("old"), 0o755)
	os.WriteFile(filepath.Join(root, InstalledVersionName), []byte("7.11.0"), 0o644)
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed))
	s, lg := newTestStore(t, root)
	if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); err != nil {
		t.Fatalf("Install: %v\n%s", err, lg)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "bin")); tgt != "current/bin" {
		t.Errorf("bin -> %q", tgt)
	}
	ents, _ := os.ReadDir(filepath.Join(root, LegacyDir))
	if len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), "bin-") {
		t.Fatalf(".legacy = %v", ents)
	}
	if got := readFile(t, filepath.Join(root, LegacyDir, ents[0].Name(), "concourse")); got != "old" {
		t.Errorf("legacy binary = %q", got)
	}
	if !strings.Contains(lg.String(), "moved the old charm's") {
		t.Errorf("log does not mention the legacy move:\n%s", lg)
	}
}

func TestInstallLocalPath(t *testing.T) {
	t.Parallel()
	tgz := buildTarball(t, releaseEntries("8.2.5", 0), gzip.BestSpeed)
	file := filepath.Join(t.TempDir(), "concourse.tgz")
	os.WriteFile(file, tgz, 0o644)
	rs := newReleaseServer(t, "8.2.5", tgz)

	cases := []struct {
		name    string
		src     Source
		wantErr bool
	}{
		{"no-checksum", Source{LocalPath: file}, false},
		{"sha256", Source{LocalPath: file, SHA256: sha256hex(tgz)}, false},
		{"sha256-wrong", Source{LocalPath: file, SHA256: strings.Repeat("0", 64)}, true},
		{"sidecar", Source{LocalPath: file, SHA1URL: rs.URL() + ".sha1"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			s, lg := newTestStore(t, root)
			_, err := s.Install(context.Background(), "8.2.5", c.src)
			if c.wantErr {
				var ce *ChecksumError
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v; want *ChecksumError", err)
				}
				checkConsistent(t, root)
				return
			}
			if err != nil {
				t.Fatalf("Install: %v\n%s", err, lg)
			}
			if v := checkConsistent(t, root); v != "8.2.5" {
				t.Errorf("installed %q", v)
			}
		})
	}
}

func TestCheckSharedAndWritable(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, _ := newTestStore(t, root)
	var mm *MarkerMissingError
	if err := s.CheckShared(); !errors.As(err, &mm) || mm.Path != filepath.Join(root, SharedMarkerName) {
		t.Errorf("CheckShared = %v; want *MarkerMissingError for the marker", err)
	} else if !strings.Contains(err.Error(), "touch") {
		t.Errorf("error names no fix: %v", err)
	}
	os.WriteFile(filepath.Join(root, SharedMarkerName), nil, 0o644)
	if err := s.CheckShared(); err != nil {
		t.Errorf("CheckShared = %v", err)
	}
	missing, _ := newTestStore(t, filepath.Join(root, "nope"))
	var ue *UnavailableError
	if err := missing.CheckShared(); !errors.As(err, &ue) {
		t.Errorf("CheckShared on a missing root = %v; want *UnavailableError", err)
	}
	file, _ := newTestStore(t, filepath.Join(root, SharedMarkerName))
	if err := file.CheckShared(); !errors.As(err, &ue) {
		t.Errorf("CheckShared on a file = %v; want *UnavailableError", err)
	}
	// Many concurrent probes on one root never collide (reference weakness #14).
	errs := make(chan error, 50)
	for range 50 {
		go func() { errs <- s.CheckWritable() }()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Errorf("CheckWritable: %v", err)
		}
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), writeTestPrefix) {
			t.Errorf("probe %s left behind", e.Name())
		}
	}
}

func TestUnitTag(t *testing.T) {
	for in, want := range map[string]string{"concourse-ci-machine/0": "concourse-ci-machine-0", "concourse-ci-machine/10": "concourse-ci-machine-10"} {
		if got := UnitTag(in); got != want {
			t.Errorf("UnitTag(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestInvalidVersionRejected(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t, t.TempDir())
	for _, v := range []string{"", "..", "7.14.3/../../x", "v 1"} {
		if _, err := s.Install(context.Background(), v, Source{URL: "http://127.0.0.1:1/x"}); err == nil {
			t.Errorf("Install(%q) succeeded", v)
		}
	}
}

// Regression: buffers handed from the download goroutine to the extractor
// are recycled; a tarball of many buffers must come out intact (an aliasing
// bug once corrupted every stream longer than a few MiB).
func TestInstallManyBuffers(t *testing.T) {
	t.Parallel()
	es := releaseEntries("7.14.3", 6<<20)
	es = append(es, entry{Name: "concourse/fly-assets/big.txt", Body: compressibleBytes(9, 8<<20)})
	tgz := buildTarball(t, es, gzip.BestSpeed)
	rs := newReleaseServer(t, "7.14.3", tgz)
	rs.cutAfter.Store(int64(len(tgz) / 2)) // and resume across a buffer boundary
	root := t.TempDir()
	s, lg := newTestStore(t, root)
	if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); err != nil {
		t.Fatalf("Install: %v\n%s", err, lg)
	}
	if v := checkConsistent(t, root); v != "7.14.3" {
		t.Fatalf("installed %q", v)
	}
	got, err := os.ReadFile(filepath.Join(root, "bin/containerd"))
	if err != nil || !bytes.Equal(got, es[len(es)-2].Body) {
		t.Errorf("bin/containerd differs from the tarball (%v)", err)
	}
}

// A unit asking for the version it already has must not queue behind another
// unit's upgrade that is staging in the meantime.
func TestInstalledVersionDoesNotWaitForUpgrade(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	rs := newReleaseServer(t, "7.14.3", buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed))
	s, _ := newTestStore(t, root)
	if _, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()}); err != nil {
		t.Fatal(err)
	}
	upgrader, _ := newTestStore(t, root, func(o *Options) { o.Unit = "concourse-ci-machine/1" })
	fl, _, _, err := upgrader.lockExclusive(context.Background(), "install 8.2.5", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Unlock()
	if _, err := upgrader.newStagingDir(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := s.Install(ctx, "7.14.3", Source{URL: rs.URL()})
	if err != nil || res.Downloaded || res.Waited != 0 {
		t.Errorf("Install during another unit's upgrade = %+v, %v; want an immediate no-op", res, err)
	}
}
