// Command concourse-ci-machine is the charm: Juju runs it as `dispatch` for every hook and action,
// and operators run the same binary by hand (version, render, storage status/verify).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// version is stamped at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it with their own arguments and environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	// Juju executes dispatch with no arguments (juju-contract §1.1); pre-2.8 agents ran
	// hooks/<name> symlinks, which we treat the same way.
	base := filepath.Base(args[0])
	if len(args) == 1 && (getenv("JUJU_DISPATCH_PATH") != "" || base == "dispatch" || filepath.Base(filepath.Dir(args[0])) == "hooks") {
		args = append(args, "dispatch")
	}
	root := newRootCmd(ctx, getenv, stdout, stderr)
	root.SetArgs(args[1:])
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	return 0
}
