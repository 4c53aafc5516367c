package hooks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// Three real `concourse web` nodes on one real PostgreSQL, each with the key files the charm
// writes from the shared web-keys secret (writeWebKeys): a token one node issues is accepted by
// the others (no sticky sessions needed), and a real worker given the three TSA hosts registers
// and, when the web it is connected to is killed, registers again through another. One release
// (the newest): the key handling is the same code for both, and three webs cost a minute each.
func TestRealWebsShareKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three real Concourse webs, a worker and PostgreSQL")
	}
	set := realconcourse.Require(t)
	if os.Getuid() != 0 {
		t.Skip("the houdini worker needs root")
	}
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("needs ss to see which TSA the worker is connected to")
	}
	versions := realconcourse.Versions()
	version := versions[len(versions)-1]
	db := realDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := set.Concourse(version)

	// The shared keys as the leader makes them, written by each "unit" as the charm does.
	var pems [2][]byte
	for i := range pems {
		priv, _, err := concourse.GenerateKey(nil, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pems[i] = priv
	}
	keys, err := parseWebKeys(pems[0], pems[1])
	if err != nil {
		t.Fatal(err)
	}
	var webs []*realWeb
	for i := 0; i < 3; i++ {
		r := newRealWeb(t, bin, db)
		u := &unitRun{handler: &handler{deps: Deps{Paths: Paths{ConfigDir: r.dir}, Stderr: io.Discard}}, webUID: -1, webGID: -1}
		if err := u.writeWebKeys(keys); err != nil {
			t.Fatal(err)
		}
		if i > 0 { // one worker key, authorized by every web
			b, _ := os.ReadFile(filepath.Join(webs[0].dir, keyAuthorized))
			if err := os.WriteFile(filepath.Join(r.dir, keyAuthorized), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		webs = append(webs, r)
	}
	raw := map[string]any{"mode": "web", "version": version}
	// The first web migrates the database; the others start on it, in parallel with each other.
	webs[0].start(ctx, raw)
	done := make(chan struct{}, 2)
	for _, r := range webs[1:] {
		go func(r *realWeb) { defer func() { done <- struct{}{} }(); r.start(ctx, raw) }(r)
	}
	<-done
	<-done
	for i, r := range webs {
		if r.web == nil || r.web.Exited() {
			t.Fatalf("web %d did not start", i)
		}
	}

	client := &http.Client{Timeout: 10 * time.Second}
	token, err := concourse.PasswordToken(ctx, client, webs[0].lb.URL, "admin", webs[0].admin)
	if err != nil {
		t.Fatalf("login on web 0: %v\n%s", err, webs[0].web.LogTail())
	}
	for i, r := range webs {
		status, body := getWithToken(t, ctx, r.lb.URL+"/api/v1/user", token)
		t.Logf("web %d /api/v1/user with web 0's token: %d %s", i, status, cut(body, 200))
		if status != http.StatusOK || !strings.Contains(body, `"admin"`) {
			t.Errorf("web %d refuses web 0's token: %d %s", i, status, body)
		}
	}

	// What the real binary shows: an API token from /sky/issuer/token is kept in the database,
	// so even a web with a session signing key of its own accepts it (8.2.5 and 7.14.3 both).
	// The shared key is what keeps the rest consistent between nodes (the web's own dex client
	// secret is derived from it: concourse-contract §2.3), so the check above is of the shared
	// deployment, not a proof that the key alone decides.
	// A worker given every TSA host, trusting the one shared TSA public key.
	var hosts []string
	for _, r := range webs {
		hosts = append(hosts, "127.0.0.1:"+strconv.Itoa(r.lb.TSAPort))
	}
	keyDir := filepath.Join(webs[0].dir, "keys")
	worker := realweb.StartHoudiniWorker(t, bin, "ha-worker", keyDir, webs[0].lb.TSAPort, t.TempDir(), filepath.Join(webs[0].dir, "worker.log"),
		"CONCOURSE_TSA_HOST="+strings.Join(hosts, ","))
	running := func(via *realWeb) func() error {
		return func() error {
			tok, err := concourse.PasswordToken(ctx, client, via.lb.URL, "admin", via.admin)
			if err != nil {
				return err
			}
			ws, err := concourse.Workers(ctx, client, via.lb.URL, tok)
			if err != nil {
				return err
			}
			for _, w := range ws {
				if w.Name == "ha-worker" && w.State == "running" {
					return nil
				}
			}
			return fmt.Errorf("workers: %+v", ws)
		}
	}
	realweb.WaitFor(t, ctx, worker, 90*time.Second, "the worker registered", running(webs[0]))
	connected := func() int {
		for i, r := range webs {
			if r.web.Exited() {
				continue
			}
			out, _ := exec.CommandContext(ctx, "ss", "-Htn", "state", "established", "( sport = :"+strconv.Itoa(r.lb.TSAPort)+" )").Output()
			if strings.TrimSpace(string(out)) != "" {
				return i
			}
		}
		return -1
	}
	first := -1
	realweb.WaitFor(t, ctx, worker, 30*time.Second, "the worker's TSA connection", func() error {
		if first = connected(); first < 0 {
			return fmt.Errorf("no web has an established TSA connection")
		}
		return nil
	})
	t.Logf("worker connected to web %d; killing it (pid %d)", first, webs[first].web.Cmd.Process.Pid)
	if err := webs[first].web.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	webs[first].web.Wait(10 * time.Second)
	other := webs[(first+1)%3]
	start := time.Now()
	realweb.WaitFor(t, ctx, worker, 2*time.Minute, "the worker registered through another web", func() error {
		if n := connected(); n < 0 || n == first {
			return fmt.Errorf("no TSA connection to a live web yet")
		}
		return running(other)()
	})
	t.Logf("worker re-registered via web %d after %s", connected(), time.Since(start).Round(time.Second))
}

func getWithToken(t *testing.T, ctx context.Context, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
