package storage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// localError marks a failure of our own filesystem (ENOSPC, EROFS, EIO…):
// downloading again would not help, so it is not retried.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// extractor writes tar entries below root (a fresh staging directory),
// hashing each regular file with sha256 while writing it, so the manifest
// needs no second read.
type extractor struct {
	root    string
	strip   string // tarball root without trailing slash; "" for none
	src     string // the tarball, for messages (redacted)
	limit   int64  // bound on the sum of regular file sizes (Options.MaxExpandedBytes)
	total   int64  // sum so far
	reserve uint64 // free space left untouched for everything else on the disk
	files   map[string]ManifestFile
	links   map[string]ManifestLink
	written []string // absolute paths of regular files, for the final fsync
	buf     []byte
}

// diskReserve is the free space an install leaves to everything else on the
// disk: filling the share to its last byte breaks the services running from it.
const diskReserve = 16 << 20

func newExtractor(root, strip, src string, limit int64) *extractor {
	return &extractor{
		root:    root,
		strip:   strings.Trim(strip, "/"),
		src:     src,
		limit:   limit,
		reserve: diskReserve,
		files:   map[string]ManifestFile{},
		links:   map[string]ManifestLink{},
		buf:     make([]byte, 1<<20),
	}
}

// relPath maps a tar name to a clean path relative to the release root.
// skip is true for the root directory entry itself.
func (x *extractor) relPath(name string) (rel string, skip bool, err error) {
	if name == "" {
		return "", false, &UnsafePathError{Name: name, Reason: "empty name"}
	}
	if strings.HasPrefix(name, "/") {
		return "", false, &UnsafePathError{Name: name, Reason: "absolute path"}
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", false, &UnsafePathError{Name: name, Reason: "path contains a \"..\" component"}
		}
	}
	clean := path.Clean(name)
	if x.strip != "" {
		if clean == x.strip || clean == "." {
			return "", true, nil
		}
		if !strings.HasPrefix(clean, x.strip+"/") {
			return "", false, &UnsafePathError{Name: name, Reason: fmt.Sprintf("outside the tarball root %q", x.strip+"/")}
		}
		clean = clean[len(x.strip)+1:]
	}
	if clean == "." {
		return "", true, nil
	}
	// Entries never go through a symlink the tarball created: that is how a
	// chain of harmless-looking links ("a -> .", "a/b -> ..") escapes.
	for p := path.Dir(clean); p != "."; p = path.Dir(p) {
		if _, ok := x.links[p]; ok {
			return "", false, &UnsafePathError{Name: name, Reason: fmt.Sprintf("goes through the symlink %q", p)}
		}
	}
	return clean, false, nil
}

// checkLinkTarget: relative, ".." only as leading components, and the
// lexical result stays inside the release. Because no entry's parent is a
// symlink, the lexical check is exact for the leading ".."s, and descending
// through other (equally checked) links cannot leave the tree.
func checkLinkTarget(name, rel, target string) error {
	if target == "" {
		return &UnsafePathError{Name: name, Reason: "symlink with an empty target"}
	}
	if strings.HasPrefix(target, "/") {
		return &UnsafePathError{Name: name, Reason: fmt.Sprintf("symlink to the absolute path %q escapes the release", target)}
	}
	leading := true
	for _, c := range strings.Split(target, "/") {
		if c == ".." && !leading {
			return &UnsafePathError{Name: name, Reason: fmt.Sprintf("symlink target %q has a \"..\" after a name", target)}
		}
		if c != ".." && c != "." && c != "" {
			leading = false
		}
	}
	resolved := path.Join(path.Dir(rel), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return &UnsafePathError{Name: name, Reason: fmt.Sprintf("symlink target %q escapes the release", target)}
	}
	return nil
}

// prepare makes the parent directory and clears a previous entry of the same
// name (tar allows duplicates; the last one wins).
func (x *extractor) prepare(name, rel, dest string) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return &localError{fmt.Errorf("creating %s: %w", filepath.Dir(dest), err)}
	}
	fi, err := os.Lstat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &localError{fmt.Errorf("checking %s: %w", dest, err)}
	}
	if fi.IsDir() {
		return &UnsafePathError{Name: name, Reason: "replaces a directory of the same name"}
	}
	delete(x.files, rel)
	delete(x.links, rel)
	if err := os.Remove(dest); err != nil {
		return &localError{fmt.Errorf("replacing %s: %w", dest, err)}
	}
	return nil
}

func (x *extractor) extract(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}
}

func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return &UnsafePathError{Name: hdr.Name, Reason: "device and fifo entries are not installed"}
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeLink:
	default:
		return &UnsafePathError{Name: hdr.Name, Reason: fmt.Sprintf("unsupported entry type %q", hdr.Typeflag)}
	}
	rel, skip, err := x.relPath(hdr.Name)
	if err != nil || skip {
		return err
	}
	dest := filepath.Join(x.root, filepath.FromSlash(rel))
	// setuid/setgid/sticky are dropped: nothing in a release needs them; so
	// is group/other write: a 0777 file on the share would let any local
	// user of any unit replace the binary every unit runs.
	perm := fs.FileMode(hdr.Mode).Perm() &^ 0o022

	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := os.Lstat(dest)
		if err == nil && !fi.IsDir() {
			if err := x.prepare(hdr.Name, rel, dest); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return &localError{fmt.Errorf("creating %s: %w", dest, err)}
		}
		// We must be able to write into it while extracting.
		if err := os.Chmod(dest, perm|0o700); err != nil {
			return &localError{fmt.Errorf("chmod %s: %w", dest, err)}
		}
		return nil

	case tar.TypeSymlink:
		if err := checkLinkTarget(hdr.Name, rel, hdr.Linkname); err != nil {
			return err
		}
		if err := x.prepare(hdr.Name, rel, dest); err != nil {
			return err
		}
		if err := os.Symlink(hdr.Linkname, dest); err != nil {
			return &localError{fmt.Errorf("creating symlink %s: %w", dest, err)}
		}
		x.links[rel] = ManifestLink{Path: rel, Target: hdr.Linkname}
		return nil

	case tar.TypeLink:
		target, skip, err := x.relPath(hdr.Linkname)
		if err != nil {
			var u *UnsafePathError
			if errors.As(err, &u) {
				return &UnsafePathError{Name: hdr.Name, Reason: fmt.Sprintf("hard link to %q: %s", hdr.Linkname, u.Reason)}
			}
			return err
		}
		src, ok := x.files[target]
		if skip || !ok {
			return &UnsafePathError{Name: hdr.Name, Reason: fmt.Sprintf("hard link to %q, which is not a file extracted earlier", hdr.Linkname)}
		}
		if err := x.prepare(hdr.Name, rel, dest); err != nil {
			return err
		}
		if err := os.Link(filepath.Join(x.root, filepath.FromSlash(target)), dest); err != nil {
			return &localError{fmt.Errorf("linking %s: %w", dest, err)}
		}
		src.Path = rel
		x.files[rel] = src
		return nil
	}

	// Regular file. Bounded before a byte is written: the header's size is
	// what the tar reader delivers (and enforces) for this entry.
	if hdr.Size > x.limit-x.total {
		return &TooLargeError{URL: x.src, Limit: x.limit, Entry: hdr.Name}
	}
	x.total += hdr.Size
	if err := checkFree(x.root, uint64(hdr.Size)+x.reserve); err != nil {
		return err
	}
	if err := x.prepare(hdr.Name, rel, dest); err != nil {
		return err
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, perm)
	if err != nil {
		return &localError{fmt.Errorf("creating %s: %w", dest, err)}
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), tr, x.buf)
	if err != nil {
		f.Close()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return &localError{fmt.Errorf("writing %s: %w", dest, err)}
		}
		return fmt.Errorf("extracting %s: %w", hdr.Name, err)
	}
	if err := f.Chmod(perm); err != nil { // the umask must not change the mode the manifest records
		f.Close()
		return &localError{fmt.Errorf("chmod %s: %w", dest, err)}
	}
	// Start writeback now so the final fsync mostly waits for I/O that is
	// already under way instead of starting all of it at the end.
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	if err := f.Close(); err != nil {
		return &localError{fmt.Errorf("closing %s: %w", dest, err)}
	}
	x.written = append(x.written, dest)
	x.files[rel] = ManifestFile{Path: rel, Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), Mode: modeString(perm)}
	return nil
}

// checkFree fails with *DiskFullError when the filesystem holding dir has
// less than need bytes available to us. A failing statfs is not an error:
// the writes themselves then report ENOSPC (see diskFull).
func checkFree(dir string, need uint64) error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return nil
	}
	avail := sfs.Bavail * uint64(sfs.Bsize)
	if avail < need {
		return &DiskFullError{Path: dir, Avail: avail, Need: need}
	}
	return nil
}

// diskFull turns an ENOSPC/EDQUOT anywhere in err into a *DiskFullError
// naming dir, so a full disk is never reported as a broken release or retried.
func diskFull(dir string, err error) error {
	var df *DiskFullError
	if errors.As(err, &df) {
		return df
	}
	if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
		return nil
	}
	path := dir
	var pe *fs.PathError
	if errors.As(err, &pe) {
		path = pe.Path
	}
	var avail uint64
	var sfs unix.Statfs_t
	if unix.Statfs(dir, &sfs) == nil {
		avail = sfs.Bavail * uint64(sfs.Bsize)
	}
	return &DiskFullError{Path: path, Avail: avail, Err: err}
}

// manifest returns the entries sorted by path.
func (x *extractor) manifest() ([]ManifestFile, []ManifestLink) {
	files := make([]ManifestFile, 0, len(x.files))
	for _, f := range x.files {
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	links := make([]ManifestLink, 0, len(x.links))
	for _, l := range x.links {
		links = append(links, l)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Path < links[j].Path })
	return files, links
}

// syncAll makes every extracted file and every directory of the tree durable
// before the tree is renamed into versions/. Files are synced by a few
// goroutines because each fsync mostly waits for the device.
func (x *extractor) syncAll() error {
	paths := make(chan string)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first error
			for p := range paths {
				if first != nil {
					continue
				}
				f, err := os.Open(p)
				if err == nil {
					err = f.Sync()
					f.Close()
				}
				if err != nil {
					first = &localError{fmt.Errorf("syncing %s: %w", p, err)}
				}
			}
			errs <- first
		}()
	}
	for _, p := range x.written {
		paths <- p
	}
	close(paths)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	var dirs []string
	err := filepath.WalkDir(x.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return &localError{fmt.Errorf("walking %s: %w", x.root, err)}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syncDir(dirs[i]); err != nil {
			return &localError{err}
		}
	}
	return nil
}
