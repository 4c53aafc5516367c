// Command demo is the live demo behind `make demo`: the seed report's deployment (two units,
// mode=auto, shared-storage=lxc) and then PostgreSQL, run on the multi-unit test bed with the
// charm `make charm` built. It prints a juju-status-like table after every step, the unit status
// changes as they happen, and the release server's download count; it checks the outcome with
// the scenario tests' checks, and tears everything down at the end (or on Ctrl-C).
//
//	sudo make demo
//	go run ./tests/demo -charm build/concourse-ci-machine_amd64.charm
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/scenarios"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout))
}

func run(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	charm := fs.String("charm", "", "charm to deploy (default build/concourse-ci-machine_<arch>.charm, made by `make charm`)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if reason := bed.Missing(); reason != "" {
		fmt.Fprintf(os.Stderr, "demo: cannot run on this machine: %s.\n"+
			"It boots systemd-nspawn containers, so it needs root. On Debian:\n"+
			"  apt-get install -y systemd-container debootstrap iproute2 postgresql-15 && sudo make demo\n", reason)
		return 2
	}
	if *charm == "" {
		root, err := bed.ModuleRoot()
		if err != nil {
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
			return 2
		}
		*charm = filepath.Join(root, "build", fmt.Sprintf("%s_%s.charm", scenarios.App, runtime.GOARCH))
	}
	if _, err := os.Stat(*charm); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v: run `make charm` first (or `make demo`, which does)\n", err)
		return 2
	}

	t, err := newDemoTB("demo", out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		t.run(func(t *demoTB) { demo(t, *charm, out) })
		close(done)
	}()
	select {
	case <-done:
	case s := <-sigs:
		fmt.Fprintf(out, "\n%s: tearing down…\n", s)
		t.Fail()
	}
	signal.Stop(sigs)
	title(out, "Teardown: stopping the containers, the bridge, PostgreSQL and the servers")
	t.finish()
	switch {
	case t.Skipped():
		fmt.Fprintln(out, "demo skipped")
		return 2
	case t.Failed():
		fmt.Fprintln(out, "demo FAILED (see ✗ above)")
		return 1
	}
	fmt.Fprintln(out, "demo passed; nothing left behind")
	return 0
}

func demo(t *demoTB, charm string, out io.Writer) {
	title(out, "Preparing: hook tools, a Concourse "+scenarios.V1+" release, PostgreSQL, charm "+charm)
	f := scenarios.NewFixture(t, scenarios.FixtureOptions{CharmPath: charm, Versions: []string{scenarios.V1}})
	s := f.NewScenario(t)
	w := watch(s, out)
	defer w.stop()
	u0, u1 := scenarios.App+"/0", scenarios.App+"/1"

	title(out, "juju deploy "+scenarios.App+" -n 2 --config mode=auto --config shared-storage=lxc --config version="+scenarios.V1)
	fmt.Fprintf(out, "  every unit mounts %s at /var/lib/concourse; release-url=%s\n", s.Shared, s.ReleaseURL())
	s.Deploy(t, scenarios.App, 2, s.Config(nil), bed.StorageShared)
	show(t, s, w, out)

	title(out, "touch "+filepath.Join(s.Shared, ".lxc_shared_storage")+"  (the operator's setup), then update-status")
	s.MarkShared(t)
	s.C.UpdateStatus()
	show(t, s, w, out)
	share(s, out)
	verify(t, "the seed report",
		s.HasStatus(u0, "waiting", "Waiting for PostgreSQL database..."),
		s.WorkerReady(u1, scenarios.V1),
		s.Downloads(scenarios.V1, 1),
		s.FileIs(u1, scenarios.Root+"/.installed_version", scenarios.V1),
		s.SameInode(scenarios.Root+"/bin/concourse", u0, u1),
	)

	title(out, "juju deploy postgresql && juju integrate "+scenarios.App+" postgresql")
	s.DeployPostgres(t)
	s.IntegratePostgres(t, scenarios.App)
	show(t, s, w, out)

	title(out, "juju run "+u0+" get-admin-password, then GET /api/v1/workers")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	verify(t, "PostgreSQL integrated",
		s.WebReady(u0, scenarios.V1),
		s.WorkerReady(u1, scenarios.V1),
		s.WebVersion(u0, scenarios.V1),
		s.Registered(u0, u1),
		s.Downloads(scenarios.V1, 1),
	)
	if base, token, err := s.AdminLogin(ctx, u0); err == nil {
		fmt.Fprintf(out, "  logged in to %s as the admin (password from the action)\n", base)
		workers(ctx, s, base, token, out)
	} else {
		t.Errorf("logging in: %v", err)
	}
}

// show settles and prints the status table and the download count.
func show(t *demoTB, s *scenarios.Scenario, w *watcher, out io.Writer) {
	start := time.Now()
	s.Settle(t)
	w.poll()
	fmt.Fprintf(out, "\n  settled in %s\n\n", time.Since(start).Round(time.Millisecond))
	for _, line := range strings.Split(strings.TrimRight(s.C.Status().String(), "\n"), "\n") {
		fmt.Fprintf(out, "  %s\n", line)
	}
	var names []string
	for v := range s.F.Assets {
		names = append(names, v)
	}
	sort.Strings(names)
	for _, v := range names {
		a := s.F.Assets[v]
		fmt.Fprintf(out, "\n  release server: %s downloaded %d time(s) (%d bytes)\n", a.Name, s.Rel.Downloads(a.Name), a.Size)
	}
}

// share lists the shared directory as the host sees it (the seed report's table).
func share(s *scenarios.Scenario, out io.Writer) {
	fmt.Fprintf(out, "\n  %s:\n", s.Shared)
	entries, err := os.ReadDir(s.Shared)
	if err != nil {
		fmt.Fprintf(out, "    %v\n", err)
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		desc := fmt.Sprintf("%d bytes", info.Size())
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(filepath.Join(s.Shared, e.Name()))
			desc = "-> " + target
		case info.IsDir():
			desc = "directory"
		}
		fmt.Fprintf(out, "    %-22s %s\n", e.Name(), desc)
	}
	for _, u := range s.C.Units(scenarios.App) {
		if st, err := u.Stat(scenarios.Root + "/bin/concourse"); err == nil {
			fmt.Fprintf(out, "  %s sees /var/lib/concourse/bin/concourse as device %d inode %d\n", u.Name, st.Dev, st.Ino)
		}
	}
}

func workers(ctx context.Context, s *scenarios.Scenario, base, token string, out io.Writer) {
	list, err := s.Workers(ctx, base, token)
	if err != nil {
		fmt.Fprintf(out, "  workers: %v\n", err)
		return
	}
	for _, w := range list {
		fmt.Fprintf(out, "  worker %-26s %-8s platform %s\n", w.Name, w.State, w.Platform)
	}
}

// verify runs checks and prints each outcome.
func verify(t *demoTB, what string, checks ...scenarios.Check) {
	fmt.Fprintf(t.out, "\n  checking %s:\n", what)
	failed := 0
	for _, c := range checks {
		if err := c(); err != nil {
			t.Errorf("%v", err)
			failed++
		}
	}
	if failed == 0 {
		fmt.Fprintf(t.out, "    ✓ all %d checks passed\n", len(checks))
	}
}

// watcher prints every unit's workload status as it changes.
type watcher struct {
	s     *scenarios.Scenario
	out   io.Writer
	start time.Time
	quit  chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	seen map[string]string
}

// watch polls the statuses every 100 ms until stop.
func watch(s *scenarios.Scenario, out io.Writer) *watcher {
	w := &watcher{s: s, out: out, start: time.Now(), quit: make(chan struct{}), done: make(chan struct{}), seen: map[string]string{}}
	go func() {
		defer close(w.done)
		for {
			w.poll()
			select {
			case <-w.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

// poll prints the changes since the last poll.
func (w *watcher) poll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, u := range w.s.C.Status().Units {
		now := u.Workload.Status + " " + u.Workload.Message
		if u.Agent == "error" {
			now = "error " + u.Workload.Message
		}
		if w.seen[u.Unit] != now {
			w.seen[u.Unit] = now
			fmt.Fprintf(w.out, "  %6.1fs  %-24s %s\n", time.Since(w.start).Seconds(), u.Unit, now)
		}
	}
}

func (w *watcher) stop() { close(w.quit); <-w.done }

func title(out io.Writer, s string) {
	fmt.Fprintf(out, "\n━━ %s\n", s)
}
