package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"
)

// The lock protocol (docs/design.md):
//   - an installer takes an EXCLUSIVE flock(2) on <Root>/.install.lock, opened
//     read-write, then writes "pid=… unit=… since=…" into it for operators;
//   - a waiter opens the file read-only (works on a read-only mount) and takes a
//     SHARED lock, which it gets the moment the installer releases.
//
// The kernel drops a process's flock when its last descriptor closes, including
// on SIGKILL, so there is no stale lock to detect and no timeout to guess; the
// holder text is informational and may name a dead process.

func (s *Store) newLock(readOnly bool) *flock.Flock {
	if readOnly {
		return flock.New(s.path(LockName), flock.SetFlag(os.O_RDONLY))
	}
	// 0644: waiters on other units open it read-only.
	return flock.New(s.path(LockName), flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o644))
}

// lockExclusive takes the install lock. While another process holds it (an
// installer, or a waiter briefly holding its shared lock), it blocks in
// flock(2) until the kernel hands it the lock or ctx ends: no polling, so a
// waiting installer uses no CPU. Then it asks satisfied(); when that says the
// work was done meanwhile, it releases the lock and returns done=true.
//
// It used to wait on a shared lock and then retry a non-blocking exclusive
// one; while any other unit held a shared lock that retry loop spun on every core.
func (s *Store) lockExclusive(ctx context.Context, purpose string, satisfied func() bool) (fl *flock.Flock, waited time.Duration, done bool, err error) {
	start := s.opts.Now()
	fl = s.newLock(false)
	ok, err := fl.TryLock()
	if err != nil {
		if isNotWritable(err) {
			return nil, 0, false, &NotWritableError{Path: s.path(LockName), Err: err}
		}
		return nil, 0, false, fmt.Errorf("locking %s: %w", s.path(LockName), err)
	}
	if !ok {
		s.logf("install lock is held (%s); waiting to %s", s.readHolder(), purpose)
		if err := lockContext(ctx, fl, fl.Lock); err != nil {
			return nil, s.opts.Now().Sub(start), false, fmt.Errorf("waiting for install lock %s: %w", s.path(LockName), err)
		}
		if satisfied != nil && satisfied() {
			fl.Unlock()
			return nil, s.opts.Now().Sub(start), true, nil
		}
	}
	waited = s.opts.Now().Sub(start)
	s.writeHolder(fl)
	s.logf("took install lock %s for %s after %s", s.path(LockName), purpose, waited.Round(time.Millisecond))
	return fl, waited, false, nil
}

// writeHolder records who holds the lock. It is best effort: the lock is what
// matters, the text only helps operators (Status) and the logs of waiters.
func (s *Store) writeHolder(fl *flock.Flock) {
	f, err := os.OpenFile(fl.Path(), os.O_WRONLY, 0)
	if err != nil {
		s.logf("cannot record lock holder in %s: %v", fl.Path(), err)
		return
	}
	defer f.Close()
	text := fmt.Sprintf("pid=%d unit=%s since=%s\n", os.Getpid(), s.opts.Unit, s.opts.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(text), 0)
		if err != nil {
			s.logf("cannot record lock holder in %s: %v", fl.Path(), err)
		}
	}
}

func (s *Store) readHolder() string {
	b, err := os.ReadFile(s.path(LockName))
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return "holder unknown"
	}
	return strings.TrimSpace(string(b))
}

// lockHolder reports whether an install holds the lock right now, and who (the
// lock file's content). Like flock's Locked, the answer may be stale at once.
func (s *Store) lockHolder() (held bool, holder string, err error) {
	rl := s.newLock(true)
	ok, err := rl.TryRLock()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, "", nil
		}
		return false, "", fmt.Errorf("testing lock %s: %w", s.path(LockName), err)
	}
	if ok {
		rl.Unlock()
		return false, s.readHolder(), nil // the last holder: who installed last, and when
	}
	return true, s.readHolder(), nil
}

// WaitInstalled reports whether version is installed and passes a quick
// verification. When an install holds the lock, it first waits — at most
// maxWait — for a shared lock, which it gets the moment that install ends
// (the kernel wakes it; well under a millisecond). It never writes, so it works on a
// read-only mount; when no lock file exists nothing was ever installed and it
// returns (false, nil) at once. Running out of maxWait is not an error:
// the result is (false, nil) and the caller asks again later. A cancelled ctx
// is an error. A matching but damaged install returns (false, *CorruptError).
func (s *Store) WaitInstalled(ctx context.Context, version string, maxWait time.Duration) (bool, error) {
	start := s.opts.Now()
	if ok, _ := s.isInstalled(version); ok {
		return true, nil
	}
	rl := s.newLock(true)
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	ok, err := rl.TryRLock()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.logf("no install lock at %s: nothing installed yet", s.path(LockName))
			return s.isInstalled(version)
		}
		return false, fmt.Errorf("locking %s: %w", s.path(LockName), err)
	}
	if !ok {
		s.logf("waiting up to %s for the install in progress (%s)", maxWait, s.readHolder())
		err = lockContext(wctx, rl, rl.RLock)
		ok = err == nil
		waited := s.opts.Now().Sub(start).Round(time.Millisecond)
		if err != nil {
			if ctx.Err() != nil {
				return false, fmt.Errorf("waiting for install lock %s: %w", s.path(LockName), ctx.Err())
			}
			s.logf("gave up waiting for the install after %s; still held (%s)", waited, s.readHolder())
			return false, nil
		}
		s.logf("install finished after a wait of %s", waited)
	}
	if ok {
		defer rl.Unlock()
	}
	installed, err := s.isInstalled(version)
	if installed {
		s.logf("version %s is installed", version)
	}
	return installed, err
}

// isInstalled: `current` holds version and every manifest file is present
// with the right size and mode.
func (s *Store) isInstalled(version string) (bool, error) {
	dir, err := s.currentDir()
	if err != nil || dir == "" {
		return false, err
	}
	m, err := readManifest(dir)
	if err != nil {
		return false, err
	}
	if m.Version != version {
		return false, nil
	}
	if err := quickCheck(dir, m); err != nil {
		return false, err
	}
	if s.isDamaged(dir) {
		return false, &CorruptError{Path: dir, Reason: "an earlier verification on this unit found it damaged"}
	}
	return true, nil
}

// lockContext takes the lock on fl with lock (fl.RLock or fl.Lock, which
// block in flock(2)), waiting until it is free or ctx ends.
//
// Why not gofrs' TryRLockContext: it polls, so its retry delay is the wake-up
// latency, and each poll is an open, a flock and a close. With 50 units
// waiting at 5 ms that is 10,000 wake-ups a second on a 2-core machine, which
// slowed the one unit that was downloading (docs/bench-storage.md). A blocking
// flock(2) costs nothing while it waits and the kernel wakes it the moment
// the holder releases, but it cannot be cancelled; so it runs in a goroutine,
// and when ctx ends first that goroutine is left to finish: it releases the
// lock as soon as it gets it. A process that gives up therefore keeps one
// thread blocked in flock(2) until the install ends (hooks are short-lived
// processes, so this costs nothing in practice).
func lockContext(ctx context.Context, fl *flock.Flock, lock func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		var err error
		for {
			// Go installs its signal handlers with SA_RESTART, which restarts
			// flock(2); the loop is for systems where it does not.
			if err = lock(); !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		go func() {
			if err := <-done; err == nil {
				fl.Unlock()
			}
		}()
		return ctx.Err()
	}
}
