package juju

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SecretOwner says who owns (and may update) a secret.
type SecretOwner string

const (
	// OwnerApplication: the application owns the secret; only its leader may change it and
	// every unit of the application may read it. secret-add's default.
	OwnerApplication SecretOwner = "application"
	// OwnerUnit: this unit owns the secret.
	OwnerUnit SecretOwner = "unit"
)

// secretKey is the content key syntax secret-add and secret-set accept (contract §2.2).
var secretKey = regexp.MustCompile(`^[a-z](-?[a-z0-9]){2,}$`)

// SecretAddOptions describes a new secret.
type SecretAddOptions struct {
	Content     map[string]string // keys: lowercase, ≥3 chars, e.g. "password", "tls-ca"
	Label       string            // owner's label, unique per owner; optional
	Description string
	Owner       SecretOwner // default OwnerApplication (leader only)
	Expire      time.Time   // zero: never
	Rotate      string      // "", never, hourly, daily, weekly, monthly, quarterly, yearly
}

// SecretGetOptions selects a secret and the revision to read. Giving both ID and Label sets
// this unit's label for the secret. Refresh re-pins the consumer to the latest revision; Peek
// reads the latest without re-pinning; neither reads the pinned revision (the first read pins).
type SecretGetOptions struct {
	ID      string
	Label   string
	Refresh bool
	Peek    bool
}

// SecretInfo is an owner's view of a secret's metadata (secret-info-get).
type SecretInfo struct {
	ID          string    `json:"-"`
	Revision    int       `json:"revision"`
	Label       string    `json:"label"`
	Owner       string    `json:"owner"`
	Description string    `json:"description"`
	Rotation    string    `json:"rotation"`
	Expiry      time.Time `json:"expiry"`
	Rotates     time.Time `json:"rotates"`
}

// AddSecret creates a secret and returns its URI ("secret:cq9…" or "secret://<model>/cq9…").
// The content is written to 0600 files in a private 0700 directory that is removed before
// returning, and passed as key#file=PATH: values never appear on argv. The secret exists for
// others once the hook exits 0; the URI can be stored in relation data at once.
func (c *Client) AddSecret(ctx context.Context, o SecretAddOptions) (string, error) {
	if len(o.Content) == 0 {
		return "", errors.New("adding secret: no content")
	}
	owner := o.Owner
	if owner == "" {
		owner = OwnerApplication
	}
	args := []string{}
	if o.Label != "" {
		args = append(args, "--label", o.Label)
	}
	if o.Description != "" {
		args = append(args, "--description", o.Description)
	}
	if !o.Expire.IsZero() {
		args = append(args, "--expire", o.Expire.UTC().Format(time.RFC3339))
	}
	if o.Rotate != "" {
		args = append(args, "--rotate", o.Rotate)
	}
	args = append(args, "--owner", string(owner))
	var out []byte
	err := withContentFiles(o.Content, func(contentArgs []string) error {
		var err error
		out, err = c.run(ctx, toolSecretAdd, append(args, contentArgs...), nil)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("adding secret %q: %w", o.Label, err)
	}
	uri := strings.TrimSpace(string(out))
	if uri == "" {
		return "", fmt.Errorf("adding secret %q: secret-add printed no URI", o.Label)
	}
	return uri, nil
}

// GetSecret reads a secret's content. An unknown secret matches ErrSecretNotFound; one not
// granted to this unit matches ErrPermissionDenied: the two are different situations.
func (c *Client) GetSecret(ctx context.Context, o SecretGetOptions) (map[string]string, error) {
	if o.ID == "" && o.Label == "" {
		return nil, errors.New("reading secret: neither id nor label given")
	}
	if o.Refresh && o.Peek {
		return nil, errors.New("reading secret: refresh and peek are exclusive")
	}
	args := []string{formatJSON}
	if o.ID != "" {
		args = append(args, o.ID)
	}
	if o.Label != "" {
		args = append(args, "--label", o.Label)
	}
	if o.Refresh {
		args = append(args, "--refresh")
	}
	if o.Peek {
		args = append(args, "--peek")
	}
	var content map[string]string
	if err := c.runJSON(ctx, toolSecretGet, args, &content); err != nil {
		return nil, fmt.Errorf("reading secret %s: %w", secretName(o.ID, o.Label), err)
	}
	if content == nil {
		content = map[string]string{}
	}
	return content, nil
}

// SetSecret publishes content as a new revision of secret id (owner only; leader for
// application secrets). Consumers get secret-changed once the hook exits 0.
func (c *Client) SetSecret(ctx context.Context, id string, content map[string]string) error {
	if len(content) == 0 {
		return fmt.Errorf("updating secret %s: no content", id)
	}
	err := withContentFiles(content, func(contentArgs []string) error {
		_, err := c.run(ctx, toolSecretSet, append([]string{id}, contentArgs...), nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("updating secret %s: %w", id, err)
	}
	return nil
}

// GrantSecret lets the remote application of relationID read secret id; with unit non-empty,
// only that remote unit. The grant ends with the relation.
func (c *Client) GrantSecret(ctx context.Context, id string, relationID int, unit string) error {
	args := []string{"--relation", strconv.Itoa(relationID)}
	if unit != "" {
		args = append(args, "--unit", unit)
	}
	args = append(args, id)
	if _, err := c.run(ctx, toolSecretGrant, args, nil); err != nil {
		return fmt.Errorf("granting secret %s on relation %d: %w", id, relationID, err)
	}
	return nil
}

// RevokeSecret withdraws a grant made with GrantSecret (same arguments).
func (c *Client) RevokeSecret(ctx context.Context, id string, relationID int, unit string) error {
	args := []string{"--relation", strconv.Itoa(relationID)}
	if unit != "" {
		args = append(args, "--unit", unit)
	}
	args = append(args, id)
	if _, err := c.run(ctx, "secret-revoke", args, nil); err != nil {
		return fmt.Errorf("revoking secret %s on relation %d: %w", id, relationID, err)
	}
	return nil
}

// RemoveSecret removes revision of secret id, or every revision when revision is 0.
func (c *Client) RemoveSecret(ctx context.Context, id string, revision int) error {
	args := []string{id}
	if revision > 0 {
		args = append(args, "--revision", strconv.Itoa(revision))
	}
	if _, err := c.run(ctx, "secret-remove", args, nil); err != nil {
		return fmt.Errorf("removing secret %s: %w", id, err)
	}
	return nil
}

// SecretIDs returns the ids of the secrets this unit owns (and, on the leader, those its
// application owns). Empty, not nil, when there are none (the tool prints null).
func (c *Client) SecretIDs(ctx context.Context) ([]string, error) {
	var ids []string
	if err := c.runJSON(ctx, toolSecretIDs, []string{formatJSON}, &ids); err != nil {
		return nil, fmt.Errorf("listing owned secrets: %w", err)
	}
	if ids == nil {
		ids = []string{}
	}
	return ids, nil
}

// SecretInfo returns an owned secret's metadata, found by id or, with byLabel, by label.
func (c *Client) SecretInfo(ctx context.Context, idOrLabel string, byLabel bool) (SecretInfo, error) {
	args := []string{formatJSON}
	if byLabel {
		args = append(args, "--label", idOrLabel)
	} else {
		args = append(args, idOrLabel)
	}
	var byID map[string]SecretInfo
	if err := c.runJSON(ctx, toolSecretInfoGet, args, &byID); err != nil {
		return SecretInfo{}, fmt.Errorf("reading secret info %s: %w", idOrLabel, err)
	}
	if len(byID) != 1 {
		return SecretInfo{}, fmt.Errorf("reading secret info %s: want one secret, got %d", idOrLabel, len(byID))
	}
	for id, info := range byID {
		info.ID = id
		return info, nil
	}
	panic("unreachable")
}

func secretName(id, label string) string {
	if id != "" {
		return id
	}
	return fmt.Sprintf("with label %q", label)
}

// withContentFiles writes each value to a 0600 file in a fresh private directory, calls fn with
// the key#file=PATH arguments (sorted by key), and removes the directory whatever happens.
func withContentFiles(content map[string]string, fn func(args []string) error) (err error) {
	keys := make([]string, 0, len(content))
	for k := range content {
		if !secretKey.MatchString(k) {
			return fmt.Errorf("invalid secret key %q: want lowercase letters, digits and single hyphens, starting with a letter, at least 3 characters", k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dir, err := os.MkdirTemp("", "juju-secret-") // mode 0700
	if err != nil {
		return fmt.Errorf("creating secret content directory: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = fmt.Errorf("removing secret content directory: %w", rmErr)
		}
	}()
	args := make([]string, 0, len(keys))
	for _, k := range keys {
		p := filepath.Join(dir, k)
		if err := writePrivateFile(p, []byte(content[k])); err != nil {
			return err
		}
		args = append(args, k+"#file="+p)
	}
	return fn(args)
}

func writePrivateFile(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing secret content: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing secret content %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing secret content %s: %w", p, err)
	}
	return nil
}
