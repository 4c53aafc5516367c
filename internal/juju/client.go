package juju

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// Hook tool names (contract §2.2). Constants so a typo is a compile error.
const (
	toolIsLeader      = "is-leader"
	toolConfigGet     = "config-get"
	toolRelationIDs   = "relation-ids"
	toolRelationList  = "relation-list"
	toolRelationGet   = "relation-get"
	toolRelationSet   = "relation-set"
	toolStatusSet     = "status-set"
	toolAppVersionSet = "application-version-set"
	toolJujuLog       = "juju-log"
	toolOpenPort      = "open-port"
	toolClosePort     = "close-port"
	toolOpenedPorts   = "opened-ports"
	toolUnitGet       = "unit-get"
	toolNetworkGet    = "network-get"
	toolActionGet     = "action-get"
	toolActionSet     = "action-set"
	toolActionFail    = "action-fail"
	toolActionLog     = "action-log"
	toolSecretAdd     = "secret-add"
	toolSecretGet     = "secret-get"
	toolSecretSet     = "secret-set"
	toolSecretGrant   = "secret-grant"
	toolSecretIDs     = "secret-ids"
	toolSecretInfoGet = "secret-info-get"
	toolResourceGet   = "resource-get"
	toolStateGet      = "state-get"
	toolStateSet      = "state-set"
	toolStateDelete   = "state-delete"
	formatJSON        = "--format=json"
	endOfFlags        = "--"
)

// Client calls hook tools through a Runner. It holds no other state: build one per hook with
// NewClient; it is safe for concurrent use if its Runner is.
type Client struct {
	r   Runner
	env Env
}

// NewClient returns a Client that runs tools with r. env is the hook's parsed environment; the
// client uses it only where Juju's tools need the caller to know something (the unit and app
// names, the current relation).
func NewClient(r Runner, env Env) *Client {
	return &Client{r: r, env: env}
}

// Env returns the environment the client was built with.
func (c *Client) Env() Env { return c.env }

// run runs one tool. The error is the Runner's (a *ToolError when the tool failed), unwrapped:
// each method adds what it was doing.
func (c *Client) run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	return c.r.Run(ctx, tool, args, stdin)
}

// runJSON runs a tool that prints one JSON document and decodes it into v. Numbers decode as
// json.Number so that config ints above 2^53 are not rounded.
func (c *Client) runJSON(ctx context.Context, tool string, args []string, v any) error {
	out, err := c.run(ctx, tool, args, nil)
	if err != nil {
		return err
	}
	return decodeJSON(tool, out, v)
}

func decodeJSON(tool string, out []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("parsing %s output %q: %w", tool, truncate(out, 200), err)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
