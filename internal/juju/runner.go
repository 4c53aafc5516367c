package juju

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Runner runs one hook tool and returns its stdout. A tool that exits non-zero must be reported
// as a *ToolError so that callers can classify it with errors.Is.
type Runner interface {
	Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error)
}

// Sentinel errors a *ToolError matches with errors.Is (contract §2.3). They are the only
// classification callers need; the text behind them stays in ToolError.Stderr.
var (
	// ErrRelationNotFound: the relation id is unknown to this hook's context (it was removed, or
	// never involved this unit).
	ErrRelationNotFound = errors.New("relation not found")
	// ErrSecretNotFound: a secret-* tool could not find the secret (id, label or revision).
	ErrSecretNotFound = errors.New("secret not found")
	// ErrNotLeader: a leader-only operation (app databag write, app status, app-owned secret)
	// from a non-leader unit.
	ErrNotLeader = errors.New("unit is not the leader")
	// ErrPermissionDenied: the controller refused access (e.g. a secret not granted to us).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNoNetworkConfig: network-get knows no such binding (an endpoint the charm does not
	// declare, or an agent too old to answer for it).
	ErrNoNetworkConfig = errors.New("no network config")
)

// ToolError is a hook tool that exited non-zero. Modelled on exec.ExitError: it keeps what the
// caller needs to report the failure. Args never include stdin, and the client never puts data
// on argv, so a ToolError is safe to log.
type ToolError struct {
	Tool     string
	Args     []string
	ExitCode int    // 1: run-time error, 2: usage error (bad flag or argument), contract §2.1
	Stderr   string // as printed, usually "ERROR <message>\n"
}

func (e *ToolError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("running %s: exit status %d", e.Tool, e.ExitCode)
	}
	return fmt.Sprintf("running %s: exit status %d: %s", e.Tool, e.ExitCode, msg)
}

// IsUsage reports whether the tool rejected its arguments (exit status 2). Juju also uses exit 2
// for "relation not found" on -r, which errors.Is(err, ErrRelationNotFound) tells apart.
func (e *ToolError) IsUsage() bool { return e.ExitCode == 2 }

// Is classifies the failure from stderr, the only place Juju reports it (contract §2.3, the same
// substrings ops matches).
func (e *ToolError) Is(target error) bool {
	s := strings.ToLower(e.Stderr)
	switch target {
	case ErrRelationNotFound:
		return strings.Contains(s, "relation not found")
	case ErrSecretNotFound:
		return strings.HasPrefix(e.Tool, "secret-") && strings.Contains(s, "not found")
	case ErrNotLeader:
		return strings.Contains(s, "not the leader") ||
			strings.Contains(s, "cannot write relation settings") ||
			strings.Contains(s, "cannot write leadership settings")
	case ErrPermissionDenied:
		return strings.Contains(s, "permission denied") || strings.Contains(s, "access denied")
	case ErrNoNetworkConfig:
		return e.Tool == "network-get" && strings.Contains(s, "no network config")
	}
	return false
}

// ExecRunner runs hook tools as child processes, by bare name, without a shell.
type ExecRunner struct {
	// Env is the child's environment; nil inherits the process environment (the hook's own, in
	// production). When Env holds a PATH, tools are looked up in that PATH, not the process's.
	Env []string
	// Dir is the child's working directory; empty means the current one (the charm dir in hooks).
	Dir string
}

// Run runs tool with args. stdin nil gives the child /dev/null, as Juju gives hooks.
func (r ExecRunner) Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	if strings.ContainsRune(tool, filepath.Separator) {
		return nil, fmt.Errorf("running %s: hook tools are run by bare name", tool)
	}
	bin, err := r.lookPath(tool)
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", tool, err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Args[0] = tool // hook tools dispatch on argv[0], like Juju's jujuc symlinks
	cmd.Env = r.Env
	cmd.Dir = r.Dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if exitErr, ok := errors.AsType[*exec.ExitError](err); ok && exitErr.Exited() {
		return stdout.Bytes(), &ToolError{
			Tool: tool, Args: append([]string(nil), args...),
			ExitCode: exitErr.ExitCode(), Stderr: stderr.String(),
		}
	}
	if err != nil {
		// Killed by a signal or the context, or could not start: not a tool verdict.
		return stdout.Bytes(), fmt.Errorf("running %s: %w", tool, err)
	}
	return stdout.Bytes(), nil
}

// lookPath finds tool in the PATH of r.Env when it sets one. exec.Command alone would search the
// parent's PATH, which in tests (and in `juju exec` style wrappers) is not the hook's.
func (r ExecRunner) lookPath(tool string) (string, error) {
	pathVar, found := "", false
	for _, kv := range r.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar, found = v, true // last one wins, as in exec.Cmd.Env
		}
	}
	if !found {
		return exec.LookPath(tool)
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // relative PATH entries are how ErrDot attacks start; skip them
		}
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &exec.Error{Name: tool, Err: exec.ErrNotFound}
}
