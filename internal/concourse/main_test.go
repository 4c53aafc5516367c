package concourse

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary play a fake `concourse migrate` (the os/exec
// helper-process pattern), so Migrator's real exec path runs in tests.
func TestMain(m *testing.M) {
	if os.Getenv(fakeHookEnv) == "1" {
		os.Exit(fakeHookMount(os.Args[1:])) // gpu_test.go: the hook's inner half, via nsenter
	}
	if os.Getenv("FAKE_CONCOURSE") == "1" {
		os.Exit(fakeConcourse(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeConcourse(args []string) int {
	// Migrator must not leak the parent's environment nor CONCOURSE_VERSION.
	if os.Getenv("HOME") != "" || os.Getenv("CONCOURSE_VERSION") != "" {
		fmt.Fprintln(os.Stderr, "error: inherited environment")
		return 99
	}
	if !strings.Contains(os.Getenv("PATH"), "/usr/bin") {
		fmt.Fprintln(os.Stderr, "error: no PATH")
		return 98
	}
	if len(args) != 2 || args[0] != "migrate" {
		fmt.Fprintf(os.Stderr, "error: unexpected args %q\n", args)
		return 2
	}
	switch arg := args[1]; {
	case os.Getenv("FAKE_HANG") == "1":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		fmt.Println("ready")
		select {
		case <-sigs:
			fmt.Fprintln(os.Stderr, "error: migration rolled back on SIGTERM")
			return 3
		case <-time.After(time.Minute):
			return 4
		}
	case os.Getenv("FAKE_FAIL") == "1":
		fmt.Fprintf(os.Stderr, "error: failed to connect with password=%s\n", os.Getenv("CONCOURSE_POSTGRES_PASSWORD"))
		return 1
	case arg == "--supported-db-version":
		fmt.Println("1746768931")
	case arg == "--current-db-version":
		if os.Getenv("FAKE_FRESH") == "1" {
			fmt.Fprintln(os.Stderr, `error: ERROR: relation "migrations_history" does not exist (SQLSTATE 42P01)`)
			return 1
		}
		fmt.Println(os.Getenv("FAKE_CURRENT"))
	case arg == "--migrate-to-latest-version":
	case strings.HasPrefix(arg, "--migrate-db-to-version="):
		fmt.Printf("Successfully migrated to version: %s\n", os.Getenv("FAKE_MIGRATED_TO"))
	default:
		fmt.Fprintf(os.Stderr, "error: unknown flag %s\n", arg)
		return 1
	}
	return 0
}

func fakeMigrator(t *testing.T, env ...string) Migrator {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Migrator{Binary: exe, Env: append([]string{"FAKE_CONCOURSE=1", "CONCOURSE_POSTGRES_PASSWORD=hunter2-secret"}, env...)}
}
