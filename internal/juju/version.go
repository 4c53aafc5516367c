package juju

import (
	"context"
	"fmt"
)

// SetAppVersion sets the workload version shown in `juju status`. Applied immediately.
func (c *Client) SetAppVersion(ctx context.Context, version string) error {
	if _, err := c.run(ctx, toolAppVersionSet, []string{endOfFlags, version}, nil); err != nil {
		return fmt.Errorf("setting application version %q: %w", version, err)
	}
	return nil
}
