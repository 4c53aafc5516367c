package hooks

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// Issue 12: a web's steady hooks make the same hook-tool calls with 1 or 200 workers, at most 15,
// and peers-relation-changed for one changed worker reads that worker only.
func TestSteadyHookCallsDoNotGrowWithWorkers(t *testing.T) {
	type cost struct{ updateStatus, configChanged, peerChanged []string }
	measure := func(workers int) cost {
		w := newWorld(t, 1, pinned)
		var calls []string
		w.wrap = func(unit string, r juju.Runner) juju.Runner {
			calls = nil
			return recorder{r: r, calls: &calls}
		}
		w.deploy()
		w.addPostgres()
		peers := w.m.RelationID(app, "peers")
		// The workers are stand-ins that publish a key and a running version, as a worker unit
		// of the charm does; only the web's hooks run.
		var evs []jujutest.Event
		var units []string
		for i := 0; i < workers; i++ {
			u := w.m.AddUnit(app)
			units = append(units, u)
			evs = append(evs, w.m.JoinEvents(peers, u)...)
			evs = append(evs, w.m.SetUnitData(peers, u, map[string]string{keyWorkerKey: testKey(t), keyRunning: "7.14.3"})...)
		}
		w.queue = nil
		for _, ev := range evs {
			if ev.Unit == u0 {
				w.mustHookRel(u0, ev.Hook, ev.RelationID, ev.RemoteUnit)
			}
		}
		w.queue = nil
		var c cost
		w.mustHook(u0, "update-status")
		c.updateStatus = calls
		w.mustHook(u0, "config-changed")
		c.configChanged = calls
		changed := units[len(units)/2]
		key := testKey(t)
		for _, ev := range w.m.SetUnitData(peers, changed, map[string]string{keyWorkerKey: key}) {
			if ev.Unit == u0 {
				w.mustHookRel(u0, ev.Hook, ev.RelationID, ev.RemoteUnit)
			}
		}
		// The changed worker's name differs between the two deployments; its read does not.
		for _, call := range calls {
			c.peerChanged = append(c.peerChanged, strings.ReplaceAll(call, changed, "<changed worker>"))
		}
		w.queue = nil
		auth := w.readFile(u0, keyAuthorized)
		if n := strings.Count(auth, "\n"); n != workers || !strings.Contains(auth, key+"\n") {
			t.Errorf("%d workers: authorized_worker_keys holds %d keys (want %d), the changed one: %t", workers, n, workers, strings.Contains(auth, key))
		}
		w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
		return c
	}
	one, many := measure(1), measure(200)
	for _, c := range []struct {
		hook      string
		one, many []string
		max       int
	}{
		// The bound. relation-ids vault-kv (issue 10) is paid for by the leader no longer
		// reading back its own database request while it stays leader.
		{"update-status", one.updateStatus, many.updateStatus, 15},
		{"config-changed", one.configChanged, many.configChanged, 15},
		{"peers-relation-changed", one.peerChanged, many.peerChanged, 0},
	} {
		if !slices.Equal(c.one, c.many) {
			t.Errorf("%s: %d hook-tool calls with 1 worker, %d with 200; want the same\n1:   %q\n200: %q", c.hook, len(c.one), len(c.many), c.one, c.many)
		}
		if c.max > 0 && len(c.many) > c.max {
			t.Errorf("%s: %d hook-tool calls; want at most %d: %q", c.hook, len(c.many), c.max, c.many)
		}
		t.Logf("%s: %d calls with 1 and with 200 workers: %q", c.hook, len(c.many), c.many)
	}
	// Nothing the hook does not use, nothing unchanged rewritten: no reads of the workers' bags,
	// no secret-get of the admin password, no relation-set or application-version-set.
	for _, c := range [][]string{many.updateStatus, many.configChanged} {
		for _, call := range c {
			if strings.HasPrefix(call, "relation-get --format=json -r 0 - ") || strings.HasPrefix(call, "relation-list") ||
				strings.HasPrefix(call, "relation-set") || strings.HasPrefix(call, "application-version-set") ||
				(strings.HasPrefix(call, "secret-get") && !strings.Contains(call, "--refresh")) {
				t.Errorf("steady hook makes %q", call)
			}
		}
	}
}

// testKey is a fresh SSH public key line (ed25519: cheap to make by the hundred).
func testKey(t testing.TB) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(p)))
}

// The admin password secret is read only when web.env does not already hold the hash of its
// password: a steady hook reads no secret, a web.env edited by hand is not trusted (the secret
// is read and the right hash written back), and a departed hook, which logs in to the API to
// retire the worker, gets the password itself.
func TestAdminSecretReadOnlyWhenNeeded(t *testing.T) {
	w := newWorld(t, 3, pinned)
	var calls []string
	w.wrap = func(unit string, r juju.Runner) juju.Runner {
		calls = nil
		return recorder{r: r, calls: &calls}
	}
	w.deploy()
	w.addPostgres()
	if err := w.hook(u0, jujutest.HookInfo{ActionName: "get-admin-password"}); err != nil {
		t.Fatal(err)
	}
	acts := w.m.Actions()
	password := acts[len(acts)-1].Results["password"]
	adminReads := func() int {
		n := 0
		for _, c := range calls {
			if strings.HasPrefix(c, "secret-get") && !strings.Contains(c, "--refresh") {
				n++
			}
		}
		return n
	}
	for _, h := range []string{"update-status", "config-changed", "leader-elected"} {
		w.mustHook(u0, h)
		if n := adminReads(); n != 0 {
			t.Errorf("%s read the admin password secret %d times; web.env already holds its hash", h, n)
		}
	}
	// Someone replaces the admin's hash in web.env: the next hook reads the secret and restores it.
	envPath := filepath.Join(w.paths(u0).ConfigDir, fileWebEnv)
	other, err := concourse.HashPassword("not-the-admin-password")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(envPath)
	env, _ := concourse.ParseEnvFile(b)
	_, old, _ := strings.Cut(env["CONCOURSE_ADD_LOCAL_USER"], ":")
	esc := func(v string) string { return strings.ReplaceAll(v, "$", `\$`) } // as RenderEnv writes it
	if !strings.Contains(string(b), esc(old)) {
		t.Fatalf("web.env does not hold the admin hash %q", old)
	}
	os.WriteFile(envPath, []byte(strings.ReplaceAll(string(b), esc(old), esc(other))), 0o640)
	w.mustHook(u0, "update-status")
	if n := adminReads(); n != 1 {
		t.Errorf("after web.env was edited, update-status read the admin secret %d times; want 1", n)
	}
	if !webEnvHasLocalUser(t, w.readFile(u0, fileWebEnv), "admin", password) {
		t.Error("web.env does not let the admin log in with the secret's password after the repair")
	}
	w.mustHook(u0, "update-status")
	if n := adminReads(); n != 0 {
		t.Errorf("the hook after the repair read the admin secret %d times; want 0", n)
	}
	// A worker leaves: the web's departed hook retires it through the API, logged in with the
	// password itself, so it reads the secret.
	var webDeparted bool
	for _, ev := range w.m.RemoveUnit(u2) {
		if ev.Unit != u0 {
			continue
		}
		if err := w.hook(ev.Unit, ev.HookInfo); err != nil {
			t.Fatal(err)
		}
		webDeparted = true
		if n := adminReads(); n != 1 {
			t.Errorf("%s read the admin secret %d times; want 1 (it logs in to retire the worker)", ev, n)
		}
	}
	if !webDeparted || !slices.Equal(w.retired, []string{"concourse-ci-machine-2"}) {
		t.Errorf("departed hook on the web: %t, workers retired %v", webDeparted, w.retired)
	}
}
