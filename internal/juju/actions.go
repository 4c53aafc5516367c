package juju

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// actionKeySegment is what action-set accepts between dots (contract §2.2).
var actionKeySegment = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)

// reservedActionKeys are filled in by Juju from the process's output.
var reservedActionKeys = []string{"stdout", "stdout-encoding", "stderr", "stderr-encoding"}

// ValidActionKey reports why action-set would reject key, or nil.
func ValidActionKey(key string) error {
	for _, seg := range strings.Split(key, ".") {
		if !actionKeySegment.MatchString(seg) {
			return fmt.Errorf("invalid action result key %q: each dot-separated part must be lowercase letters, digits and hyphens, starting and ending with a letter or digit", key)
		}
	}
	if slices.Contains(reservedActionKeys, key) {
		return fmt.Errorf("invalid action result key %q: reserved by Juju", key)
	}
	return nil
}

// ActionParams decodes the action's parameters (action-get) into v, as json.Unmarshal would.
// Outside an action the tool fails.
func (c *Client) ActionParams(ctx context.Context, v any) error {
	if err := c.runJSON(ctx, toolActionGet, []string{formatJSON}, v); err != nil {
		return fmt.Errorf("reading action parameters: %w", err)
	}
	return nil
}

// SetActionResults records results of the running action. Keys may use dots for nesting
// ("backup.path"). Result values are for the operator to see, so they travel on argv; the keys
// are sorted so the call is deterministic.
func (c *Client) SetActionResults(ctx context.Context, results map[string]string) error {
	if len(results) == 0 {
		return nil
	}
	keys := make([]string, 0, len(results))
	for k := range results {
		if err := ValidActionKey(k); err != nil {
			return fmt.Errorf("setting action results: %w", err)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	args := make([]string, 0, len(keys))
	for _, k := range keys {
		args = append(args, k+"="+results[k])
	}
	if _, err := c.run(ctx, toolActionSet, args, nil); err != nil {
		return fmt.Errorf("setting action results: %w", err)
	}
	return nil
}

// FailAction marks the running action failed with msg; the process carries on and should exit 0.
func (c *Client) FailAction(ctx context.Context, msg string) error {
	if _, err := c.run(ctx, toolActionFail, []string{endOfFlags, msg}, nil); err != nil {
		return fmt.Errorf("failing the action: %w", err)
	}
	return nil
}

// ActionLog sends a progress message to whoever runs the action (`juju run`, `juju show-task`).
func (c *Client) ActionLog(ctx context.Context, msg string) error {
	if _, err := c.run(ctx, toolActionLog, []string{endOfFlags, msg}, nil); err != nil {
		return fmt.Errorf("logging action progress: %w", err)
	}
	return nil
}
