package jujutest

import (
	"context"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Runner runs hook tools in a HookContext, so the real juju.Client can be used against the fake:
// handler tests exercise the client's argv and parsing too.
type Runner struct{ Ctx *HookContext }

var _ juju.Runner = Runner{}

// Run implements juju.Runner: a non-zero exit becomes a *juju.ToolError carrying the tool's
// stderr, exactly as juju.ExecRunner reports it.
func (r Runner) Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := r.Ctx.Run(tool, args, stdin)
	if res.Code != 0 {
		return res.Stdout, &juju.ToolError{Tool: tool, Args: append([]string(nil), args...),
			ExitCode: res.Code, Stderr: string(res.Stderr)}
	}
	return res.Stdout, nil
}
