// Package storage manages the Concourse install root (/var/lib/concourse),
// which several units may share (shared-storage=lxc): who downloads a
// release, how the others wait for it, and how a release becomes visible
// atomically. It knows directories, locks, markers, downloads and tarballs,
// and nothing of Juju.
//
// # Layout
//
//	<Root>/.lxc_shared_storage     operator's marker: the share is mounted (CheckShared)
//	<Root>/.install.lock           flock(2) target; content = last holder "pid=… unit=… since=…"
//	<Root>/.installed_version      bare version, no newline; rewritten atomically after current
//	<Root>/versions/<v>-<8hex>/    one complete, verified release, with .manifest.json
//	<Root>/current  -> versions/…  THE switch: replaced by one rename(2) of a fresh symlink
//	<Root>/previous -> versions/…  the release current pointed to before the last switch
//	<Root>/bin, resource-types, fly-assets -> current/<name>
//	<Root>/.staging/<random>/      in-progress extraction; removed by the next lock holder
//	<Root>/worker/<unit-tag>/version   the version each unit runs (RecordRunning); GC keeps it
//	<Root>/.refused_release        the last release refused for what it is (probe, size, broken
//	                               or unsafe tarball); not downloaded again from the same source
//
// # Bounds on what a download may cost
//
// Every body (tarball and checksum sidecar) has a stall timer: a sidecar must
// arrive within Options.StallTimeout, a tarball must deliver
// Options.MinProgress bytes in every StallTimeout window or the request is
// cut and resumed. A resumed request that delivers less than that counts as a
// failure (a 206 alone is no success); Retry.Attempts consecutive failures,
// backed off, end the install. A checksum mismatch is final at once. A
// tarball may expand to Options.MaxExpandedBytes (4 GiB by default, about
// four releases), and free space is checked (statfs) before and during the
// extraction: a full disk is a *DiskFullError naming the path, never
// "broken as published". Userinfo in a URL never reaches a log line, an
// error, or the manifest (RedactURL, RedactText).
//
// # Locking
//
// An installer takes an exclusive flock on .install.lock; a waiter opens it
// read-only and takes a shared lock, so waiting works on a read-only mount.
// The kernel drops the lock of a process that dies, SIGKILL included: there
// is never a stale lock to expire. A waiter blocks in flock(2) in a goroutine,
// so it uses no CPU while it waits and wakes the moment the lock is released;
// when its context ends first it returns, and that goroutine releases the lock
// as soon as it gets it (see lockContext). An installer that finds the lock
// taken blocks the same way for the exclusive lock: it never polls.
// Some systems (NFS emulating flock with fcntl) may turn a shared lock into an
// exclusive one; waiters then wake one after another instead of together.
//
// # Crash safety
//
// A release is extracted into .staging, fsynced, and renamed into versions/
// complete with its manifest; then current is switched by renaming a fresh
// symlink over it, then .installed_version is rewritten (temp file, fsync,
// rename, fsync dir). A kill at any instant leaves current pointing at the
// old complete release or the new one. The next lock holder removes staging
// leftovers and temp links, relinks bin/resource-types/fly-assets and
// rewrites .installed_version when it disagrees with current. Problems lists
// such disagreements without writing; Install of the current version repairs
// them (the hooks call it whenever Problems is not empty), and Status shows
// them. The visible truth is current; .installed_version is for tools that
// only read a file.
//
// Options.Probe checks a staged release (its binary runs and reports the
// version) before the switch: a release that fails it never becomes current.
//
// # Read-only mounts
//
// A unit whose share is mounted read-only can call Installed, WaitInstalled,
// VerifyQuick, VerifyFull and Status. Install and GC return *NotWritableError.
// RecordRunning falls back to a unit-local directory; such records are not
// seen by GC on the installing unit, which keeps current and previous only, so
// a read-only unit still running a release two switches old may lose its
// resource-types and fly-assets (its open binary keeps running).
package storage
