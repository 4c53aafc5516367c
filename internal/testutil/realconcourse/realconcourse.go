// Package realconcourse gives tests the real Concourse binaries (built from upstream source, see
// ../shared/concourse/README.md beside the checkout), unpacked once from their .xz files into a
// cache shared by every test process.
//
// Unpacking ~320 MB takes a few seconds, so it happens once per cache: under an exclusive flock
// (parallel test binaries wait instead of unpacking twice), into a temp name renamed into place (a
// crash leaves no half file), verified against SHA256SUMS. A later run reuses a cached file without
// re-hashing it when a stamp beside it records the same checksum, size and mtime.
package realconcourse

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gofrs/flock"
)

// Environment variables that relocate the source and the cache.
const (
	EnvDir   = "CCM_REAL_CONCOURSE_DIR"   // directory holding the .xz files and SHA256SUMS
	EnvCache = "CCM_REAL_CONCOURSE_CACHE" // where they are unpacked
)

// DefaultCache is where the binaries are unpacked when EnvCache is unset and it is writable; the
// test bed keeps its other caches beside it.
const DefaultCache = "/var/cache/ccm-testbed/real-concourse"

// InitVersion is the only version of Concourse's init that is provided (it has not changed in years
// and is version-independent: a static C program).
const InitVersion = "8.2.5"

// Versions are the Concourse versions whose concourse and fly binaries are provided, oldest first.
func Versions() []string { return []string{"7.14.3", "8.2.5"} }

// Set is the real binaries unpacked into a directory.
type Set struct{ Dir string }

// Concourse is the path of the real `concourse` binary of version (mode 0755).
func (s Set) Concourse(version string) string {
	return filepath.Join(s.Dir, "concourse-"+strings.TrimPrefix(version, "v"))
}

// Fly is the path of the real `fly` of version (mode 0755).
func (s Set) Fly(version string) string {
	return filepath.Join(s.Dir, "fly-"+strings.TrimPrefix(version, "v"))
}

// Init is the path of Concourse's static init, the file a release carries at concourse/bin/init.
func (s Set) Init() string { return filepath.Join(s.Dir, "init-"+InitVersion) }

// files are the base names every Set holds.
func files() []string {
	var out []string
	for _, v := range Versions() {
		out = append(out, "concourse-"+v, "fly-"+v)
	}
	return append(out, "init-"+InitVersion)
}

// ErrNoSource means the directory with the .xz files is absent: the tests that need the real
// binaries cannot run here (Require skips them, or fails them under CI=true).
var ErrNoSource = errors.New("real Concourse binaries not found")

// Require returns the unpacked set. When the source directory (or the xz command) is absent it
// skips t with a message saying how to get them, except under CI=true, where it fails t: CI must
// not pass by skipping. Any other problem (a checksum mismatch, an unwritable cache) fails t.
func Require(t testing.TB) Set {
	t.Helper()
	src, err := SourceDir()
	if err == nil {
		_, err = exec.LookPath("xz")
		if err != nil {
			err = fmt.Errorf("%w: the xz command is missing (apt-get install xz-utils)", ErrNoSource)
		}
	}
	if err != nil {
		msg := fmt.Sprintf("realconcourse: %v. The real binaries live beside the checkout in "+
			"../shared/concourse/ (concourse-<v>.xz, fly-<v>.xz, init-%s.xz, SHA256SUMS for %s); "+
			"copy them there or point $%s at such a directory", err, InitVersion,
			strings.Join(Versions(), ", "), EnvDir)
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: these tests must run)", msg)
		}
		t.Skip(msg)
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatalf("realconcourse: %v", err)
	}
	set, err := Unpack(src, cache)
	if err != nil {
		t.Fatalf("realconcourse: %v", err)
	}
	return set
}

// SourceDir is $CCM_REAL_CONCOURSE_DIR, or ../shared/concourse beside the module root (the
// directory holding go.mod, found by walking up from the working directory). The error wraps
// ErrNoSource when the directory or its SHA256SUMS is missing.
func SourceDir() (string, error) {
	dir := os.Getenv(EnvDir)
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoSource, err)
		}
		dir = filepath.Join(filepath.Dir(root), "shared", "concourse")
	}
	if _, err := os.Stat(filepath.Join(dir, "SHA256SUMS")); err != nil {
		return "", fmt.Errorf("%w: %s/SHA256SUMS: %v", ErrNoSource, dir, errors.Unwrap(err))
	}
	return dir, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// CacheDir is $CCM_REAL_CONCOURSE_CACHE (which must be writable), else DefaultCache when writable,
// else <os.UserCacheDir>/ccm-testbed/real-concourse.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		if err := writable(d); err != nil {
			return "", fmt.Errorf("$%s=%s is not a writable directory: %w", EnvCache, d, err)
		}
		return d, nil
	}
	if writable(DefaultCache) == nil {
		return DefaultCache, nil
	}
	uc, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("%s is not writable and there is no user cache dir (%v); set $%s", DefaultCache, err, EnvCache)
	}
	d := filepath.Join(uc, "ccm-testbed", "real-concourse")
	if err := writable(d); err != nil {
		return "", fmt.Errorf("neither %s nor %s is writable (%v); set $%s", DefaultCache, d, err, EnvCache)
	}
	return d, nil
}

// writable creates d if needed and proves a file can be created in it.
func writable(d string) error {
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(d, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// Unpack makes cache hold every file of the set, verified against src/SHA256SUMS, and returns it.
// It holds an exclusive flock on cache/.lock throughout, so concurrent callers unpack once.
func Unpack(src, cache string) (Set, error) {
	sums, err := readSums(filepath.Join(src, "SHA256SUMS"))
	if err != nil {
		return Set{}, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return Set{}, fmt.Errorf("creating cache %s: %w", cache, err)
	}
	lock := flock.New(filepath.Join(cache, ".lock"))
	if err := lock.Lock(); err != nil {
		return Set{}, fmt.Errorf("locking %s: %w", lock.Path(), err)
	}
	defer lock.Unlock()
	for _, name := range files() {
		want, ok := sums[name]
		if !ok {
			return Set{}, fmt.Errorf("%s/SHA256SUMS has no line for %s", src, name)
		}
		if err := ensure(filepath.Join(src, name+".xz"), filepath.Join(cache, name), want); err != nil {
			return Set{}, err
		}
	}
	return Set{Dir: cache}, nil
}

// readSums parses `sha256sum` output: "<64 hex>  <name>" (or " *<name>" for binary mode).
func readSums(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimSpace(name), "*")
		if _, err := hex.DecodeString(sum); !ok || err != nil || len(sum) != 64 || name == "" {
			return nil, fmt.Errorf("%s line %d: %q is not \"<sha256 hex>  <file>\"", path, n, line)
		}
		out[name] = strings.ToLower(sum)
	}
	return out, nil
}

// stamp is what the .stamp file beside a cached file records: if the file still has this size and
// mtime it is the file that was hashed, so the hash need not be recomputed.
func stamp(fi os.FileInfo, sum string) string {
	return fmt.Sprintf("sha256=%s size=%d mtime=%d\n", sum, fi.Size(), fi.ModTime().UnixNano())
}

func stampPath(dst string) string {
	return filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".stamp")
}

// ensure makes dst a verified copy of the decompressed xz, reusing a cached dst when its stamp (or,
// failing that, its hash) matches want. Called with the cache lock held.
func ensure(xz, dst, want string) error {
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		if st, err := os.ReadFile(stampPath(dst)); err == nil && string(st) == stamp(fi, want) && fi.Mode().Perm() == 0o755 {
			return nil
		}
		// No stamp, or the file changed since: hash it once before deciding to unpack again.
		if got, err := fileSHA256(dst); err == nil && got == want {
			if err := os.Chmod(dst, 0o755); err != nil {
				return err
			}
			return writeStamp(dst, want)
		}
	}
	if _, err := os.Stat(xz); err != nil {
		return fmt.Errorf("source %s: %w", xz, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return fmt.Errorf("unpacking %s: %w", xz, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	var stderr bytes.Buffer
	cmd := exec.Command("xz", "-dc", xz)
	cmd.Stdout = io.MultiWriter(tmp, h)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		tmp.Close()
		return fmt.Errorf("xz -dc %s: %v: %s", xz, err, strings.TrimSpace(stderr.String()))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		tmp.Close()
		return fmt.Errorf("%s unpacks to sha256 %s; SHA256SUMS says %s (corrupt or replaced source: get it again)", xz, got, want)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("installing %s: %w", dst, err)
	}
	return writeStamp(dst, want)
}

func writeStamp(dst, sum string) error {
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	p := stampPath(dst)
	tmp := p + ".tmp." + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, []byte(stamp(fi, sum)), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	return os.Rename(tmp, p)
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
