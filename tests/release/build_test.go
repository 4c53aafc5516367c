package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	hdr  *tar.Header
	body []byte
}

func readTgz(t *testing.T, r io.Reader) []entry {
	t.Helper()
	gz, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []entry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h, b})
	}
}

func TestBuildLayoutAndChecksums(t *testing.T) {
	t.Parallel()
	bin := BuildFakeConcourse(t, "7.14.3")
	if again := BuildFakeConcourse(t, "7.14.3"); again != bin {
		t.Errorf("second BuildFakeConcourse = %s; want the cached %s", again, bin)
	}
	dir := t.TempDir()
	a, err := Build(dir, "7.14.3", "amd64", bin, BuildOptions{PadBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "concourse-7.14.3-linux-amd64.tgz" || a.Path != filepath.Join(dir, a.Name) || a.Version != "7.14.3" || a.Arch != "amd64" {
		t.Errorf("asset = %+v", a)
	}
	data, err := os.ReadFile(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	s1, s256 := sha1.Sum(data), sha256.Sum256(data)
	if a.SHA1 != hex.EncodeToString(s1[:]) || a.SHA256 != hex.EncodeToString(s256[:]) || a.Size != int64(len(data)) {
		t.Errorf("checksums/size of %+v do not match the file", a)
	}
	// The padding is incompressible, so it really makes the download bigger.
	if a.Size < 1<<20 {
		t.Errorf("size %d; want at least PadBytes (1 MiB)", a.Size)
	}
	sidecar, _ := os.ReadFile(a.Path + ".sha1")
	if string(sidecar) != hex.EncodeToString(s1[:])+"  "+a.Name+"\n" {
		t.Errorf(".sha1 = %q; want shasum format", sidecar)
	}
	// sha1sum -c from the download dir must accept it (§1.2).
	if path, err := exec.LookPath("sha1sum"); err == nil {
		cmd := exec.Command(path, "-c", a.Name+".sha1")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha1sum -c: %v\n%s", err, out)
		}
	}

	want := map[string]int64{"concourse/": 0o755, "concourse/bin/concourse": 0o755, "concourse/fly-assets/fly-linux-amd64.tgz": 0o644,
		"concourse/resource-types/git/resource_metadata.json": 0o644, "concourse/resource-types/git/rootfs.tgz": 0o644,
		"concourse/resource-types/time/resource_metadata.json": 0o644, "concourse/resource-types/time/rootfs.tgz": 0o644}
	for _, s := range []string{"gdn", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "init", "bridge", "loopback", "host-local", "portmap"} {
		want["concourse/bin/"+s] = 0o755
	}
	binBytes, _ := os.ReadFile(bin)
	got := map[string]entry{}
	for _, e := range readTgz(t, bytes.NewReader(data)) {
		if !strings.HasPrefix(e.hdr.Name, "concourse/") {
			t.Errorf("entry %q outside concourse/", e.hdr.Name)
		}
		got[e.hdr.Name] = e
	}
	for name, mode := range want {
		e, ok := got[name]
		if !ok {
			t.Errorf("missing %s", name)
			continue
		}
		if e.hdr.Mode != mode {
			t.Errorf("%s mode %o; want %o", name, e.hdr.Mode, mode)
		}
	}
	if !bytes.Equal(got["concourse/bin/concourse"].body, binBytes) {
		t.Errorf("bin/concourse is not the fake binary")
	}
	var meta map[string]any
	if err := json.Unmarshal(got["concourse/resource-types/git/resource_metadata.json"].body, &meta); err != nil || meta["type"] != "git" {
		t.Errorf("git metadata %s: %v", got["concourse/resource-types/git/resource_metadata.json"].body, err)
	}
	readTgz(t, bytes.NewReader(got["concourse/fly-assets/fly-linux-amd64.tgz"].body))

	// Same inputs, same bytes: tests can compare checksums across builds.
	b, err := Build(t.TempDir(), "7.14.3", "amd64", bin, BuildOptions{PadBytes: 1 << 20})
	if err != nil || b.SHA1 != a.SHA1 {
		t.Errorf("rebuild sha1 %s (%v); want %s", b.SHA1, err, a.SHA1)
	}

	// Extracted like the docs do (tar -xzf … -C prefix), the binary runs and finds itself.
	if tarBin, err := exec.LookPath("tar"); err == nil {
		prefix := t.TempDir()
		if out, err := exec.Command(tarBin, "-xzf", a.Path, "-C", prefix).CombinedOutput(); err != nil {
			t.Fatalf("tar: %v\n%s", err, out)
		}
		out, err := exec.Command(filepath.Join(prefix, "concourse", "bin", "concourse"), "--version").Output()
		if err != nil || string(out) != "7.14.3\n" {
			t.Errorf("extracted concourse --version = %q, %v", out, err)
		}
	}
}

func TestBuildMutateAddsEvilEntries(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "concourse")
	os.WriteFile(bin, []byte("#!/bin/sh\necho 8.2.5\n"), 0o755)
	a, err := Build(t.TempDir(), "8.2.5", "arm64", bin, BuildOptions{Mutate: func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "../x", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
		tw.Write([]byte("x"))
		tw.WriteHeader(&tar.Header{Name: "concourse/bin/escape", Linkname: "/etc/passwd", Typeflag: tar.TypeSymlink})
	}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "concourse-8.2.5-linux-arm64.tgz" {
		t.Errorf("name %s", a.Name)
	}
	f, _ := os.Open(a.Path)
	defer f.Close()
	entries := readTgz(t, f)
	last2 := entries[len(entries)-2:]
	if last2[0].hdr.Name != "../x" || last2[1].hdr.Linkname != "/etc/passwd" {
		t.Errorf("last entries = %q, %q; want the injected ones", last2[0].hdr.Name, last2[1].hdr.Name)
	}
}

func TestBuildMutateErrorSurfaces(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "concourse")
	os.WriteFile(bin, []byte("x"), 0o755)
	dir := t.TempDir()
	_, err := Build(dir, "7.14.3", "amd64", bin, BuildOptions{Mutate: func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "concourse/short", Mode: 0o644, Size: 10, Typeflag: tar.TypeReg})
		tw.Write([]byte("abc")) // 7 bytes short: Close must fail
	}})
	if err == nil {
		t.Fatal("Build with a short entry succeeded")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("failed build left %v; want nothing (not even the temp file)", left)
	}
}
