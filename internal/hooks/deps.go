package hooks

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// Juju is the slice of the hook-tool client the handlers use (juju.Client satisfies it; tests hand
// in the same client over jujutest's in-memory model).
type Juju interface {
	IsLeader(ctx context.Context) (bool, error)
	Config(ctx context.Context) (map[string]any, error)
	RelationIDs(ctx context.Context, endpoint string) ([]int, error)
	RelationUnits(ctx context.Context, id int) ([]string, error)
	RelationApp(ctx context.Context, id int) (string, error)
	RelationData(ctx context.Context, id int, unit string) (map[string]string, error)
	AppRelationData(ctx context.Context, id int, app string) (map[string]string, error)
	SetRelationData(ctx context.Context, id int, data map[string]string) error
	SetAppRelationData(ctx context.Context, id int, data map[string]string) error
	SetStatus(ctx context.Context, s juju.Status) error
	SetAppVersion(ctx context.Context, v string) error
	Log(ctx context.Context, level juju.LogLevel, msg string) error
	OpenPort(ctx context.Context, p juju.Port) error
	ClosePort(ctx context.Context, p juju.Port) error
	OpenedPorts(ctx context.Context) ([]juju.Port, error)
	PrivateAddress(ctx context.Context) (string, error)
	NetworkGet(ctx context.Context, binding string) (juju.Network, error)
	NetworkGetRelation(ctx context.Context, binding string, id int) (juju.Network, error)
	ActionParams(ctx context.Context, v any) error
	SetActionResults(ctx context.Context, results map[string]string) error
	FailAction(ctx context.Context, msg string) error
	ActionLog(ctx context.Context, msg string) error
	AddSecret(ctx context.Context, o juju.SecretAddOptions) (string, error)
	GetSecret(ctx context.Context, o juju.SecretGetOptions) (map[string]string, error)
	SetSecret(ctx context.Context, id string, content map[string]string) error
	ResourceGet(ctx context.Context, name string) (string, error)
}

// Store is the install root as the handlers use it (storage.Store satisfies it).
type Store interface {
	CheckShared() error
	CheckWritable() error
	Installed() (string, error)
	BinaryPath() string
	Install(ctx context.Context, version string, src storage.Source) (storage.InstallResult, error)
	WaitInstalled(ctx context.Context, version string, maxWait time.Duration) (bool, error)
	VerifyQuick(probe func(binary string) error) error
	RecordRunning(version string, localFallbackDir string) error
	ForgetRunning() error
}

// Services controls systemd units (concourse.Systemd satisfies it).
type Services interface {
	DaemonReload(ctx context.Context) error
	Enable(ctx context.Context, unit string) error
	Disable(ctx context.Context, unit string) error
	Start(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
	IsActive(ctx context.Context, unit string) (bool, error)
	Kill(ctx context.Context, unit, signal string) error
}

// Migrator runs `concourse migrate` (concourse.Migrator satisfies it).
type Migrator interface {
	SupportedVersion(ctx context.Context) (int64, error)
	CurrentVersion(ctx context.Context) (int64, error)
	MigrateToLatest(ctx context.Context) error
	MigrateTo(ctx context.Context, v int64) error
}

// Paths are every location the charm writes on a unit; tests point them into temp dirs.
type Paths struct {
	Root       string // install root, shared in lxc mode: /var/lib/concourse
	ConfigDir  string // env files and keys, unit-local: /etc/concourse
	WorkDir    string // worker work dir, unit-local: /var/lib/concourse-worker/work
	StateDir   string // what services were started with: /var/lib/concourse-charm
	SystemdDir string // /etc/systemd/system
	// Host is the machine's root as GPU and task-folder discovery sees it (/dev, /srv, the
	// toolkit's binaries); "" is "/". Tests point it at a fake tree.
	Host string
}

// DefaultPaths are the real locations on a unit.
func DefaultPaths() Paths {
	return Paths{
		Root:       "/var/lib/concourse",
		ConfigDir:  "/etc/concourse",
		WorkDir:    "/var/lib/concourse-worker/work",
		StateDir:   "/var/lib/concourse-charm",
		SystemdDir: "/etc/systemd/system",
	}
}

// Deps is everything a hook needs from the outside world; cmd/concourse-ci-machine builds the real
// ones, tests build fakes. Nothing here is a package-level variable.
type Deps struct {
	Juju     Juju
	Env      juju.Env
	Paths    Paths
	GOARCH   string
	HTTP     *http.Client // downloads and the GitHub API, proxies already applied
	Services Services
	// NewStore opens the install root; progress may be nil.
	NewStore func(root, unit string, progress func(done, total int64)) Store
	// NewMigrator builds a migrator for one binary and its database environment.
	NewMigrator func(binary string, env []string) Migrator
	// CheckDB proves credentials with a real connection before the web (re)starts.
	CheckDB func(ctx context.Context, c concourse.DBConfig, timeout time.Duration) error
	// PrepareDB readies a database in the postgresql charm's role model before migrating and
	// starting the web (concourse.PrepareRoleModel); nil skips it.
	PrepareDB func(ctx context.Context, c concourse.DBConfig, timeout time.Duration) (concourse.RoleModel, error)
	// SchemaVersion reads the database's Concourse schema (concourse.SchemaVersion) for
	// check-status; nil leaves it out of the report.
	SchemaVersion func(ctx context.Context, c concourse.DBConfig) (int64, error)
	// WebInfo asks a web node's /api/v1/info for its version; nil skips the readiness probe.
	WebInfo func(ctx context.Context, baseURL string) (string, error)
	// RetireWorker retires a worker through the web's API at baseURL, logged in as user
	// (concourse.RetireWorker); found is false when the web knows no such worker. nil skips it.
	RetireWorker func(ctx context.Context, baseURL, user, password, worker string) (found bool, err error)
	// WebStartWait bounds how long a hook waits for a (re)started web to answer (default 1 min).
	WebStartWait time.Duration
	// ProbeVersion runs `<binary> --version` and returns the bare version.
	ProbeVersion func(ctx context.Context, binary string) (string, error)
	// EnsureUser returns the uid/gid of the web service user, creating it when missing.
	EnsureUser func(name string) (uid, gid int, err error)
	Random     io.Reader
	Now        func() time.Time
	Stderr     io.Writer // Juju records it in the unit log at WARNING, the handler's own trace
	KeyBits    int       // RSA size; 4096 in production, smaller in tests
	// InstallWait bounds how long a waiting unit blocks in one hook on an install under way.
	InstallWait time.Duration
	GitHubAPI   string      // https://api.github.com, a loopback server in tests
	Upgrade     UpgradeDeps // pg_dump and the component API of the upgrade steps (upgrade.go)
	// GardenAddr is the worker's Garden API (host:port) the Draining status counts containers
	// with; "" → concourse.DefaultGardenAddr. Tests serve a fake one.
	GardenAddr string
}
