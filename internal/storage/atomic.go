package storage

import (
	"fmt"
	"os"
	"path/filepath"
)

// syncDir makes a directory's entries (creations, renames) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s for sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic replaces path with data: a temp file in the same directory,
// fsync, rename(2), fsync of the directory. A crash leaves either the old or
// the new content, plus at worst a temp file that the next lock holder removes.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	tmp := filepath.Join(dir, tmpPrefix+base+"-"+randomHex(4))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	// Always safe: after a successful rename the temp name no longer exists.
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err = f.Chmod(perm); err != nil { // umask must not change what we promise
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	return syncDir(filepath.Clean(dir))
}

// symlinkAtomic points path at target with one rename(2) of a fresh symlink,
// so readers see the old link or the new one, never none.
func symlinkAtomic(path, target string) error {
	dir, base := filepath.Split(path)
	tmp := filepath.Join(dir, tmpPrefix+base+"-"+randomHex(4))
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("creating symlink %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switching %s to %s: %w", path, target, err)
	}
	return syncDir(filepath.Clean(dir))
}
