package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// RealRuntime is the worker-runtime the real scenarios deploy with: the charm's default,
// containerd, with the runc, CNI plugins and init the release carries. The bed's machines nest it
// (unified cgroup hierarchy, bpf(2) allowed, iptables in the image: see tests/bed). Without them
// runc fails with "mkdir /sys/fs/cgroup/cpuset/garden: read-only file system" (v1 controllers
// mounted read-only by nspawn on a hybrid host) or "bpf_prog_query(BPF_CGROUP_DEVICE) failed:
// operation not permitted", and the worker exits without iptables. $CCM_REAL_RUNTIME=houdini
// runs the same steps on houdini, for a host where containerd cannot nest.
func RealRuntime() string {
	if r := os.Getenv("CCM_REAL_RUNTIME"); r != "" {
		return r
	}
	return "containerd"
}

// RealFixture is a Fixture whose releases carry the real Concourse binaries, plus the fly of
// each version.
type RealFixture struct {
	*Fixture
	Set realconcourse.Set
	// Missing lists what BuildReal could not put in the releases (the containerd runtime's
	// binaries when the host lacks the Debian packages); a houdini worker needs none of it.
	Missing map[string][]string
}

// NewRealFixture builds the charm, the hook tools and real releases of V1 and V2, and starts the
// shared PostgreSQL. It skips when the bed or the real binaries are unavailable (and fails under
// CI=true), naming how to get them.
func NewRealFixture(t testing.TB) *RealFixture {
	t.Helper()
	bed.Require(t)
	set := realconcourse.Require(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := bed.ModuleRoot()
	if err != nil {
		t.Fatalf("finding the module: %v", err)
	}
	dir := t.TempDir()
	f := &RealFixture{Fixture: &Fixture{ToolsDir: *toolsFlag, Assets: map[string]release.Asset{}}, Set: set, Missing: map[string][]string{}}
	if f.ToolsDir == "" {
		f.ToolsDir = filepath.Join(dir, "tools")
		if err := bed.BuildTools(ctx, f.ToolsDir); err != nil {
			t.Fatalf("building the hook tools: %v", err)
		}
	}
	charmPath := *charmFlag
	if charmPath == "" {
		if charmPath, err = BuildCharm(ctx, root, dir, "real-1"); err != nil {
			t.Fatal(err)
		}
	}
	if f.Charm, err = bed.LoadCharm(charmPath, dir); err != nil {
		t.Fatalf("loading the charm: %v", err)
	}
	assets := filepath.Join(dir, "releases")
	if err := os.MkdirAll(assets, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{V1, V2} {
		a, missing, err := release.BuildReal(assets, v, runtime.GOARCH, set, release.RealOptions{})
		if err != nil {
			t.Fatalf("building the real %s release: %v", v, err)
		}
		f.Assets[v], f.Missing[v] = a, missing
	}
	if RealRuntime() == "containerd" && len(f.Missing[V1]) > 0 {
		t.Fatalf("CCM_REAL_RUNTIME=containerd but the releases lack %v (apt-get install containerd runc containernetworking-plugins)", f.Missing[V1])
	}
	f.Net = bed.New(t, bed.Options{})
	f.PG = pgtest.Start(t, pgtest.Options{Addr: f.Net.HostIP()})
	t.Logf("real fixture ready in %s: charm %s, releases %s and %s (%d MB), runtime %s",
		time.Since(start).Round(time.Millisecond), charmPath, V1, V2, f.Assets[V1].Size>>20, RealRuntime())
	return f
}

// NewRealScenario is NewScenario plus a cleanup that kills the Concourse services before the bed
// powers the machines off: a worker's unit stops with SIGUSR1 (land) and waits up to 300 s for a
// TSA that is going down at the same moment, far past the bed's stop timeout.
func (f *RealFixture) NewRealScenario(t testing.TB) *Scenario {
	t.Helper()
	s := f.NewScenario(t)
	// Registered after the controller's cleanups, so it runs before them (LIFO).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		// Every application's units: a scenario may deploy web and worker applications.
		for _, app := range s.C.Model.Apps() {
			for _, u := range s.C.Units(app) {
				if u.Machine == nil || !u.Machine.Running() {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					u.Exec(ctx, nil, "systemctl", "kill", "--signal=SIGKILL", WorkerService, WebService)
				}()
			}
		}
		wg.Wait()
	})
	return s
}

// Fly runs the real fly of version against target, with its own HOME (the .flyrc lives there).
type Fly struct {
	Bin, Home, Target string
}

// NewFly returns a fly of version with a fresh HOME under t's temp dir.
func (f *RealFixture) NewFly(t testing.TB, version string) *Fly {
	t.Helper()
	home := t.TempDir()
	return &Fly{Bin: f.Set.Fly(version), Home: home, Target: "bed"}
}

// Run runs fly -t <target> args… with a bound of limit; the error carries the output.
func (fl *Fly) Run(limit time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, fl.Bin, append([]string{"-t", fl.Target}, args...)...)
	cmd.Env = []string{"HOME=" + fl.Home, "PATH=/usr/bin:/bin"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("fly %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
