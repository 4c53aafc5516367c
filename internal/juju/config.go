package juju

import (
	"context"
	"fmt"
)

// Config returns every charm config option (config-get --all): options without a default and
// not set by the operator come back as nil.
//
// Values keep their JSON types: string, bool, nil, and json.Number for int and float options
// (decoded with UseNumber so a large int is not rounded through float64). Call Int64 or
// Float64 on the json.Number according to the option's declared type.
func (c *Client) Config(ctx context.Context) (map[string]any, error) {
	var cfg map[string]any
	if err := c.runJSON(ctx, toolConfigGet, []string{"--all", formatJSON}, &cfg); err != nil {
		return nil, fmt.Errorf("reading charm config: %w", err)
	}
	if cfg == nil {
		cfg = map[string]any{}
	}
	return cfg, nil
}
