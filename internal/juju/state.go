package juju

import (
	"context"
	"encoding/json"
	"fmt"
)

// StateGet returns the value of key in this unit's controller-side state, "" when missing (the
// tool does not tell missing from empty without --strict; store non-empty values if the
// difference matters). Includes this hook's own uncommitted writes.
func (c *Client) StateGet(ctx context.Context, key string) (string, error) {
	var v *string
	if err := c.runJSON(ctx, toolStateGet, []string{formatJSON, key}, &v); err != nil {
		return "", fmt.Errorf("reading unit state %q: %w", key, err)
	}
	if v == nil {
		return "", nil
	}
	return *v, nil
}

// StateSet merges kv into this unit's state (JSON on stdin, never argv). Committed when the
// hook exits 0. Juju limits keys to 256 bytes and values to 64 KiB.
func (c *Client) StateSet(ctx context.Context, kv map[string]string) error {
	if len(kv) == 0 {
		return nil
	}
	stdin, err := json.Marshal(kv)
	if err != nil {
		return fmt.Errorf("writing unit state: %w", err)
	}
	if _, err := c.run(ctx, toolStateSet, []string{"--file", "-"}, stdin); err != nil {
		return fmt.Errorf("writing unit state: %w", err)
	}
	return nil
}

// StateDelete removes key from this unit's state; a missing key is not an error.
func (c *Client) StateDelete(ctx context.Context, key string) error {
	if _, err := c.run(ctx, toolStateDelete, []string{key}, nil); err != nil {
		return fmt.Errorf("deleting unit state %q: %w", key, err)
	}
	return nil
}
