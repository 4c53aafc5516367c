package juju

import (
	"context"
	"fmt"
)

// StatusName is a workload status a charm may set (contract §9.1). "error" and "unknown" belong
// to Juju and are rejected by status-set.
type StatusName string

const (
	StatusActive      StatusName = "active"
	StatusBlocked     StatusName = "blocked"
	StatusWaiting     StatusName = "waiting"
	StatusMaintenance StatusName = "maintenance"
)

// Valid reports whether status-set accepts the name.
func (n StatusName) Valid() bool {
	switch n {
	case StatusActive, StatusBlocked, StatusWaiting, StatusMaintenance:
		return true
	}
	return false
}

// Status is a workload status and its message.
type Status struct {
	Name    StatusName
	Message string
}

func (s Status) String() string {
	if s.Message == "" {
		return string(s.Name)
	}
	return string(s.Name) + ": " + s.Message
}

// SetStatus sets this unit's workload status. Applied immediately, even if the hook fails.
func (c *Client) SetStatus(ctx context.Context, s Status) error {
	if err := c.statusSet(ctx, false, s); err != nil {
		return fmt.Errorf("setting unit status %q: %w", s, err)
	}
	return nil
}

// SetAppStatus sets the application status. Leader only (ErrNotLeader otherwise).
func (c *Client) SetAppStatus(ctx context.Context, s Status) error {
	if err := c.statusSet(ctx, true, s); err != nil {
		return fmt.Errorf("setting application status %q: %w", s, err)
	}
	return nil
}

func (c *Client) statusSet(ctx context.Context, app bool, s Status) error {
	if !s.Name.Valid() {
		return fmt.Errorf("invalid status name %q: want active, blocked, waiting or maintenance", s.Name)
	}
	// ops' form: the boolean is always explicit and the message follows "--" so a message that
	// starts with "-" is not a flag.
	args := []string{fmt.Sprintf("--application=%t", app), string(s.Name), endOfFlags, s.Message}
	_, err := c.run(ctx, toolStatusSet, args, nil)
	return err
}
