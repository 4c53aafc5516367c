package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// newSteadyUnit is a worker unit (its own install root: no shared storage, so it is its own
// installer) in steady state on 7.14.3, driven by the real dispatch binary.
func newSteadyUnit(t *testing.T) *benchUnit { return newBenchUnit(t) }

const worker1 = "concourse-ci-machine/1"

// dispatchOut is benchUnit.dispatch over the agent socket, returning the hook's stderr (Juju's
// unit log) on success too.
func (u *benchUnit) dispatchOut(unit, hook string) (string, error) {
	return u.dispatchWith(unit, hook, "rpc")
}

func (u *benchUnit) root() string { return filepath.Join(u.prefix, "var/lib/concourse") }

func cli(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"concourse-ci-machine"}, args...), func(string) string { return "" }, &out, &errb)
	return out.String(), errb.String(), code
}

// Issue 11 item 1: a kill on a first install after `current` was switched but before the bin link
// and .installed_version were renamed leaves bin missing, a .tmp-bin-* link, no marker, and GC
// trash in .staging. `storage verify` must fail and `storage status` show it; the next hook on the
// installing unit must repair it without downloading anything.
func TestLateCrashRepairedByTheNextHook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	u := newSteadyUnit(t)
	root := u.root()
	if err := os.Remove(filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("current/bin", filepath.Join(root, ".tmp-bin-0badc0de")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, storage.InstalledVersionName)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, storage.StagingDir, "gc-7.14.2-0123abcd", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}

	out, errs, code := cli("storage", "verify", "--root", root)
	if code == 0 || !strings.Contains(errs, "disagrees with current") || !strings.Contains(errs, ".tmp-bin-0badc0de") ||
		!strings.Contains(errs, filepath.Join(root, "bin")+" is missing") || !strings.Contains(errs, "gc-7.14.2-0123abcd") {
		t.Errorf("storage verify on a half-finished install: code %d\nstdout %q\nstderr %q", code, out, errs)
	}
	out, _, code = cli("storage", "status", "--root", root)
	if code != 0 || !strings.Contains(out, "DISAGREES:") || !strings.Contains(out, `.installed_version says ""`) {
		t.Errorf("storage status does not show the disagreement (code %d):\n%s", code, out)
	}

	if err := u.dispatch(worker1, "update-status", "rpc"); err != nil {
		t.Fatal(err)
	}
	if tgt, err := os.Readlink(filepath.Join(root, "bin")); err != nil || tgt != "current/bin" {
		t.Errorf("bin after the hook: %q, %v; want a link to current/bin", tgt, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, storage.InstalledVersionName)); err != nil || string(b) != "7.14.3" {
		t.Errorf(".installed_version after the hook: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(root, ".tmp-bin-0badc0de")); err == nil {
		t.Error("the stray temp link is still there")
	}
	if ents, _ := os.ReadDir(filepath.Join(root, storage.StagingDir)); len(ents) != 0 {
		t.Errorf(".staging still holds %v", ents)
	}
	if s := u.model.UnitStatus(worker1); s.Message != "Worker ready (v7.14.3)" {
		t.Errorf("status after the repair: %+v", s)
	}
	if out, errs, code := cli("storage", "verify", "--root", root); code != 0 || !strings.Contains(out, ": OK") {
		t.Errorf("storage verify after the repair: %d %q %q", code, out, errs)
	}
}

// Issue 11 items 2 and 6: a checksum-valid release whose binary reports another version is refused
// in staging (the current release and the worker's unit file stay), the status names the problem,
// the refusal is remembered (no second download), and the mirror's credentials in release-url
// appear in no status, log line or file on the share.
func TestBrokenReleaseRefusedAndCredentialsRedacted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	u := newSteadyUnit(t)
	root := u.root()
	dir := t.TempDir()
	script := filepath.Join(dir, "concourse")
	os.WriteFile(script, []byte("#!/bin/sh\necho 9.9.9\n"), 0o755) // not the version it is published as
	asset, err := release.Build(dir, "8.2.5", "amd64", script, release.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var tarballGets atomic.Int64
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/mirror/v8.2.5/" + asset.Name + ".sha1":
			fmt.Fprint(w, asset.SHA1Line())
		case "/mirror/v8.2.5/" + asset.Name:
			tarballGets.Add(1)
			http.ServeFile(w, r, asset.Path)
		default:
			http.NotFound(w, r)
		}
	}))
	defer mirror.Close()
	const password = "s3cret-pw-4711"
	base := strings.Replace(mirror.URL, "http://", "http://ci-user:"+password+"@", 1) + "/mirror"
	unitFile := filepath.Join(u.prefix, "etc/systemd/system/concourse-worker.service")
	before, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	current, _ := os.Readlink(filepath.Join(root, storage.CurrentLink))

	u.model.SetConfig("concourse-ci-machine", map[string]any{"version": "8.2.5", "allow-major-upgrade": "8", "release-url": base})
	for _, hook := range []string{"config-changed", "update-status"} {
		out, err := u.dispatchOut(worker1, hook)
		if strings.Contains(out, password) || strings.Contains(out, "ci-user") {
			t.Errorf("%s: hook output carries the credentials:\n%s", hook, out)
		}
		if err != nil {
			t.Fatal(err)
		}
		s := u.model.UnitStatus(worker1)
		if s.Status != "blocked" || !strings.Contains(s.Message, "8.2.5") || !strings.Contains(s.Message, `"9.9.9"`) {
			t.Errorf("status after %s: %+v; want blocked naming the binary's wrong version", hook, s)
		}
		if strings.Contains(s.Message, password) || strings.Contains(s.Message, "ci-user") {
			t.Errorf("status after %s carries the credentials: %q", hook, s.Message)
		}
	}
	if n := tarballGets.Load(); n != 1 {
		t.Errorf("the refused tarball was downloaded %d times; want once", n)
	}
	if got, _ := os.Readlink(filepath.Join(root, storage.CurrentLink)); got != current {
		t.Errorf("current = %q; want it left at %q", got, current)
	}
	if after, _ := os.ReadFile(unitFile); !bytes.Equal(before, after) {
		t.Errorf("the worker's unit file changed:\n%s", after)
	}
	for _, l := range u.model.Logs(worker1) {
		if strings.Contains(l.Message, password) || strings.Contains(l.Message, "ci-user") {
			t.Errorf("juju-log carries the credentials: %q", l.Message)
		}
	}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() < 1<<20 {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(password)) {
				t.Errorf("%s on the share carries the password", p)
			}
		}
		return nil
	})
}
