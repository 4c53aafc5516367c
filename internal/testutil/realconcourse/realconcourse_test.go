package realconcourse

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource writes small stand-ins for every file of the set as .xz files plus SHA256SUMS, so the
// cache logic is tested in milliseconds without the 320 MB originals.
func fakeSource(t *testing.T) (dir string, content map[string][]byte) {
	t.Helper()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz missing (apt-get install xz-utils)")
	}
	dir = t.TempDir()
	content = map[string][]byte{}
	var sums bytes.Buffer
	for _, name := range files() {
		b := []byte("#!/bin/sh\necho " + name + "\n")
		content[name] = b
		cmd := exec.Command("xz", "-c")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".xz"), out, 0o444); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(s[:]), name)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), sums.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
	return dir, content
}

// countingXZ puts an `xz` first on PATH that logs each call, then runs the real one, and returns a
// function that reports how many times it ran.
func countingXZ(t *testing.T) func() int {
	t.Helper()
	real, err := exec.LookPath("xz")
	if err != nil {
		t.Skip("xz missing")
	}
	bin := t.TempDir()
	log := filepath.Join(bin, "calls")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", log, real)
	if err := os.WriteFile(filepath.Join(bin, "xz"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return func() int {
		b, _ := os.ReadFile(log)
		return bytes.Count(b, []byte("\n"))
	}
}

func assertSet(t *testing.T, s Set, content map[string][]byte) {
	t.Helper()
	paths := map[string]string{"init-" + InitVersion: s.Init()}
	for _, v := range Versions() {
		paths["concourse-"+v], paths["fly-"+v] = s.Concourse(v), s.Fly(v)
	}
	for name, want := range content {
		p := paths[name]
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v; want 0755", p, fi.Mode().Perm())
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
			t.Errorf("%s = %q; want %q", p, got, want)
		}
	}
}

func TestUnpackOnceThenReuseFromStamps(t *testing.T) {
	src, content := fakeSource(t)
	calls := countingXZ(t)
	cache := filepath.Join(t.TempDir(), "cache")

	s, err := Unpack(src, cache)
	if err != nil {
		t.Fatal(err)
	}
	assertSet(t, s, content)
	if got := calls(); got != len(files()) {
		t.Errorf("first unpack ran xz %d times; want once per file (%d)", got, len(files()))
	}

	// Second run: every file is trusted from its stamp, so xz never runs (and the sources are
	// not even needed).
	for _, n := range files() {
		os.Remove(filepath.Join(src, n+".xz"))
	}
	if s, err = Unpack(src, cache); err != nil {
		t.Fatalf("second unpack without sources: %v", err)
	}
	assertSet(t, s, content)
	if got := calls(); got != len(files()) {
		t.Errorf("second unpack ran xz (%d calls in all); want the cache reused", got)
	}

	// What makes a rerun cheap: a file with the stamped size and mtime is not hashed again. Swap
	// in same-size content with the old mtime and it is trusted, which proves no hashing happened.
	p := s.Init()
	fi, _ := os.Stat(p)
	same := bytes.Repeat([]byte("x"), int(fi.Size()))
	if err := os.WriteFile(p, same, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	if _, err := Unpack(src, cache); err != nil {
		t.Fatalf("third unpack: %v", err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, same) {
		t.Errorf("a file matching its stamp was re-hashed and replaced; want it trusted without hashing")
	}
}

func TestUnpackReplacesATamperedCachedFile(t *testing.T) {
	src, content := fakeSource(t)
	calls := countingXZ(t)
	cache := t.TempDir()
	s, err := Unpack(src, cache)
	if err != nil {
		t.Fatal(err)
	}
	// Tampering changes the mtime, so the stamp no longer vouches for the file: it is hashed,
	// found wrong and unpacked again.
	p := s.Concourse("8.2.5")
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho tampered\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A file whose stamp is missing but whose content is right is re-hashed, not re-unpacked.
	os.Remove(stampPath(s.Fly("7.14.3")))
	before := calls()
	if _, err := Unpack(src, cache); err != nil {
		t.Fatal(err)
	}
	assertSet(t, s, content)
	if got := calls() - before; got != 1 {
		t.Errorf("xz ran %d times; want exactly once (for the tampered file)", got)
	}
	if _, err := os.Stat(stampPath(s.Fly("7.14.3"))); err != nil {
		t.Errorf("stamp not rewritten after re-hashing: %v", err)
	}
}

func TestUnpackRefusesAChecksumMismatchAndLeavesNoFile(t *testing.T) {
	src, _ := fakeSource(t)
	sums, _ := os.ReadFile(filepath.Join(src, "SHA256SUMS"))
	lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
	for i, l := range lines {
		if strings.HasSuffix(l, "  fly-8.2.5") {
			lines[i] = strings.Repeat("0", 64) + "  fly-8.2.5"
		}
	}
	os.Chmod(filepath.Join(src, "SHA256SUMS"), 0o644)
	if err := os.WriteFile(filepath.Join(src, "SHA256SUMS"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	_, err := Unpack(src, cache)
	if err == nil || !strings.Contains(err.Error(), "fly-8.2.5.xz") || !strings.Contains(err.Error(), "SHA256SUMS says 0000") {
		t.Fatalf("err = %v; want a checksum mismatch naming fly-8.2.5.xz", err)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "fly-8.2.5") || strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left %s in the cache after a failed unpack", e.Name())
		}
	}
}

func TestUnpackInParallelUnpacksOnce(t *testing.T) {
	src, content := fakeSource(t)
	calls := countingXZ(t)
	cache := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	sets := make([]Set, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sets[i], errs[i] = Unpack(src, cache)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		assertSet(t, sets[i], content)
	}
	if got := calls(); got != len(files()) {
		t.Errorf("8 parallel callers ran xz %d times; want %d (once per file)", got, len(files()))
	}
}

// recordingTB is a testing.TB whose Skip/Fatal record the message and end the goroutine, so the
// test can see what Require would do to a real test.
type recordingTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runRequire(r *recordingTB) {
	done := make(chan struct{})
	go func() { defer close(done); Require(r) }()
	<-done
}

func TestRequireWithoutTheBinaries(t *testing.T) {
	for _, tc := range []struct {
		name, ci string
		skip     bool
	}{
		{"a developer machine skips, saying how to get them", "", true},
		{"CI fails instead of passing by skipping", "true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvDir, t.TempDir()) // exists, but holds no SHA256SUMS
			t.Setenv("CI", tc.ci)
			r := &recordingTB{}
			runRequire(r)
			msg := r.skipped + r.failed
			if (r.skipped != "") != tc.skip || (r.failed != "") == tc.skip {
				t.Fatalf("skipped=%q failed=%q; want skip=%v", r.skipped, r.failed, tc.skip)
			}
			for _, want := range []string{"SHA256SUMS", "../shared/concourse", EnvDir} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not mention %q", msg, want)
				}
			}
		})
	}
}

func TestSourceDirDefaultsBesideTheModule(t *testing.T) {
	t.Setenv(EnvDir, "")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(filepath.Dir(root), "shared", "concourse")
	got, err := SourceDir()
	if _, statErr := os.Stat(filepath.Join(want, "SHA256SUMS")); statErr != nil {
		if !errors.Is(err, ErrNoSource) || !strings.Contains(err.Error(), want) {
			t.Fatalf("SourceDir() error = %v; want ErrNoSource naming %s", err, want)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("SourceDir() = %q, %v; want %q", got, err, want)
	}
}

func TestCacheDirOverride(t *testing.T) {
	d := filepath.Join(t.TempDir(), "c")
	t.Setenv(EnvCache, d)
	if got, err := CacheDir(); err != nil || got != d {
		t.Fatalf("CacheDir() = %q, %v; want %q", got, err, d)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	t.Setenv(EnvCache, f)
	if _, err := CacheDir(); err == nil || !strings.Contains(err.Error(), EnvCache) {
		t.Fatalf("CacheDir() with a file as cache: err = %v; want one naming $%s", err, EnvCache)
	}
}

// TestRealBinariesRun is the end-to-end check on the real files: each `--version` prints the bare
// version, and init is a static ELF executable.
func TestRealBinariesRun(t *testing.T) {
	s := Require(t)
	for _, v := range Versions() {
		for _, bin := range []string{s.Concourse(v), s.Fly(v)} {
			out, err := exec.Command(bin, "--version").Output()
			if err != nil || strings.TrimSpace(string(out)) != v {
				t.Errorf("%s --version = %q, %v; want %q", bin, out, err, v)
			}
		}
	}
	// Static: no program interpreter, so it runs as PID 1 of any container's root file system.
	f, err := elf.Open(s.Init())
	if err != nil {
		t.Fatalf("%s: %v", s.Init(), err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter; want a static executable", s.Init())
		}
	}
}
