package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gofrs/flock"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
)

// RealOptions tune BuildReal.
//
// Runtime binaries from the host's Debian packages (containerd, containerd-shim-runc-v2, ctr, runc,
// and CNI plugins bridge, host-local, loopback, firewall, portmap from /usr/lib/cni) are copied into
// concourse/bin/ when present; the missing list BuildReal returns names what was not found (the
// caller decides whether a test can run without them: a houdini worker needs none).
type RealOptions struct {
	// BinDirs are searched in order for containerd, containerd-shim-runc-v2, ctr and runc;
	// nil means /usr/bin, /usr/sbin, /bin, /sbin (where Debian's containerd and runc put them).
	BinDirs []string
	// CNIDir holds the CNI plugins; "" means /usr/lib/cni (Debian's containernetworking-plugins).
	CNIDir string
	// CacheDir keeps built tarballs keyed by their inputs; "" means <set.Dir>/releases. Building
	// one compresses ~250 MB, so scenarios reuse it across runs.
	CacheDir string
}

// RuntimeBinaries are the containerd-runtime files a real release carries in concourse/bin/ that
// BuildReal takes from the host; CNIPlugins come from the CNI dir.
var (
	RuntimeBinaries = []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"}
	CNIPlugins      = []string{"bridge", "host-local", "loopback", "firewall", "portmap"}
)

// realFormat changes whenever the tarball BuildReal writes changes, so stale cache entries are not
// reused.
const realFormat = "real-release-1"

// realMeta is stored beside a cached tarball: what it must hash to when copied out.
type realMeta struct {
	SHA1, SHA256 string
	Size         int64
	Missing      []string
}

// BuildReal writes dir/concourse-<version>-linux-<arch>.tgz and its .sha1 sidecar, laid out like a
// published release (contract §1.3) around the real `concourse` of that version:
//
//	concourse/bin/concourse                        the real binary
//	concourse/bin/init                             Concourse's real static init
//	concourse/bin/{containerd,…,runc,bridge,…}     the host's packaged runtime, when present
//	concourse/fly-assets/fly-linux-<arch>.tgz      the real fly of that version (as `fly`)
//	concourse/resource-types/{git,time}/           metadata + a placeholder rootfs.tgz
//
// The real resource types are not available (only their metadata shape is reproduced): their
// rootfs.tgz holds no runnable resource, so pipelines that check a git/time resource cannot work.
// gdn is absent too (not built), so only the containerd and houdini runtimes can run.
//
// Builds are reproducible (fixed mtimes and owners) and cached under RealOptions.CacheDir by a key
// over every input's path, size and mtime; a cached tarball is copied out (re-hashed on the way,
// and rebuilt if it no longer matches). Files in dir appear only when complete.
func BuildReal(dir, version, arch string, set realconcourse.Set, opts RealOptions) (Asset, []string, error) {
	version = strings.TrimPrefix(version, "v")
	if !slices.Contains(realconcourse.Versions(), version) {
		return Asset{}, nil, fmt.Errorf("no real Concourse %s: the real binaries are %s", version, strings.Join(realconcourse.Versions(), ", "))
	}
	binArch, err := elfArch(set.Concourse(version))
	if err != nil {
		return Asset{}, nil, err
	}
	if binArch != arch {
		return Asset{}, nil, fmt.Errorf("the real concourse %s is linux/%s; cannot build a linux/%s release from it", version, binArch, arch)
	}
	in := realInputs(version, set, opts)
	key, err := in.key(version, arch)
	if err != nil {
		return Asset{}, nil, err
	}
	a := Asset{Name: fmt.Sprintf("concourse-%s-linux-%s.tgz", version, arch), Version: version, Arch: arch}
	a.Path = filepath.Join(dir, a.Name)

	cacheRoot := opts.CacheDir
	if cacheRoot == "" {
		cacheRoot = filepath.Join(set.Dir, "releases")
	}
	if err := os.MkdirAll(cacheRoot, 0o755); err != nil {
		return Asset{}, nil, fmt.Errorf("creating release cache: %w", err)
	}
	// One builder per cache: parallel scenario processes wait for the first build and copy it.
	lock := flock.New(filepath.Join(cacheRoot, ".lock"))
	if err := lock.Lock(); err != nil {
		return Asset{}, nil, fmt.Errorf("locking %s: %w", lock.Path(), err)
	}
	defer lock.Unlock()

	entry := filepath.Join(cacheRoot, key)
	for attempt := 0; attempt < 2; attempt++ {
		meta, err := readMeta(entry)
		if err != nil {
			if meta, err = buildRealEntry(entry, a.Name, arch, in); err != nil {
				return Asset{}, nil, err
			}
		}
		got, err := copyHashed(filepath.Join(entry, a.Name), a.Path)
		if err != nil {
			return Asset{}, nil, err
		}
		if got.SHA1 == meta.SHA1 && got.SHA256 == meta.SHA256 && got.Size == meta.Size {
			a.SHA1, a.SHA256, a.Size = got.SHA1, got.SHA256, got.Size
			if err := os.WriteFile(a.Path+".sha1", []byte(a.SHA1Line()), 0o644); err != nil {
				return Asset{}, nil, err
			}
			return a, meta.Missing, nil
		}
		// The cached tarball changed behind our back: drop it and build again.
		os.Remove(a.Path)
		if err := os.RemoveAll(entry); err != nil {
			return Asset{}, nil, fmt.Errorf("removing stale cache entry %s: %w", entry, err)
		}
	}
	return Asset{}, nil, fmt.Errorf("cached release %s does not match its metadata even after a rebuild", entry)
}

// realInput is one file going into the tarball.
type realInput struct {
	name string // under concourse/
	src  string
	mode int64
}

type realInputSet struct {
	files   []realInput
	fly     string
	missing []string
}

func realInputs(version string, set realconcourse.Set, opts RealOptions) realInputSet {
	binDirs := opts.BinDirs
	if binDirs == nil {
		binDirs = []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"}
	}
	cni := opts.CNIDir
	if cni == "" {
		cni = "/usr/lib/cni"
	}
	in := realInputSet{fly: set.Fly(version), files: []realInput{
		{"bin/concourse", set.Concourse(version), 0o755},
		{"bin/init", set.Init(), 0o755},
	}}
	for _, b := range RuntimeBinaries {
		if p := findExecutable(b, binDirs); p != "" {
			in.files = append(in.files, realInput{"bin/" + b, p, 0o755})
		} else {
			in.missing = append(in.missing, b)
		}
	}
	for _, b := range CNIPlugins {
		if p := findExecutable(b, []string{cni}); p != "" {
			in.files = append(in.files, realInput{"bin/" + b, p, 0o755})
		} else {
			in.missing = append(in.missing, filepath.Join(cni, b))
		}
	}
	return in
}

func findExecutable(name string, dirs []string) string {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// key identifies a build by its inputs without hashing ~250 MB: the path, size and mtime of each
// input file (a package upgrade or a re-unpacked binary changes them), plus the format revision.
func (in realInputSet) key(version, arch string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", realFormat, version, arch)
	srcs := []string{in.fly}
	for _, f := range in.files {
		fmt.Fprintf(h, "file %s\n", f.name)
		srcs = append(srcs, f.src)
	}
	for _, s := range srcs {
		fi, err := os.Stat(s)
		if err != nil {
			return "", fmt.Errorf("release input: %w", err)
		}
		fmt.Fprintf(h, "%s %d %d\n", s, fi.Size(), fi.ModTime().UnixNano())
	}
	fmt.Fprintf(h, "missing %s\n", strings.Join(in.missing, ","))
	return version + "-" + arch + "-" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

func readMeta(entry string) (realMeta, error) {
	var m realMeta
	b, err := os.ReadFile(filepath.Join(entry, "meta.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s/meta.json: %w", entry, err)
	}
	return m, nil
}

// buildRealEntry writes entry/<name> and entry/meta.json into a temp directory and renames it to
// entry, so a crash mid-build leaves no entry that looks complete.
func buildRealEntry(entry, name, arch string, in realInputSet) (realMeta, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(entry), "."+filepath.Base(entry)+".*")
	if err != nil {
		return realMeta{}, err
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	f, err := os.Create(filepath.Join(tmp, name))
	if err != nil {
		return realMeta{}, err
	}
	h1, h256, n := sha1.New(), sha256.New(), &countWriter{}
	if err := writeRealTarball(io.MultiWriter(f, h1, h256, n), arch, in); err != nil {
		f.Close()
		return realMeta{}, fmt.Errorf("building %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return realMeta{}, err
	}
	if err := f.Close(); err != nil {
		return realMeta{}, err
	}
	m := realMeta{SHA1: hexSum(h1), SHA256: hexSum(h256), Size: n.n, Missing: in.missing}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), b, 0o644); err != nil {
		return realMeta{}, err
	}
	os.RemoveAll(entry) // a half-removed stale entry must not block the rename
	if err := os.Rename(tmp, entry); err != nil {
		return realMeta{}, fmt.Errorf("installing cache entry %s: %w", entry, err)
	}
	return m, nil
}

func writeRealTarball(w io.Writer, arch string, in realInputSet) error {
	// BestSpeed: these are compiled binaries; a higher level saves ~10% for 3x the CPU.
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	for _, d := range []string{"concourse/", "concourse/bin/", "concourse/fly-assets/", "concourse/resource-types/"} {
		addDir(tw, d)
	}
	for _, f := range in.files {
		if err := addFileFrom(tw, "concourse/"+f.name, f.mode, f.src); err != nil {
			return err
		}
	}
	fly, err := flyTgz(in.fly)
	if err != nil {
		return err
	}
	addFile(tw, "concourse/fly-assets/fly-linux-"+arch+".tgz", 0o644, fly)
	for _, rt := range resourceTypes {
		base := "concourse/resource-types/" + rt.name + "/"
		addDir(tw, base)
		addFile(tw, base+"resource_metadata.json", 0o644, []byte(fmt.Sprintf(
			`{"type":%q,"version":%q,"privileged":false,"unique_version_history":false}`, rt.name, rt.version)))
		rootfs, err := tinyTgz("rootfs/etc/os-release", []byte("NAME=placeholder resource type of a test release\n"), 0)
		if err != nil {
			return err
		}
		addFile(tw, base+"rootfs.tgz", 0o644, rootfs)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// addFileFrom streams src into the tar (a real binary is ~90 MB: no need to hold it in memory).
func addFileFrom(tw *tar.Writer, name string, mode int64, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("release input: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: fi.Size(), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("adding %s from %s: %w", name, src, err)
	}
	return nil
}

// flyTgz is fly-assets/fly-linux-amd64.tgz: a tgz with the single executable `fly` at its root,
// which `fly sync` and the web's /api/v1/cli download hand out.
func flyTgz(src string) ([]byte, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	if err := addFileFrom(tw, "fly", 0o755, src); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// copyHashed copies src to dst (temp name, then rename) and returns what it hashed.
func copyHashed(src, dst string) (realMeta, error) {
	in, err := os.Open(src)
	if err != nil {
		return realMeta{}, fmt.Errorf("opening cached release: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return realMeta{}, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h1, h256 := sha1.New(), sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h1, h256), in)
	if err != nil {
		tmp.Close()
		return realMeta{}, fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	if err := tmp.Close(); err != nil {
		return realMeta{}, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return realMeta{}, err
	}
	return realMeta{SHA1: hexSum(h1), SHA256: hexSum(h256), Size: n}, nil
}

// elfArch is the Go arch name of an ELF executable.
func elfArch(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", errors.New(p + ": unsupported ELF machine " + f.Machine.String())
}
