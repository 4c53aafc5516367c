package storage

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// ChecksumError reports a tarball whose digest differs from the expected one, or
// an expected digest that could not be obtained (missing or malformed sidecar).
// Want or Got is empty when it could not be determined.
type ChecksumError struct {
	URL  string // tarball URL or local path
	Algo string // "sha1" or "sha256"
	Want string
	Got  string
	// Reason explains a missing or malformed checksum; empty for a plain mismatch.
	Reason string
}

func (e *ChecksumError) Error() string {
	if e.Reason != "" {
		return RedactText(fmt.Sprintf("cannot verify %s: %s checksum %s; publish a valid \"<hex>  <name>\" sidecar or set the sha256 explicitly",
			e.URL, e.Algo, e.Reason))
	}
	return RedactText(fmt.Sprintf("checksum mismatch for %s: %s want %s, got %s; the download is corrupt or the checksum is wrong (nothing was installed)",
		e.URL, e.Algo, e.Want, e.Got))
}

// ArchiveError reports a tarball that matches its published checksum and still cannot be
// extracted: the release is broken as published, so downloading it again cannot help.
type ArchiveError struct {
	URL string
	Err error
}

func (e *ArchiveError) Error() string {
	return RedactText(fmt.Sprintf("%s matches its checksum but is not a valid release tarball (%v); use another mirror or attach a good tarball (nothing was installed)", e.URL, e.Err))
}

func (e *ArchiveError) Unwrap() error { return e.Err }

// UnsafePathError reports a tarball entry that would escape the install
// directory or is of a kind we never install (devices, fifos). The whole
// tarball is rejected and nothing becomes visible.
type UnsafePathError struct {
	Name   string // the entry name as stored in the tarball
	Reason string
}

func (e *UnsafePathError) Error() string {
	return fmt.Sprintf("unsafe tarball entry %q: %s; the tarball was rejected and nothing was installed", e.Name, e.Reason)
}

// CorruptError reports an installed file that no longer matches the manifest.
type CorruptError struct {
	Path   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("installed release is damaged: %s: %s; run the install again to repair it (a fresh copy is installed and switched to atomically)", e.Path, e.Reason)
}

// NotWritableError reports an install root this unit cannot write to.
type NotWritableError struct {
	Path string
	Err  error
}

func (e *NotWritableError) Error() string {
	fix := "make it writable for this unit"
	switch {
	case errors.Is(e.Err, syscall.EROFS):
		fix = "the mount is read-only; mount it read-write on the unit that installs"
	case errors.Is(e.Err, syscall.EACCES), errors.Is(e.Err, syscall.EPERM):
		fix = "permission denied; check the owner and mode of the directory (and shift=true on LXD disk devices)"
	case errors.Is(e.Err, syscall.ENOSPC):
		fix = "the filesystem is full; free space (old versions are removed by GC)"
	case errors.Is(e.Err, syscall.EDQUOT):
		fix = "the disk quota is exhausted; raise the quota or free space"
	}
	return fmt.Sprintf("%s is not writable: %v; %s", e.Path, e.Err, fix)
}

func (e *NotWritableError) Unwrap() error { return e.Err }

// MarkerMissingError reports that the operator's shared-storage marker is absent:
// the share is not mounted (or not ready) on this unit.
type MarkerMissingError struct {
	Path string
}

func (e *MarkerMissingError) Error() string {
	return fmt.Sprintf("shared storage marker %s is missing: the shared directory is not mounted or not ready; mount it on every unit and create the marker (touch %s)", e.Path, e.Path)
}

// UnavailableError reports an install root that is missing or not a directory.
type UnavailableError struct {
	Path string
	Err  error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("install root %s is unavailable: %v; mount the shared directory there (or create it)", e.Path, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// DownloadError is the final error of an install from a URL after all retries.
type DownloadError struct {
	URL      string
	Attempts int
	Err      error
}

func (e *DownloadError) Error() string {
	return RedactText(fmt.Sprintf("downloading %s failed after %d attempt(s): %v", e.URL, e.Attempts, e.Err))
}

func (e *DownloadError) Unwrap() error { return e.Err }

// StallError reports a body (tarball or checksum sidecar) that delivered less
// than the minimum progress during one stall window: the mirror or a proxy
// hangs, or trickles too slowly to finish in the time an install may take.
type StallError struct {
	URL    string
	Window time.Duration
	Got    int64 // bytes received in the last window
	Min    int64 // bytes required per window; -1: the whole (small) body within the window
}

func (e *StallError) Error() string {
	if e.Min < 0 {
		return RedactText(fmt.Sprintf("download from %s stalled: not complete after %s (%d bytes received); the mirror or proxy hangs",
			e.URL, e.Window, e.Got))
	}
	return RedactText(fmt.Sprintf("download from %s stalled: %d bytes in the last %s (at least %d needed); the mirror or proxy hangs or is too slow",
		e.URL, e.Got, e.Window, e.Min))
}

// DiskFullError reports that the filesystem of the install root has no room
// for the release: a local problem, not a broken release.
type DiskFullError struct {
	Path  string // where the write failed or would fail
	Avail uint64 // bytes available to us, when known
	Need  uint64 // bytes the next step needs, when known (0: unknown)
	Err   error  // the ENOSPC/EDQUOT, or nil when statfs saw it coming
}

func (e *DiskFullError) Error() string {
	need := ""
	if e.Need > 0 {
		need = fmt.Sprintf(", %s needed", human(e.Need))
	}
	cause := ""
	if e.Err != nil {
		cause = fmt.Sprintf(" (%v)", e.Err)
	}
	return fmt.Sprintf("the disk holding %s is full: %s available%s%s; free space there (old releases are removed by GC) and the install runs again at the next hook (nothing was installed)",
		e.Path, human(e.Avail), need, cause)
}

func (e *DiskFullError) Unwrap() error { return e.Err }

// TooLargeError reports a tarball that expands to more than the bound
// (Options.MaxExpandedBytes): whatever it is, it is not a Concourse release,
// and it must not fill the share.
type TooLargeError struct {
	URL   string
	Limit int64
	Entry string // the entry that crossed the bound
}

func (e *TooLargeError) Error() string {
	return RedactText(fmt.Sprintf("%s expands to more than %s (crossed at %q); a Concourse release is about 1 GiB, so this is not one: use an official release tarball (nothing was installed)",
		e.URL, human(uint64(e.Limit)), e.Entry))
}

// ProbeError reports a staged release whose binary does not work: missing,
// not executable, or reporting another version. It never becomes current.
type ProbeError struct {
	URL     string
	Version string
	Err     error
}

func (e *ProbeError) Error() string {
	return RedactText(fmt.Sprintf("the release from %s has no working Concourse %s binary: %v; use an official release tarball (nothing was installed, the current release stays)",
		e.URL, e.Version, e.Err))
}

func (e *ProbeError) Unwrap() error { return e.Err }

// RefusedError reports a release refused by an earlier install (probe failed,
// too large, broken or unsafe tarball) from the same source: it is not
// downloaded again until the version or the source changes.
type RefusedError struct {
	Version string
	Source  string // redacted
	Reason  string // the original refusal, redacted
	Since   time.Time
	Record  string // the refusal record; removing it retries the same source
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("Concourse %s from %s was refused at %s and is not downloaded again: %s (change the version or the source, or remove %s to retry it)",
		e.Version, e.Source, e.Since.UTC().Format(time.RFC3339), e.Reason, e.Record)
}

// isNotWritable reports whether err means "this unit cannot write here", as
// opposed to a real failure.
func isNotWritable(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) ||
		errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
