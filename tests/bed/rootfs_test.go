package bed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsureRootfs(t *testing.T) {
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	dir, err := EnsureRootfs(ctx)
	if err != nil {
		t.Fatalf("EnsureRootfs: %v", err)
	}
	t.Logf("rootfs %s ready after %s", dir, time.Since(start).Round(time.Millisecond))
	for _, p := range []string{"lib/systemd/systemd", "usr/bin/systemctl", "sbin/ip", "usr/sbin/useradd", "etc/ccm-testbed-recipe"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("rootfs lacks %s: %v", p, err)
		}
	}
	if _, err := os.Stat(dir + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", dir, err)
	}
	// The second call is the cached fast path.
	start = time.Now()
	again, err := EnsureRootfs(ctx)
	if err != nil || again != dir {
		t.Fatalf("EnsureRootfs again = %q, %v; want %q", again, err, dir)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cached EnsureRootfs took %s", d)
	}
}

func TestEnsureRootfsRemovesHalfBuild(t *testing.T) {
	Require(t)
	// A killed build leaves only <final>.tmp; the next builder must delete it, never publish it.
	cache := t.TempDir()
	opts := RootfsOptions{CacheDir: cache, Mirror: "http://127.0.0.1:1/debian"}.withDefaults()
	final := filepath.Join(cache, fmt.Sprintf("rootfs-bookworm-r%d", rootfsRecipe))
	if err := os.MkdirAll(filepath.Join(final+".tmp", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(final+".tmp", "etc", "half"), nil, 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The mirror is a closed loopback port, so debootstrap fails fast after the cleanup.
	if _, err := EnsureRootfsWith(ctx, opts); err == nil {
		t.Fatal("EnsureRootfsWith with an unreachable mirror succeeded")
	}
	if _, err := os.Stat(filepath.Join(final+".tmp", "etc", "half")); !os.IsNotExist(err) {
		t.Errorf("half-built file survived the rebuild: %v", err)
	}
	if rootfsComplete(final) {
		t.Errorf("a failed build published %s", final)
	}
}
