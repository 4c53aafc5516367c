package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Relation endpoints (metadata.yaml) and the keys we exchange over them. Key names that the
// reference charm used keep its spelling so a refresh from it keeps working (reference-charm §5).
const (
	epPeers    = "peers"
	epTSA      = "tsa"
	epFlight   = "flight"
	epPostgres = "postgresql"
	epMetrics  = "monitoring"

	// peers app databag (leader writes)
	keyTargetVersion    = "target-version"    // version every unit should install (pinned or resolved latest)
	keyInstalledVersion = "installed-version" // version the installer finished installing (wakes waiters)
	keyWebVersion       = "concourse-version" // version the web service runs (workers follow it)
	keyAdminSecret      = "admin-secret-id"   // URI of the app-owned secret holding the admin password
	keyUpgradeHeld      = "upgrade-held"      // the leader's failed upgrade the other webs follow (heldUpgrade)
	// keyLegacyAdminPassword is where the Python reference charm kept the password, in plaintext.
	keyLegacyAdminPassword = "admin-password"

	// unit databags
	keyTSAHost      = "tsa-host"          // web: <ip>:2222
	keyWebIP        = "web-ip"            // web: reference charm's key, kept for compatibility
	keyTSAPublicKey = "tsa-public-key"    // web: ssh-rsa … of its TSA host key
	keyWorkerKey    = "worker-public-key" // worker: ssh-rsa … of its worker key
	keyRunning      = "running-version"   // worker: version its service runs

	tsaPort      = 2222
	metricsPort  = 9391 // Concourse's usual Prometheus port (the reference charm's)
	databaseName = "concourse"
	webService   = "concourse-server.service"
	workerSvc    = "concourse-worker.service"
	webUser      = "concourse"
)

// databaseRequest is what the leader asks of the postgresql relation.
func databaseRequest() map[string]string {
	return map[string]string{"database": databaseName, "requested-secrets": requestedSecrets}
}

// requestedSecrets is what data_interfaces' requirer sends (juju-contract §7.1).
const requestedSecrets = `["username","password","tls","tls-ca","uris","read-only-uris","entity-name","entity-password"]`

// RelationFacts is one relation as this unit sees it in the current hook.
type RelationFacts struct {
	ID        int
	RemoteApp string
	AppData   map[string]string            // peers: our own app bag; others: the remote app bag
	Units     map[string]map[string]string // remote units still in the relation → their bag
}

// DBFacts is what the postgresql relation offers.
type DBFacts struct {
	RelationID int
	OurAppData map[string]string // leader only: what we requested
	Endpoints  string
	Database   string
	Username   string
	Password   string
	TLS        bool   // the provider serves TLS (secret-tls "tls": "True")
	TLSCA      string // its CA bundle, PEM; may be empty (then only encryption, no verification)
	SecretErr  error  // credentials or TLS settings announced but unreadable
}

// Facts are gathered once per hook, before anything is decided.
type Facts struct {
	Env       juju.Env
	Event     juju.Event
	RawConfig map[string]any
	Leader    bool
	Addr      Addresses // where this unit is reached, per binding (web role only)
	Peers     *RelationFacts
	TSA       []RelationFacts
	Flight    []RelationFacts
	DB        *DBFacts
	Metrics   []int // monitoring relation ids (we only write there)
	// Dashboards are the grafana-dashboard relation ids, leader only (observe.go).
	Dashboards []int
	Vault      *VaultFacts // web units only: the vault-kv relation (vault.go)
	State      LocalState
	// Kept is the relation cache (relcache.go): other units' bags as the relation hooks
	// delivered them, and what this unit last published. Saved when the convergence succeeds.
	Kept *relationCache
}

// Addresses are where other units reach this one, from Juju's network model: the first ingress
// address of each binding (network-get), so a machine with several interfaces, a space binding or
// a cross-model relation publishes the address the other side can reach, not unit-get's private
// address. Only a web publishes addresses, so only a web asks (a steady worker's hook costs no
// network-get).
type Addresses struct {
	// Peers (peers binding) is what the units of this application dial: tsa-host on the peer
	// relation, CONCOURSE_PEER_ADDRESS (web nodes reach each other there), and a mode=all unit's
	// own TSA.
	Peers string
	// Web (tsa binding) is the default external URL, as in the reference charm (its order: tsa,
	// peers, default), so a refresh keeps the URL. tsa is the endpoint the web provides to the
	// outside of its application; peers is intra-application traffic, often an internal space.
	Web string
	// TSA is, per tsa relation, the address that worker application dials (network-get -r: the
	// public address across models).
	TSA map[int]string
	// Metrics is, per monitoring relation, the address that Prometheus scrapes (network-get -r);
	// gathered only while enable-metrics is on.
	Metrics map[int]string
}

// LocalState is what this unit did, kept on its own disk: the inputs each service was started
// with (pebble's serviceData.config), so a service restarts only when they change.
type LocalState struct {
	Web         *ServiceRecord `json:"web,omitempty"`
	Worker      *ServiceRecord `json:"worker,omitempty"`
	HadDatabase bool           `json:"had-database,omitempty"`
	// MigrationHold is the schema run-migrations moved the database down to: no web starts until
	// the installed release supports exactly that schema (it would migrate straight back up).
	MigrationHold int64 `json:"migration-hold,omitempty"`
	// VaultNonce identifies this unit on the vault-kv relation: the provider keys its AppRole
	// credentials by it, so it must stay the same for the unit's life.
	VaultNonce string `json:"vault-nonce,omitempty"`
	// Upgrade is the last upgrade of the web, its steps and their times (upgrade.go).
	Upgrade *UpgradeRecord `json:"last-upgrade,omitempty"`
	// WorkerHold is the operator's land-worker or retire-worker (lifecycle.go): a landed or
	// retired worker's process exits 0, and no hook may start it again until resume-worker.
	WorkerHold *WorkerHold `json:"worker-hold,omitempty"`
}

// ServiceRecord is what a running service was started with: the hash of each input it read at
// start, of what it re-reads on SIGHUP, and the release.
type ServiceRecord struct {
	Inputs      map[string]string `json:"inputs"`
	Reload      map[string]string `json:"reload,omitempty"`
	Version     string            `json:"version"`
	StartedAt   time.Time         `json:"started-at"`
	StartedWith string            `json:"binary,omitempty"`
}

func (h *handler) gather(ctx context.Context) (*Facts, error) {
	f := &Facts{Env: h.deps.Env, Event: h.deps.Env.Event(), Kept: h.openRelationCache()}
	h.broken = f.Kept.Broken
	live := map[int]bool{} // every relation id relation-ids lists, to drop the others from the cache
	var err error
	if f.RawConfig, err = h.juju.Config(ctx); err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if f.Leader, err = h.juju.IsLeader(ctx); err != nil {
		// juju-contract §2.2: on failure assume not leader, never guess leadership.
		h.logf("is-leader failed, assuming not leader: %v", err)
		f.Leader = false
	}
	// Before anything consults the leader's kept application-bag writes (dbFacts does).
	f.Kept.observeLeadership(f.Leader, f.Event)
	if f.Peers, err = h.peerFacts(ctx, f.Kept, live); err != nil {
		return nil, err
	}
	if f.TSA, err = h.relationFacts(ctx, f.Kept, live, epTSA); err != nil {
		return nil, err
	}
	if f.Flight, err = h.relationFacts(ctx, f.Kept, live, epFlight); err != nil {
		return nil, err
	}
	// Only a web reads the database relation (the leader, which requests the database, is a web
	// in every mode that has one): workers skip its relation reads and secret fetches, which
	// would otherwise cost every hook on every worker four hook-tool calls.
	if decideRole(strings.TrimSpace(rawString(f.RawConfig["mode"])), f.Leader).Web {
		if f.DB, err = h.dbFacts(ctx, f.Kept, live, f.Leader); err != nil {
			return nil, err
		}
	}
	if f.Metrics, err = h.liveIDs(ctx, epMetrics); err != nil {
		return nil, err
	}
	for _, id := range f.Metrics {
		live[id] = true
	}
	if err := h.dashboardFacts(ctx, f, live); err != nil {
		return nil, err
	}
	if decideRole(strings.TrimSpace(rawString(f.RawConfig["mode"])), f.Leader).Web {
		metrics, _ := rawBool(f.RawConfig["enable-metrics"]) // invalid: nothing is published anyway
		if f.Addr, err = h.addresses(ctx, f, metrics); err != nil {
			return nil, err
		}
	}
	f.State, err = loadState(h.deps.Paths.StateDir)
	if err != nil {
		return nil, err
	}
	// Only a web uses Vault: workers do not even list the relation.
	if decideRole(strings.TrimSpace(rawString(f.RawConfig["mode"])), f.Leader).Web {
		if f.Vault, err = h.vaultFacts(ctx, f.Kept, live, &f.State); err != nil {
			return nil, err
		}
	}
	f.Kept.prune(live)
	return f, nil
}

// addresses asks network-get for the bindings a web uses in this hook: peers and tsa, one -r per
// tsa relation, and one -r per monitoring relation while metrics are on. The hook-tool calls grow
// with the related applications, never with the number of workers.
func (h *handler) addresses(ctx context.Context, f *Facts, metrics bool) (Addresses, error) {
	a := Addresses{TSA: map[int]string{}, Metrics: map[int]string{}}
	var private string // unit-get, only if some binding has no answer
	get := func(binding string, id int) (string, error) {
		var n juju.Network
		var err error
		if id < 0 {
			n, err = h.juju.NetworkGet(ctx, binding)
		} else {
			n, err = h.juju.NetworkGetRelation(ctx, binding, id)
		}
		if err != nil && !errors.Is(err, juju.ErrNoNetworkConfig) {
			return "", err
		}
		if addr := n.Ingress(); err == nil && addr != "" {
			return addr, nil
		}
		// An agent that does not know the binding (older Juju) or has no address for it yet.
		why := "no ingress address"
		if err != nil {
			why = err.Error()
		}
		if private == "" {
			if private, err = h.juju.PrivateAddress(ctx); err != nil {
				return "", fmt.Errorf("reading the unit address: %w", err)
			}
		}
		h.jlog(juju.LogWarning, fmt.Sprintf("%s: using the private address %s (unit-get) for binding %s", why, private, binding))
		return private, nil
	}
	var err error
	if a.Peers, err = get(epPeers, -1); err != nil {
		return a, err
	}
	if a.Web, err = get(epTSA, -1); err != nil {
		return a, err
	}
	for _, r := range f.TSA {
		if a.TSA[r.ID], err = get(epTSA, r.ID); err != nil {
			return a, err
		}
	}
	if metrics {
		for _, id := range f.Metrics {
			if a.Metrics[id], err = get(epMetrics, id); err != nil {
				return a, err
			}
		}
	}
	return a, nil
}

// liveIDs drops the relation that is breaking in this hook: relation-ids still lists it during
// -relation-broken (juju-contract §2.2), but its data must no longer count; and every relation
// this unit saw break before (relationCache.Broken).
func (h *handler) liveIDs(ctx context.Context, endpoint string) ([]int, error) {
	ids, err := h.juju.RelationIDs(ctx, endpoint)
	if err != nil {
		return nil, fmt.Errorf("listing %s relations: %w", endpoint, err)
	}
	ev := h.deps.Env.Event()
	out := ids[:0]
	for _, id := range ids {
		if ev.RelationEvent == "broken" && id == h.deps.Env.RelationID || slices.Contains(h.broken, id) {
			continue
		}
		out = append(out, id)
	}
	return out, nil
}

func (h *handler) unitBags(ctx context.Context, id int) (map[string]map[string]string, error) {
	units, err := h.juju.RelationUnits(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("listing units of relation %d: %w", id, err)
	}
	bags := make(map[string]map[string]string, len(units))
	for _, u := range units {
		// A departing unit's data stays readable for the whole relation (juju-contract §2.2); it
		// must stop counting now, so its worker key is revoked in the same hook: the relation
		// cache leaves it out of this hook's facts (cachedUnitBags), and keeps it only where it
		// is not departing.
		d, err := h.juju.RelationData(ctx, id, u)
		if errors.Is(err, juju.ErrRelationNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s's data on relation %d: %w", u, id, err)
		}
		bags[u] = d
	}
	return bags, nil
}

func (h *handler) peerFacts(ctx context.Context, kept *relationCache, live map[int]bool) (*RelationFacts, error) {
	ids, err := h.liveIDs(ctx, epPeers)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	rf := &RelationFacts{ID: ids[0], RemoteApp: h.deps.Env.AppName}
	live[rf.ID] = true
	if rf.AppData, err = h.juju.AppRelationData(ctx, rf.ID, h.deps.Env.AppName); err != nil {
		return nil, fmt.Errorf("reading peer application data: %w", err)
	}
	if rf.Units, err = h.cachedUnitBags(ctx, kept, epPeers, rf.ID); err != nil {
		return nil, err
	}
	return rf, nil
}

func (h *handler) relationFacts(ctx context.Context, kept *relationCache, live map[int]bool, endpoint string) ([]RelationFacts, error) {
	ids, err := h.liveIDs(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	var out []RelationFacts
	for _, id := range ids {
		live[id] = true
		rf := RelationFacts{ID: id}
		if rf.RemoteApp, err = h.relationApp(ctx, kept, id); err != nil {
			return nil, fmt.Errorf("reading the remote application of relation %d: %w", id, err)
		}
		if rf.AppData, err = h.juju.AppRelationData(ctx, id, rf.RemoteApp); err != nil {
			return nil, fmt.Errorf("reading %s's application data: %w", rf.RemoteApp, err)
		}
		if rf.Units, err = h.cachedUnitBags(ctx, kept, endpoint, id); err != nil {
			return nil, err
		}
		out = append(out, rf)
	}
	return out, nil
}

func (h *handler) dbFacts(ctx context.Context, kept *relationCache, live map[int]bool, leader bool) (*DBFacts, error) {
	ids, err := h.liveIDs(ctx, epPostgres)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	for _, id := range ids {
		live[id] = true
	}
	db := &DBFacts{RelationID: ids[0]}
	app, err := h.relationApp(ctx, kept, db.RelationID)
	if err != nil {
		return nil, fmt.Errorf("reading the database application: %w", err)
	}
	if leader {
		if req := databaseRequest(); kept.sameAppData(db.RelationID, req) {
			// This leader made the request itself and has stayed leader since: nobody else writes
			// our application's bag, so there is nothing to read back.
			db.OurAppData = req
		} else if db.OurAppData, err = h.juju.AppRelationData(ctx, db.RelationID, h.deps.Env.AppName); err != nil {
			// Only the leader may read its own app bag on a non-peer relation (juju-contract §8).
			return nil, fmt.Errorf("reading our request on the database relation: %w", err)
		}
	}
	if app == "" {
		return db, nil
	}
	remote, err := h.juju.AppRelationData(ctx, db.RelationID, app)
	if err != nil {
		return nil, fmt.Errorf("reading %s's application data: %w", app, err)
	}
	db.Endpoints = remote["endpoints"]
	db.Database = remote["database"]
	// Legacy providers send plaintext credentials when no secrets were requested (juju-contract §7.2).
	db.Username, db.Password = remote["username"], remote["password"]
	if uri := remote["secret-user"]; uri != "" {
		label := fmt.Sprintf("%s.%d.user.secret", epPostgres, db.RelationID)
		// --refresh: always follow the provider's latest revision, so a rotated password is picked
		// up by whichever hook comes first (secret-changed or any other).
		content, err := h.juju.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Label: label, Refresh: true})
		if err != nil {
			db.SecretErr = err
		} else {
			db.Username, db.Password = content["username"], content["password"]
		}
	}
	tls, ca := remote["tls"], remote["tls-ca"] // legacy plaintext fields
	if uri := remote["secret-tls"]; uri != "" && db.SecretErr == nil {
		label := fmt.Sprintf("%s.%d.tls.secret", epPostgres, db.RelationID)
		content, err := h.juju.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Label: label, Refresh: true})
		if err != nil {
			db.SecretErr = err
		}
		tls, ca = content["tls"], content["tls-ca"]
	}
	db.TLS = strings.EqualFold(tls, "true")
	db.TLSCA = strings.TrimSpace(ca)
	return db, nil
}

func loadState(dir string) (LocalState, error) {
	var s LocalState
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading charm state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		// A damaged record only costs one restart: start from scratch rather than wedge the unit.
		return LocalState{}, nil
	}
	return s, nil
}

// webUnits lists the TSA endpoints and public keys published by web units this unit can reach,
// sorted so that rendered files (and their hashes) do not depend on map order.
func webUnits(f *Facts) (hosts, keys []string, version string) {
	hosts, keys, version, _ = tsaEndpoints(f)
	return hosts, keys, version
}

// workerKeys lists the worker public keys of every related worker, canonical, sorted and
// de-duplicated. A value that is not exactly one SSH public key is refused, never written: over
// tsa it comes from another application, and a newline or command="…" would authorize more than
// that worker's key.
func workerKeys(f *Facts) (keys []string, refused []keyRefusal) {
	seen := map[string]bool{}
	// Values the relation cache already found canonical need no second parse (keptUnit).
	canonical := map[string]bool{}
	if f.Peers != nil {
		f.Kept.canonicalWorkerKeys(f.Peers.ID, canonical)
	}
	for _, r := range f.TSA {
		f.Kept.canonicalWorkerKeys(r.ID, canonical)
	}
	add := func(unit string, bag map[string]string) {
		v := bag[keyWorkerKey]
		if strings.TrimSpace(v) == "" {
			return // not published yet
		}
		k, ok := v, true
		if !canonical[v] {
			k, ok = checkedKey(unit, keyWorkerKey, v, &refused)
		}
		if ok && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if f.Peers != nil {
		for unit, bag := range f.Peers.Units {
			add(unit, bag)
		}
	}
	for _, r := range f.TSA {
		for unit, bag := range r.Units {
			add(unit, bag)
		}
	}
	sort.Strings(keys)
	sortRefusals(refused)
	return keys, refused
}
