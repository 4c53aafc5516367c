package bed

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Built once in TestMain (style.md tests/: build once, flag to reuse a prebuilt binary).
var (
	toolsDir     = flag.String("bed.tools", "", "reuse a directory made by BuildTools instead of building fakejuju")
	echoCharmDir string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if Missing() != "" {
		// Tests skip (or fail under CI) through Require; nothing to build.
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "bed-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if *toolsDir == "" {
		*toolsDir = filepath.Join(tmp, "tools")
		if err := BuildTools(ctx, *toolsDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	echoCharmDir = filepath.Join(tmp, "echocharm")
	if out, err := exec.Command("cp", "-a", "testdata/echocharm", echoCharmDir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "copying the echo charm: %v: %s\n", err, out)
		return 1
	}
	if err := BuildGo(ctx, "./tests/bed/internal/echocharm", filepath.Join(echoCharmDir, "dispatch")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
