package hooks

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

var webOnly = map[string]any{"mode": "web", "version": "7.14.3", "shared-storage": "lxc"}

// webKeyFiles are the private and public key files every web unit must hold identically.
var webKeyFiles = []string{keySession, keySession + ".pub", keyTSAHostKey, keyTSAHostKey + ".pub"}

// sameWebKeys fails unless every unit holds byte-identical key files, and returns them.
func (w *world) sameWebKeys(units ...string) map[string]string {
	w.t.Helper()
	first := map[string]string{}
	for _, rel := range webKeyFiles {
		first[rel] = w.readFile(units[0], rel)
	}
	for _, u := range units[1:] {
		for _, rel := range webKeyFiles {
			if got := w.readFile(u, rel); got != first[rel] {
				w.t.Errorf("%s %s differs from %s's", u, rel, units[0])
			}
		}
	}
	for _, u := range units {
		st, err := os.Stat(filepath.Join(w.paths(u).ConfigDir, keyTSAHostKey))
		if err != nil || st.Mode().Perm() != 0o600 {
			w.t.Errorf("%s TSA host key mode: %v %v; want 0600", u, st.Mode(), err)
		}
	}
	return first
}

// noPrivateKeyLeaks checks relation data, statuses, action results and logs for key material.
func (w *world) noPrivateKeyLeaks(units ...string) {
	w.t.Helper()
	var keys []string
	for _, rel := range []string{keySession, keyTSAHostKey} {
		b := w.readFile(units[0], rel)
		lines := strings.Split(strings.TrimSpace(b), "\n")
		keys = append(keys, lines[len(lines)/2]) // a line of base64 from inside the key
	}
	check := func(where, s string) {
		for _, k := range keys {
			if strings.Contains(s, k) || strings.Contains(s, "PRIVATE KEY") {
				w.t.Errorf("private key material in %s", where)
			}
		}
	}
	for _, r := range w.m.Relations() {
		for _, a := range w.m.Apps() {
			for k, v := range w.m.AppData(r.ID, a) {
				check("app data "+a+" "+k, v)
			}
		}
		for _, u := range w.m.RelationUnits(r.ID) {
			for k, v := range w.m.UnitData(r.ID, u) {
				check("unit data "+u+" "+k, v)
			}
		}
	}
	for _, u := range units {
		check(u+" status", w.status(u))
		for _, l := range w.m.Logs(u) {
			check(u+" juju-log", l.Message)
		}
	}
	for _, a := range w.m.Actions() {
		for k, v := range a.Results {
			check("action result "+k, v)
		}
	}
	check("the charm's stderr", w.stderr.String())
}

func (w *world) publishedTSAKeys(units ...string) map[string]bool {
	peers := w.m.RelationID(app, "peers")
	out := map[string]bool{}
	for _, u := range units {
		out[w.m.UnitData(peers, u)[keyTSAPublicKey]] = true
	}
	return out
}

// mode=web on three units: one set of keys, generated once by the leader, rendered by all.
func TestWebKeysSharedByEveryWeb(t *testing.T) {
	w := newWorld(t, 3, webOnly)
	w.deploy()
	w.addPostgres()
	units := []string{u0, u1, u2}
	for i, u := range units {
		w.wantStatus(u, "active: Web server ready (v7.14.3) http://127.0.2.1"+string(rune('0'+i))+":8080")
		if n := w.svcs[u].count("start " + webService); n != 1 {
			t.Errorf("%s started its web %d times; want 1 (no start before the shared keys)", u, n)
		}
	}
	files := w.sameWebKeys(units...)
	if pub := w.publishedTSAKeys(units...); len(pub) != 1 || !pub[strings.TrimSpace(files[keyTSAHostKey+".pub"])] {
		t.Errorf("published TSA keys = %v; want the one shared key", pub)
	}
	peers := w.m.RelationID(app, "peers")
	ad := w.m.AppData(peers, app)
	content, ok := w.m.SecretContent(ad[keyWebKeysSecret], 0)
	if !ok || content[contentTSAHostKey] != files[keyTSAHostKey] || content[contentSessionKey] != files[keySession] {
		t.Errorf("the web-keys secret %q does not hold the rendered keys", ad[keyWebKeysSecret])
	}
	w.noPrivateKeyLeaks(units...)
}

// A deployment from before the shared keys: every web runs with keys of its own. The leader
// seeds the secret from its files (no restart); the others switch to them, one restart each.
func TestWebKeysSeededFromTheRunningLeader(t *testing.T) {
	w := newWorld(t, 3, webOnly)
	w.deploy()
	w.addPostgres()
	units := []string{u0, u1, u2}
	peers := w.m.RelationID(app, "peers")
	// Back to what the previous charm left: no secret, no peer keys, own keys on u1 and u2 that
	// their webs started with and published, and no session key among the recorded inputs.
	w.m.ForgetSecret(w.m.AppData(peers, app)[keyWebKeysSecret])
	w.m.SetAppData(peers, app, map[string]string{keyWebKeysSecret: "", keyWebKeysRevision: ""})
	for _, u := range units {
		st, err := loadState(w.paths(u).StateDir)
		if err != nil {
			t.Fatal(err)
		}
		delete(st.Web.Inputs, "session signing key")
		if u != u0 {
			for _, rel := range []string{keySession, keyTSAHostKey} {
				p := filepath.Join(w.paths(u).ConfigDir, rel)
				os.Remove(p)
				if _, _, err := concourse.EnsureKey(p, 2048, -1, -1); err != nil {
					t.Fatal(err)
				}
			}
			pub := strings.TrimSpace(w.readFile(u, keyTSAHostKey+".pub"))
			st.Web.Inputs["TSA host key"] = hashOf([]byte(pub))
			w.m.SetUnitData(peers, u, map[string]string{keyTSAPublicKey: pub})
		}
		if err := saveState(w.paths(u).StateDir, st); err != nil {
			t.Fatal(err)
		}
	}
	leaderSession, leaderTSA := w.readFile(u0, keySession), w.readFile(u0, keyTSAHostKey)
	before := map[string]int{}
	for _, u := range units {
		before[u] = len(w.svcs[u].calls)
	}
	w.queue = nil
	w.mustHook(u0, "upgrade-charm")
	w.mustHook(u1, "upgrade-charm")
	w.mustHook(u2, "upgrade-charm")
	w.settle()
	for _, u := range units {
		calls := w.svcs[u].calls[before[u]:]
		restarts := 0
		for _, c := range calls {
			if c == "restart "+webService || c == "start "+webService {
				restarts++
			}
		}
		want := 1
		if u == u0 {
			want = 0
		}
		if restarts != want {
			t.Errorf("%s restarted its web %d times; want %d: %v", u, restarts, want, calls)
		}
	}
	files := w.sameWebKeys(units...)
	if files[keySession] != leaderSession || files[keyTSAHostKey] != leaderTSA {
		t.Error("the shared keys are not the leader's own keys")
	}
	if pub := w.publishedTSAKeys(units...); len(pub) != 1 {
		t.Errorf("published TSA keys = %d distinct; want 1", len(pub))
	}
}

// A new leader keeps the application's keys.
func TestWebKeysSurviveLeadershipChange(t *testing.T) {
	w := newWorld(t, 3, webOnly)
	w.deploy()
	w.addPostgres()
	peers := w.m.RelationID(app, "peers")
	id, rev := w.m.AppData(peers, app)[keyWebKeysSecret], w.m.AppData(peers, app)[keyWebKeysRevision]
	files := w.sameWebKeys(u0, u1, u2)
	before := len(w.svcs[u1].calls)
	w.m.SetLeader(app, u1)
	w.mustHook(u1, "leader-elected")
	w.mustHook(u0, "leader-settings-changed")
	w.mustHook(u2, "leader-settings-changed")
	w.settle()
	if ad := w.m.AppData(peers, app); ad[keyWebKeysSecret] != id || ad[keyWebKeysRevision] != rev {
		t.Errorf("new leader changed the web keys: %v", ad)
	}
	if got := w.sameWebKeys(u0, u1, u2); got[keyTSAHostKey] != files[keyTSAHostKey] || got[keySession] != files[keySession] {
		t.Error("key files changed with the leader")
	}
	if calls := w.svcs[u1].calls[before:]; len(calls) != 0 {
		t.Errorf("new leader touched its services: %v", calls)
	}
}

// rotate-web-keys: leader only; a new revision; every web restarts once; workers follow the new
// TSA public key.
func TestRotateWebKeys(t *testing.T) {
	w := newWorld(t, 3, webOnly)
	w.deploy()
	w.relateWorkerApp()
	w.addPostgres()
	wk := "concourse-worker/0"
	w.wantStatus(wk, "active: Worker ready (v7.14.3)")
	units := []string{u0, u1, u2}
	old := w.sameWebKeys(units...)
	if got := w.readFile(wk, keyTSAPublicForWkr); got != old[keyTSAHostKey+".pub"] {
		t.Fatalf("worker trusts %q; want the one shared key", got)
	}

	// Elsewhere than on the leader, and with a bad parameter: a clear failure, nothing changes.
	for _, c := range []struct {
		unit, key, want string
	}{
		{u1, "all", "only the leader may do: run it on concourse-ci-machine/leader"},
		{u0, "everything", `key="everything" is not one of session-signing-key, tsa-host-key, all`},
		{wk, "all", "this application runs only workers (mode=worker)"},
	} {
		if err := w.hook(c.unit, jujutest.HookInfo{ActionName: "rotate-web-keys", ActionParams: map[string]any{"key": c.key}}); err != nil {
			t.Fatal(err)
		}
		acts := w.m.Actions()
		if last := acts[len(acts)-1]; last.Status != "failed" || !strings.Contains(last.Message, c.want) {
			t.Errorf("rotate-web-keys key=%s on %s = %s %q; want failed with %q", c.key, c.unit, last.Status, last.Message, c.want)
		}
	}

	for _, c := range []struct {
		key                string
		sessionNew, tsaNew bool
		workerRestarts     int
	}{
		// A worker trusts every key the webs publish: it restarts when the first web publishes
		// the new key (both trusted, so it can reach any web during the roll-out) and when the
		// last one drops the old key. A session key stays on the webs.
		{"session-signing-key", true, false, 0},
		{"tsa-host-key", false, true, 2},
		{"all", true, true, 2},
	} {
		t.Run(c.key, func(t *testing.T) {
			peers := w.m.RelationID(app, "peers")
			rev := w.m.AppData(peers, app)[keyWebKeysRevision]
			before := map[string]int{}
			for _, u := range append(units, wk) {
				before[u] = len(w.svcs[u].calls)
			}
			prev := w.sameWebKeys(units...)
			w.queue = nil
			if err := w.hook(u0, jujutest.HookInfo{ActionName: "rotate-web-keys", ActionParams: map[string]any{"key": c.key}}); err != nil {
				t.Fatal(err)
			}
			acts := w.m.Actions()
			if last := acts[len(acts)-1]; last.Status == "failed" {
				t.Fatalf("rotate-web-keys failed: %s", last.Message)
			}
			w.settle()
			if w.m.AppData(peers, app)[keyWebKeysRevision] == rev {
				t.Error("revision unchanged")
			}
			now := w.sameWebKeys(units...)
			if (now[keySession] != prev[keySession]) != c.sessionNew || (now[keyTSAHostKey] != prev[keyTSAHostKey]) != c.tsaNew {
				t.Errorf("session key changed %t (want %t), TSA key changed %t (want %t)",
					now[keySession] != prev[keySession], c.sessionNew, now[keyTSAHostKey] != prev[keyTSAHostKey], c.tsaNew)
			}
			for _, u := range units {
				if n := countRestarts(w.svcs[u].calls[before[u]:], webService); n != 1 {
					t.Errorf("%s restarted its web %d times; want 1: %v", u, n, w.svcs[u].calls[before[u]:])
				}
				w.wantStatus(u, "active: Web server ready (v7.14.3) http://127.0.2.1"+u[len(u)-1:]+":8080")
			}
			if got := w.readFile(wk, keyTSAPublicForWkr); got != now[keyTSAHostKey+".pub"] {
				t.Errorf("worker trusts %q; want the new shared key %q", got, now[keyTSAHostKey+".pub"])
			}
			if n := countRestarts(w.svcs[wk].calls[before[wk]:], workerSvc); n != c.workerRestarts {
				t.Errorf("worker restarted %d times; want %d: %v", n, c.workerRestarts, w.svcs[wk].calls[before[wk]:])
			}
			w.noPrivateKeyLeaks(units...)
		})
	}
}

func countRestarts(calls []string, svc string) int {
	n := 0
	for _, c := range calls {
		// A worker restarts without blocking the hook (lifecycle.go): systemd drains it first.
		if c == "restart "+svc || c == "start "+svc || c == "restart --no-block "+svc {
			n++
		}
	}
	return n
}

// A web unit reads the secret only when the leader announces a revision its files lack: steady
// hooks make no secret-get of it, a rotation exactly one.
func TestWebKeysSecretReadOnlyOnNewRevision(t *testing.T) {
	w := newWorld(t, 2, webOnly)
	var calls []string
	w.wrap = func(unit string, r juju.Runner) juju.Runner {
		if unit != u1 {
			return r
		}
		return recorder{r: r, calls: &calls}
	}
	w.deploy()
	w.addPostgres()
	id := w.m.AppData(w.m.RelationID(app, "peers"), app)[keyWebKeysSecret]
	reads := func() int {
		n := 0
		for _, c := range calls {
			if strings.HasPrefix(c, "secret-get") && strings.Contains(c, id) {
				n++
			}
		}
		return n
	}
	if reads() != 1 {
		t.Errorf("deploy: %d reads of the web keys secret on %s; want 1", reads(), u1)
	}
	calls = nil
	w.mustHook(u1, "update-status")
	w.mustHook(u1, "config-changed")
	if reads() != 0 {
		t.Errorf("steady hooks read the web keys secret: %q", calls)
	}
	if err := w.hook(u0, jujutest.HookInfo{ActionName: "rotate-web-keys", ActionParams: map[string]any{"key": "tsa-host-key"}}); err != nil {
		t.Fatal(err)
	}
	w.settle()
	if reads() != 1 {
		t.Errorf("rotation: %d reads of the web keys secret; want 1: %q", reads(), calls)
	}
	if !bytes.Equal([]byte(w.readFile(u0, keyTSAHostKey)), []byte(w.readFile(u1, keyTSAHostKey))) {
		t.Error("keys differ after the rotation")
	}
}
