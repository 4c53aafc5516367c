// Package bed is the multi-unit test bed: it runs the compiled charm exactly as Juju would, one
// unit per systemd-nspawn container, with no Juju, LXD or internet.
//
// The layers, bottom up:
//
//   - EnsureRootfs debootstraps a minimal Debian once into a cache outside the repository
//     (built in a .tmp directory, renamed when complete, under a lock shared by test binaries).
//   - Bed owns one Linux bridge with a private /24 and boots Machines: overlay copies of the cached
//     rootfs, each booted with real systemd as PID 1 inside its own nspawn container. The host's
//     PID 1 is not systemd, so containers are started with --register=no --keep-unit and entered
//     with nsenter; the host's own systemd tooling is never used.
//   - Controller drives an in-memory Juju model (internal/juju/jujutest): it serves the jujuc
//     protocol on a unix socket bind-mounted into every container, runs dispatch per hook with the
//     environment Juju sets (juju-contract §1.3), commits or discards the hook's changes on its exit
//     code (§1.4), and enqueues the event sequences of §4 per unit, one hook at a time per unit.
//
// Everything a bed creates is recorded in a state directory (default /run/ccm-testbed) and torn
// down in t.Cleanup; a bed whose test binary died (go test -timeout does not run cleanups) is swept
// by the next bed that starts.
package bed
