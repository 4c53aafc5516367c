package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
)

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func bodySum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// fakeRuntime makes bin and cni dirs holding only some of the runtime files, so the test knows
// exactly which must be copied and which reported missing.
func fakeRuntime(t *testing.T) (binDir, cniDir string) {
	binDir, cniDir = t.TempDir(), t.TempDir()
	for _, f := range []struct{ dir, name string }{{binDir, "containerd"}, {binDir, "runc"}, {cniDir, "bridge"}, {cniDir, "loopback"}} {
		os.WriteFile(filepath.Join(f.dir, f.name), []byte("#!/bin/sh\necho "+f.name+"\n"), 0o755)
	}
	// Not executable: a packaging accident must count as missing, not be shipped.
	os.WriteFile(filepath.Join(binDir, "ctr"), []byte("not executable"), 0o644)
	return binDir, cniDir
}

func TestBuildRealLayout(t *testing.T) {
	set := realconcourse.Require(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the real binaries are linux/amd64")
	}
	binDir, cniDir := fakeRuntime(t)
	dir, cache := t.TempDir(), t.TempDir()
	for _, v := range realconcourse.Versions() {
		t.Run(v, func(t *testing.T) {
			start := time.Now()
			a, missing, err := BuildReal(dir, v, "amd64", set, RealOptions{BinDirs: []string{binDir}, CNIDir: cniDir, CacheDir: cache})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("built %s: %d bytes in %v", a.Name, a.Size, time.Since(start))
			if a.Name != "concourse-"+v+"-linux-amd64.tgz" || a.Path != filepath.Join(dir, a.Name) {
				t.Errorf("asset = %+v", a)
			}
			wantMissing := []string{"containerd-shim-runc-v2", "ctr", filepath.Join(cniDir, "host-local"), filepath.Join(cniDir, "firewall"), filepath.Join(cniDir, "portmap")}
			if !slices.Equal(missing, wantMissing) {
				t.Errorf("missing = %q; want %q", missing, wantMissing)
			}
			data, err := os.ReadFile(a.Path)
			if err != nil {
				t.Fatal(err)
			}
			if bodySum(data) != a.SHA256 || int64(len(data)) != a.Size {
				t.Errorf("asset checksums do not match the file")
			}
			if sidecar, _ := os.ReadFile(a.Path + ".sha1"); string(sidecar) != a.SHA1Line() {
				t.Errorf(".sha1 = %q; want %q", sidecar, a.SHA1Line())
			}
			got := map[string]entry{}
			for _, e := range readTgz(t, bytes.NewReader(data)) {
				got[e.hdr.Name] = e
				if !e.hdr.ModTime.Equal(mtime) {
					t.Errorf("%s mtime %v; want the fixed %v (reproducible)", e.hdr.Name, e.hdr.ModTime, mtime)
				}
			}
			wantFiles := map[string]string{ // name -> sha256 of content
				"concourse/bin/concourse":  fileSum(t, set.Concourse(v)),
				"concourse/bin/init":       fileSum(t, set.Init()),
				"concourse/bin/containerd": fileSum(t, filepath.Join(binDir, "containerd")),
				"concourse/bin/runc":       fileSum(t, filepath.Join(binDir, "runc")),
				"concourse/bin/bridge":     fileSum(t, filepath.Join(cniDir, "bridge")),
				"concourse/bin/loopback":   fileSum(t, filepath.Join(cniDir, "loopback")),
			}
			for name, sum := range wantFiles {
				e, ok := got[name]
				if !ok {
					t.Errorf("missing %s", name)
					continue
				}
				if bodySum(e.body) != sum || e.hdr.Mode != 0o755 {
					t.Errorf("%s: mode %o, content sha256 %s; want 0755 and %s", name, e.hdr.Mode, bodySum(e.body), sum)
				}
			}
			for _, absent := range []string{"concourse/bin/ctr", "concourse/bin/gdn", "concourse/bin/portmap"} {
				if _, ok := got[absent]; ok {
					t.Errorf("%s is in the tarball; it was not available", absent)
				}
			}
			fly := readTgz(t, bytes.NewReader(got["concourse/fly-assets/fly-linux-amd64.tgz"].body))
			if len(fly) != 1 || fly[0].hdr.Name != "fly" || fly[0].hdr.Mode != 0o755 || bodySum(fly[0].body) != fileSum(t, set.Fly(v)) {
				t.Errorf("fly-linux-amd64.tgz does not hold exactly the real fly %s as ./fly (0755)", v)
			}
			var meta map[string]any
			if err := json.Unmarshal(got["concourse/resource-types/git/resource_metadata.json"].body, &meta); err != nil || meta["type"] != "git" {
				t.Errorf("git resource_metadata.json %s: %v", got["concourse/resource-types/git/resource_metadata.json"].body, err)
			}
			if _, ok := got["concourse/resource-types/git/rootfs.tgz"]; !ok {
				t.Errorf("no resource-types/git/rootfs.tgz")
			}

			// Extracted the documented way, the real binary runs from concourse/bin.
			prefix := t.TempDir()
			if out, err := exec.Command("tar", "-xzf", a.Path, "-C", prefix).CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, out)
			}
			out, err := exec.Command(filepath.Join(prefix, "concourse", "bin", "concourse"), "--version").Output()
			if err != nil || string(out) != v+"\n" {
				t.Errorf("extracted concourse --version = %q, %v; want %q", out, err, v+"\n")
			}
		})
	}
}

func TestBuildRealReusesItsCacheAndRebuildsATamperedEntry(t *testing.T) {
	set := realconcourse.Require(t)
	binDir, cniDir := fakeRuntime(t)
	cache := t.TempDir()
	opts := RealOptions{BinDirs: []string{binDir}, CNIDir: cniDir, CacheDir: cache}
	first, _, err := BuildReal(t.TempDir(), "7.14.3", "amd64", set, opts)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := filepath.Glob(filepath.Join(cache, "7.14.3-amd64-*", first.Name))
	if len(entries) != 1 {
		t.Fatalf("cache holds %q; want one entry for 7.14.3", entries)
	}
	cached := entries[0]
	fi, _ := os.Stat(cached)

	// Same inputs: copied from the cache, not rebuilt (the cached file is untouched).
	start := time.Now()
	second, _, err := BuildReal(t.TempDir(), "7.14.3", "amd64", set, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cached copy of %d bytes in %v", second.Size, time.Since(start))
	if second.SHA1 != first.SHA1 {
		t.Errorf("cached build sha1 %s; want %s", second.SHA1, first.SHA1)
	}
	if fi2, _ := os.Stat(cached); !os.SameFile(fi, fi2) || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("the cached tarball was rewritten; want it reused")
	}

	// A corrupted cache entry is noticed while copying and rebuilt: the result is the same bytes.
	f, _ := os.OpenFile(cached, os.O_WRONLY, 0)
	f.WriteAt([]byte("garbage"), 4096)
	f.Close()
	third, _, err := BuildReal(t.TempDir(), "7.14.3", "amd64", set, opts)
	if err != nil {
		t.Fatal(err)
	}
	if third.SHA1 != first.SHA1 || fileSum(t, third.Path) != first.SHA256 {
		t.Errorf("after tampering the cache: sha1 %s; want a rebuild with %s", third.SHA1, first.SHA1)
	}

	// A changed input (a runtime package upgrade) is a new key, so a new build.
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(filepath.Join(binDir, "runc"), []byte("#!/bin/sh\necho runc 2\n"), 0o755)
	fourth, _, err := BuildReal(t.TempDir(), "7.14.3", "amd64", set, opts)
	if err != nil {
		t.Fatal(err)
	}
	if fourth.SHA1 == first.SHA1 {
		t.Errorf("a changed runc reused the old tarball")
	}
}

func TestBuildRealRefusesWhatItCannotBuild(t *testing.T) {
	set := realconcourse.Require(t)
	for _, tc := range []struct{ version, arch, want string }{
		{"8.3.0", "amd64", "the real binaries are 7.14.3, 8.2.5"},
		{"8.2.5", "arm64", "is linux/amd64; cannot build a linux/arm64 release"},
	} {
		dir := t.TempDir()
		_, _, err := BuildReal(dir, tc.version, tc.arch, set, RealOptions{CacheDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("BuildReal(%s, %s) err = %v; want %q", tc.version, tc.arch, err, tc.want)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("refused build left %v", left)
		}
	}
}

// TestBuildRealWithTheHostRuntime builds what the scenarios use (the host's Debian packages, the
// default cache) and reports what is missing on this machine; under CI every package must be
// installed.
func TestBuildRealWithTheHostRuntime(t *testing.T) {
	set := realconcourse.Require(t)
	start := time.Now()
	a, missing, err := BuildReal(t.TempDir(), "8.2.5", "amd64", set, RealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes in %v; missing %q", a.Name, a.Size, time.Since(start), missing)
	if len(missing) > 0 && os.Getenv("CI") == "true" {
		t.Errorf("missing %q: apt-get install containerd runc containernetworking-plugins", missing)
	}
}
