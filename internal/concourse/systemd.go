package concourse

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// RunFunc runs a command and returns its combined output. An error carrying
// ExitCode() int (as *exec.ExitError does) is reported with that exit code.
type RunFunc func(ctx context.Context, name string, args ...string) ([]byte, error)

// ExecRun is the real RunFunc: os/exec with the process environment.
func ExecRun(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// Systemd drives systemctl. Run is held here, not in a package variable, so
// tests hand in a fake (style: pebble's systemctlCmd, but per value).
type Systemd struct {
	Run RunFunc // nil → ExecRun
}

// SystemdError reports a failed systemctl call with its arguments, exit code
// and output.
type SystemdError struct {
	Args     []string
	ExitCode int // -1 when systemctl did not exit normally
	Output   string
	Err      error
}

func (e *SystemdError) Error() string {
	msg := "systemctl " + strings.Join(e.Args, " ")
	if e.ExitCode >= 0 {
		msg += fmt.Sprintf(": exit status %d", e.ExitCode)
	} else if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		msg += ": " + out
	}
	return msg
}

func (e *SystemdError) Unwrap() error { return e.Err }

func (s Systemd) run(ctx context.Context, args ...string) (string, error) {
	run := s.Run
	if run == nil {
		run = ExecRun
	}
	out, err := run(ctx, "systemctl", args...)
	if err != nil {
		code := -1
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		return string(out), &SystemdError{Args: args, ExitCode: code, Output: string(out), Err: err}
	}
	return string(out), nil
}

func (s Systemd) unitCmd(ctx context.Context, verb, unit string) error {
	if err := checkUnitName(unit); err != nil {
		return err
	}
	_, err := s.run(ctx, verb, unit)
	return err
}

var unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+$`)

// checkUnitName keeps a unit name from being read as an option by systemctl.
func checkUnitName(unit string) error {
	if !unitNameRE.MatchString(unit) || strings.HasPrefix(unit, "-") {
		return fmt.Errorf("invalid systemd unit name %q", unit)
	}
	return nil
}

// DaemonReload makes systemd re-read unit files after we wrote them.
func (s Systemd) DaemonReload(ctx context.Context) error {
	_, err := s.run(ctx, "daemon-reload")
	return err
}

// Enable makes the unit start at boot (the reference never enabled web,
// weakness #16).
func (s Systemd) Enable(ctx context.Context, unit string) error {
	return s.unitCmd(ctx, "enable", unit)
}

// Disable stops the unit from starting at boot.
func (s Systemd) Disable(ctx context.Context, unit string) error {
	return s.unitCmd(ctx, "disable", unit)
}

// Start starts the unit and waits for systemd's start job.
func (s Systemd) Start(ctx context.Context, unit string) error {
	return s.unitCmd(ctx, "start", unit)
}

// Stop stops the unit; for the worker this waits up to TimeoutStopSec while
// it lands.
func (s Systemd) Stop(ctx context.Context, unit string) error {
	return s.unitCmd(ctx, "stop", unit)
}

// Restart restarts the unit (starting it if stopped).
func (s Systemd) Restart(ctx context.Context, unit string) error {
	return s.unitCmd(ctx, "restart", unit)
}

// ActiveState is systemctl's one-word state: active, inactive, failed,
// activating, deactivating, reloading.
func (s Systemd) ActiveState(ctx context.Context, unit string) (string, error) {
	if err := checkUnitName(unit); err != nil {
		return "", err
	}
	out, err := s.run(ctx, "is-active", unit)
	state := strings.TrimSpace(out)
	if err != nil {
		// is-active exits non-zero for every state but active; that is an
		// answer, not a failure, as long as it printed a state.
		if slices.Contains([]string{"inactive", "failed", "activating", "deactivating", "reloading", "unknown", "maintenance", "refreshing"}, state) {
			return state, nil
		}
		return "", err
	}
	return state, nil
}

// IsActive reports whether the unit is active (running).
func (s Systemd) IsActive(ctx context.Context, unit string) (bool, error) {
	state, err := s.ActiveState(ctx, unit)
	return state == "active", err
}

// IsEnabled reports whether the unit starts at boot. A unit that does not
// exist is not enabled (no error).
func (s Systemd) IsEnabled(ctx context.Context, unit string) (bool, error) {
	if err := checkUnitName(unit); err != nil {
		return false, err
	}
	out, err := s.run(ctx, "is-enabled", unit)
	state := strings.TrimSpace(out)
	if err == nil {
		// is-enabled exits 0 for enabled, enabled-runtime, alias, indirect,
		// generated, transient and static. Our units have an [Install]
		// section, so for them this means "enabled".
		return true, nil
	}
	if slices.Contains([]string{"disabled", "masked", "masked-runtime", "linked", "linked-runtime", "not-found", "bad"}, state) ||
		strings.Contains(state, "No such file or directory") {
		return false, nil
	}
	return false, err
}

var signalRE = regexp.MustCompile(`^SIG[A-Z0-9+-]+$`)

// Kill sends signal (e.g. "SIGHUP" to make web reload its authorized worker
// keys, "SIGUSR2" to retire a worker) to the unit's main process only; the
// default would signal containerd and every container of a worker too.
//
// systemd 252 renamed --kill-who to --kill-whom; older systemd (Ubuntu 22.04
// has 249) knows only --kill-who, and the newest may accept only the new
// spelling. We try the new one and fall back when systemctl does not know it.
func (s Systemd) Kill(ctx context.Context, unit, signal string) error {
	if err := checkUnitName(unit); err != nil {
		return err
	}
	if !signalRE.MatchString(signal) {
		return fmt.Errorf("invalid signal %q: use a name such as SIGHUP", signal)
	}
	out, err := s.run(ctx, "kill", "--signal="+signal, "--kill-whom=main", unit)
	if err != nil && strings.Contains(out, "kill-whom") && (strings.Contains(out, "unrecognized") || strings.Contains(out, "unknown")) {
		_, err = s.run(ctx, "kill", "--signal="+signal, "--kill-who=main", unit)
	}
	return err
}

// EnsureSystemUser creates the system user name (with a group of the same
// name, home dir home, no login shell) unless it exists. The web service
// runs as this user.
func EnsureSystemUser(ctx context.Context, name, home string, run RunFunc) error {
	if _, err := user.Lookup(name); err == nil {
		return nil
	} else if !errors.As(err, new(user.UnknownUserError)) {
		return fmt.Errorf("looking up user %s: %w", name, err)
	}
	if run == nil {
		run = ExecRun
	}
	args := []string{"--system", "--user-group", "--no-create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin", name}
	out, err := run(ctx, "useradd", args...)
	if err != nil {
		code := -1
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		// useradd exit 9: the name was taken between our lookup and now (a
		// concurrent hook on the same machine); that is success for us.
		if code == 9 {
			return nil
		}
		return &CommandError{Cmd: "useradd", Args: args, ExitCode: code, Stderr: string(out), Err: err}
	}
	return nil
}

// LookupIDs returns the numeric uid and primary gid of a user, for chown.
func LookupIDs(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("looking up user %s: %w", name, err)
	}
	uid, err = strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s has a non-numeric uid %q", name, u.Uid)
	}
	gid, err = strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s has a non-numeric gid %q", name, u.Gid)
	}
	return uid, gid, nil
}
