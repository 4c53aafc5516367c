package bed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// ModuleRoot returns the directory of the go.mod enclosing the working directory (go test runs
// in the package directory).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// BuildGo builds a package of this module as a static binary for the containers: CGO_ENABLED=0,
// so it runs whatever libc the rootfs has.
func BuildGo(ctx context.Context, pkg, out string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v: %s", pkg, err, b)
	}
	return nil
}

// BuildTools builds tests/fakejuju into dir and links every hook tool name to it: the layout of
// /var/lib/juju/tools/unit-<app>-<n> (juju-contract §2.1, tools are symlinks to one jujuc). The
// links are relative, so they resolve inside a container that mounts dir elsewhere.
func BuildTools(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := BuildGo(ctx, "./tests/fakejuju", filepath.Join(dir, "fakejuju")); err != nil {
		return err
	}
	for _, name := range jujutest.ToolNames() {
		link := filepath.Join(dir, name)
		os.Remove(link)
		if err := os.Symlink("fakejuju", link); err != nil {
			return err
		}
	}
	return nil
}
