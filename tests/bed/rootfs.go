package bed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"
)

// rootfsRecipe names the customisation applied after debootstrap. Bump it whenever
// customizeRootfs or the package list changes: the cache directory name includes it, so every
// host rebuilds once instead of booting a stale image.
const rootfsRecipe = 3

// DefaultCacheDir holds cached root filesystems, outside the repository so that `git clean` does
// not cost a 45 s rebuild and parallel checkouts share one image.
const DefaultCacheDir = "/var/cache/ccm-testbed"

// rootfsPackages are added to debootstrap's minbase: systemd to boot, dbus for systemctl,
// iproute2 to check addresses inside, passwd for useradd (the charm creates a concourse user),
// ca-certificates because the charm verifies TLS downloads like on a real machine, iptables
// because every cloud image has it and containerd's CNI plugins need it (without it the real
// worker exits: "failed to initialize iptables: exec: \"iptables\": executable file not found").
var rootfsPackages = []string{"systemd", "systemd-sysv", "dbus", "iproute2", "passwd", "ca-certificates", "iptables"}

// maskedUnits slow a container boot or fail inside nspawn and nothing in the charm needs them.
// Timers are masked so that no apt or cleanup job starts in the middle of a scenario.
var maskedUnits = []string{
	"console-getty.service",
	"container-getty@.service",
	"getty@.service",
	"getty.target",
	"systemd-networkd-wait-online.service",
	"systemd-networkd.service",
	"systemd-resolved.service",
	"systemd-timesyncd.service",
	"systemd-firstboot.service",
	"apt-daily.timer",
	"apt-daily-upgrade.timer",
	"dpkg-db-backup.timer",
	"e2scrub_all.timer",
	"e2scrub_reap.service",
	"fstrim.timer",
	"systemd-tmpfiles-clean.timer",
}

// RootfsOptions tunes EnsureRootfsWith. The zero value gives the defaults.
type RootfsOptions struct {
	// CacheDir defaults to $CCM_TESTBED_CACHE, then DefaultCacheDir.
	CacheDir string
	// Suite is the Debian suite, default bookworm (the host's release, so debootstrap knows it).
	Suite string
	// Mirror defaults to $CCM_TESTBED_MIRROR, then http://deb.debian.org/debian.
	Mirror string
}

func (o RootfsOptions) withDefaults() RootfsOptions {
	if o.CacheDir == "" {
		o.CacheDir = os.Getenv("CCM_TESTBED_CACHE")
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.Suite == "" {
		o.Suite = "bookworm"
	}
	if o.Mirror == "" {
		o.Mirror = os.Getenv("CCM_TESTBED_MIRROR")
	}
	if o.Mirror == "" {
		o.Mirror = "http://deb.debian.org/debian"
	}
	return o
}

// EnsureRootfs returns the cached root filesystem with the default options, building it first
// when it is missing.
func EnsureRootfs(ctx context.Context) (string, error) {
	return EnsureRootfsWith(ctx, RootfsOptions{})
}

// EnsureRootfsWith returns the path of a complete, customised root filesystem.
//
// The image is built in "<final>.tmp" and renamed when complete: rename is atomic, so the final
// directory exists only if a build finished, and a build killed at any instant leaves at most a
// .tmp directory that the next build deletes. An exclusive flock serialises builders across
// parallel test binaries; the fast path (image present) takes no lock.
func EnsureRootfsWith(ctx context.Context, opts RootfsOptions) (string, error) {
	opts = opts.withDefaults()
	final := filepath.Join(opts.CacheDir, fmt.Sprintf("rootfs-%s-r%d", opts.Suite, rootfsRecipe))
	if rootfsComplete(final) {
		return final, nil
	}
	if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating rootfs cache: %w", err)
	}
	lock := flock.New(filepath.Join(opts.CacheDir, fmt.Sprintf("rootfs-%s.lock", opts.Suite)))
	locked, err := lock.TryLockContext(ctx, 100*time.Millisecond)
	if err != nil || !locked {
		return "", fmt.Errorf("locking %s: %v", lock.Path(), errors.Join(err, ctx.Err()))
	}
	defer lock.Unlock()
	// Another binary may have finished the build while we waited for the lock.
	if rootfsComplete(final) {
		return final, nil
	}
	if err := buildRootfs(ctx, opts, final); err != nil {
		return "", err
	}
	return final, nil
}

func rootfsComplete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "etc", "ccm-testbed-recipe"))
	return err == nil
}

func buildRootfs(ctx context.Context, opts RootfsOptions, final string) error {
	tmp := final + ".tmp"
	if err := removeTree(tmp); err != nil {
		return fmt.Errorf("removing half-built rootfs: %w", err)
	}
	logPath := filepath.Join(opts.CacheDir, "debootstrap.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logFile.Close()
	start := time.Now()
	// --cache-dir keeps the .debs, so a recipe bump rebuilds without downloading again.
	debs := filepath.Join(opts.CacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", debs, err)
	}
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(rootfsPackages, ","), "--cache-dir="+debs,
		opts.Suite, tmp, opts.Mirror)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	// debootstrap mounts proc and sys inside the target; a killed run leaves them mounted, and
	// nothing may be renamed or deleted under a live mount.
	if err := unmountUnder(tmp); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr != nil {
		return fmt.Errorf("debootstrap %s into %s: %w (log %s: %s)", opts.Suite, tmp, runErr, logPath, tailFile(logPath, 800))
	}
	fmt.Fprintf(logFile, "debootstrap took %s\n", time.Since(start).Round(time.Millisecond))
	if err := customizeRootfs(tmp); err != nil {
		return fmt.Errorf("customising %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("publishing rootfs: %w", err)
	}
	return nil
}

// customizeRootfs makes the image boot fast and stay offline inside nspawn.
func customizeRootfs(root string) error {
	etc := filepath.Join(root, "etc")
	system := filepath.Join(etc, "systemd", "system")
	if err := os.MkdirAll(system, 0o755); err != nil {
		return err
	}
	for _, u := range maskedUnits {
		link := filepath.Join(system, u)
		os.Remove(link)
		if err := os.Symlink("/dev/null", link); err != nil {
			return fmt.Errorf("masking %s: %w", u, err)
		}
	}
	def := filepath.Join(system, "default.target")
	os.Remove(def)
	if err := os.Symlink("/lib/systemd/system/multi-user.target", def); err != nil {
		return fmt.Errorf("setting default.target: %w", err)
	}
	files := []struct{ path, content string }{
		// An empty machine-id makes systemd use the container UUID nspawn passes, so every
		// unit has its own id although they share one image.
		{"etc/machine-id", ""},
		// The hostname comes from each machine's overlay; debootstrap copies the host's.
		{"etc/hostname", ""},
		// Volatile journal: nothing to flush to the overlay at boot or shutdown.
		{"etc/systemd/journald.conf.d/10-bed.conf", "[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n"},
		// A service stuck in stop must not hold a test's teardown for the default 90 s.
		{"etc/systemd/system.conf.d/10-bed.conf", "[Manager]\nDefaultTimeoutStopSec=10s\nDefaultTimeoutStartSec=30s\n"},
		// The recipe marker is what rootfsComplete looks for, so it is written last.
		{"etc/ccm-testbed-recipe", fmt.Sprintf("%d\n", rootfsRecipe)},
	}
	// Only what a Juju machine agent has made before the first hook: nothing the charm creates
	// itself (no /var/lib/concourse, /etc/concourse, concourse user or unit files; see
	// FreshMachinePaths). An image that pre-created the install root once hid a charm that
	// could not install on a real machine.
	for _, d := range []string{"var/lib/juju/tools", "var/lib/juju/agents"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// mountsUnder lists mount points at or below dir, deepest first, from our mount namespace.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space…) of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir. MNT_DETACH because a dying container may
// still hold a reference for a moment; the mount disappears from our tree at once either way.
func unmountUnder(dir string) error {
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// removeTree deletes dir after detaching anything mounted below it, so that RemoveAll can never
// walk into a bind mount of the host's /dev or /proc left by a killed debootstrap.
func removeTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unmountUnder(dir); err != nil {
		return err
	}
	if left, err := mountsUnder(dir); err != nil || len(left) > 0 {
		return fmt.Errorf("still mounted under %s: %v %v", dir, left, err)
	}
	return os.RemoveAll(dir)
}

// tailFile returns the last n bytes of a file, for error messages.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return strings.TrimSpace(string(data))
}
