package scenarios

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
)

// TestRealHA is issue 13's HA test on the bed with the real Concourse (7.14.3) under real
// systemd: a web application of three units behind no load balancer, a worker application related
// over flight/tsa, and PostgreSQL. The three webs run the same release with the same key files
// (the leader's web-keys secret), a token one web issues is accepted by the other two, and when
// the web the worker's TSA connection goes to is removed, the worker registers again through one
// of the others.
func TestRealHA(t *testing.T) {
	// Its own fixture, bed machines and cluster: it runs beside the other scenarios (most of a
	// real scenario is waiting for Concourse: landing, heartbeats).
	t.Parallel()
	f := NewRealFixture(t)
	s := f.NewRealScenario(t)
	s.MarkShared(t)
	s.DeployPostgres(t)
	webs := []string{"web/0", "web/1", "web/2"}
	const worker = "worker/0"
	// One share for all four machines, as TestRealConcourse uses it: the release is downloaded and
	// unpacked once. houdini: the scenario is about the webs' keys and the TSA, not the runtime
	// (TestRealConcourse runs tasks on containerd), and a houdini worker starts in seconds.
	s.Deploy(t, "web", len(webs), s.Config(map[string]any{"mode": "web"}), bed.StorageShared)
	s.Deploy(t, "worker", 1, s.Config(map[string]any{"mode": "worker", "version": "", "worker-runtime": "houdini"}), bed.StorageShared)
	s.IntegratePostgres(t, "web")
	if _, err := s.C.Integrate("worker:flight", "web:tsa"); err != nil {
		t.Fatal(err)
	}
	webURL := func(w string) string { return fmt.Sprintf("http://%s:8080", s.C.Model.Address(w)) }

	step(t, "three-webs-one-key", func(t *testing.T) {
		checks := []Check{s.WorkerReady(worker, V1), s.Registered(webs[0], worker)}
		for _, w := range webs {
			checks = append(checks, s.WebReady(w, V1), s.WebVersion(w, V1))
		}
		// Each web that joins changes the worker's TSA hosts: it drains and restarts without
		// holding a hook, and its status follows in the next update-status.
		waitUpdateStatus(t, s, worker, s.WorkerReady(worker, V1))
		s.Settle(t, checks...)
		// The key files, compared by digest (never logged): one session signing key and one TSA
		// host key on all three, so the worker trusts a single public key whichever web it dials.
		for _, file := range []string{"/etc/concourse/keys/session_signing_key", "/etc/concourse/keys/tsa_host_key"} {
			sums := map[string]string{}
			for _, w := range webs {
				b, err := s.Unit(t, w).ReadFile(file)
				if err != nil || len(b) == 0 {
					t.Fatalf("%s %s: %d bytes, %v; want the key", w, file, len(b), err)
				}
				sum := sha256.Sum256(b)
				sums[w] = hex.EncodeToString(sum[:8])
			}
			if sums[webs[1]] != sums[webs[0]] || sums[webs[2]] != sums[webs[0]] {
				t.Errorf("%s differs between the webs (sha256 prefixes %v); want one key", file, sums)
			}
			t.Logf("%s: sha256 %s… on %v", file, sums[webs[0]], webs)
		}
		// Each web that joins adds a TSA host to the worker's list, and the charm restarts it.
		if starts, err := s.journalTimes(worker, WorkerService, func(m string) bool { return strings.HasPrefix(m, "Started ") }); err == nil {
			t.Logf("%s started %d times while the three webs came up", WorkerService, len(starts))
		}
		trusted, err := s.Unit(t, worker).ReadFile("/etc/concourse/keys/tsa_host_key.pub.workers")
		if n := len(strings.Split(strings.TrimSpace(string(trusted)), "\n")); err != nil || n != 1 || !strings.HasPrefix(string(trusted), "ssh-rsa ") {
			t.Errorf("%s trusts %q (%v); want the one shared TSA public key", worker, trusted, err)
		}
	})

	// No sticky sessions needed: the token one web issues is good on every web. (The real web
	// keeps an API token in the database, so this alone does not prove the key is shared: the key
	// files above do; see TestRealWebsShareKeys.)
	step(t, "token-of-one-web-works-on-all", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		base, token, err := s.AdminLogin(ctx, webs[0])
		if err != nil {
			t.Fatalf("logging in to %s: %v", webs[0], err)
		}
		for _, w := range webs {
			code, body, err := getBearer(ctx, webURL(w)+"/api/v1/user", token)
			t.Logf("%s /api/v1/user with the token of %s: %d %s", w, base, code, cut(body, 120))
			if err != nil || code != http.StatusOK || !strings.Contains(body, `"admin"`) {
				t.Errorf("%s refuses the token %s issued: %d %v %s", w, webs[0], code, err, cut(body, 200))
			}
		}
		// The check above can fail: a token no web issued is refused.
		if code, _, err := getBearer(ctx, webURL(webs[1])+"/api/v1/user", "not-a-token"); err != nil || code != http.StatusUnauthorized {
			t.Errorf("%s /api/v1/user with a made-up token: %d %v; want 401", webs[1], code, err)
		}
	})

	// The web the worker's TSA connection goes to, from the worker machine's sockets.
	var gone string
	step(t, "find-the-workers-tsa", func(t *testing.T) {
		conns := waitTSAConnection(t, s, worker, webs)
		gone = conns[0]
		fly := f.NewFly(t, V1)
		flyLogin(t, s, fly, gone)
		state, addr := waitWorkerVia(t, fly, UnitTag(worker), s.C.Model.Address(gone))
		t.Logf("%s's TSA connection goes to %s; fly workers: %s %s at %s", worker, gone, UnitTag(worker), state, addr)
	})

	step(t, "remove-that-web", func(t *testing.T) {
		rest := slices.DeleteFunc(slices.Clone(webs), func(w string) bool { return w == gone })
		before, err := s.Snap(worker)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := s.C.RemoveUnit(gone); err != nil {
			t.Fatal(err)
		}
		waitUpdateStatus(t, s, worker, s.WorkerReady(worker, V1))
		s.Settle(t, s.WebReady(rest[0], V1), s.WebReady(rest[1], V1), s.WorkerReady(worker, V1))
		settled := time.Since(start)
		t.Logf("hooks of the removal that took over 2 s: %v", slowHooks(s, start, 2*time.Second))
		// The worker's restart lands it first (SIGUSR1, see concourse.WorkerUnit): how long that
		// took is most of the time above.
		stopping, err1 := s.journalTimes(worker, WorkerService, func(m string) bool { return strings.HasPrefix(m, "Stopping ") })
		stopped, err2 := s.journalTimes(worker, WorkerService, func(m string) bool { return strings.HasPrefix(m, "Stopped ") })
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		for i, st := range stopping {
			if st.After(start) && i < len(stopped) {
				t.Logf("%s landed and stopped in %s (%s)", WorkerService, stopped[i].Sub(st).Round(time.Millisecond), st.Format(time.StampMilli))
			}
		}
		conns := waitTSAConnection(t, s, worker, rest)
		fly := f.NewFly(t, V1)
		flyLogin(t, s, fly, rest[0])
		// The registration is the worker's again, not a row left from before: the garden address
		// the TSA forwards is on the web the worker dials now.
		state, addr := waitWorkerVia(t, fly, UnitTag(worker), s.C.Model.Address(conns[0]))
		after, err := s.Snap(worker)
		if err != nil {
			t.Fatal(err)
		}
		restarted := "without a restart"
		if k := worker + " " + WorkerService; after[k].ActiveSince != before[k].ActiveSince {
			restarted = "after a restart (its TSA list lost " + gone + ")"
		}
		t.Logf("removed %s: settled in %s; %s running again %s through %s after %s (fly workers: %s at %s)",
			gone, settled.Round(time.Millisecond), worker, restarted, conns[0], time.Since(start).Round(time.Millisecond), state, addr)
	})
}

// waitTSAConnection polls (bounded, 90 s) the established TCP connections of unit to port 2222
// (`ss` on its machine) until they all go to webs among candidates, and returns those webs.
func waitTSAConnection(t *testing.T, s *Scenario, unit string, candidates []string) []string {
	t.Helper()
	byAddr := map[string]string{}
	for _, w := range candidates {
		byAddr[s.C.Model.Address(w)] = w
	}
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, stderr, code, err := s.Unit(t, unit).Exec(ctx, nil, "ss", "-Htn", "state", "established", "( dport = :2222 )")
		cancel()
		last = strings.TrimSpace(string(out) + string(stderr))
		var webs []string
		ok := err == nil && code == 0
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fields := strings.Fields(line)
			if len(fields) < 4 {
				continue
			}
			host, _, _ := net.SplitHostPort(fields[len(fields)-1])
			w, known := byAddr[host]
			ok = ok && known
			if known && !slices.Contains(webs, w) {
				webs = append(webs, w)
			}
		}
		if ok && len(webs) > 0 {
			return webs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's TSA connections: %q (exit %d, %v); want them to webs among %v", unit, last, code, err, candidates)
		}
		time.Sleep(time.Second)
	}
}

// waitWorkerVia polls `fly workers --json` (bounded, 2 minutes) until the worker is running with
// its garden address forwarded by the TSA on host (the web it is connected to), and returns its
// state and address.
func waitWorkerVia(t *testing.T, fly *Fly, name, host string) (state, addr string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for {
		out, err := fly.Run(30*time.Second, "workers", "--json")
		last = fmt.Sprint(err)
		if err == nil {
			var list []struct {
				Name  string `json:"name"`
				State string `json:"state"`
				Addr  string `json:"addr"`
			}
			if err = json.Unmarshal([]byte(out), &list); err == nil {
				last = fmt.Sprintf("%+v", list)
				for _, w := range list {
					if h, _, _ := net.SplitHostPort(w.Addr); w.Name == name && w.State == "running" && h == host {
						return w.State, w.Addr
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fly workers: %s; want %s running with its garden address on %s", last, name, host)
		}
		time.Sleep(time.Second)
	}
}

// getBearer GETs url with the bearer token and returns the status and body.
func getBearer(ctx context.Context, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), err
}

// slowHooks lists the hooks of every unit that started after since and ran longer than min.
func slowHooks(s *Scenario, since time.Time, min time.Duration) []string {
	var slow []string
	for _, app := range s.C.Model.Apps() {
		for _, u := range s.C.Units(app) {
			for _, r := range u.Hooks() {
				if r.Start.After(since) && r.Duration > min {
					slow = append(slow, u.Name+" "+r.String())
				}
			}
		}
	}
	return slow
}
