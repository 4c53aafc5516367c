package scenarios

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// Scenario is one bed (its own bridge, containers and controller) with its own release server
// serving the fixture's tarballs on the bed's host address, and a host directory shared as
// /var/lib/concourse.
type Scenario struct {
	F   *Fixture
	C   *bed.Controller
	Rel *release.Server
	// Shared is the host directory bound at /var/lib/concourse (shared-storage=lxc).
	Shared string
	// DB is the database the stand-in postgresql provider creates for this scenario.
	DB string
	// HookFailuresExpected turns off Settle's check that no hook of the charm failed (for a
	// scenario that kills a hook on purpose).
	HookFailuresExpected bool
	// Charmed, when set, is the database the postgresql provider hands out, set up in the
	// postgresql charm's role model (the relation user does not own it); nil gives a database
	// the relation user owns.
	Charmed *pgtest.CharmedDatabase
}

// NewScenario starts a bed and a release server; both stop in t's cleanups.
func (f *Fixture) NewScenario(t testing.TB) *Scenario {
	t.Helper()
	c := bed.NewController(t, bed.ControllerOptions{ToolsDir: f.ToolsDir})
	rel, err := release.Listen(c.Bed.HostIP() + ":0")
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the controller's cleanup, so it runs first: a hook still running at
	// teardown gets "connection refused", not a hang.
	t.Cleanup(rel.Close)
	for _, a := range f.Assets {
		rel.Add(a)
	}
	s := &Scenario{F: f, C: c, Rel: rel, Shared: filepath.Join(c.Bed.Dir(), "shared"), DB: "concourse_" + c.Bed.ID()}
	if err := os.MkdirAll(s.Shared, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// ReleaseURL is the release-url option pointing at this scenario's server.
func (s *Scenario) ReleaseURL() string { return s.Rel.URL() + release.DownloadPrefix }

// Config is the operator's configuration of the seed report (mode=auto, shared-storage=lxc,
// version 7.14.3 from this scenario's mirror), with extra on top.
func (s *Scenario) Config(extra map[string]any) map[string]any {
	cfg := map[string]any{"mode": "auto", "shared-storage": "lxc", "release-url": s.ReleaseURL(), "version": V1}
	maps.Copy(cfg, extra)
	return cfg
}

// Deploy deploys app from the fixture's charm with n units sharing s.Shared.
func (s *Scenario) Deploy(t testing.TB, app string, n int, cfg map[string]any, storage bed.Storage) []*bed.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	units, err := s.C.Deploy(ctx, app, s.F.Charm, n, cfg, bed.DeployOptions{Storage: storage, SharedDir: s.Shared})
	if err != nil {
		t.Fatalf("deploying %s: %v", app, err)
	}
	return units
}

// AddUnit adds n units to app.
func (s *Scenario) AddUnit(t testing.TB, app string, n int) []*bed.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	units, err := s.C.AddUnit(ctx, app, n)
	if err != nil {
		t.Fatalf("adding %d units to %s: %v", n, app, err)
	}
	return units
}

// MarkShared creates the operator's .lxc_shared_storage marker in the shared directory.
func (s *Scenario) MarkShared(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.Shared, ".lxc_shared_storage"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Settle waits until no hook is queued or running (a unit whose hook failed for good fails t),
// then runs the checks, reporting each failure. Unless HookFailuresExpected, it also checks that
// no hook of any unit failed even once: a retry that succeeds hides a bug from the status.
func (s *Scenario) Settle(t testing.TB, checks ...Check) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := s.C.Settle(ctx); err != nil {
		t.Fatalf("cannot settle: %v\n%s", err, s.C.Status())
	}
	if !s.HookFailuresExpected {
		checks = append([]Check{s.NoHookFailed()}, checks...)
	}
	for _, chk := range checks {
		if err := chk(); err != nil {
			t.Error(err)
		}
	}
}

// Unit returns a live unit or fails t.
func (s *Scenario) Unit(t testing.TB, name string) *bed.Unit {
	t.Helper()
	u := s.C.Unit(name)
	if u == nil || u.Machine == nil {
		t.Fatalf("no unit %s with a machine", name)
	}
	return u
}

// --- the stand-in postgresql provider --------------------------------------------------------

// PostgresApp is the name of the stand-in provider application.
const PostgresApp = "postgresql"

// DeployPostgres deploys a virtual postgresql application. On database-relation-changed, once
// the requirer has asked for a database, its leader does what the PostgreSQL charm does
// (juju-contract §7.2): creates a role and the database in the fixture's real cluster, puts the
// credentials in a secret granted to the relation, and publishes endpoints, database, version
// and secret-user in its application databag.
func (s *Scenario) DeployPostgres(t testing.TB) {
	t.Helper()
	meta := jujutest.AppMeta{Provides: map[string]string{"database": "postgresql_client"}}
	s.C.DeployVirtual(PostgresApp, meta, 1, s.postgresHook)
}

// IntegratePostgres relates app's postgresql endpoint to the provider and returns the relation id.
func (s *Scenario) IntegratePostgres(t testing.TB, app string) int {
	t.Helper()
	id, err := s.C.Integrate(app+":postgresql", PostgresApp+":database")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (s *Scenario) postgresHook(h *jujutest.HookContext, info jujutest.HookInfo) error {
	if info.Hook != "database-relation-changed" {
		return nil
	}
	id := info.RelationID
	requirer := ""
	for _, r := range s.C.Model.Relations() {
		if r.ID == id {
			requirer = r.Endpoints[0].App
			if requirer == PostgresApp {
				requirer = r.Endpoints[1].App
			}
		}
	}
	get := func(app string) (map[string]string, error) {
		res := h.Run("relation-get", []string{"--format=json", "-r", fmt.Sprint(id), "--app", "-", app}, nil)
		if res.Code != 0 {
			return nil, fmt.Errorf("relation-get %s: %s", app, res.Stderr)
		}
		var bag map[string]string
		if err := json.Unmarshal(res.Stdout, &bag); err != nil {
			return nil, fmt.Errorf("relation-get %s: %v: %s", app, err, res.Stdout)
		}
		return bag, nil
	}
	req, err := get(requirer)
	if err != nil {
		return err
	}
	mine, err := get(PostgresApp)
	if err != nil {
		return err
	}
	if req["database"] == "" || mine["secret-user"] != "" {
		return nil // nothing asked yet, or already answered
	}
	user, pass, version, err := s.provision(id)
	if err != nil {
		return err
	}
	endpoint := fmt.Sprintf("%s:%d", s.F.PG.Host(), s.F.PG.Port())
	uri := fmt.Sprintf("postgresql://%s:%s@%s/%s", user, pass, endpoint, s.DB)
	res := h.Run("secret-add", []string{"username=" + user, "password=" + pass, "uris=" + uri}, nil)
	if res.Code != 0 {
		return fmt.Errorf("secret-add: %s", res.Stderr)
	}
	secret := strings.TrimSpace(string(res.Stdout))
	if res := h.Run("secret-grant", []string{secret, "-r", fmt.Sprint(id)}, nil); res.Code != 0 {
		return fmt.Errorf("secret-grant: %s", res.Stderr)
	}
	res = h.Run("relation-set", []string{"-r", fmt.Sprint(id), "--app",
		"endpoints=" + endpoint, "database=" + s.DB, "version=" + version, "secret-user=" + secret}, nil)
	if res.Code != 0 {
		return fmt.Errorf("relation-set: %s", res.Stderr)
	}
	return nil
}

// provision creates (or re-passwords) the relation's role and the scenario's database. A role of
// a later relation is made a member of the database owner, so the tables an earlier relation's
// role created stay usable after remove-relation and integrate, as with the real charm.
func (s *Scenario) provision(id int) (user, pass, version string, err error) {
	db, err := sql.Open("postgres", s.F.PG.DSN(pgtest.SuperUser, s.F.PG.SuperPassword(), "postgres"))
	if err != nil {
		return "", "", "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c := s.Charmed; c != nil {
		if err := db.QueryRowContext(ctx, `SHOW server_version`).Scan(&version); err != nil {
			return "", "", "", err
		}
		return c.User, c.Password, strings.Fields(version)[0], nil
	}
	var raw [12]byte
	rand.Read(raw[:])
	user, pass = fmt.Sprintf("relation_%d_%s", id, s.C.Bed.ID()), hex.EncodeToString(raw[:])
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, user).Scan(&exists); err != nil {
		return "", "", "", err
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	if _, err := db.ExecContext(ctx, verb+" ROLE "+pq.QuoteIdentifier(user)+" LOGIN PASSWORD "+pq.QuoteLiteral(pass)); err != nil {
		return "", "", "", err
	}
	var owner sql.NullString
	err = db.QueryRowContext(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, s.DB).Scan(&owner)
	switch {
	case err == sql.ErrNoRows:
		_, err = db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(s.DB)+" OWNER "+pq.QuoteIdentifier(user))
	case err == nil && owner.String != user:
		_, err = db.ExecContext(ctx, "GRANT "+pq.QuoteIdentifier(owner.String)+" TO "+pq.QuoteIdentifier(user))
	}
	if err != nil {
		return "", "", "", err
	}
	if err := db.QueryRowContext(ctx, `SHOW server_version`).Scan(&version); err != nil {
		return "", "", "", err
	}
	if f := strings.Fields(version); len(f) > 0 {
		version = f[0]
	}
	return user, pass, version, nil
}

// QueryDB runs a one-value query in the scenario's database as the superuser.
func (s *Scenario) QueryDB(query string, dest any) error {
	db, err := sql.Open("postgres", s.F.PG.DSN(pgtest.SuperUser, s.F.PG.SuperPassword(), s.DB))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return db.QueryRowContext(ctx, query).Scan(dest)
}

// UnitTag is "concourse-ci-machine-0" for "concourse-ci-machine/0": the worker's name too.
func UnitTag(unit string) string { return strings.ReplaceAll(unit, "/", "-") }

// AppName is the application of a unit name.
func AppName(unit string) string { return juju.AppName(unit) }
