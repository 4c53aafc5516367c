package juju

import (
	"context"
	"fmt"
	"strings"
)

// ResourceGet returns the local path of resource name, downloading it on first use. It fails
// when the operator attached no file. resource-get has no --format: it prints the bare path.
func (c *Client) ResourceGet(ctx context.Context, name string) (string, error) {
	out, err := c.run(ctx, toolResourceGet, []string{name}, nil)
	if err != nil {
		return "", fmt.Errorf("fetching resource %q: %w", name, err)
	}
	p := strings.TrimSpace(string(out))
	if p == "" {
		return "", fmt.Errorf("fetching resource %q: resource-get printed no path", name)
	}
	return p, nil
}
