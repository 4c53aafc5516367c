package hooks

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// The relation cache keeps, on the unit's own disk, what the charm needs of the other units'
// relation data (worker keys, TSA hosts, running versions) and what this unit last told Juju
// (its own unit bags, its application version, which admin secret its web.env holds). It exists
// so that a steady hook costs the same number of hook-tool calls with 1 or 1000 workers: a web
// used to read every worker's bag (one relation-get each) in every hook.
//
// Invariants (juju-contract §2.2, §4), and why the cache equals what a full read would give:
//
//  1. Another unit's bag changes only by that unit's own relation-set, and Juju then runs
//     <ep>-relation-changed for it on this unit (after -joined, once at least). So the bag of
//     unit X is read only in -joined/-changed with JUJU_REMOTE_UNIT=X, and kept.
//  2. A unit leaves a relation only through <ep>-relation-departed (JUJU_REMOTE_UNIT=X): it is
//     dropped there. A DepartingUnit other than this one stops counting in every hook that names
//     it, as before (its key is revoked in the same hook).
//  3. A relation appears with -created and disappears with -broken; relation-ids is still asked
//     in every hook (one call per endpoint, not per unit), so a relation id the cache does not know
//     is read in full (relation-list + one relation-get per unit), and a cached id that
//     relation-ids no longer lists (or the one breaking now) is dropped. The remote application
//     of a relation id never changes: it is asked once.
//  4. Where Juju gives no guarantee that this unit saw every hook, everything is read again:
//     install and upgrade-charm (a new charm may need other keys, and hooks of the old charm are
//     not ours to trust), a missing, unreadable or older-format file.
//  5. The file is written only at the end of a successful convergence, so a failed hook leaves the
//     previous file, and Juju's retry of the same hook re-reads the same unit (the update is
//     idempotent). A relation hook that changes the cache removes the file first: if it dies or
//     is skipped (juju resolved --no-retry), the next hook finds no file and reads everything.
//  6. What this unit published is compared with what it last published successfully: the
//     unit's own bag is written by nobody else, and a failed hook's relation-set is discarded
//     together with the record of it (5). install and upgrade-charm publish everything again.
//
// Values are kept raw; they are validated where used (concourse.CanonicalPublicKey in
// workerKeys/tsaEndpoints), exactly as a full read's values would be; a worker key found
// canonical when it arrived is not parsed again (keptUnit.WorkerKeyCanonical).
//
// The property test TestRelationCacheEqualsFullRead drives random joins, changes, departures,
// leadership moves, upgrades, failed-and-skipped hooks and damaged files against these rules.
const (
	// gob, not JSON: a web with 1000 workers loads ~1 MB of keys in every hook, which JSON decodes
	// in ~10 ms and gob in ~1.6 ms (JSON scans every byte of every key).
	relCacheFile   = "relations.gob"
	relCacheFormat = 2
)

// keptUnit is what the charm reads of another unit's bag: the keys below, raw. Fields, not a
// map: a web with 1000 workers loads a thousand of these in every hook.
type keptUnit struct {
	WorkerKey  string // worker-public-key
	Running    string // running-version
	TSAHost    string // tsa-host
	WebIP      string // web-ip
	TSAKey     string // tsa-public-key
	WebVersion string // concourse-version
	// WorkerKeyCanonical records that concourse.CanonicalPublicKey(WorkerKey) == WorkerKey,
	// found when the value arrived: workerKeys then uses it without parsing it again (the
	// function is pure, and a new charm, which might validate otherwise, starts from an empty
	// cache). Anything else is validated in every hook, as a full read's value would be.
	WorkerKeyCanonical bool
}

func keptFrom(d map[string]string) *keptUnit {
	k := &keptUnit{WorkerKey: d[keyWorkerKey], Running: d[keyRunning], TSAHost: d[keyTSAHost],
		WebIP: d[keyWebIP], TSAKey: d[keyTSAPublicKey], WebVersion: d[keyWebVersion]}
	if k.WorkerKey != "" {
		c, err := concourse.CanonicalPublicKey(k.WorkerKey)
		k.WorkerKeyCanonical = err == nil && c == k.WorkerKey
	}
	return k
}

// bag is the unit's data as a full read would give it, limited to the keys the charm reads.
func (k *keptUnit) bag() map[string]string {
	out := make(map[string]string, 6)
	for key, v := range map[string]string{keyWorkerKey: k.WorkerKey, keyRunning: k.Running, keyTSAHost: k.TSAHost,
		keyWebIP: k.WebIP, keyTSAPublicKey: k.TSAKey, keyWebVersion: k.WebVersion} {
		if v != "" {
			out[key] = v
		}
	}
	return out
}

type relationCache struct {
	Format int
	// Relations holds, per relation id, the kept bags of the remote units in it.
	Relations map[int]*cachedRelation
	// Apps is the remote application of each relation id.
	Apps map[int]string
	// Published is this unit's own bag on each relation, as last set by a successful hook.
	Published map[int]map[string]string
	// PublishedApp is, while this unit stays leader, what it wrote in its application's bag on
	// non-peer relations (the peers bag is compared with the peers data read in every hook).
	// Another leader may write there, so it is forgotten whenever leadership may have moved:
	// in leader-elected and whenever a hook found this unit not leader (Leader).
	PublishedApp map[int]map[string]string
	Leader       bool
	// dirty says this hook changed something, so the file is written at the end.
	dirty bool
	// AppVersion is what application-version-set was last given.
	AppVersion string
	// Admin says which admin password secret the web's env file was rendered from.
	Admin *adminRecord
	// DashboardIDs are the leader's grafana-dashboard relations, valid while DashboardsListed
	// (observe.go dashboardFacts: asked again where they may have changed, forgotten by a
	// non-leader).
	DashboardIDs     []int
	DashboardsListed bool
	// Broken are the relations this unit ran -relation-broken for. Relation ids are never
	// reused, and a unit being removed may still see a relation it left listed by relation-ids
	// in its later hooks (the bed's model does; Juju drops it): its data never counts again, or
	// a departing web would restart on the database credentials it just lost.
	Broken []int
}

type cachedRelation struct {
	Endpoint string
	Units    map[string]*keptUnit
}

// adminRecord ties the admin's bcrypt hash in web.env to the secret whose password it hashes
// (see webAdminPassword). It holds nothing web.env does not.
type adminRecord struct {
	ID   string
	User string
	Hash string
}

func newRelationCache() *relationCache {
	return &relationCache{Format: relCacheFormat, Relations: map[int]*cachedRelation{}, Apps: map[int]string{},
		Published: map[int]map[string]string{}, PublishedApp: map[int]map[string]string{}, dirty: true}
}

// loadRelationCache returns the kept data, or nil when there is none to trust.
func loadRelationCache(dir string) *relationCache {
	b, err := os.ReadFile(filepath.Join(dir, relCacheFile))
	if err != nil {
		return nil
	}
	c := newRelationCache()
	c.dirty = false
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(c); err != nil || c.Format != relCacheFormat {
		return nil // damaged or from another charm version: read everything again
	}
	if c.Relations == nil {
		c.Relations = map[int]*cachedRelation{}
	}
	if c.Apps == nil {
		c.Apps = map[int]string{}
	}
	if c.Published == nil {
		c.Published = map[int]map[string]string{}
	}
	if c.PublishedApp == nil {
		c.PublishedApp = map[int]map[string]string{}
	}
	for _, r := range c.Relations {
		if r == nil {
			return nil
		}
		if r.Units == nil {
			r.Units = map[string]*keptUnit{} // gob sends no empty map
		}
		for _, u := range r.Units {
			if u == nil {
				return nil
			}
		}
	}
	return c
}

func saveRelationCache(dir string, c *relationCache) error {
	if !c.dirty {
		return nil // a steady hook changes nothing here, and writes nothing
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(c); err != nil {
		return fmt.Errorf("encoding the relation cache: %w", err)
	}
	b := buf.Bytes()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if _, err := concourse.WriteFileAtomic(filepath.Join(dir, relCacheFile), b, 0o600, -1, -1); err != nil {
		return fmt.Errorf("saving the relation cache: %w", err)
	}
	return nil
}

// cacheEndpoint reports whether the units' bags of an endpoint are kept.
func cacheEndpoint(ep string) bool { return ep == epPeers || ep == epTSA || ep == epFlight }

// changesCache reports whether this hook changes what is kept of other units (invariant 5).
func changesCache(ev juju.Event) bool {
	if ev.Endpoint == epDashboards {
		// The leader's list of grafana-dashboard relations (invariant 3 for an endpoint the
		// charm only writes to: the ids are kept, not asked in every hook).
		return ev.RelationEvent == "created" || ev.RelationEvent == "broken"
	}
	if !cacheEndpoint(ev.Endpoint) {
		return false
	}
	switch ev.RelationEvent {
	case "joined", "changed", "departed", "broken":
		return true
	}
	return false
}

// openRelationCache is the first step of gather: the kept data this hook may trust, an empty
// cache where it must read everything (invariant 4).
func (h *handler) openRelationCache() *relationCache {
	ev := h.deps.Env.Event()
	dir := h.deps.Paths.StateDir
	var c *relationCache
	if ev.Name != "install" && ev.Name != "upgrade-charm" {
		c = loadRelationCache(dir)
	}
	if c == nil {
		h.logf("reading all relation data (no usable relation cache)")
		c = newRelationCache()
	}
	if ev.RelationEvent == "broken" && !slices.Contains(c.Broken, h.deps.Env.RelationID) {
		c.Broken = append(c.Broken, h.deps.Env.RelationID)
		c.dirty = true
	}
	if changesCache(ev) {
		c.dirty = true // written back at the end, with this hook's change
		if err := os.Remove(filepath.Join(dir, relCacheFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			h.logf("removing the relation cache before updating it: %v", err)
		}
	}
	return c
}

// cachedUnitBags returns the bags of the remote units of relation id, from the cache where it can
// be trusted, updated by this hook's event (invariants 1–3).
func (h *handler) cachedUnitBags(ctx context.Context, c *relationCache, endpoint string, id int) (map[string]map[string]string, error) {
	env := h.deps.Env
	ev := env.Event()
	rel := c.Relations[id]
	if rel == nil || rel.Endpoint != endpoint {
		bags, err := h.unitBags(ctx, id)
		if err != nil {
			return nil, err
		}
		rel = &cachedRelation{Endpoint: endpoint, Units: map[string]*keptUnit{}}
		for u, d := range bags {
			rel.Units[u] = keptFrom(d)
		}
		c.Relations[id] = rel
		c.dirty = true
	} else if env.RelationID == id && env.RemoteUnit != "" && env.RemoteUnit != env.UnitName {
		switch ev.RelationEvent {
		case "joined", "changed":
			c.dirty = true
			if env.RemoteUnit == env.DepartingUnit {
				delete(rel.Units, env.RemoteUnit)
				break
			}
			d, err := h.juju.RelationData(ctx, id, env.RemoteUnit)
			if errors.Is(err, juju.ErrRelationNotFound) {
				delete(rel.Units, env.RemoteUnit)
				break
			}
			if err != nil {
				return nil, fmt.Errorf("reading %s's data on relation %d: %w", env.RemoteUnit, id, err)
			}
			rel.Units[env.RemoteUnit] = keptFrom(d)
		case "departed":
			c.dirty = true
			delete(rel.Units, env.RemoteUnit)
		}
	}
	// Invariant 2: a unit leaving now no longer counts in this hook. Only on the relation it is
	// departing is it dropped for good; another relation it may still be in keeps it (its own
	// -departed there drops it).
	departing := env.DepartingUnit
	if departing == env.UnitName {
		departing = ""
	}
	if departing != "" && id == env.RelationID && rel.Units[departing] != nil {
		delete(rel.Units, departing)
		c.dirty = true
	}
	out := make(map[string]map[string]string, len(rel.Units))
	for u, k := range rel.Units {
		if u != departing {
			out[u] = k.bag()
		}
	}
	return out, nil
}

// relationApp is the remote application of relation id, asked once per relation (invariant 3).
func (h *handler) relationApp(ctx context.Context, c *relationCache, id int) (string, error) {
	if app := c.Apps[id]; app != "" {
		return app, nil
	}
	app, err := h.juju.RelationApp(ctx, id)
	if err != nil {
		return "", err
	}
	if app != "" {
		c.Apps[id] = app
		c.dirty = true
	}
	return app, nil
}

// prune drops the relations relation-ids no longer lists (live holds every listed id).
func (c *relationCache) prune(live map[int]bool) {
	for id := range c.Relations {
		if !live[id] {
			delete(c.Relations, id)
			c.dirty = true
		}
	}
	for id := range c.Apps {
		if !live[id] {
			delete(c.Apps, id)
			c.dirty = true
		}
	}
	for id := range c.Published {
		if !live[id] {
			delete(c.Published, id)
			c.dirty = true
		}
	}
	for id := range c.PublishedApp {
		if !live[id] {
			delete(c.PublishedApp, id)
			c.dirty = true
		}
	}
}

// observeLeadership forgets the application-bag writes unless this unit has been leader since
// it made them (see PublishedApp).
func (c *relationCache) observeLeadership(leader bool, ev juju.Event) {
	if (!leader || !c.Leader || ev.Name == "leader-elected") && len(c.PublishedApp) > 0 {
		c.PublishedApp = map[int]map[string]string{}
		c.dirty = true
	}
	if c.Leader != leader {
		c.Leader = leader
		c.dirty = true
	}
}

// sameAppData reports whether every key of data already holds that value ("" deletes) by this
// leader's own earlier write on relation id (see PublishedApp).
func (c *relationCache) sameAppData(id int, data map[string]string) bool {
	if c == nil {
		return false
	}
	for k, v := range data {
		if have, ok := c.PublishedApp[id][k]; (v == "" && ok) || (v != "" && have != v) {
			return false
		}
	}
	return true
}

// recordAppData records a successful relation-set --app: written keys merge into the bag.
func (c *relationCache) recordAppData(id int, data map[string]string) {
	if c == nil {
		return
	}
	c.dirty = true
	rec := c.PublishedApp[id]
	if rec == nil {
		rec = map[string]string{}
		c.PublishedApp[id] = rec
	}
	for k, v := range data {
		if v == "" {
			delete(rec, k)
		} else {
			rec[k] = v
		}
	}
}

// samePublished reports whether bag ("" deletes a key) is what this unit already published on
// relation id (invariant 6).
func (c *relationCache) samePublished(id int, bag map[string]string) bool {
	if c == nil {
		return false
	}
	have, ok := c.Published[id]
	if !ok {
		return false
	}
	return maps.Equal(have, nonEmpty(bag))
}

func (c *relationCache) recordPublished(id int, bag map[string]string) {
	if c == nil {
		return
	}
	c.Published[id] = nonEmpty(bag)
	c.dirty = true
}

func nonEmpty(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// webAdminPassword is what the web renders for the admin: the password, or the bcrypt hash
// web.env already holds for it. web.env keeps the admin's password bcrypt-hashed (renderWeb
// passes a bcrypt value through unchanged), and the charm never changes the content of its admin
// secret (a new password would be a new secret), so a hash recorded as made from secret id X
// stays right while the peers data names X and web.env still holds that hash: then neither the
// secret-get nor a bcrypt comparison (~50 ms) is needed. The password itself is read when there is
// no such record, when web.env was changed by hand, and in the departed hooks, whose worker
// retirement logs in to the API with it (retireDeparted).
func (u *unitRun) webAdminPassword(ctx context.Context) (string, error) {
	if u.newAdminPassword != "" {
		return u.newAdminPassword, nil
	}
	id := ""
	if u.f.Peers != nil {
		id = u.f.Peers.AppData[keyAdminSecret]
	}
	ev := u.f.Event
	login := ev.RelationEvent == "departed" && (ev.Endpoint == epPeers || ev.Endpoint == epTSA)
	if rec := u.f.Kept.adminRecord(); !login && id != "" && rec != nil && rec.ID == id && rec.User == u.cfg.AdminUser {
		if h := renderedLocalUser(u.path(fileWebEnv), u.cfg.AdminUser); h == rec.Hash && concourse.IsBcrypt(h) {
			return h, nil
		}
	}
	pw, err := u.adminPassword(ctx)
	if err == nil {
		u.adminRead = pw
	}
	return pw, err
}

// setAppVersion records what application-version-set was given.
func (c *relationCache) setAppVersion(v string) {
	if c != nil && c.AppVersion != v {
		c.AppVersion = v
		c.dirty = true
	}
}

// canonicalWorkerKeys are the worker-public-key values of relation id known to be canonical
// already (keptUnit.WorkerKeyCanonical).
func (c *relationCache) canonicalWorkerKeys(id int, into map[string]bool) {
	if c == nil || c.Relations[id] == nil {
		return
	}
	for _, k := range c.Relations[id].Units {
		if k.WorkerKeyCanonical {
			into[k.WorkerKey] = true
		}
	}
}

func (c *relationCache) adminRecord() *adminRecord {
	if c == nil {
		return nil
	}
	return c.Admin
}

// recordAdmin, at the end of a convergence that read the admin secret, records which hash web.env
// now holds for that secret's password: one bcrypt comparison, in the hooks that read the secret.
func (u *unitRun) recordAdmin() {
	if u.adminRead == "" || u.f.Kept == nil || u.f.Peers == nil || !u.role.Web {
		return
	}
	id := u.f.Peers.AppData[keyAdminSecret]
	h := renderedLocalUser(u.path(fileWebEnv), u.cfg.AdminUser)
	if id == "" || h == "" {
		return
	}
	if rec := u.f.Kept.Admin; rec != nil && rec.ID == id && rec.User == u.cfg.AdminUser && rec.Hash == h {
		return
	}
	if concourse.HashMatches(h, u.adminRead) {
		u.f.Kept.Admin = &adminRecord{ID: id, User: u.cfg.AdminUser, Hash: h}
		u.f.Kept.dirty = true
	}
}

// renderedLocalUser is the password entry (a bcrypt hash) web.env holds for user, "" when none.
func renderedLocalUser(envFile, user string) string {
	b, err := os.ReadFile(envFile)
	if err != nil {
		return ""
	}
	env, err := concourse.ParseEnvFile(b)
	if err != nil {
		return ""
	}
	// Entries are name:password separated by ','; a name contains neither (concourse.WebEnv).
	for _, e := range strings.Split(env["CONCOURSE_ADD_LOCAL_USER"], ",") {
		if name, pw, ok := strings.Cut(e, ":"); ok && name == user {
			return pw
		}
	}
	return ""
}
