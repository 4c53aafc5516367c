// Package release builds Concourse release tarballs shaped like the real ones (contract §1.3, §9.1)
// around the fake `concourse` binary, and serves them from a GitHub-like HTTP server with fault
// injection, so charm tests can exercise download, verification and install without internet.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Asset is one built release tarball.
type Asset struct {
	Name    string // concourse-<V>-linux-<arch>.tgz
	Path    string // where it was written
	SHA1    string // hex, as in <Name>.sha1
	SHA256  string // hex, as in the API's "digest": "sha256:<hex>"
	Size    int64
	Version string // without "v"
	Arch    string // Go arch name
}

// SHA1Line is the exact content of <Name>.sha1 (§1.2): what `shasum` writes.
func (a Asset) SHA1Line() string { return a.SHA1 + "  " + a.Name + "\n" }

// BuildOptions tune a build.
type BuildOptions struct {
	// PadBytes adds that many incompressible bytes (inside resource-types/git/rootfs.tgz, where the
	// bulk of a real tarball is) to make downloads take measurable time.
	PadBytes int64
	// Mutate may append entries after the regular ones, e.g. "../x" or an escaping symlink, to test
	// that the installer refuses them. Errors stick in the tar.Writer and surface from Build.
	Mutate func(tw *tar.Writer)
}

// stubs are the helper executables a real tarball carries in bin/ (§1.3); the charm only checks
// they exist and are executable.
var stubs = []string{"gdn", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "init", "bridge", "loopback", "host-local", "portmap"}

// resourceTypes bundled in the fake tarball, with their metadata (§1.3 resource_metadata.json).
var resourceTypes = []struct{ name, version string }{{"git", "1.18.0"}, {"time", "1.9.0"}}

// mtime is fixed so that two builds of the same inputs are byte-identical (same SHA-1).
var mtime = time.Date(2025, 11, 12, 0, 0, 0, 0, time.UTC)

// Build writes dir/concourse-<version>-linux-<arch>.tgz with fakeBinary as bin/concourse, and its
// .sha1 sidecar. Files appear only when complete (written under a temp name, then renamed).
func Build(dir, version, arch, fakeBinary string, opts BuildOptions) (Asset, error) {
	version = strings.TrimPrefix(version, "v")
	a := Asset{Name: fmt.Sprintf("concourse-%s-linux-%s.tgz", version, arch), Version: version, Arch: arch}
	a.Path = filepath.Join(dir, a.Name)
	bin, err := os.ReadFile(fakeBinary)
	if err != nil {
		return Asset{}, fmt.Errorf("reading fake binary: %w", err)
	}

	tmp, err := os.CreateTemp(dir, "."+a.Name+".*")
	if err != nil {
		return Asset{}, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h1, h256 := sha1.New(), sha256.New()
	counter := &countWriter{}
	if err := writeTarball(io.MultiWriter(tmp, h1, h256, counter), version, arch, bin, opts); err != nil {
		tmp.Close()
		return Asset{}, fmt.Errorf("building %s: %w", a.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return Asset{}, err
	}
	a.SHA1, a.SHA256, a.Size = hexSum(h1), hexSum(h256), counter.n
	if err := os.Rename(tmp.Name(), a.Path); err != nil {
		return Asset{}, err
	}
	if err := os.WriteFile(a.Path+".sha1", []byte(a.SHA1Line()), 0o644); err != nil {
		return Asset{}, err
	}
	return a, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

func writeTarball(w io.Writer, version, arch string, bin []byte, opts BuildOptions) error {
	// BestSpeed: the padding is random, so a higher level only burns CPU.
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	for _, d := range []string{"concourse/", "concourse/bin/", "concourse/fly-assets/", "concourse/resource-types/"} {
		addDir(tw, d)
	}
	addFile(tw, "concourse/bin/concourse", 0o755, bin)
	for _, s := range stubs {
		addFile(tw, "concourse/bin/"+s, 0o755, []byte(fmt.Sprintf("#!/bin/sh\n# Stand-in for %s in a fake Concourse %s release.\necho '%s (fake Concourse %s stub)'\n", s, version, s, version)))
	}
	fly, err := tinyTgz("fly", []byte(fmt.Sprintf("#!/bin/sh\necho %s\n", version)), 0)
	if err != nil {
		return err
	}
	addFile(tw, "concourse/fly-assets/fly-linux-amd64.tgz", 0o644, fly)
	for i, rt := range resourceTypes {
		base := "concourse/resource-types/" + rt.name + "/"
		addDir(tw, base)
		addFile(tw, base+"resource_metadata.json", 0o644, []byte(fmt.Sprintf(
			`{"type":%q,"version":%q,"privileged":false,"unique_version_history":false}`, rt.name, rt.version)))
		pad := int64(0)
		if i == 0 {
			pad = opts.PadBytes
		}
		rootfs, err := tinyTgz("rootfs/etc/os-release", []byte("NAME=fake\n"), pad, version, arch)
		if err != nil {
			return err
		}
		addFile(tw, base+"rootfs.tgz", 0o644, rootfs)
	}
	if opts.Mutate != nil {
		opts.Mutate(tw)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// tinyTgz is a one-file tgz, plus pad bytes of seeded random data (deterministic per version and
// arch) in a second member when pad > 0.
func tinyTgz(name string, content []byte, pad int64, seed ...string) ([]byte, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(gz)
	addFile(tw, name, 0o755, content)
	if pad > 0 {
		s := sha256.Sum256([]byte(strings.Join(seed, "/")))
		rng := rand.NewChaCha8(s)
		tw.WriteHeader(&tar.Header{Name: "rootfs/opt/padding", Mode: 0o644, Size: pad, ModTime: mtime, Typeflag: tar.TypeReg})
		if _, err := io.CopyN(tw, rng, pad); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// addDir and addFile ignore errors on purpose: tar.Writer keeps the first error and returns it
// from Close, which writeTarball checks.
func addDir(tw *tar.Writer, name string) {
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, ModTime: mtime, Typeflag: tar.TypeDir})
}

func addFile(tw *tar.Writer, name string, mode int64, content []byte) {
	tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(content)), ModTime: mtime, Typeflag: tar.TypeReg})
	tw.Write(content)
}

// BuildFakeConcourse builds tests/fakeconcourse with `-X main.version=<version>` and returns the
// binary's path. Builds are cached per version for the life of the test process (in a directory
// named after its PID, so parallel `go test` processes never share a half-written file); caches
// of processes that have exited are removed on the next call.
func BuildFakeConcourse(t testing.TB, version string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("BuildFakeConcourse: %v", err)
	}
	base := filepath.Join(os.TempDir(), "fakeconcourse-builds")
	sweepDeadCaches(base)
	out := filepath.Join(base, strconv.Itoa(os.Getpid()), version, "concourse")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatalf("BuildFakeConcourse: %v", err)
	}
	// Build under a unique name and rename: two parallel tests may both build, and neither ever
	// sees a partial binary.
	tmp := fmt.Sprintf("%s.%d.tmp", out, time.Now().UnixNano())
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", tmp, "./tests/fakeconcourse")
	cmd.Dir = root
	// Static, like the real release binary: it runs inside the test bed's containers, whose libc
	// need not be the host's.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("BuildFakeConcourse %s: %v\n%s", version, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatalf("BuildFakeConcourse: %v", err)
	}
	return out
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "tests", "fakeconcourse")); err != nil {
				return "", fmt.Errorf("module at %s has no tests/fakeconcourse", dir)
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// sweepDeadCaches removes cache directories whose owning process is gone (signal 0 fails with
// ESRCH).
func sweepDeadCaches(base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}
