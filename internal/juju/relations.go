package juju

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// RelationIDs returns the ids of the relations on endpoint, sorted by Juju. In a -relation-broken
// hook the breaking relation may still be listed: compare with Env.RelationID (contract §2.2).
func (c *Client) RelationIDs(ctx context.Context, endpoint string) ([]int, error) {
	var raw []string
	if err := c.runJSON(ctx, toolRelationIDs, []string{endpoint, formatJSON}, &raw); err != nil {
		return nil, fmt.Errorf("listing relations of endpoint %q: %w", endpoint, err)
	}
	ids := make([]int, 0, len(raw))
	for _, s := range raw {
		id := ParseRelationID(s)
		if id < 0 {
			return nil, fmt.Errorf("listing relations of endpoint %q: invalid relation id %q", endpoint, s)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// RelationUnits returns the remote units in scope of relation id (for a peer relation, the
// other units of this application). Empty, not nil, when there are none.
func (c *Client) RelationUnits(ctx context.Context, id int) ([]string, error) {
	var units []string
	if err := c.runJSON(ctx, toolRelationList, []string{formatJSON, "-r", strconv.Itoa(id)}, &units); err != nil {
		return nil, fmt.Errorf("listing units of relation %d: %w", id, err)
	}
	if units == nil {
		units = []string{}
	}
	return units, nil
}

// RelationApp returns the remote application of relation id.
func (c *Client) RelationApp(ctx context.Context, id int) (string, error) {
	var app string
	if err := c.runJSON(ctx, toolRelationList, []string{formatJSON, "--app", "-r", strconv.Itoa(id)}, &app); err != nil {
		return "", fmt.Errorf("finding the application of relation %d: %w", id, err)
	}
	return app, nil
}

// RelationData returns the databag of unit in relation id. For this unit it includes the
// writes this hook made so far.
func (c *Client) RelationData(ctx context.Context, id int, unit string) (map[string]string, error) {
	data, err := c.relationGet(ctx, []string{formatJSON, "-r", strconv.Itoa(id), "-", unit})
	if err != nil {
		return nil, fmt.Errorf("reading relation %d data of unit %s: %w", id, unit, err)
	}
	return data, nil
}

// AppRelationData returns the application databag of app in relation id. Non-leaders may read
// their own application's databag only on peer relations (contract §8); otherwise the error
// matches ErrPermissionDenied.
func (c *Client) AppRelationData(ctx context.Context, id int, app string) (map[string]string, error) {
	data, err := c.relationGet(ctx, []string{formatJSON, "-r", strconv.Itoa(id), "--app", "-", app})
	if err != nil {
		return nil, fmt.Errorf("reading relation %d data of application %s: %w", id, app, err)
	}
	return data, nil
}

func (c *Client) relationGet(ctx context.Context, args []string) (map[string]string, error) {
	var data map[string]string
	if err := c.runJSON(ctx, toolRelationGet, args, &data); err != nil {
		return nil, err
	}
	if data == nil {
		data = map[string]string{}
	}
	return data, nil
}

// SetRelationData merges data into this unit's databag of relation id; an empty value deletes
// the key. The data goes on stdin as JSON (relation-set --file -), never on argv. An empty map
// is not sent (ops refuses it too). Committed when the hook exits 0.
func (c *Client) SetRelationData(ctx context.Context, id int, data map[string]string) error {
	if err := c.relationSet(ctx, id, false, data); err != nil {
		return fmt.Errorf("writing relation %d unit data: %w", id, err)
	}
	return nil
}

// SetAppRelationData merges data into this application's databag of relation id. Leader only:
// a non-leader's write fails with an error matching ErrNotLeader.
func (c *Client) SetAppRelationData(ctx context.Context, id int, data map[string]string) error {
	if err := c.relationSet(ctx, id, true, data); err != nil {
		return fmt.Errorf("writing relation %d application data: %w", id, err)
	}
	return nil
}

func (c *Client) relationSet(ctx context.Context, id int, app bool, data map[string]string) error {
	if len(data) == 0 {
		return nil
	}
	for k := range data {
		if k == "" {
			return fmt.Errorf("empty key")
		}
	}
	stdin, err := json.Marshal(data) // sorted keys: deterministic input
	if err != nil {
		return err
	}
	args := []string{"-r", strconv.Itoa(id)}
	if app {
		args = append(args, "--app")
	}
	args = append(args, "--file", "-")
	_, err = c.run(ctx, toolRelationSet, args, stdin)
	return err
}
