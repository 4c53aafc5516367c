package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// InstallResult says what Install did.
type InstallResult struct {
	Version    string
	Downloaded bool          // this call downloaded and switched to a new release
	Bytes      int64         // tarball bytes read when Downloaded
	Waited     time.Duration // time spent waiting for another unit's install
	Took       time.Duration // the whole call
}

// Install makes version the current release. It is idempotent: when version
// is current, intact (VerifyQuick without a probe) and the top-level links
// and .installed_version agree, it returns at once without locking.
// Otherwise it takes the exclusive lock, cleans up after any dead installer,
// checks again (another unit may have finished meanwhile) and only then
// downloads, verifies and extracts in one pass into .staging, renames the
// tree into versions/<v>-<id>, switches `current` (old target kept as
// `previous`), fixes bin/resource-types/fly-assets, writes .installed_version
// and runs GC. A damaged install of the same version is replaced by a fresh
// copy the same way. A kill at any instant leaves the old or the new release
// visible, never a mix.
//
// In lxc mode, call CheckShared first: Install creates Root when it is missing.
func (s *Store) Install(ctx context.Context, version string, src Source) (InstallResult, error) {
	start := s.opts.Now()
	res := InstallResult{Version: version}
	if err := validVersion(version); err != nil {
		return res, err
	}
	if s.upToDate(version) {
		res.Took = s.opts.Now().Sub(start)
		s.logf("version %s is already installed in %s", version, s.opts.Root)
		return res, nil
	}
	if err := os.MkdirAll(s.opts.Root, 0o755); err != nil {
		if isNotWritable(err) {
			return res, &NotWritableError{Path: s.opts.Root, Err: err}
		}
		return res, fmt.Errorf("creating %s: %w", s.opts.Root, err)
	}
	fl, waited, done, err := s.lockExclusive(ctx, "install "+version, func() bool { return s.upToDate(version) })
	res.Waited = waited
	if err != nil {
		return res, err
	}
	if done {
		res.Took = s.opts.Now().Sub(start)
		s.logf("version %s was installed by another unit while we waited %s", version, waited.Round(time.Millisecond))
		return res, nil
	}
	defer fl.Unlock()

	if err := s.repairLocked(); err != nil {
		return res, err
	}
	ok, err := s.isInstalled(version)
	if ok {
		res.Took = s.opts.Now().Sub(start)
		s.logf("version %s found already installed after taking the lock", version)
		return res, s.gcLocked()
	}
	var corrupt *CorruptError
	if errors.As(err, &corrupt) {
		s.logf("installed %s is damaged (%v); installing a fresh copy", version, err)
	} else if err != nil {
		return res, err
	}

	s.logf("downloading %s from %s", version, src)
	st, err := s.stage(ctx, version, src)
	if err != nil {
		return res, fmt.Errorf("installing %s: %w", version, err)
	}
	name, err := s.commit(st)
	if err != nil {
		os.RemoveAll(st.dir)
		return res, fmt.Errorf("installing %s: %w", version, err)
	}
	res.Downloaded, res.Bytes = true, st.bytes
	res.Took = s.opts.Now().Sub(start)
	s.logf("installed %s as %s: %d bytes, %s in total", version, name, st.bytes, res.Took.Round(time.Millisecond))
	if err := s.gcLocked(); err != nil {
		// The install itself is complete and visible; a failed GC only wastes space.
		s.logf("garbage collection after installing %s failed: %v", version, err)
	}
	return res, nil
}

// upToDate is the lock-free fast path: current holds version, is intact, and
// the links, the marker and .staging all agree; anything else goes to the
// locked path, which repairs it.
func (s *Store) upToDate(version string) bool {
	if ok, err := s.isInstalled(version); !ok || err != nil {
		return false
	}
	if m, err := s.readMarker(); err != nil || m != version {
		return false
	}
	if !s.linksOK() {
		return false
	}
	if ents, err := os.ReadDir(s.path(StagingDir)); err == nil && len(ents) > 0 {
		// An install in progress (of another version, say) stages there: we
		// are up to date and must not queue behind it. With the lock free, the
		// entries are a dead installer's and the locked path removes them.
		held, _, err := s.lockHolder()
		return err == nil && held
	}
	return true
}

func (s *Store) linksOK() bool {
	for _, name := range linkedDirs {
		if t, err := os.Readlink(s.path(name)); err != nil || t != filepath.Join(CurrentLink, name) {
			return false
		}
	}
	return true
}

// repairLocked runs as the first thing a lock holder does. Anything in
// .staging or any temp link/file in Root belongs to an installer that died
// (only the holder writes there, and we hold the lock now).
func (s *Store) repairLocked() error {
	if ents, err := os.ReadDir(s.path(StagingDir)); err == nil {
		for _, e := range ents {
			p := s.path(StagingDir, e.Name())
			s.logf("removing %s left by an interrupted install", p)
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("removing %s: %w", p, err)
			}
		}
	}
	if ents, err := os.ReadDir(s.opts.Root); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				if err := os.Remove(s.path(e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("removing %s: %w", s.path(e.Name()), err)
				}
			}
		}
	}
	dir, err := s.currentDir()
	if err != nil || dir == "" {
		return err
	}
	m, err := readManifest(dir)
	if err != nil {
		// Leave it: the caller's check reports it and installs a fresh copy.
		return nil
	}
	if err := s.ensureLinks(); err != nil {
		return err
	}
	if mk, _ := s.readMarker(); mk != m.Version {
		s.logf("repairing %s: %q -> %q (current points to %s)", InstalledVersionName, mk, m.Version, filepath.Base(dir))
		if err := writeFileAtomic(s.path(InstalledVersionName), []byte(m.Version), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// commit makes a staged tree the current release.
func (s *Store) commit(st *staged) (string, error) {
	name := st.manifest.Version + "-" + randomHex(4)
	versions := s.path(VersionsDir)
	if err := os.MkdirAll(versions, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", versions, err)
	}
	dst := filepath.Join(versions, name)
	if err := os.Rename(st.dir, dst); err != nil {
		return "", fmt.Errorf("moving %s to %s: %w", st.dir, dst, err)
	}
	if err := syncDir(versions); err != nil {
		return "", err
	}
	if err := syncDir(s.path(StagingDir)); err != nil {
		return "", err
	}
	target := filepath.Join(VersionsDir, name)
	old, err := os.Readlink(s.path(CurrentLink))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", s.path(CurrentLink), err)
	}
	if old != "" {
		// previous first: a crash before the current switch leaves
		// previous == current, which is harmless.
		if err := symlinkAtomic(s.path(PreviousLink), old); err != nil {
			return "", err
		}
	}
	if err := symlinkAtomic(s.path(CurrentLink), target); err != nil {
		return "", err
	}
	s.logf("switched %s from %q to %q", CurrentLink, old, target)
	if err := s.ensureLinks(); err != nil {
		return "", err
	}
	if err := writeFileAtomic(s.path(InstalledVersionName), []byte(st.manifest.Version), 0o644); err != nil {
		return "", err
	}
	return name, nil
}

// ensureLinks makes bin, resource-types and fly-assets symlinks into current.
// A real directory there was left by the old Python charm, which merged
// releases into Root in place; it is moved aside (running processes keep their
// open files) rather than deleted.
func (s *Store) ensureLinks() error {
	for _, name := range linkedDirs {
		p := s.path(name)
		want := filepath.Join(CurrentLink, name)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("checking %s: %w", p, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			if t, _ := os.Readlink(p); t == want {
				continue
			}
		default:
			legacy := s.path(LegacyDir, fmt.Sprintf("%s-%s", name, s.opts.Now().UTC().Format("20060102T150405.000000000Z")))
			if err := os.MkdirAll(s.path(LegacyDir), 0o755); err != nil {
				return fmt.Errorf("creating %s: %w", s.path(LegacyDir), err)
			}
			if err := os.Rename(p, legacy); err != nil {
				return fmt.Errorf("moving legacy %s aside: %w", p, err)
			}
			s.logf("moved the old charm's %s %s aside to %s (remove it once nothing runs from it)", fi.Mode().Type(), p, legacy)
		}
		if err := symlinkAtomic(p, want); err != nil {
			return err
		}
	}
	return nil
}

// RecordRunning records that this unit runs version, in
// <Root>/worker/<unit-tag>/version, so that GC keeps that release. When this
// unit cannot write to the share (read-only mount, EACCES), it writes
// <localFallbackDir>/version instead and returns nil; such a record is
// invisible to GC on other units (see the package doc).
func (s *Store) RecordRunning(version, localFallbackDir string) error {
	if err := validVersion(version); err != nil {
		return err
	}
	dir := s.path(RecordsDir, UnitTag(s.opts.Unit))
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = writeFileAtomic(filepath.Join(dir, "version"), []byte(version), 0o644)
		if err == nil {
			s.logf("recorded running version %s in %s", version, dir)
			return nil
		}
	}
	if !isNotWritable(err) {
		return fmt.Errorf("recording running version in %s: %w", dir, err)
	}
	if localFallbackDir == "" {
		return &NotWritableError{Path: dir, Err: err}
	}
	if err := os.MkdirAll(localFallbackDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", localFallbackDir, err)
	}
	p := filepath.Join(localFallbackDir, "version")
	if err := writeFileAtomic(p, []byte(version), 0o644); err != nil {
		return fmt.Errorf("recording running version locally: %w", err)
	}
	s.logf("share is not writable here (%v); recorded running version %s in %s", err, version, p)
	return nil
}

// ForgetRunning removes this unit's record when it leaves, so that GC stops keeping the release it
// ran. A share this unit cannot write to holds no record of it (RecordRunning fell back), so
// EROFS/EACCES are not errors.
func (s *Store) ForgetRunning() error {
	dir := s.path(RecordsDir, UnitTag(s.opts.Unit))
	if err := os.RemoveAll(dir); err != nil && !isNotWritable(err) {
		return fmt.Errorf("removing the record of %s: %w", s.opts.Unit, err)
	}
	s.logf("removed the running-version record %s", dir)
	return nil
}

// GC removes version directories that neither current, previous nor any
// unit's record refers to, and leftovers in .staging. It takes the exclusive
// lock without waiting: when an install holds it, GC is skipped (nil),
// because that install runs GC itself when it finishes.
func (s *Store) GC() error {
	fl := s.newLock(false)
	ok, err := fl.TryLock()
	if err != nil {
		if isNotWritable(err) {
			return &NotWritableError{Path: s.path(LockName), Err: err}
		}
		return fmt.Errorf("locking %s: %w", s.path(LockName), err)
	}
	if !ok {
		s.logf("GC skipped: an install holds the lock (%s) and runs GC when it finishes", s.readHolder())
		return nil
	}
	defer fl.Unlock()
	s.writeHolder(fl)
	if err := s.repairLocked(); err != nil {
		return err
	}
	return s.gcLocked()
}

// records returns unit tag -> version for every record on the share.
func (s *Store) records() (map[string]string, error) {
	ents, err := os.ReadDir(s.path(RecordsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.path(RecordsDir), err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(s.path(RecordsDir, e.Name(), "version"))
		if err != nil {
			continue // a unit directory without a record protects nothing
		}
		out[e.Name()] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// versionOfDir strips the "-<8 hex>" suffix of a versions/ entry.
func versionOfDir(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 && len(name)-i == 9 {
		return name[:i]
	}
	return name
}

func (s *Store) gcLocked() error {
	keep := map[string]bool{}
	for _, l := range []string{CurrentLink, PreviousLink} {
		if t, err := os.Readlink(s.path(l)); err == nil {
			keep[filepath.Base(t)] = true
		}
	}
	recs, err := s.records()
	if err != nil {
		return err
	}
	recorded := map[string]bool{}
	for _, v := range recs {
		recorded[v] = true
	}
	ents, err := os.ReadDir(s.path(VersionsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", s.path(VersionsDir), err)
	}
	for _, e := range ents {
		if keep[e.Name()] || recorded[versionOfDir(e.Name())] {
			continue
		}
		p := s.path(VersionsDir, e.Name())
		// Rename into .staging first: a kill during RemoveAll then leaves
		// only staging leftovers, never a half-deleted versions/ entry.
		trash := s.path(StagingDir, "gc-"+e.Name())
		if err := os.MkdirAll(s.path(StagingDir), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", s.path(StagingDir), err)
		}
		if err := os.Rename(p, trash); err != nil {
			return fmt.Errorf("removing %s: %w", p, err)
		}
		if err := os.RemoveAll(trash); err != nil {
			return fmt.Errorf("removing %s: %w", trash, err)
		}
		s.logf("GC removed %s (not current, previous or recorded as running)", p)
	}
	return nil
}
