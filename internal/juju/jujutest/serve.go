package jujutest

import (
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"path/filepath"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Request and Response are the jujuc wire structs, shared with the charm's own RPC client so
// the fake and the client cannot drift apart.
type (
	Request  = juju.JujucRequest
	Response = juju.JujucResponse
)

// Jujuc is the RPC receiver registered as "Jujuc". Its only method is Main.
type Jujuc struct {
	lookup func(contextID string) (*HookContext, bool)
}

// Main runs one hook tool. Request-level problems are RPC errors with Juju's "bad request: …"
// text; tool failures come back in the Response as exit code and stderr. When the tool needs
// stdin that was not sent the error is "hook tool requires stdin, none supplied" and the client
// retries with StdinSet (the handshake of contract §3.1).
func (j *Jujuc) Main(req Request, resp *Response) error {
	if req.CommandName == "" {
		return errors.New("bad request: command not specified")
	}
	if !filepath.IsAbs(req.Dir) {
		return errors.New("bad request: Dir is not absolute")
	}
	if req.Token != "" {
		return errors.New("bad request: token does not match")
	}
	h, ok := j.lookup(req.ContextId)
	if !ok {
		return fmt.Errorf("bad request: unknown context id %q", req.ContextId)
	}
	res, err := h.run(req.CommandName, req.Args, req.Stdin, req.StdinSet, req.Dir)
	if err != nil {
		return err
	}
	*resp = Response(res)
	return nil
}

// Serve answers jujuc RPC calls on l until l is closed (then it returns nil). lookup maps a
// JUJU_CONTEXT_ID to the running hook; the test bed registers each context while its hook runs.
// Calls are serialised per model by the model's mutex, as the unit agent serialises them.
func Serve(l net.Listener, lookup func(contextID string) (*HookContext, bool)) error {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Jujuc", &Jujuc{lookup: lookup}); err != nil {
		return fmt.Errorf("registering Jujuc: %w", err)
	}
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting jujuc connection: %w", err)
		}
		go srv.ServeConn(conn)
	}
}
