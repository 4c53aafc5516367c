package juju

import (
	"context"
	"fmt"
)

// IsLeader reports whether this unit holds the application's leadership. Juju guarantees the
// answer for 30 s (contract §2.2); callers should ask again before a leader-only write rather than
// cache it across a long hook.
func (c *Client) IsLeader(ctx context.Context) (bool, error) {
	var leader bool
	if err := c.runJSON(ctx, toolIsLeader, []string{formatJSON}, &leader); err != nil {
		return false, fmt.Errorf("checking leadership: %w", err)
	}
	return leader, nil
}
