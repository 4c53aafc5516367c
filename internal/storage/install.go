package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
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
	fl, waited, done, err := s.lockExclusive(ctx, "install "+version, func() bool { return s.upToDateLocked(version) })
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

	key := refusalKey(version, src)
	if r := s.readRefusal(); r != nil && r.Key == key {
		republished, err := s.republished(ctx, src, r)
		if err != nil {
			// What the mirror publishes now cannot be told: that is the news, not the refusal.
			return res, fmt.Errorf("installing %s: %w", version, &DownloadError{URL: src.URL, Attempts: 1, Err: err})
		}
		if !republished {
			s.logf("not downloading %s from %s: refused at %s (%s)", version, src, r.At.Format(time.RFC3339), r.Reason)
			return res, &RefusedError{Version: version, Source: src.String(), Reason: r.Reason, Since: r.At, Record: s.path(RefusalName)}
		}
	}

	s.logf("downloading %s from %s", version, src)
	var used expected
	st, err := s.stage(ctx, version, src, &used)
	if err == nil && s.opts.Probe != nil {
		// Before the switch, while the old release is still current: a release whose binary
		// is missing, not executable or another version must never become current.
		if perr := s.opts.Probe(ctx, version, st.dir); perr != nil {
			os.RemoveAll(st.dir)
			st, err = nil, &ProbeError{URL: src.String(), Version: version, Err: perr}
		}
	}
	if err != nil {
		if df := diskFull(s.path(StagingDir), err); df != nil {
			err = df
		}
		if refusable(err) {
			r := refusal{Version: version, Source: src.String(), Key: key, Reason: RedactText(err.Error()), At: s.opts.Now().UTC()}
			if used.algo == "sha1" && src.SHA256 == "" && src.LocalPath == "" {
				r.Published = used.hex // the sidecar's: a republished tarball has another
			}
			s.recordRefusal(r)
		}
		return res, fmt.Errorf("installing %s: %w", version, err)
	}
	name, err := s.commit(st)
	if err != nil {
		os.RemoveAll(st.dir)
		return res, fmt.Errorf("installing %s: %w", version, err)
	}
	if err := os.Remove(s.path(RefusalName)); err == nil {
		s.logf("removed %s: a release from another source or version installed", s.path(RefusalName))
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

// RefusalName is the record of the last release refused for what it is (its
// binary failed the probe, it is too large, broken or unsafe as published).
// While the version and source asked for are the refused ones, Install
// returns *RefusedError without downloading: a 1 GB tarball fetched again at
// every update-status would change nothing. Removing the file retries it.
const RefusalName = ".refused_release"

type refusal struct {
	Version string    `json:"version"`
	Source  string    `json:"source"` // redacted, for operators
	Key     string    `json:"key"`
	Reason  string    `json:"reason"` // redacted
	At      time.Time `json:"at"`
	// Published is the sha1 the mirror's sidecar named for the refused tarball ("" for an
	// operator's sha256 or a local file, whose key already names the content).
	Published string `json:"published,omitempty"`
}

// republished reports whether the mirror now publishes another tarball than the refused one
// under the same URL (its sidecar names another sha1): one small request per hook while a
// refusal stands, instead of the whole download, and a fixed mirror is picked up without an
// operator. A refusal with no recorded sidecar sum stands until the key changes.
func (s *Store) republished(ctx context.Context, src Source, r *refusal) (bool, error) {
	if r.Published == "" {
		return false, nil
	}
	sidecar := src.SHA1URL
	if sidecar == "" {
		sidecar = src.URL + ".sha1"
	}
	asset := ""
	if u, err := url.Parse(src.URL); err == nil {
		asset = path.Base(u.Path)
	}
	sum, err := s.fetchSidecar(ctx, sidecar, asset)
	if err != nil {
		return false, err
	}
	if sum == r.Published {
		return false, nil
	}
	s.logf("%s was refused as sha1 %s; the mirror now publishes sha1 %s: trying it", src, r.Published, sum)
	return true, nil
}

// refusalKey identifies "this version from this source". It hashes the
// redacted URLs: new credentials for the same file fetch the same file. A
// local tarball (a Juju resource, re-attached under the same path) is
// identified by its size and mtime as well.
func refusalKey(version string, src Source) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s", version, RedactURL(src.URL), RedactURL(src.SHA1URL), strings.ToLower(src.SHA256), src.LocalPath)
	if src.LocalPath != "" {
		if fi, err := os.Stat(src.LocalPath); err == nil {
			fmt.Fprintf(h, "\x00%d\x00%d", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refusable: the tarball itself is at fault, so fetching it again cannot help.
// Checksum mismatches are not remembered: a fixed sidecar or a re-published
// file under the same URL must be picked up without an operator.
func refusable(err error) bool {
	return errors.As(err, new(*ProbeError)) || errors.As(err, new(*TooLargeError)) ||
		errors.As(err, new(*ArchiveError)) || errors.As(err, new(*UnsafePathError))
}

func (s *Store) readRefusal() *refusal {
	b, err := os.ReadFile(s.path(RefusalName))
	if err != nil {
		return nil
	}
	var r refusal
	if err := json.Unmarshal(b, &r); err != nil {
		return nil // unreadable: as if absent, the next refusal rewrites it
	}
	return &r
}

// recordRefusal is best effort: without the record the refusal still stands
// for this hook, the next one downloads again.
func (s *Store) recordRefusal(r refusal) {
	b, err := json.Marshal(r)
	if err == nil {
		err = writeFileAtomic(s.path(RefusalName), b, 0o644)
	}
	if err != nil {
		s.logf("cannot record the refusal of %s in %s: %v", r.Version, s.path(RefusalName), err)
	}
}

// upToDate is the lock-free fast path: current holds version, is intact, and
// the links, the marker, Root and .staging hold nothing that disagrees; anything
// else goes to the locked path, which repairs it.
func (s *Store) upToDate(version string) bool {
	if ok, err := s.isInstalled(version); !ok || err != nil {
		return false
	}
	ps, err := s.Problems()
	return err == nil && len(ps) == 0
}

// upToDateLocked is upToDate for the lock holder, to whom the lock being held
// says nothing.
func (s *Store) upToDateLocked(version string) bool {
	if ok, err := s.isInstalled(version); !ok || err != nil {
		return false
	}
	ps, err := s.problems()
	return err == nil && len(ps) == 0
}

// Problems lists where the install root disagrees with `current`: a
// .installed_version naming another version (or absent), a bin,
// resource-types or fly-assets link missing or pointing elsewhere, temp links
// or files left in Root, leftovers in .staging (interrupted installs, GC
// trash). These are what a kill late in an install leaves; the next Install,
// on the unit that installs, repairs them all under the lock. While an install
// holds the lock they are its work in progress, so the answer is none. It
// never writes: read-only units can report what they see.
func (s *Store) Problems() ([]string, error) {
	ps, err := s.problems()
	if err != nil || len(ps) == 0 {
		return ps, err
	}
	if held, _, err := s.lockHolder(); err == nil && held {
		return nil, nil
	}
	return ps, nil
}

func (s *Store) linksOK() bool {
	for _, name := range linkedDirs {
		if t, err := os.Readlink(s.path(name)); err != nil || t != filepath.Join(CurrentLink, name) {
			return false
		}
	}
	return true
}

func (s *Store) problems() ([]string, error) {
	var ps []string
	dir, err := s.currentDir()
	if err != nil {
		return nil, err
	}
	version := ""
	if dir != "" {
		// From the name commit gave it ("<v>-<8hex>"), not the manifest: this runs in every
		// hook, and a real release's manifest lists thousands of files. A damaged release is
		// VerifyQuick's and Install's to report and repair.
		version = versionOfDir(filepath.Base(dir))
	}
	marker, err := s.readMarker()
	if err != nil {
		return nil, err
	}
	switch {
	case marker != version && version == "":
		ps = append(ps, fmt.Sprintf("%s says %q but nothing is current", InstalledVersionName, marker))
	case marker != version:
		ps = append(ps, fmt.Sprintf("%s says %q, current is %s (%s)", InstalledVersionName, marker, version, filepath.Base(dir)))
	}
	if version != "" {
		for _, name := range linkedDirs {
			want := filepath.Join(CurrentLink, name)
			t, err := os.Readlink(s.path(name))
			switch {
			case errors.Is(err, fs.ErrNotExist):
				ps = append(ps, fmt.Sprintf("%s is missing (want a link to %s)", s.path(name), want))
			case err != nil:
				ps = append(ps, fmt.Sprintf("%s is not a link to %s: %v", s.path(name), want, err))
			case t != want:
				ps = append(ps, fmt.Sprintf("%s points to %s, want %s", s.path(name), t, want))
			}
		}
	}
	ents, err := os.ReadDir(s.opts.Root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", s.opts.Root, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			ps = append(ps, fmt.Sprintf("%s was left by an interrupted install", s.path(e.Name())))
		}
	}
	if ents, err := os.ReadDir(s.path(StagingDir)); err == nil {
		for _, e := range ents {
			ps = append(ps, fmt.Sprintf("%s was left by an interrupted install or GC", s.path(StagingDir, e.Name())))
		}
	}
	return ps, nil
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
