package juju

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"time"
)

// JujucRequest and JujucResponse are the jujuc wire structs (juju-contract §3.1): what Juju's
// jujuc client sends to the unit agent's "Jujuc.Main". gob matches fields by name and ignores
// unknown ones, so one struct with every field talks to Juju 2.9 to 4.0.
type JujucRequest struct {
	ContextId   string //nolint:revive // the wire name
	Dir         string
	CommandName string
	Args        []string
	StdinSet    bool
	Stdin       []byte
	Token       string
}

// JujucResponse is juju/utils' exec.ExecResponse.
type JujucResponse struct {
	Code   int
	Stdout []byte
	Stderr []byte
}

// RPCRunner runs hook tools by calling the unit agent's jujuc server over its socket, as the
// jujuc binary itself does, instead of forking one process per call: a hook's dozen tool calls
// then cost about a millisecond in all (see the dispatch benchmark in README.md).
//
// The protocol is internal to Juju, so every call that the server could not have executed falls
// back to Fallback: a socket that does not answer, or a request the server rejects ("bad
// request", unknown method). An error after the request was sent is returned as is, never
// retried, because the tool may have run (secret-add twice would make two secrets).
type RPCRunner struct {
	Network   string // JUJU_AGENT_SOCKET_NETWORK, "unix" on machines
	Address   string // JUJU_AGENT_SOCKET_ADDRESS
	ContextID string // JUJU_CONTEXT_ID
	Dir       string // absolute working directory (the charm dir)
	Fallback  Runner

	mu       sync.Mutex
	client   *rpc.Client
	disabled bool // the server rejected us once: every later call goes to Fallback
}

// NewRPCRunner returns a runner for the hook environment env, falling back to fallback. It
// returns fallback itself when env has no usable socket (TCP sockets need TLS and a token, which
// only k8s and remote execution use).
func NewRPCRunner(env Env, dir string, fallback Runner) Runner {
	if env.AgentSocketAddress == "" || env.AgentSocketNetwork != "unix" || env.ContextID == "" {
		return fallback
	}
	return &RPCRunner{Network: "unix", Address: env.AgentSocketAddress, ContextID: env.ContextID, Dir: dir, Fallback: fallback}
}

func (r *RPCRunner) Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	c, err := r.conn(ctx)
	if err != nil {
		return r.fallback(ctx, tool, args, stdin, err)
	}
	req := JujucRequest{ContextId: r.ContextID, Dir: r.Dir, CommandName: tool, Args: args, StdinSet: true, Stdin: stdin}
	var resp JujucResponse
	call := c.Go("Jujuc.Main", req, &resp, make(chan *rpc.Call, 1))
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("running %s: %w", tool, ctx.Err())
	case <-call.Done:
	}
	if se, ok := errors.AsType[rpc.ServerError](call.Error); ok {
		// Rejected before running: "bad request: …", "rpc: can't find service …".
		r.mu.Lock()
		r.disabled = true
		r.mu.Unlock()
		return r.fallback(ctx, tool, args, stdin, se)
	}
	if call.Error != nil {
		return nil, fmt.Errorf("running %s over %s: %w", tool, r.Address, call.Error)
	}
	if resp.Code != 0 {
		return resp.Stdout, &ToolError{Tool: tool, Args: append([]string(nil), args...), ExitCode: resp.Code, Stderr: string(resp.Stderr)}
	}
	return resp.Stdout, nil
}

func (r *RPCRunner) conn(ctx context.Context) (*rpc.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.disabled {
		return nil, errors.New("jujuc RPC disabled after a rejected request")
	}
	if r.client != nil {
		return r.client, nil
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, r.Network, r.Address)
	if err != nil {
		r.disabled = true
		return nil, err
	}
	r.client = rpc.NewClient(conn)
	return r.client, nil
}

func (r *RPCRunner) fallback(ctx context.Context, tool string, args []string, stdin []byte, cause error) ([]byte, error) {
	if r.Fallback == nil {
		return nil, fmt.Errorf("running %s: %w", tool, cause)
	}
	return r.Fallback.Run(ctx, tool, args, stdin)
}

// Close releases the connection.
func (r *RPCRunner) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}
