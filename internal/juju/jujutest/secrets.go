package jujutest

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

var secretKeyPattern = regexp.MustCompile(`^[a-z](-?[a-z0-9]){2,}$`)

var rotatePolicies = []string{"never", "hourly", "daily", "weekly", "monthly", "quarterly", "yearly"}

// findSecret returns a committed secret or one this hook created.
func (c *toolCall) findSecret(ref string) (*secretState, bool) {
	id := secretIDOf(ref)
	if s, ok := c.m().s.Secrets[id]; ok {
		return s, true
	}
	for _, s := range c.pending().NewSecrets {
		if s.ID == id {
			return s, true
		}
	}
	return nil, false
}

// owns reports whether this unit sees s as an owner: its own unit secrets and its
// application's secrets (every unit of the owning application may read those).
func (c *toolCall) owns(s *secretState) bool {
	if s.OwnerKind == "unit" {
		return s.Owner == c.h.c.Unit
	}
	return s.Owner == c.appName()
}

// canManage reports why this unit may not change s: only the owning unit, or the leader of the
// owning application.
func (c *toolCall) canManage(s *secretState) error {
	switch {
	case s.OwnerKind == "unit" && s.Owner == c.h.c.Unit:
		return nil
	case s.OwnerKind == "application" && s.Owner == c.appName():
		if !c.isLeader() {
			return errors.New("this unit is not the leader")
		}
		return nil
	}
	return errors.New("permission denied")
}

func (c *toolCall) granted(s *secretState) bool {
	me, myApp := c.h.c.Unit, c.appName()
	for _, g := range s.Grants {
		r, ok := c.m().s.Relations[g.RelationID]
		if !ok || r.Broken || !r.hasApp(myApp) || r.remoteOf(s.ownerApp()).App != myApp {
			continue
		}
		if g.Unit == "" || g.Unit == me {
			return true
		}
	}
	return false
}

// ownerContent is the latest content as the owner sees it, including this hook's updates.
func (c *toolCall) ownerContent(s *secretState) map[string]string {
	content, _ := s.content(0)
	for _, up := range c.pending().Updates {
		if up.ID == s.ID && up.Content != nil {
			content = up.Content
		}
	}
	return content
}

// parseContent parses key=value, key#base64=VALUE and key#file=PATH arguments (files read now,
// relative to the caller's directory).
func (c *toolCall) parseContent(args []string) (map[string]string, error) {
	content := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, usagef("key value %q not valid", a)
		}
		switch {
		case strings.HasSuffix(k, "#base64"):
			k = strings.TrimSuffix(k, "#base64")
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, usagef("invalid base64 value for key %q", k)
			}
			v = string(b)
		case strings.HasSuffix(k, "#file"):
			k = strings.TrimSuffix(k, "#file")
			b, err := c.readInput(v)
			if err != nil {
				return nil, err
			}
			v = string(b)
		}
		if !secretKeyPattern.MatchString(k) {
			return nil, usagef("key %q not valid", k)
		}
		content[k] = v
	}
	return content, nil
}

func secretAdd(c *toolCall) error {
	p, err := c.parse(flags(stringFlag, "label", stringFlag, "description", stringFlag, "owner",
		stringFlag, "expire", stringFlag, "rotate", stringFlag, "file"))
	if err != nil {
		return err
	}
	owner := p.str["owner"]
	if owner == "" {
		owner = "application"
	}
	if !oneOf(owner, "application", "unit") {
		return usagef("secret owner %q not valid", owner)
	}
	if r := p.str["rotate"]; r != "" && !oneOf(r, rotatePolicies...) {
		return usagef("rotate policy %q not valid", r)
	}
	if e := p.str["expire"]; e != "" {
		if _, err := time.Parse(time.RFC3339, e); err != nil {
			if _, err := time.ParseDuration(e); err != nil {
				return usagef("expire time or duration %q not valid", e)
			}
		}
	}
	content := map[string]string{}
	if f, ok := p.str["file"]; ok {
		b, err := c.readInput(f)
		if err != nil {
			return err
		}
		if content, err = parseSettings(b); err != nil {
			return usagef("invalid secret content file: %v", err)
		}
	}
	kv, err := c.parseContent(p.pos)
	if err != nil {
		return err
	}
	maps.Copy(content, kv)
	if len(content) == 0 {
		return usagef("missing secret value or filename")
	}
	ownerName := c.appName()
	if owner == "unit" {
		ownerName = c.h.c.Unit
	} else if !c.isLeader() {
		return errors.New("this unit is not the leader")
	}
	if label := p.str["label"]; label != "" {
		for _, s := range c.allSecrets() {
			if s.Owner == ownerName && s.Label == label {
				return fmt.Errorf("secret with label %q already exists", label)
			}
		}
	}
	s := c.m().newSecret(ownerName, owner, p.str["label"])
	s.Description, s.Expire, s.Rotate = p.str["description"], p.str["expire"], p.str["rotate"]
	s.Revisions = []secretRevision{{Revision: 1, Content: content}}
	c.pending().NewSecrets = append(c.pending().NewSecrets, s)
	c.out.WriteString(secretURI(s.ID) + "\n")
	return nil
}

func (c *toolCall) allSecrets() []*secretState {
	all := slices.Collect(maps.Values(c.m().s.Secrets))
	return append(all, c.pending().NewSecrets...)
}

func secretGet(c *toolCall) error {
	p, err := c.parse(flags(stringFlag, "label", boolFlag, "refresh", boolFlag, "peek"))
	if err != nil {
		return err
	}
	if err := noArgs(p, 2); err != nil {
		return err
	}
	refresh, peek, label := p.bool["refresh"], p.bool["peek"], p.str["label"]
	if refresh && peek {
		return usagef("specify one of --peek or --refresh but not both")
	}
	ref, key := "", ""
	switch {
	case len(p.pos) == 2:
		ref, key = p.pos[0], p.pos[1]
	case len(p.pos) == 1 && label != "" && !strings.HasPrefix(p.pos[0], "secret:"):
		key = p.pos[0]
	case len(p.pos) == 1:
		ref = p.pos[0]
	}
	if ref == "" && label == "" {
		return usagef("require either a secret URI or label")
	}
	var s *secretState
	if ref != "" {
		var ok bool
		if s, ok = c.findSecret(ref); !ok {
			return fmt.Errorf("secret %q not found", secretIDOf(ref))
		}
	} else {
		s = c.secretByLabel(label)
		if s == nil {
			return fmt.Errorf("secret with label %q not found", label)
		}
	}

	var content map[string]string
	if c.owns(s) {
		if refresh {
			return errors.New("secret owner cannot use --refresh")
		}
		content = c.ownerContent(s)
	} else {
		if !c.granted(s) {
			return errors.New("permission denied")
		}
		cons, ok := s.Consumers[c.h.c.Unit]
		if !ok && !peek {
			// The first read pins the consumer to the current revision.
			cons = &secretConsumer{Revision: s.latest()}
			s.Consumers[c.h.c.Unit] = cons
		}
		if ref != "" && label != "" && cons != nil {
			cons.Label = label
		}
		rev := s.latest()
		switch {
		case refresh:
			cons.Revision = rev
		case !peek:
			rev = cons.Revision
		}
		content, _ = s.content(rev)
	}
	if key != "" {
		v, ok := content[key]
		if !ok {
			return fmt.Errorf("secret key %q not found", key)
		}
		return c.print(p, v)
	}
	if content == nil {
		content = map[string]string{}
	}
	return c.print(p, content)
}

// secretByLabel finds a secret by this unit's owner label or consumer label.
func (c *toolCall) secretByLabel(label string) *secretState {
	all := c.allSecrets()
	slices.SortFunc(all, func(a, b *secretState) int { return strings.Compare(a.ID, b.ID) })
	for _, s := range all {
		if c.owns(s) && s.Label == label {
			return s
		}
	}
	for _, s := range all {
		if cons, ok := s.Consumers[c.h.c.Unit]; ok && cons.Label == label {
			return s
		}
	}
	return nil
}

func secretSet(c *toolCall) error {
	p, err := c.parse(flags(stringFlag, "label", stringFlag, "description", stringFlag, "owner",
		stringFlag, "expire", stringFlag, "rotate", stringFlag, "file"))
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("missing secret URI")
	}
	s, ok := c.findSecret(p.pos[0])
	if !ok {
		return fmt.Errorf("secret %q not found", secretIDOf(p.pos[0]))
	}
	content, err := c.parseContent(p.pos[1:])
	if err != nil {
		return err
	}
	if err := c.canManage(s); err != nil {
		return err
	}
	if slices.Contains(c.pending().NewSecrets, s) {
		// Created in this hook: still one revision when committed.
		if len(content) > 0 {
			s.Revisions[0].Content = content
		}
		if l, ok := p.str["label"]; ok {
			s.Label = l
		}
		if d, ok := p.str["description"]; ok {
			s.Description = d
		}
		return nil
	}
	up := secretUpdate{ID: s.ID}
	if len(content) > 0 {
		up.Content = content
	}
	if l, ok := p.str["label"]; ok {
		up.Label = &l
	}
	if d, ok := p.str["description"]; ok {
		up.Description = &d
	}
	c.pending().Updates = append(c.pending().Updates, up)
	return nil
}

func secretGrantTool(c *toolCall) error {
	p, err := c.parse(flags(append(relationFlag, stringFlag, "unit")...))
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usagef("expected one secret URI, got %s", quoteList(p.pos))
	}
	if !p.has("relation") {
		return usagef("missing relation")
	}
	s, ok := c.findSecret(p.pos[0])
	if !ok {
		return fmt.Errorf("secret %q not found", secretIDOf(p.pos[0]))
	}
	r, err := c.relation(p)
	if err != nil {
		return err
	}
	if err := c.canManage(s); err != nil {
		return err
	}
	unit := p.str["unit"]
	if unit != "" && juju.AppName(unit) != r.remoteOf(c.appName()).App {
		return fmt.Errorf("cannot specify unit %q which is not in relation %d", unit, r.ID)
	}
	c.pending().Grants = append(c.pending().Grants, grantOp{ID: s.ID, RelationID: r.ID, Unit: unit})
	return nil
}

// secretRevoke removes grants by relation, application or unit.
func secretRevoke(c *toolCall) error {
	p, err := c.parse(flags(append(relationFlag, stringFlag, "unit", stringFlag, "app", "application")...))
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usagef("expected one secret URI, got %s", quoteList(p.pos))
	}
	s, ok := c.findSecret(p.pos[0])
	if !ok {
		return fmt.Errorf("secret %q not found", secretIDOf(p.pos[0]))
	}
	op := grantOp{ID: s.ID, RelationID: -1, Unit: p.str["unit"], App: p.str["app"], Revoke: true}
	if p.has("relation") {
		r, err := c.relation(p)
		if err != nil {
			return err
		}
		op.RelationID = r.ID
	}
	if op.RelationID < 0 && op.Unit == "" && op.App == "" {
		return usagef("missing relation, application or unit")
	}
	if err := c.canManage(s); err != nil {
		return err
	}
	c.pending().Grants = append(c.pending().Grants, op)
	return nil
}

func secretIDs(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if err := noArgs(p, 0); err != nil {
		return err
	}
	var ids []string // stays nil, printed as null, when there are none (contract §2.2)
	for _, s := range c.allSecrets() {
		if (s.OwnerKind == "unit" && s.Owner == c.h.c.Unit) ||
			(s.OwnerKind == "application" && s.Owner == c.appName() && c.isLeader()) {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	return c.print(p, ids)
}

func secretInfoGet(c *toolCall) error {
	p, err := c.parse(flags(stringFlag, "label"))
	if err != nil {
		return err
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	label := p.str["label"]
	if (len(p.pos) == 1) == (label != "") {
		return usagef("specify either a secret URI or label but not both")
	}
	var s *secretState
	if label != "" {
		if s = c.secretByLabel(label); s == nil || !c.owns(s) {
			return fmt.Errorf("secret with label %q not found", label)
		}
	} else {
		var ok bool
		if s, ok = c.findSecret(p.pos[0]); !ok || !c.owns(s) {
			return fmt.Errorf("secret %q not found", secretIDOf(p.pos[0]))
		}
	}
	info := map[string]any{"revision": s.latest(), "owner": s.OwnerKind}
	for k, v := range map[string]string{"label": s.Label, "description": s.Description, "rotation": s.Rotate, "expiry": s.Expire} {
		if v != "" {
			info[k] = v
		}
	}
	return c.print(p, map[string]any{s.ID: info})
}

func secretRemove(c *toolCall) error {
	p, err := c.parse(flags(stringFlag, "revision"))
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usagef("expected one secret URI, got %s", quoteList(p.pos))
	}
	s, ok := c.findSecret(p.pos[0])
	if !ok {
		return fmt.Errorf("secret %q not found", secretIDOf(p.pos[0]))
	}
	rev := 0
	if r, ok := p.str["revision"]; ok {
		if rev, err = strconv.Atoi(r); err != nil || rev < 1 {
			return usagef("invalid revision %q", r)
		}
		if _, ok := s.content(rev); !ok {
			return fmt.Errorf("secret revision %d not found", rev)
		}
	}
	if err := c.canManage(s); err != nil {
		return err
	}
	c.pending().Removals = append(c.pending().Removals, removeOp{ID: s.ID, Revision: rev})
	return nil
}

// ForgetSecret deletes a secret from the model outright, with no event: a test builds the model
// of a deployment from before the charm created the secret.
func (m *Model) ForgetSecret(uri string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.s.Secrets, secretIDOf(uri))
}
