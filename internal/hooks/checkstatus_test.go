package hooks

import (
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// webAPI answers the three calls check-status makes of a Concourse web, as the real one does
// (contract §6.1): info unauthenticated, the password grant with fly's client, workers with the
// bearer token. The password is the admin secret's, read when the token is asked for.
type webAPI struct {
	password func() string
	workers  []concourse.WorkerInfo
	logins   int
}

func (a *webAPI) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/api/v1/info":
		json.NewEncoder(rw).Encode(concourse.InfoResponse{Version: "7.14.3", WorkerVersion: "2.5"})
	case "/sky/issuer/token":
		user, secret, _ := r.BasicAuth()
		if r.Method != http.MethodPost || user != "fly" || secret != "Zmx5" || r.FormValue("grant_type") != "password" ||
			r.FormValue("username") != "admin" || r.FormValue("password") != a.password() {
			http.Error(rw, `{"error":"invalid_grant"}`, http.StatusUnauthorized)
			return
		}
		a.logins++
		json.NewEncoder(rw).Encode(map[string]string{"access_token": "tok-1", "token_type": "bearer"})
	case "/api/v1/workers":
		if r.Header.Get("Authorization") != "Bearer tok-1" {
			http.Error(rw, "not authorized", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(rw).Encode(a.workers)
	default:
		http.NotFound(rw, r)
	}
}

// serveWebAPI starts the API on a loopback port and returns it, for the web-port option.
func serveWebAPI(t *testing.T, a *webAPI) int {
	t.Helper()
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

// check-status reports the facts the status summarises under stable keys, per role and in
// the failures the operator must see: the web's workers from its API, the database and its
// schema, the shared install root.
func TestCheckStatus(t *testing.T) {
	workers := []concourse.WorkerInfo{
		{Name: "concourse-ci-machine-1", State: "running", Version: "2.5", ActiveContainers: 3},
		{Name: "Other.Worker_10", State: "stalled", Version: "2.5"},
	}
	for _, tc := range []struct {
		name    string
		mode    string
		units   int
		unit    string
		api     bool              // a web API answers on web-port
		prepare func(w *world)    // after deploy, before the action
		want    map[string]string // exact values
		absent  []string          // keys that must not be reported
		healthy bool              // healthy=true
		problem []string          // substrings of problems
		check   func(*testing.T, map[string]string)
	}{
		{name: "web", mode: "web", units: 1, unit: u0, api: true,
			want: map[string]string{"role": "web", "leader": "true", "web-service": "active", "worker-service": "inactive",
				"installed-version": "7.14.3", "web-version": "7.14.3", "target-version": "7.14.3", "target-source": "the version option",
				"web-api-version": "7.14.3", "database": "reachable (127.0.2.99:5432)", "database-schema": "1746768931",
				"share": "ready", "share-mounted": "true", "share-marker": "true", "share-installed-version": "7.14.3",
				"workers-count": "2", "workers-running": "1",
				"workers.concourse-ci-machine-1.name": "concourse-ci-machine-1", "workers.concourse-ci-machine-1.state": "running",
				"workers.concourse-ci-machine-1.containers": "3", "workers.concourse-ci-machine-1.version": "2.5",
				"workers.other-worker-10.name": "Other.Worker_10", "workers.other-worker-10.state": "stalled"},
			absent:  []string{"worker-version", "tsa", "web-api", "workers"},
			problem: []string{"1 stalled workers"}},
		{name: "worker", mode: "auto", units: 2, unit: u1, api: true,
			want:   map[string]string{"role": "worker", "leader": "false", "worker-service": "active", "web-service": "inactive", "worker-version": "7.14.3"},
			absent: []string{"web-version", "database", "workers-count", "web-api-version", "database-schema"},
			check: func(t *testing.T, r map[string]string) {
				if !strings.HasPrefix(r["tsa"], "127.0.2.10:2222 ") {
					t.Errorf("tsa = %q; want the web's TSA and whether it answers", r["tsa"])
				}
			}},
		{name: "all", mode: "all", units: 1, unit: u0, api: true,
			want: map[string]string{"role": "all", "web-service": "active", "worker-service": "active", "web-version": "7.14.3",
				"worker-version": "7.14.3", "workers-count": "2", "database-schema": "1746768931"}},
		{name: "db-down", mode: "web", units: 1, unit: u0, api: true,
			prepare: func(w *world) { w.dbErr = errString("dial tcp 127.0.2.99:5432: connection refused") },
			want:    map[string]string{"database": "dial tcp 127.0.2.99:5432: connection refused", "healthy": "false"},
			absent:  []string{"database-schema"},
			problem: []string{"database: dial tcp 127.0.2.99:5432: connection refused"}},
		{name: "share-missing", mode: "web", units: 1, unit: u0, api: true,
			prepare: func(w *world) { w.store(w.paths(u0).Root).marker = false },
			want:    map[string]string{"share-mounted": "true", "share-marker": "false", "shared-storage-ready": "false", "healthy": "false"},
			problem: []string{"shared storage: ", ".lxc_shared_storage"}},
		{name: "web-api-down", mode: "web", units: 1, unit: u0, api: false,
			want:    map[string]string{"healthy": "false"},
			absent:  []string{"web-api-version", "workers-count"},
			problem: []string{"web API: ", "workers: logging in to "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := maps.Clone(pinned)
			cfg["mode"] = tc.mode
			var pw string // the admin secret's, once the leader made it
			api := &webAPI{workers: workers, password: func() string { return pw }}
			if tc.api {
				cfg["web-port"] = serveWebAPI(t, api)
			} else {
				l, err := net.Listen("tcp", "127.0.0.1:0") // a port nobody answers on
				if err != nil {
					t.Fatal(err)
				}
				cfg["web-port"] = l.Addr().(*net.TCPAddr).Port
				l.Close()
			}
			w := newWorld(t, tc.units, cfg)
			w.deploy()
			w.addPostgres()
			pw = w.action(u0, "get-admin-password", nil).Results["password"]
			if tc.prepare != nil {
				tc.prepare(w)
			}
			a := w.action(tc.unit, "check-status", nil)
			r := a.Results
			if a.Status != "completed" {
				t.Fatalf("check-status %s: %s", a.Status, a.Message)
			}
			for k, v := range tc.want {
				if r[k] != v {
					t.Errorf("%s = %q; want %q", k, r[k], v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := r[k]; ok {
					t.Errorf("%s = %q; want it absent for this unit", k, v)
				}
			}
			if tc.healthy != (r["healthy"] == "true") {
				t.Errorf("healthy = %q (problems %q); want %t", r["healthy"], r["problems"], tc.healthy)
			}
			for _, p := range tc.problem {
				if !strings.Contains(r["problems"], p) {
					t.Errorf("problems %q lack %q", r["problems"], p)
				}
			}
			for k, v := range r {
				if strings.Contains(v, pw) || strings.Contains(v, "s3cret-pw") || strings.Contains(v, "tok-1") {
					t.Errorf("%s reveals a secret: %q", k, v)
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			if _, err := strconv.ParseBool(r["healthy"]); err != nil {
				t.Errorf("healthy = %q", r["healthy"])
			}
		})
	}
}

// A worker name becomes a valid action key segment, whatever the worker calls itself.
func TestWorkerKey(t *testing.T) {
	for in, want := range map[string]string{
		"concourse-ci-machine-10": "concourse-ci-machine-10", "Other.Worker_10": "other-worker-10",
		"--x--": "x", "é": "unnamed", "a..b": "a-b",
	} {
		if got := workerKey(in); got != want {
			t.Errorf("workerKey(%q) = %q; want %q", in, got, want)
		}
	}
}
