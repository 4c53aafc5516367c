package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
)

// deployment is one web's database and keys inside the shared cluster.
type deployment struct {
	t    *testing.T
	pg   *pgtest.Cluster
	keys *keySet
	user string
	pass string
	db   string
}

func newDeployment(t *testing.T, pg *pgtest.Cluster) *deployment {
	t.Helper()
	// One role and database per subtest keeps parallel subtests apart in one cluster.
	name := "c_" + strings.NewReplacer("/", "_", "-", "_", ".", "_").Replace(strings.ToLower(t.Name()))
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	d := &deployment{t: t, pg: pg, keys: newKeys(t), user: name, pass: "pw-" + name, db: name}
	pg.CreateRole(t, d.user, d.pass)
	pg.CreateDatabase(t, d.db, d.user)
	return d
}

func (d *deployment) pgEnv() map[string]string {
	return map[string]string{
		"CONCOURSE_POSTGRES_HOST": d.pg.Host(), "CONCOURSE_POSTGRES_PORT": fmt.Sprint(d.pg.Port()),
		"CONCOURSE_POSTGRES_USER": d.user, "CONCOURSE_POSTGRES_PASSWORD": d.pass,
		"CONCOURSE_POSTGRES_DATABASE": d.db, "CONCOURSE_POSTGRES_CONNECT_TIMEOUT": "10s",
	}
}

// webEnv is what a charm renders, on loopback with port 0 so parallel webs never clash.
func (d *deployment) webEnv(extra map[string]string) map[string]string {
	env := d.pgEnv()
	for k, v := range map[string]string{
		"CONCOURSE_BIND_IP": "127.0.0.1", "CONCOURSE_BIND_PORT": "0",
		"CONCOURSE_TSA_BIND_IP": "127.0.0.1", "CONCOURSE_TSA_BIND_PORT": "0",
		"CONCOURSE_DEBUG_BIND_PORT": "0", "CONCOURSE_TSA_DEBUG_BIND_PORT": "0",
		"CONCOURSE_SESSION_SIGNING_KEY": d.keys.session, "CONCOURSE_TSA_HOST_KEY": d.keys.tsaHost,
		"CONCOURSE_TSA_AUTHORIZED_KEYS": d.keys.authorized, "CONCOURSE_TSA_HEARTBEAT_INTERVAL": "1s",
		"CONCOURSE_ADD_LOCAL_USER": "admin:s3cret", "CONCOURSE_MAIN_TEAM_LOCAL_USER": "admin",
		"CONCOURSE_CLUSTER_NAME": "test-ci", "CONCOURSE_FOO_UNKNOWN": "ignored",
	} {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

type web struct {
	*proc
	http string // host:port of the API
	tsa  string // host:port of the TSA
}

func (d *deployment) startWeb(bin string, extra map[string]string) *web {
	d.t.Helper()
	p := start(d.t, bin, d.webEnv(extra), "web")
	tsa := p.waitLog("tsa.listening")
	atc := p.waitLog("atc.listening")
	return &web{proc: p, http: atc.Data["http"].(string), tsa: tsa.Data["addr"].(string)}
}

func (d *deployment) workerEnv(w *web, name string, extra map[string]string) map[string]string {
	env := map[string]string{
		"CONCOURSE_WORK_DIR": filepath.Join(d.t.TempDir(), "work"), "CONCOURSE_TSA_HOST": w.tsa,
		"CONCOURSE_TSA_PUBLIC_KEY": d.keys.tsaHostPub, "CONCOURSE_TSA_WORKER_PRIVATE_KEY": d.keys.worker,
		"CONCOURSE_NAME": name, "CONCOURSE_TAG": "fast,ssd", "CONCOURSE_RUNTIME": "containerd",
		"CONCOURSE_HEALTHCHECK_BIND_IP": "127.0.0.1", "CONCOURSE_HEALTHCHECK_BIND_PORT": "0",
		"CONCOURSE_BIND_PORT":  "0", // its Garden (garden.go): several workers, not the host's 7777
		"FAKE_CONCOURSE_RETRY": "200ms",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func httpDo(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func get(t *testing.T, u, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return httpDo(t, req)
}

// passwordGrant is what fly login -u -p does (§6.1).
func passwordGrant(t *testing.T, w *web, user, pass string) (*http.Response, map[string]any) {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}, "scope": {"openid profile email federated:id groups"}}
	req, _ := http.NewRequest("POST", "http://"+w.http+"/sky/issuer/token", strings.NewReader(form.Encode()))
	req.SetBasicAuth("fly", "Zmx5")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, body := httpDo(t, req)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("token response %q: %v", body, err)
	}
	return resp, m
}

func token(t *testing.T, w *web) string {
	t.Helper()
	resp, m := passwordGrant(t, w, "admin", "s3cret")
	if resp.StatusCode != 200 {
		t.Fatalf("password grant: %d %v", resp.StatusCode, m)
	}
	return m["access_token"].(string)
}

func workers(t *testing.T, w *web, tok string) []workerInfo {
	t.Helper()
	resp, body := get(t, "http://"+w.http+"/api/v1/workers", tok)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/workers: %d %s", resp.StatusCode, body)
	}
	var list []workerInfo
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	return list
}

// waitWorker polls /api/v1/workers (bounded) until name is in state ("" = absent).
func waitWorker(t *testing.T, w *web, tok, name, state string) workerInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last []workerInfo
	for time.Now().Before(deadline) {
		last = workers(t, w, tok)
		found := false
		for _, wk := range last {
			if wk.Name == name {
				found = true
				if wk.State == state {
					return wk
				}
			}
		}
		if !found && state == "" {
			return workerInfo{}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("worker %q not in state %q within 20s; workers: %+v", name, state, last)
	return workerInfo{}
}

func portOf(hostPort string) string {
	_, port, _ := net.SplitHostPort(hostPort)
	return port
}

func TestWithPostgres(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})

	t.Run("web-api-and-worker-lifecycle", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		w := d.startWeb(bin714, nil)
		w.waitLog("atc.cmd.start")

		// /api/v1/info: exact JSON for the 7.14 flavour, and the version header.
		resp, body := get(t, "http://"+w.http+"/api/v1/info", "")
		wantInfo := fmt.Sprintf(`{"version":"7.14.3","worker_version":"2.5","feature_flags":{"across_step":false,"build_rerun":false,"cache_streamed_volumes":false,"global_resources":false,"pipeline_instances":false,"redact_secrets":false,"resource_causality":false},"external_url":"http://%s","cluster_name":"test-ci"}`, w.http)
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != wantInfo || resp.Header.Get("X-Concourse-Version") != "7.14.3" {
			t.Errorf("info = %d %s (X-Concourse-Version %q); want 200 %s", resp.StatusCode, body, resp.Header.Get("X-Concourse-Version"), wantInfo)
		}
		if resp, body := get(t, "http://"+w.http+"/", ""); resp.StatusCode != 200 || !bytes.Contains(body, []byte("<html")) {
			t.Errorf("GET / = %d %q; want 200 HTML", resp.StatusCode, body)
		}
		// As the real web: fly unpacked from fly-assets/<…>.tgz, and a 500 naming a missing archive.
		if resp, body := get(t, "http://"+w.http+"/api/v1/cli?arch=amd64&platform=linux", ""); resp.StatusCode != 200 || string(body) != flyFixture || resp.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("GET /api/v1/cli = %d %q (%s); want the fly inside fly-assets/fly-linux-amd64.tgz", resp.StatusCode, body, resp.Header.Get("Content-Type"))
		}
		if resp, body := get(t, "http://"+w.http+"/api/v1/cli?arch=arm64&platform=linux", ""); resp.StatusCode != 500 || !strings.HasPrefix(string(body), "failed to open tgz archive: open ") {
			t.Errorf("GET /api/v1/cli for a missing archive = %d %q; want 500 failed to open tgz archive", resp.StatusCode, body)
		}
		if resp, _ := get(t, "http://"+w.http+"/api/v1/health", ""); resp.StatusCode != 404 {
			t.Errorf("7.14 /api/v1/health = %d; want 404 (8.3 only)", resp.StatusCode)
		}

		// The TSA presents the host key whose .pub the charm hands to workers.
		pubLine, _ := os.ReadFile(d.keys.tsaHostPub)
		wantHost, _, _, _, err := ssh.ParseAuthorizedKey(pubLine)
		if err != nil {
			t.Fatal(err)
		}
		var gotHost ssh.PublicKey
		conn, err := net.DialTimeout("tcp", w.tsa, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ssh.NewClientConn(conn, w.tsa, &ssh.ClientConfig{User: "probe", Timeout: 5 * time.Second,
			HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error { gotHost = k; return nil }})
		conn.Close()
		if gotHost == nil || !bytes.Equal(gotHost.Marshal(), wantHost.Marshal()) {
			t.Errorf("TSA host key does not match tsa_host_key.pub")
		}

		// Auth: 401 texts, then a token.
		if resp, body := get(t, "http://"+w.http+"/api/v1/workers", ""); resp.StatusCode != 401 || strings.TrimSpace(string(body)) != "not authorized" {
			t.Errorf("workers without token = %d %q; want 401 not authorized", resp.StatusCode, body)
		}
		if resp, m := passwordGrant(t, w, "admin", "wrong"); resp.StatusCode != 401 || m["error"] != "access_denied" || m["error_description"] != "Invalid username or password" {
			t.Errorf("bad password = %d %v; want 401 access_denied", resp.StatusCode, m)
		}
		resp, m := passwordGrant(t, w, "admin", "s3cret")
		if resp.StatusCode != 200 || m["token_type"] != "bearer" || m["expires_in"] != float64(86399) || m["id_token"] == "" {
			t.Fatalf("password grant = %d %v", resp.StatusCode, m)
		}
		tok := m["access_token"].(string)
		if list := workers(t, w, tok); len(list) != 0 {
			t.Errorf("workers before any registered = %v; want []", list)
		}

		// A worker with matching keys registers as running, with resource types from the prefix.
		env0 := d.workerEnv(w, "worker-0", nil)
		wk := start(t, bin714, env0, "worker")
		health := wk.waitLog("worker.healthchecker.listening")
		wk.waitLog("worker.beacon-runner.beacon.registered")
		got := waitWorker(t, w, tok, "worker-0", "running")
		if got.Platform != "linux" || got.Version != "2.5" || strings.Join(got.Tags, ",") != "fast,ssd" ||
			len(got.ResourceTypes) != 2 || got.ResourceTypes[0].Type != "git" || !strings.HasPrefix(got.Addr, "127.0.0.1:") ||
			!strings.HasPrefix(got.BaggageclaimURL, "http://127.0.0.1:") {
			t.Errorf("registered worker = %+v", got)
		}
		if resp, body := get(t, "http://"+health.Data["addr"].(string)+"/", ""); resp.StatusCode != 200 || len(body) != 0 {
			t.Errorf("worker health = %d %q; want 200 empty", resp.StatusCode, body)
		}
		if st, err := os.Stat(filepath.Join(env0["CONCOURSE_WORK_DIR"], "volumes")); err != nil || !st.IsDir() {
			t.Errorf("work-dir/volumes not created: %v", err)
		}

		// A token survives a web restart (tokens live in the database, as in the real web).
		if code := w.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("web exit on SIGTERM = %d; want 0", code)
		}
		// Same ports, as a restarted systemd unit would have.
		w = d.startWeb(bin714, map[string]string{"CONCOURSE_BIND_PORT": portOf(w.http), "CONCOURSE_TSA_BIND_PORT": portOf(w.tsa)})
		// The worker's session died with the old TSA; it retries and registers with the new one.
		wk.waitLog("worker.beacon-runner.failed")
		wk.waitLogN(2, "worker.beacon-runner.beacon.registered")
		waitWorker(t, w, tok, "worker-0", "running")

		// SIGTERM: exit 0, then heartbeats stop and the worker turns stalled after 2 × 1s.
		if code := wk.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("worker exit on SIGTERM = %d; want 0", code)
		}
		waitWorker(t, w, tok, "worker-0", "stalled")

		// SIGUSR1 lands (kept, state landed); SIGUSR2 retires (gone).
		lander := start(t, bin714, d.workerEnv(w, "worker-1", nil), "worker")
		lander.waitLog("worker.beacon-runner.beacon.registered")
		if code := lander.stop(syscall.SIGUSR1); code != 0 {
			t.Errorf("worker exit on SIGUSR1 = %d; want 0", code)
		}
		waitWorker(t, w, tok, "worker-1", "landed")
		retiree := start(t, bin714, d.workerEnv(w, "worker-2", nil), "worker")
		retiree.waitLog("worker.beacon-runner.beacon.registered")
		waitWorker(t, w, tok, "worker-2", "running")
		if code := retiree.stop(syscall.SIGUSR2); code != 0 {
			t.Errorf("worker exit on SIGUSR2 = %d; want 0", code)
		}
		waitWorker(t, w, tok, "worker-2", "")

		if code := w.stop(syscall.SIGINT); code != 0 {
			t.Errorf("web exit on SIGINT = %d; want 0", code)
		}
	})

	t.Run("unauthorised-worker-registers-after-sighup", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		other := authorizedLine(t, newRSA(t))
		if err := os.WriteFile(d.keys.authorized, other, 0o644); err != nil {
			t.Fatal(err)
		}
		w := d.startWeb(bin825, nil)
		wk := start(t, bin825, d.workerEnv(w, "late", nil), "worker")
		wk.waitLog("worker.beacon-runner.failed", "ssh: handshake failed: ssh: unable to authenticate, attempted methods [none publickey], no supported methods remain")
		w.waitLog("tsa.connection.handshake-failed", "unknown public key")
		wk.waitLog("worker.beacon-runner.restarting")
		tok := token(t, w)
		if list := workers(t, w, tok); len(list) != 0 {
			t.Fatalf("unauthorised worker listed: %+v", list)
		}
		workerPub, _ := os.ReadFile(d.keys.workerPub)
		if err := os.WriteFile(d.keys.authorized, append(other, workerPub...), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := w.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		w.waitLog("tsa.reloading-config")
		waitWorker(t, w, tok, "late", "running")
	})

	t.Run("wrong-tsa-public-key", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		w := d.startWeb(bin714, nil)
		wrong := filepath.Join(t.TempDir(), "wrong.pub")
		os.WriteFile(wrong, authorizedLine(t, newRSA(t)), 0o644)
		wk := start(t, bin714, d.workerEnv(w, "w", map[string]string{"CONCOURSE_TSA_PUBLIC_KEY": wrong}), "worker")
		wk.waitLog("worker.beacon-runner.failed", "failed to establish SSH connection with gateway: ssh: handshake failed: remote host public key mismatch")
		wk.waitLog("worker.beacon-runner.restarting")
		// It keeps running: the process never exits on registration failure (§3.2).
		select {
		case <-wk.done:
			t.Fatalf("worker exited: %v", wk.err)
		default:
		}
	})

	t.Run("tsa-unreachable", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := l.Addr().String()
		l.Close()
		wk := start(t, bin714, d.workerEnv(&web{tsa: dead}, "w", nil), "worker")
		wk.waitLog("worker.beacon-runner.beacon.failed-to-connect-to-tsa", "connection refused")
		wk.waitLog("worker.beacon-runner.failed", "all worker SSH gateways unreachable")
		wk.waitLog("worker.beacon-runner.restarting")
	})

	t.Run("no-main-team", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		env := d.webEnv(nil)
		delete(env, "CONCOURSE_MAIN_TEAM_LOCAL_USER")
		_, stderr, code := runBin(t, bin714, env, "web")
		if code != 1 || stderr != "error: default team auth not configured: auth config for the team does not have users and groups configured\n" {
			t.Errorf("got (%d, %q)", code, stderr)
		}
	})

	t.Run("local-user-without-colon", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		_, stderr, code := runBin(t, bin714, d.webEnv(map[string]string{"CONCOURSE_ADD_LOCAL_USER": "test"}), "web")
		if code != 1 || stderr != "error: server: no connectors specified\n" {
			t.Errorf("got (%d, %q)", code, stderr)
		}
	})

	t.Run("db-wrong-password", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		want := fmt.Sprintf("error: failed to connect to database: failed to connect to `user=%s database=%s`: %s:%d (%s): failed SASL auth: FATAL: password authentication failed for user \"%s\" (SQLSTATE 28P01)\n",
			d.user, d.db, pg.Host(), pg.Port(), pg.Host(), d.user)
		env := d.webEnv(map[string]string{"CONCOURSE_POSTGRES_PASSWORD": "wrong"})
		// 7.14 gives up at once.
		_, stderr, code := runBin(t, bin714, env, "web")
		if code != 1 || stderr != want {
			t.Errorf("7.14: got (%d, %q); want (1, %q)", code, stderr, want)
		}
		// 8.x retries first (window shortened for the test), then fails the same way.
		env["FAKE_CONCOURSE_DB_RETRY"] = "1500ms"
		stdout, stderr, code := runBin(t, bin825, env, "web")
		if code != 1 || stderr != want || !strings.Contains(stdout, "atc.db.failed-to-open-db-retrying") {
			t.Errorf("8.2: got (%d, %q), retry log %v; want (1, %q) after retries", code, stderr, strings.Contains(stdout, "retrying"), want)
		}
	})

	t.Run("db-refused", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		_, stderr, code := runBin(t, bin714, d.webEnv(map[string]string{"CONCOURSE_POSTGRES_PORT": fmt.Sprint(port)}), "web")
		want := fmt.Sprintf("error: failed to connect to database: failed to connect to `user=%s database=%s`: 127.0.0.1:%d (127.0.0.1): dial error: dial tcp 127.0.0.1:%d: connect: connection refused\n", d.user, d.db, port, port)
		if code != 1 || stderr != want {
			t.Errorf("got (%d, %q); want (1, %q)", code, stderr, want)
		}
	})

	t.Run("port-in-use", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, stderr, code := runBin(t, bin714, d.webEnv(map[string]string{"CONCOURSE_BIND_PORT": fmt.Sprint(l.Addr().(*net.TCPAddr).Port)}), "web")
		if code != 1 || !strings.HasPrefix(stderr, "error: Exit trace for group:\n") || !strings.Contains(stderr, "bind: address already in use") {
			t.Errorf("got (%d, %q)", code, stderr)
		}
	})

	t.Run("prometheus-only-with-both-vars", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		w := d.startWeb(bin825, map[string]string{"CONCOURSE_PROMETHEUS_BIND_IP": "127.0.0.1", "CONCOURSE_PROMETHEUS_BIND_PORT": "0"})
		line := w.waitLog("atc.listening")
		prom, ok := line.Data["prometheus"].(string)
		if !ok {
			t.Fatalf("atc.listening %v has no prometheus listener", line.Data)
		}
		if resp, body := get(t, "http://"+prom+"/anything", ""); resp.StatusCode != 200 || !bytes.Contains(body, []byte("concourse_workers_registered")) {
			t.Errorf("metrics = %d %q", resp.StatusCode, body)
		}
		// 8.x reports four feature flags (the 7.14-only ones are gone).
		_, body := get(t, "http://"+w.http+"/api/v1/info", "")
		var info struct {
			Version      string          `json:"version"`
			FeatureFlags map[string]bool `json:"feature_flags"`
		}
		if json.Unmarshal(body, &info) != nil || info.Version != "8.2.5" || len(info.FeatureFlags) != 4 {
			t.Errorf("8.2 info = %s", body)
		}
		w.stop(syscall.SIGTERM)
		// The 8.3 flavour adds /api/v1/health: failing (503) while no worker runs.
		w3 := d.startWeb(bin825, map[string]string{"FAKE_CONCOURSE_FLAVOR": "8.3"})
		resp, body := get(t, "http://"+w3.http+"/api/v1/health", "")
		if resp.StatusCode != 503 || !bytes.Contains(body, []byte(`"status":"failing"`)) || !bytes.Contains(body, []byte(`"database":{"status":"healthy"}`)) {
			t.Errorf("8.3 health = %d %s; want 503 failing with a healthy database", resp.StatusCode, body)
		}
		w3.stop(syscall.SIGTERM)
		w2 := d.startWeb(bin825, map[string]string{"CONCOURSE_PROMETHEUS_BIND_IP": "127.0.0.1"})
		if line := w2.waitLog("atc.listening"); line.Data["prometheus"] != nil {
			t.Errorf("prometheus listener with only the IP set: %v", line.Data)
		}
	})

	t.Run("migrate", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, pg)
		env := d.pgEnv()
		step := func(bin string, args []string, wantOut, wantErr string) {
			t.Helper()
			stdout, stderr, code := runBin(t, bin, env, append([]string{"migrate"}, args...)...)
			wantCode := 0
			if wantErr != "" {
				wantCode = 1
			}
			if stdout != wantOut || stderr != wantErr || code != wantCode {
				t.Errorf("migrate %v = (%q, %q, %d); want (%q, %q, %d)", args, stdout, stderr, code, wantOut, wantErr, wantCode)
			}
		}
		step(bin714, []string{"--current-db-version"}, "", "error: ERROR: relation \"migrations_history\" does not exist (SQLSTATE 42P01)\n")
		step(bin714, []string{"--migrate-to-latest-version"}, "", "")
		step(bin714, []string{"--current-db-version"}, "1746768931", "")
		// An 8.2 web upgrades the schema on start; 7.14 then sees the newer version.
		w := d.startWeb(bin825, nil)
		w.stop(syscall.SIGTERM)
		step(bin714, []string{"--current-db-version"}, "1776182280", "")
		// Downgrade path (§5): the new binary migrates down to the old one's supported version.
		step(bin825, []string{"--migrate-db-to-version=1746768931"}, "Successfully migrated to version: 1746768931", "")
		step(bin825, []string{"--current-db-version"}, "1746768931", "")
		// The old binary reads the newest undone migration, which it does not have, as the
		// version (real 7.14.3 after real 8.2.5 went down: 1747084615; here the 8.0 line's).
		step(bin714, []string{"--current-db-version"}, "1765921815", "")
		// Any target is taken, as by the real binaries: below the first migration nothing is left.
		step(bin825, []string{"--migrate-db-to-version", "123"}, "Successfully migrated to version: 123", "")
		step(bin825, []string{"--current-db-version"}, "0", "")
		step(bin825, []string{"--migrate-db-to-version=1800000000"}, "Successfully migrated to version: 1800000000", "")
		step(bin825, []string{"--current-db-version"}, "1776182280", "")
		// --supported-db-version needs no database at all.
		bad := map[string]string{"CONCOURSE_POSTGRES_PORT": "1", "CONCOURSE_POSTGRES_PASSWORD": "wrong"}
		for k, v := range bad {
			env[k] = v
		}
		step(bin825, []string{"--supported-db-version"}, "1776182280", "")
	})
}

func TestGenerateKeyBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k := filepath.Join(dir, "k")
	os.WriteFile(k, []byte("old content that must be overwritten"), 0o600)
	stdout, stderr, code := runBin(t, bin714, nil, "generate-key", "-t", "ssh", "-f", k, "-b", "2048")
	if code != 0 || stderr != "" || stdout != "wrote private key to "+k+"\nwrote ssh public key to "+k+".pub" {
		t.Fatalf("generate-key = (%q, %q, %d)", stdout, stderr, code)
	}
	priv, _ := os.ReadFile(k)
	pub, _ := os.ReadFile(k + ".pub")
	if !strings.HasPrefix(string(priv), "-----BEGIN PRIVATE KEY-----\n") {
		t.Errorf("private key starts %q; want the mislabelled PRIVATE KEY block", priv[:30])
	}
	if !strings.HasPrefix(string(pub), "ssh-rsa ") || !strings.HasSuffix(string(pub), "\n") || strings.Count(string(pub), " ") != 1 {
		t.Errorf("public key = %q; want \"ssh-rsa <base64>\\n\" without comment", pub)
	}
	// The body is PKCS#1 (not PKCS#8) and it is the key of the .pub file.
	key, err := parseRSAPrivateKeyFromPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	if string(authorizedLine(t, key)) != string(pub) {
		t.Errorf(".pub does not match the private key")
	}
}

func TestCLIBinary(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		bin    string
		env    map[string]string
		args   []string
		stdout string
		stderr string
		code   int
	}{
		{bin714, nil, []string{"--version"}, "7.14.3", "", 0},
		{bin825, nil, []string{"web", "-v"}, "8.2.5", "", 0},
		{bin714, nil, []string{"web"}, "", "error: the required flag `--tsa-host-key' was not specified\n", 1},
		{bin714, nil, []string{"migrate", "--supported-db-version"}, "1746768931", "", 0},
		{bin825, map[string]string{"FAKE_CONCOURSE_FLAVOR": "8.0"}, []string{"migrate", "--supported-db-version"}, "1765921815", "", 0},
	} {
		stdout, stderr, code := runBin(t, tt.bin, tt.env, tt.args...)
		if stdout != tt.stdout || stderr != tt.stderr || code != tt.code {
			t.Errorf("%v = (%q, %q, %d); want (%q, %q, %d)", tt.args, stdout, stderr, code, tt.stdout, tt.stderr, tt.code)
		}
	}
	_, stderr, code := runBin(t, bin714, map[string]string{"CONCOURSE_VERSION": "7.14.3"}, "web")
	if code != 2 || !strings.HasPrefix(stderr, "panic: ") {
		t.Errorf("CONCOURSE_VERSION set: (%q, %d); want a panic and exit 2", stderr, code)
	}
}
