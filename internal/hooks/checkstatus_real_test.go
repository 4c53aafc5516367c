package hooks

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// check-status on a web unit lists the workers the real web has registered, from its API
// logged in with the admin secret's password: a real houdini worker appears with its state,
// containers and version, equal to what the API itself answers.
func TestRealCheckStatusWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real Concourse web, a worker and PostgreSQL")
	}
	set := realconcourse.Require(t)
	version := realconcourse.Versions()[len(realconcourse.Versions())-1]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	db := realDB(t)
	r := newRealWeb(t, set.Concourse(version), db)

	// The unit, deployed in the in-memory model with its web-port on the real web's port.
	cfg := maps.Clone(pinned)
	cfg["mode"], cfg["web-port"] = "web", r.lb.WebPort
	w := newWorld(t, 1, cfg)
	w.deploy()
	w.addPostgres()
	r.admin = w.action(u0, "get-admin-password", nil).Results["password"]
	r.start(ctx, map[string]any{"mode": "web", "version": version})

	const name = "concourse-ci-machine-7"
	realweb.StartHoudiniWorker(t, r.bin, name, filepath.Join(r.dir, "keys"), r.lb.TSAPort,
		filepath.Join(r.dir, "worker"), filepath.Join(r.dir, "worker.log"))
	var res map[string]string
	realweb.WaitFor(t, ctx, r.web, 90*time.Second, "the worker in check-status", func() error {
		res = w.action(u0, "check-status", nil).Results
		if res["workers."+name+".state"] != "running" {
			return fmt.Errorf("workers-count %q, %s state %q (workers: %q)", res["workers-count"], name, res["workers."+name+".state"], res["workers"])
		}
		return nil
	})
	// What the API says, compared key by key with what the action reported.
	client, err := LocalWebClient(w.paths(u0), r.lb.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	token, err := concourse.PasswordToken(ctx, client, r.lb.URL, "admin", r.admin)
	if err != nil {
		t.Fatal(err)
	}
	api, err := concourse.Workers(ctx, client, r.lb.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	wk, ok := concourse.FindWorker(api, name)
	if !ok || len(api) != 1 {
		t.Fatalf("the API lists %+v", api)
	}
	for k, want := range map[string]string{
		"workers-count": "1", "workers-running": "1", "web-api-version": version,
		"workers." + name + ".name": name, "workers." + name + ".version": wk.Version,
		"workers." + name + ".containers": fmt.Sprint(wk.ActiveContainers),
	} {
		if res[k] != want {
			t.Errorf("%s = %q; want %q (the API's)", k, res[k], want)
		}
	}
	if wk.Version == "" {
		t.Error("the real API reports no worker version")
	}
	t.Logf("check-status on the real web %s: %d keys, worker %s %s v%s", version, len(res), name, res["workers."+name+".state"], res["workers."+name+".version"])
}
