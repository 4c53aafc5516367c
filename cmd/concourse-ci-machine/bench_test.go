package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/hooks"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// benchChildEnv makes the test binary a web unit's dispatch (see TestMain).
const benchChildEnv = "CCM_BENCH_DISPATCH"

// TestMain lets the test binary stand in for the charm's dispatch in BenchmarkWebHookCost. A web
// hook of the real binary would create the `concourse` system user (useradd) and prove the
// database with a real connection; on this host neither is allowed nor needed in a steady hook
// (the database is checked only when the web (re)starts), so the child runs the charm's own
// dispatch path (juju.ParseEnv, the rpc or exec runner, realDeps, hooks.Run) with those two
// replaced. The floor is the same child dispatching a hook the charm ignores.
func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) != "" {
		os.Exit(benchDispatch())
	}
	os.Exit(m.Run())
}

func benchDispatch() int {
	env := juju.ParseEnv(os.Getenv, "dispatch")
	var runner juju.Runner = juju.ExecRunner{}
	if os.Getenv(benchChildEnv) != "exec" {
		dir, err := os.Getwd()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		runner = juju.NewRPCRunner(env, dir, runner)
	}
	pf := pathFlags{prefix: os.Getenv("CCM_BENCH_PREFIX")}
	deps := realDeps(env, pf.paths(), os.Stderr)
	deps.Juju = juju.NewClient(runner, env)
	deps.EnsureUser = func(string) (int, int, error) { return os.Getuid(), os.Getgid(), nil }
	deps.CheckDB = func(context.Context, concourse.DBConfig, time.Duration) error { return nil }
	deps.PrepareDB = nil
	deps.KeyBits = 2048
	if err := hooks.Run(context.Background(), deps); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

// webBench is a web unit (the leader) with n workers on the peer relation, its release installed,
// PostgreSQL related, its API answered by a stand-in, driven over a jujuc socket.
type webBench struct {
	model    *jujutest.Model
	sock     string
	prefix   string
	pathDirs string
	charmDir string
	calls    atomic.Int64
	current  atomic.Pointer[jujutest.HookContext]
	web      string
	workers  []string
	peers    int
	keys     []string // fresh keys for peers-relation-changed
	next     int
}

// benchKey is a public key line the size of the worker keys the charm makes (RSA 4096): a random
// odd 4096-bit modulus, made in microseconds. The charm only parses public keys, so it costs what
// a real one does; generating 1000 real RSA keys would take minutes.
func benchKey(b testing.TB) string {
	n := make([]byte, 512)
	if _, err := rand.Read(n); err != nil {
		b.Fatal(err)
	}
	n[0] |= 0x80
	n[511] |= 1
	p, err := ssh.NewPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537})
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(p)))
}

func newWebBench(b *testing.B, bins binaries, n int) *webBench {
	b.Helper()
	dir := b.TempDir()
	u := &webBench{prefix: filepath.Join(dir, "unit"), sock: filepath.Join(dir, "agent.socket"), charmDir: filepath.Dir(bins.dispatch)}
	// --version for the probes; the schema versions for the migrator (already at the latest).
	u.pathDirs = steadyUnitFiles(b, bins, dir, u.prefix, "concourse-ci-machine/0",
		"#!/bin/sh\ncase \"$*\" in *db-version*) echo 1746768931;; *) echo 7.14.3;; esac\n")
	// The web's API, as the readiness probe sees it.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"version":"7.14.3","worker_version":"2.5","external_url":"http://127.0.0.1"}`)
	}))
	b.Cleanup(api.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(api.URL, "http://"))

	u.model = jujutest.NewModel("bench", "1b9e6e3c-0000-4000-8000-00000000000c")
	meta := jujutest.AppMeta{Peers: map[string]string{"peers": "concourse-ci_peers"}, Provides: map[string]string{"tsa": "concourse-ci_tsa", "monitoring": "prometheus_scrape"},
		Requires: map[string]string{"postgresql": "postgresql_client", "flight": "concourse-ci_tsa"}}
	u.model.AddApp("concourse-ci-machine", meta, map[string]any{"version": "7.14.3", "mode": "auto", "web-port": port})
	u.web = u.model.AddUnit("concourse-ci-machine")
	u.peers = u.model.RelationID("concourse-ci-machine", "peers")
	for i := 0; i < n; i++ {
		w := u.model.AddUnit("concourse-ci-machine")
		u.workers = append(u.workers, w)
		u.model.SetUnitData(u.peers, w, map[string]string{"worker-public-key": benchKey(b), "running-version": "7.14.3"})
	}
	u.model.AddApp("postgresql", jujutest.AppMeta{Provides: map[string]string{"database": "postgresql_client"}}, nil)
	pg := u.model.AddUnit("postgresql")
	_ = pg
	db := u.model.Relate("concourse-ci-machine", "postgresql", "postgresql", "database")
	uri := u.model.AddSecret("postgresql", map[string]string{"username": "relation-1", "password": "s3cret-pw"}, "")
	u.model.GrantSecret(uri, db, "")
	u.model.SetAppData(db, "postgresql", map[string]string{"endpoints": "127.0.0.1:5432", "database": "concourse", "secret-user": uri})
	serveAgent(b, u.sock, &u.calls, &u.current)
	// install reads everything (no cache yet); the next hooks create the admin secret, start the
	// web and settle what it publishes.
	for _, h := range []string{"install", "leader-elected", "config-changed", "start", "update-status"} {
		if _, err := u.dispatch(bins, jujutest.HookInfo{Hook: h, RelationID: -1}, "rpc"); err != nil {
			b.Fatal(err)
		}
	}
	if s := u.model.UnitStatus(u.web); !strings.HasPrefix(s.Message, "Web server ready (v7.14.3)") {
		b.Fatalf("setup: web status %+v", s)
	}
	for range 64 {
		u.keys = append(u.keys, benchKey(b))
	}
	return u
}

// dispatch runs one hook on the web like the unit agent: commit on success.
func (u *webBench) dispatch(bins binaries, info jujutest.HookInfo, runner string) (time.Duration, error) {
	hc := u.model.NewHookContext(u.web, info)
	hc.AgentSocketAddress, hc.AgentSocketNetwork = u.sock, "unix"
	hc.CharmDir = u.charmDir
	u.current.Store(hc)
	cmd := exec.Command(os.Args[0])
	cmd.Dir = hc.CharmDir
	cmd.Env = append(hc.Env(), "PATH="+u.pathDirs, benchChildEnv+"="+runner, "CCM_BENCH_PREFIX="+u.prefix)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		hc.Discard()
		return took, fmt.Errorf("%s: %v\n%s", info.Hook, err, stderr.String())
	}
	hc.Commit()
	return took, nil
}

// BenchmarkWebHookCost reports, for a web unit with N workers, the hook-tool calls and the
// median time of update-status, config-changed and peers-relation-changed (one worker's key
// changed), over the agent socket (rpc) and with every tool a process (exec), each also as a
// ratio to a floor measured in the same run: a dispatch of the same binary for a hook the charm
// ignores, which makes no hook-tool call. Floor and hook alternate, so both see the same machine.
//
//	go test ./cmd/concourse-ci-machine -run '^$' -bench WebHookCost -benchtime 20x
func BenchmarkWebHookCost(b *testing.B) {
	bins := buildBinaries(b)
	sizes := []int{1, 10, 50, 200, 1000}
	if testing.Short() {
		sizes = []int{1, 10}
	}
	for _, n := range sizes {
		var u *webBench
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			if u == nil {
				u = newWebBench(b, bins, n)
			}
			for _, runner := range []string{"rpc", "exec"} {
				for _, hook := range []string{"update-status", "config-changed", "peers-relation-changed"} {
					b.Run(runner+"/"+hook, func(b *testing.B) { u.measure(b, bins, runner, hook) })
				}
			}
		})
	}
}

func (u *webBench) measure(b *testing.B, bins binaries, runner, hook string) {
	var times, floor []time.Duration
	calls := int64(0)
	for i := 0; i < b.N; i++ {
		t, err := u.dispatch(bins, jujutest.HookInfo{Hook: "bench-floor-ignored", RelationID: -1}, runner)
		if err != nil {
			b.Fatal(err)
		}
		floor = append(floor, t)
		info := jujutest.HookInfo{Hook: hook, RelationID: -1}
		if hook == "peers-relation-changed" {
			// One worker publishes a new key; the web hears about it.
			w := u.workers[u.next%len(u.workers)]
			u.model.SetUnitData(u.peers, w, map[string]string{"worker-public-key": u.keys[u.next%len(u.keys)]})
			u.next++
			info = jujutest.HookInfo{Hook: hook, RelationID: u.peers, RemoteUnit: w, RemoteApp: "concourse-ci-machine"}
		}
		before := u.calls.Load()
		if t, err = u.dispatch(bins, info, runner); err != nil {
			b.Fatal(err)
		}
		calls += u.calls.Load() - before
		times = append(times, t)
	}
	if s := u.model.UnitStatus(u.web); !strings.HasPrefix(s.Message, "Web server ready (v7.14.3)") {
		b.Fatalf("web status after %s: %+v", hook, s)
	}
	med, fl := median(times), median(floor)
	b.ReportMetric(float64(calls)/float64(b.N), "tool-calls/op")
	b.ReportMetric(float64(med.Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(fl.Microseconds())/1000, "floor-ms")
	b.ReportMetric(float64(med)/float64(fl), "x-floor")
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
