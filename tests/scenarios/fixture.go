package scenarios

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// The Concourse releases the scenarios install, and the charm's application name.
const (
	V1  = "7.14.3"
	V2  = "8.2.5"
	App = "concourse-ci-machine"
)

// FixtureOptions tunes NewFixture. The zero value builds everything from the module.
type FixtureOptions struct {
	// CharmPath is a prebuilt .charm (or unpacked charm directory) to deploy; empty builds one
	// from ./cmd/concourse-ci-machine with tools/mkcharm, exactly as `make charm` does.
	CharmPath string
	// RefreshCharm also builds a second charm whose dispatch carries another version stamp, for
	// `juju refresh`.
	RefreshCharm bool
	// Versions are the releases to build and serve; default V1 and V2.
	Versions []string
	// ToolsDir reuses a directory made by bed.BuildTools.
	ToolsDir string
}

// Fixture is what every scenario of a process shares: the hook tools, the charm(s), the release
// tarballs, and one PostgreSQL cluster. It is torn down with t's cleanups.
type Fixture struct {
	ToolsDir     string
	Charm        *bed.Charm
	RefreshCharm *bed.Charm
	// Assets are the release tarballs by version. Each scenario serves them from its own
	// release server, so download counters and injected faults never mix between scenarios.
	Assets map[string]release.Asset
	// PG is the shared cluster; each scenario gets its own roles and database in it.
	PG *pgtest.Cluster
	// Net is a bed without machines whose bridge address PostgreSQL listens on: it outlives the
	// scenarios' own beds, and every container reaches it through its bed's host address.
	Net *bed.Bed
}

// NewFixture builds what the scenarios need. It skips (or fails under CI=true) when the host
// cannot run the bed.
func NewFixture(t testing.TB, opts FixtureOptions) *Fixture {
	t.Helper()
	bed.Require(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := bed.ModuleRoot()
	if err != nil {
		t.Fatalf("finding the module: %v", err)
	}
	dir := t.TempDir()
	f := &Fixture{ToolsDir: opts.ToolsDir, Assets: map[string]release.Asset{}}
	if f.ToolsDir == "" {
		f.ToolsDir = filepath.Join(dir, "tools")
		if err := bed.BuildTools(ctx, f.ToolsDir); err != nil {
			t.Fatalf("building the hook tools: %v", err)
		}
	}
	charmPath := opts.CharmPath
	if charmPath == "" {
		if charmPath, err = BuildCharm(ctx, root, dir, "scenario-1"); err != nil {
			t.Fatal(err)
		}
	}
	if f.Charm, err = bed.LoadCharm(charmPath, dir); err != nil {
		t.Fatalf("loading the charm: %v", err)
	}
	if opts.RefreshCharm {
		p, err := BuildCharm(ctx, root, dir, "scenario-2")
		if err != nil {
			t.Fatal(err)
		}
		if f.RefreshCharm, err = bed.LoadCharm(p, dir); err != nil {
			t.Fatalf("loading the refresh charm: %v", err)
		}
	}
	versions := opts.Versions
	if len(versions) == 0 {
		versions = []string{V1, V2}
	}
	assets := filepath.Join(dir, "releases")
	if err := os.MkdirAll(assets, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		bin := release.BuildFakeConcourse(t, v)
		a, err := release.Build(assets, v, runtime.GOARCH, bin, release.BuildOptions{})
		if err != nil {
			t.Fatalf("building the %s release: %v", v, err)
		}
		f.Assets[v] = a
	}
	f.Net = bed.New(t, bed.Options{})
	f.PG = pgtest.Start(t, pgtest.Options{Addr: f.Net.HostIP()})
	t.Logf("fixture ready in %s: charm %s, releases %v, PostgreSQL %s:%d",
		time.Since(start).Round(time.Millisecond), charmPath, versions, f.PG.Host(), f.PG.Port())
	return f
}

// BuildCharm builds dispatch stamped with version (-X main.version) and packs it with
// tools/mkcharm into dir, the way `make charm` does. It returns the .charm path.
func BuildCharm(ctx context.Context, root, dir, version string) (string, error) {
	dispatch := filepath.Join(dir, "dispatch-"+version)
	out := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.charm", App, version, runtime.GOARCH))
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version,
		"-o", dispatch, "./cmd/concourse-ci-machine")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	pack := exec.CommandContext(ctx, "go", "run", "./tools/mkcharm", "-dispatch", dispatch, "-arch", runtime.GOARCH,
		"-out", out, "metadata.yaml", "config.yaml", "actions.yaml")
	for _, cmd := range []*exec.Cmd{build, pack} {
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building the charm: %s: %v: %s", cmd.Args, err, b)
		}
	}
	return out, nil
}
