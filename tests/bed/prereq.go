package bed

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// requiredTools are the host programs the bed runs. nsenter and ip come from util-linux and
// iproute2; mount/umount are only a fallback for the overlay syscall path, so they are not listed.
var requiredTools = []string{"systemd-nspawn", "debootstrap", "nsenter", "ip"}

// Missing returns why the bed cannot run on this host, or "" when it can.
func Missing() string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("the test bed needs %s (CI installs systemd-container debootstrap iproute2 and runs as root)",
		strings.Join(missing, ", "))
}

// Require skips t when the bed cannot run here. Under CI=true it fails instead, so that no
// scenario silently passes in CI (style.md, tests/).
func Require(t testing.TB) {
	t.Helper()
	reason := Missing()
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but %s", reason)
	}
	t.Skip(reason)
}
