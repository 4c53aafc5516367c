package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Names inside the install root. They are part of the on-disk contract
// (docs/design.md, internal/storage) shared with units running older builds.
const (
	SharedMarkerName     = ".lxc_shared_storage"
	LockName             = ".install.lock"
	InstalledVersionName = ".installed_version"
	VersionsDir          = "versions"
	StagingDir           = ".staging"
	LegacyDir            = ".legacy"
	CurrentLink          = "current"
	PreviousLink         = "previous"
	RecordsDir           = "worker"
	ManifestName         = ".manifest.json"

	// tmpPrefix names the temporary symlinks and files created next to their
	// final name in the root; the next lock holder removes leftovers.
	tmpPrefix = ".tmp-"
	// writeTestPrefix names CheckWritable's probes: unique per call, so two
	// units probing at once never trip over each other (reference weakness #14).
	writeTestPrefix = ".write-test-"
)

// linkedDirs are the top-level names that point into current/ so that
// <Root>/bin/concourse keeps working for everything that uses that path.
var linkedDirs = []string{"bin", "resource-types", "fly-assets"}

// DefaultStallTimeout is how long a download may receive no bytes before the
// request is abandoned and resumed with a Range request.
const DefaultStallTimeout = 60 * time.Second

// Logger receives one line per step. Store prefixes every line with the unit name.
type Logger interface {
	Printf(format string, args ...any)
}

// Source says where a release tarball comes from and how to check it.
type Source struct {
	// URL of the tarball (http or https).
	URL string
	// SHA1URL is the "<40 hex>  <name>\n" sidecar. Empty means URL+".sha1" for
	// a URL source. For a LocalPath source an empty SHA1URL and an empty SHA256
	// mean "no checksum": a Juju resource is already verified by Juju's own
	// fingerprint, so the operator may attach one without a sidecar.
	SHA1URL string
	// SHA256 is an operator-supplied hex sha256 of the tarball. When set it
	// replaces the sidecar check.
	SHA256 string
	// LocalPath is a tarball already on disk (e.g. a Juju resource); URL is then
	// only used in messages.
	LocalPath string
}

// String names the source for messages and the manifest, without the
// credentials a URL may carry.
func (s Source) String() string {
	if s.LocalPath != "" {
		return s.LocalPath
	}
	return RedactURL(s.URL)
}

// RetryPolicy bounds the retries of one install's network work.
type RetryPolicy struct {
	Attempts int           // full attempts (fresh staging); also the bound on consecutive failed resume requests. Default 5.
	Initial  time.Duration // first backoff. Default 1s.
	Max      time.Duration // backoff cap. Default 30s.
	Total    time.Duration // bound on the whole download including retries. Default 30m; ctx may bound it further.
}

// Options configures a Store. Zero values get the documented defaults.
type Options struct {
	Root string // install root, e.g. /var/lib/concourse
	Unit string // "concourse-ci-machine/0": for logs, the lock file and records
	// HTTPClient is used for every request; proxies are the caller's job.
	// Nil means a client without an overall timeout (ctx and StallTimeout bound it).
	HTTPClient *http.Client
	Logger     Logger
	// Progress, when set, is called with bytes received and the total (-1 when
	// unknown) at most about every 1%, from the download goroutine.
	Progress func(done, total int64)
	Retry    RetryPolicy
	Now      func() time.Time
	// StripPrefix is the tarball's root directory ("concourse/"). Entries
	// outside it are rejected; empty means the tarball has no root to strip.
	StripPrefix string
	// StallTimeout abandons and resumes a request that received less than
	// MinProgress bytes in this long (see DefaultStallTimeout). It bounds the
	// checksum sidecar and the wait for response headers too.
	StallTimeout time.Duration
	// MinProgress is the fewest bytes a tarball body must deliver per
	// StallTimeout window; a trickle below it counts as a stall, so a mirror
	// sending a few bytes a minute cannot hold the install lock for ever.
	// Default DefaultMinProgress.
	MinProgress int64
	// MaxExpandedBytes bounds what a tarball may expand to on disk (the sum of
	// its regular files). Default DefaultMaxExpandedBytes.
	MaxExpandedBytes int64
	// Probe, when set, checks a staged release before it can become current:
	// dir is the extracted release root (dir/bin/...), version the one being
	// installed. An error refuses the release (*ProbeError). Storage knows
	// nothing of what a working release is; the caller does.
	Probe func(ctx context.Context, version, dir string) error
}

// DefaultMinProgress is 64 KiB per stall window: about 1 KiB/s with the default
// window, slower than any mirror that could deliver a release in Retry.Total.
const DefaultMinProgress = 64 << 10

// DefaultMaxExpandedBytes is 4 GiB: a Concourse release expands to about 1 GiB
// (7.x: 0.9-1.1 GiB), so four times that leaves room for growth while a
// 2 MB tarball that expands to many GiB is cut long before it fills the share.
const DefaultMaxExpandedBytes = 4 << 30

// Store manages one install root. It holds no open files between calls, and is
// safe for concurrent use: every operation takes its own lock handle.
type Store struct {
	opts Options
	log  Logger

	mu sync.Mutex
	// damaged holds release directories that this Store's VerifyFull or
	// VerifyQuick probe found damaged. A bit flip keeps size and mode, so
	// Install's own quick check cannot see it; remembering it lets
	// "VerifyFull, then Install" repair the release.
	damaged map[string]bool
}

// New returns a Store for opts.Root. It touches nothing on disk.
func New(opts Options) *Store {
	if opts.Unit == "" {
		opts.Unit = "unknown-unit"
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Retry.Attempts <= 0 {
		opts.Retry.Attempts = 5
	}
	if opts.Retry.Initial <= 0 {
		opts.Retry.Initial = time.Second
	}
	if opts.Retry.Max <= 0 {
		opts.Retry.Max = 30 * time.Second
	}
	if opts.Retry.Total <= 0 {
		opts.Retry.Total = 30 * time.Minute
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.MinProgress <= 0 {
		opts.MinProgress = DefaultMinProgress
	}
	if opts.MaxExpandedBytes <= 0 {
		opts.MaxExpandedBytes = DefaultMaxExpandedBytes
	}
	s := &Store{opts: opts, damaged: map[string]bool{}}
	s.log = opts.Logger
	return s
}

func (s *Store) logf(format string, args ...any) {
	if s.log == nil {
		return
	}
	// Redacted here once: URLs reach log lines through errors from net/http too.
	s.log.Printf("%s", RedactText(fmt.Sprintf("%s: "+format, append([]any{s.opts.Unit}, args...)...)))
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.opts.Root}, elem...)...)
}

// Root returns the install root.
func (s *Store) Root() string { return s.opts.Root }

// BinaryPath is <Root>/bin/concourse; bin is a symlink to current/bin.
func (s *Store) BinaryPath() string { return s.path("bin", "concourse") }

// UnitTag turns "concourse-ci-machine/0" into "concourse-ci-machine-0".
func UnitTag(unit string) string { return strings.ReplaceAll(unit, "/", "-") }

// CheckShared reports whether the shared root is mounted and marked ready:
// *UnavailableError when Root is missing or not a directory,
// *MarkerMissingError when the operator's marker is absent.
func (s *Store) CheckShared() error {
	fi, err := os.Stat(s.opts.Root)
	if err != nil {
		return &UnavailableError{Path: s.opts.Root, Err: err}
	}
	if !fi.IsDir() {
		return &UnavailableError{Path: s.opts.Root, Err: errors.New("not a directory")}
	}
	marker := s.path(SharedMarkerName)
	if _, err := os.Stat(marker); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &MarkerMissingError{Path: marker}
		}
		return &UnavailableError{Path: s.opts.Root, Err: err}
	}
	return nil
}

// CheckWritable creates, writes and removes a uniquely named probe file in
// Root. *NotWritableError for EROFS, EACCES, EPERM, ENOSPC and EDQUOT.
//
// A missing Root is created first (0755): a fresh machine has no
// /var/lib/concourse, and the install is what brings it. In lxc mode callers
// run CheckShared first, which refuses a missing Root, so a share that is not
// mounted yet is never replaced by a local directory.
func (s *Store) CheckWritable() error {
	if err := os.MkdirAll(s.opts.Root, 0o755); err != nil {
		if isNotWritable(err) {
			return &NotWritableError{Path: s.opts.Root, Err: err}
		}
		return fmt.Errorf("creating %s: %w", s.opts.Root, err)
	}
	f, err := os.CreateTemp(s.opts.Root, writeTestPrefix+UnitTag(s.opts.Unit)+"-*")
	if err != nil {
		if isNotWritable(err) {
			return &NotWritableError{Path: s.opts.Root, Err: err}
		}
		return fmt.Errorf("probing %s for writes: %w", s.opts.Root, err)
	}
	name := f.Name()
	_, werr := f.Write([]byte("ok\n"))
	cerr := f.Close()
	rerr := os.Remove(name)
	for _, err := range []error{werr, cerr, rerr} {
		if err == nil {
			continue
		}
		if isNotWritable(err) {
			return &NotWritableError{Path: s.opts.Root, Err: err}
		}
		return fmt.Errorf("probing %s for writes: %w", s.opts.Root, err)
	}
	return nil
}

// Installed returns the version behind `current` ("" when nothing is
// installed), read from that version's manifest.
func (s *Store) Installed() (string, error) {
	dir, err := s.currentDir()
	if err != nil || dir == "" {
		return "", err
	}
	m, err := readManifest(dir)
	if err != nil {
		return "", err
	}
	return m.Version, nil
}

// currentDir resolves `current` once to an absolute versions/<v>-<id> path, so
// that a caller keeps looking at one release even if `current` is swapped
// meanwhile. "" when there is no current link.
func (s *Store) currentDir() (string, error) {
	target, err := os.Readlink(s.path(CurrentLink))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("reading %s: %w", s.path(CurrentLink), err)
	}
	if filepath.IsAbs(target) {
		return target, nil
	}
	return s.path(target), nil
}

// readMarker returns the content of .installed_version ("" when absent).
func (s *Store) readMarker() (string, error) {
	b, err := os.ReadFile(s.path(InstalledVersionName))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("reading %s: %w", s.path(InstalledVersionName), err)
	}
	return strings.TrimSpace(string(b)), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("internal error: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// validVersion keeps versions usable as a path component.
func validVersion(v string) error {
	if v == "" {
		return errors.New("empty version")
	}
	for _, r := range v {
		ok := r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '.' || r == '-' || r == '_' || r == '+'
		if !ok {
			return fmt.Errorf("version %q contains %q; use letters, digits, '.', '-', '_' or '+'", v, r)
		}
	}
	if v == "." || v == ".." {
		return fmt.Errorf("version %q is not a valid name", v)
	}
	return nil
}

func (s *Store) markDamaged(dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.damaged[dir] = true
}

func (s *Store) isDamaged(dir string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.damaged[dir]
}
