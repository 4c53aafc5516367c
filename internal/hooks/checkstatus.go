package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// checkReport is the check-status action's result: stable keys (docs/ops-observe.md lists
// them), and the problems that make healthy=false.
type checkReport struct {
	r        map[string]string
	problems []string
	verbose  bool
}

func (c *checkReport) set(key, value string) { c.r[key] = value }

// fail sets key to what went wrong and counts it against health.
func (c *checkReport) fail(key, value, problem string) {
	c.r[key] = value
	c.problems = append(c.problems, problem)
}

// checkSection adds one part of the report: the same facts the status summarises, each under
// its own keys. A new part (the upgrade helper's last-upgrade* keys, the lifecycle helper's
// worker lines) is one more entry in checkSections.
type checkSection func(u *unitRun, ctx context.Context, c *checkReport)

// checkSections run in this order; every one decides for itself whether it applies to the
// unit's role. Read-only.
var checkSections = []checkSection{
	(*unitRun).checkIdentity,
	(*unitRun).checkVersions,
	(*unitRun).checkServices,
	(*unitRun).checkShare,
	(*unitRun).checkWebAPI,
	(*unitRun).checkWorkers,
	(*unitRun).checkDatabase,
	(*unitRun).checkTSA,
	(*unitRun).checkObservability,
	(*unitRun).checkUpgrade,   // last-upgrade, last-upgrade-steps, version-line (upgrade.go)
	(*unitRun).checkLifecycle, // worker-hold, worker-draining (lifecycle.go)
	(*unitRun).checkVerbose,
}

func (u *unitRun) checkStatus(ctx context.Context) (map[string]string, error) {
	var p struct {
		Verbose bool `json:"verbose"`
	}
	if err := u.juju.ActionParams(ctx, &p); err != nil {
		return nil, err
	}
	c := &checkReport{r: map[string]string{}, verbose: p.Verbose}
	for _, section := range checkSections {
		section(u, ctx, c)
	}
	c.set("healthy", strconv.FormatBool(len(c.problems) == 0))
	if len(c.problems) > 0 {
		c.set("problems", strings.Join(c.problems, "; "))
	}
	return c.r, nil
}

func (u *unitRun) checkUpgrade(_ context.Context, c *checkReport) { u.upgradeReport(c.r) }

func (u *unitRun) checkLifecycle(ctx context.Context, c *checkReport) { u.lifecycleReport(ctx, c.r) }

func (u *unitRun) checkIdentity(_ context.Context, c *checkReport) {
	c.set("unit", u.f.Env.UnitName)
	c.set("leader", strconv.FormatBool(u.f.Leader))
	c.set("role", u.role.String())
	c.set("mode", u.cfg.Mode)
	c.set("shared-storage", u.cfg.SharedStorage)
	for name, what := range noEffectOptions(u.cfg.Opts) {
		c.set("option-"+name, what) // options Concourse has no setting for (options.go)
	}
}

// checkVersions: what is installed, what each service was started with, and the version the
// unit should run with where that choice came from (converge.go wantVersion).
func (u *unitRun) checkVersions(_ context.Context, c *checkReport) {
	store := u.checkStore()
	inst, err := store.Installed()
	c.set("installed-version", inst)
	if err != nil {
		c.fail("installed-version-error", err.Error(), "installed version: "+err.Error())
	}
	if u.state.Web != nil {
		c.set("web-version", u.state.Web.Version)
	}
	if u.state.Worker != nil {
		c.set("worker-version", u.state.Worker.Version)
	}
	target, source := u.targetWithSource()
	if target == "" {
		c.set("target-version", "none yet")
	} else {
		c.set("target-version", target)
	}
	c.set("target-source", source)
}

// targetWithSource is targetVersion (converge.go) with the reason for it.
func (u *unitRun) targetWithSource() (version, source string) {
	switch {
	case u.cfg.Version != "":
		return u.cfg.Version, "the version option"
	case u.cfg.VersionLine != "" && u.f.Peers != nil && u.f.Peers.AppData[keyTargetVersion] != "":
		return u.f.Peers.AppData[keyTargetVersion], fmt.Sprintf("the leader: the newest release of line %s when it last looked", u.cfg.VersionLine)
	case u.f.Peers != nil && u.f.Peers.AppData[keyTargetVersion] != "":
		return u.f.Peers.AppData[keyTargetVersion], "the leader: the latest Concourse release when it last looked (version is unset)"
	}
	for _, r := range u.f.Flight {
		if v := r.AppData[keyTargetVersion]; v != "" {
			return v, fmt.Sprintf("the web application %s (flight relation %d)", r.RemoteApp, r.ID)
		}
	}
	if u.cfg.Mode == "worker" {
		return "", "none: relate the flight endpoint to a web application"
	}
	return "", "none: the leader has not chosen one yet"
}

func (u *unitRun) checkServices(ctx context.Context, c *checkReport) {
	for _, s := range []struct {
		key, unit string
		want      bool
	}{{"web-service", webService, u.role.Web}, {"worker-service", workerSvc, u.role.Worker}} {
		active, err := u.deps.Services.IsActive(ctx, s.unit)
		switch {
		case err != nil:
			c.fail(s.key, "unknown: "+err.Error(), err.Error())
		case active:
			c.set(s.key, "active")
		case s.want:
			c.fail(s.key, "inactive", s.unit+" is not running")
		default:
			c.set(s.key, "inactive")
		}
	}
}

// checkShare: with shared-storage=lxc, whether the shared install root is there, whether the
// operator's marker says it is ready, and the version its .installed_version records.
func (u *unitRun) checkShare(_ context.Context, c *checkReport) {
	if u.cfg.SharedStorage != "lxc" {
		c.set("share", "not used (shared-storage="+u.cfg.SharedStorage+")")
		return
	}
	store := u.checkStore()
	err := store.CheckShared()
	var unavailable *storage.UnavailableError
	var noMarker *storage.MarkerMissingError
	mounted, marked := true, true
	switch {
	case errors.As(err, &unavailable):
		mounted, marked = false, false
		c.fail("share", err.Error(), "shared storage: "+err.Error())
	case errors.As(err, &noMarker):
		marked = false
		c.fail("share", err.Error(), "shared storage: "+err.Error())
	case err != nil:
		c.fail("share", err.Error(), "shared storage: "+err.Error())
	default:
		c.set("share", "ready")
	}
	c.set("share-mounted", strconv.FormatBool(mounted))
	c.set("share-marker", strconv.FormatBool(marked))
	c.set("shared-storage-ready", strconv.FormatBool(err == nil))
	if v, err := store.Installed(); err == nil && mounted {
		c.set("share-installed-version", v)
	}
}

func (u *unitRun) checkWebAPI(ctx context.Context, c *checkReport) {
	if !u.role.Web {
		return
	}
	// Loopback, no proxy; with TLS over HTTPS, trusting only the configured certificate.
	base := u.localWebURL()
	client, err := LocalWebClient(u.deps.Paths, base, 5*time.Second)
	var info concourse.InfoResponse
	if err == nil {
		info, err = concourse.Info(ctx, client, base)
	}
	if err == nil {
		c.set("web-api-version", info.Version)
	} else {
		c.fail("web-api", err.Error(), "web API: "+err.Error())
	}
	if t := tlsOf(u.cfg); t.On {
		c.set("tls", fmt.Sprintf("https on port %d, plain HTTP on %d redirects to it", u.cfg.WebPort, t.RedirectPort))
		if leaf, err := firstCertificate([]byte(t.Cert)); err == nil {
			c.set("tls-certificate", describeCert(leaf))
		}
	}
}

// nonKey is what a worker name may hold that an action result key may not.
var nonKey = regexp.MustCompile(`[^a-z0-9]+`)

// workerKey makes a worker name an action result key segment: lowercase letters, digits and
// single hyphens (juju.ValidActionKey); the name itself is in workers.<key>.name.
func workerKey(name string) string {
	k := strings.Trim(nonKey.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if k == "" {
		return "unnamed"
	}
	return k
}

// checkWorkers lists the workers the web knows, from its API logged in as the admin: what the
// ATC has registered, not what the units believe (a worker that cannot reach the TSA keeps
// running and retrying).
func (u *unitRun) checkWorkers(ctx context.Context, c *checkReport) {
	if !u.role.Web {
		return
	}
	workers, err := u.webWorkers(ctx)
	if err != nil {
		c.fail("workers", err.Error(), "workers: "+err.Error())
		return
	}
	counts := map[string]int{}
	for _, wk := range workers {
		counts[wk.State]++
		k := "workers." + workerKey(wk.Name)
		if _, dup := c.r[k+".name"]; dup {
			k += "-" + strconv.Itoa(len(c.r))
		}
		c.set(k+".name", wk.Name)
		c.set(k+".state", wk.State)
		c.set(k+".containers", strconv.Itoa(wk.ActiveContainers))
		c.set(k+".version", wk.Version)
	}
	c.set("workers-count", strconv.Itoa(len(workers)))
	c.set("workers-running", strconv.Itoa(counts["running"]))
	if u.role.Worker || len(workers) > 0 || u.knowsWorkers() {
		if counts["running"] == 0 {
			c.problems = append(c.problems, "no worker is running")
		}
	}
	if n := counts["stalled"]; n > 0 {
		c.problems = append(c.problems, fmt.Sprintf("%d stalled workers", n))
	}
}

// knowsWorkers reports whether some unit publishes a worker key to this web.
func (u *unitRun) knowsWorkers() bool {
	keys, _ := workerKeys(u.f)
	return len(keys) > 0
}

func (u *unitRun) webWorkers(ctx context.Context) ([]concourse.WorkerInfo, error) {
	api, err := u.adminAPI(ctx, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return concourse.Workers(ctx, api.client, api.base, api.token)
}

// localAdminAPI is this unit's web, logged in as the admin (check-status, prune-workers).
type localAdminAPI struct {
	client      *http.Client
	base, token string
}

// adminAPI logs in to this unit's web on loopback as the admin: no proxy, and with TLS only
// the configured certificate trusted (LocalWebClient).
func (u *unitRun) adminAPI(ctx context.Context, timeout time.Duration) (localAdminAPI, error) {
	pw, err := u.adminPassword(ctx)
	if err != nil {
		return localAdminAPI{}, fmt.Errorf("reading the admin password: %w", err)
	}
	if pw == "" {
		return localAdminAPI{}, errors.New("the admin password does not exist yet: the leader creates it in its next hook")
	}
	base := u.localWebURL()
	client, err := LocalWebClient(u.deps.Paths, base, timeout)
	if err != nil {
		return localAdminAPI{}, err
	}
	token, err := concourse.PasswordToken(ctx, client, base, u.cfg.AdminUser, pw)
	if err != nil {
		return localAdminAPI{}, fmt.Errorf("logging in to %s as %s: %w", base, u.cfg.AdminUser, err)
	}
	return localAdminAPI{client: client, base: base, token: token}, nil
}

// checkDatabase: whether the web reaches PostgreSQL, and the schema it holds.
func (u *unitRun) checkDatabase(ctx context.Context, c *checkReport) {
	if !u.role.Web {
		return
	}
	db, ok := u.dbConfig(ctx)
	if !ok {
		c.fail("database", "not related", "database: relate the charm to PostgreSQL")
		return
	}
	if err := u.deps.CheckDB(ctx, db, 5*time.Second); err != nil {
		c.fail("database", err.Error(), "database: "+err.Error())
		return
	}
	c.set("database", fmt.Sprintf("reachable (%s:%d)", db.Host, db.Port))
	if u.deps.SchemaVersion == nil {
		return
	}
	v, err := u.deps.SchemaVersion(ctx, db)
	if err != nil {
		c.fail("database-schema", err.Error(), "database schema: "+err.Error())
		return
	}
	c.set("database-schema", strconv.FormatInt(v, 10))
	if u.state.MigrationHold != 0 {
		c.set("database-schema-hold", strconv.FormatInt(u.state.MigrationHold, 10))
	}
}

func (u *unitRun) checkTSA(_ context.Context, c *checkReport) {
	if !u.role.Worker {
		return
	}
	hosts, _, _ := webUnits(u.f)
	if len(hosts) == 0 {
		c.fail("tsa", "no web unit known", "TSA: no web unit known")
		return
	}
	var reach []string
	for _, h := range hosts {
		conn, err := net.DialTimeout("tcp", h, 3*time.Second)
		if err != nil {
			reach = append(reach, h+" unreachable")
			c.problems = append(c.problems, "TSA "+h+" unreachable")
			continue
		}
		conn.Close()
		reach = append(reach, h+" reachable")
	}
	c.set("tsa", strings.Join(reach, ", "))
}

// checkObservability says what the monitoring and grafana-dashboard relations receive.
func (u *unitRun) checkObservability(_ context.Context, c *checkReport) {
	if len(u.f.Metrics) == 0 && len(u.f.Dashboards) == 0 {
		return
	}
	switch {
	case u.exportsMetrics():
		c.set("observability", "scrape job, alert rules and dashboard published")
	case u.cfg.Mode == "worker":
		c.set("observability", "nothing published: workers serve no metrics (relate the web application)")
	default:
		c.set("observability", "nothing published: set enable-metrics=true")
	}
}

func (u *unitRun) checkVerbose(_ context.Context, c *checkReport) {
	if !c.verbose {
		return
	}
	c.set("install-root", u.deps.Paths.Root)
	c.set("config-dir", u.deps.Paths.ConfigDir)
	c.set("binary", u.checkStore().BinaryPath())
	if names, err := envNames(u.path(fileWebEnv)); err == nil {
		c.set("web-env", names)
	}
	if names, err := envNames(u.path(fileWorkerEnv)); err == nil {
		c.set("worker-env", names)
	}
}

func (u *unitRun) checkStore() Store {
	return u.deps.NewStore(u.deps.Paths.Root, u.f.Env.UnitName, nil)
}

// envNames lists the variable names of an env file, never their values (they hold passwords).
func envNames(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	m, err := concourse.ParseEnvFile(b)
	if err != nil {
		return "", err
	}
	return strings.Join(sortedKeys(m), ","), nil
}
