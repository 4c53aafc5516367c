package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// The charm's Draining status counts the worker's containers with GET /containers on its
// Garden: the stand-in answers that, and the create/destroy a test uses to make a worker busy,
// like the real worker (houdini, which needs no Garden backend of its own).
func TestFidelityGardenContainers(t *testing.T) {
	set := realconcourse.Require(t)
	for _, v := range realconcourse.Versions() {
		answers := map[string][]string{}
		for _, who := range []struct{ name, bin string }{{"real", set.Concourse(v)}, {"stand-in", fakeBin(t, v)}} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			dir := t.TempDir()
			realweb.GenerateKeys(t, ctx, set.Concourse(v), dir)
			port := realweb.FreePort(t)
			base := "http://127.0.0.1:" + strconv.Itoa(port)
			w := realweb.StartHoudiniWorker(t, who.bin, "garden-fidelity", dir, realweb.FreePort(t), filepath.Join(dir, "work"), filepath.Join(dir, "worker.log"),
				"CONCOURSE_BIND_PORT="+strconv.Itoa(port))
			realweb.WaitFor(t, ctx, w, 30*time.Second, who.name+" Garden", func() error {
				resp, err := http.Get(base + "/ping")
				if err == nil {
					resp.Body.Close()
				}
				return err
			})
			var got []string
			for _, r := range []struct{ method, path, body string }{
				{"GET", "/containers", ""},
				{"POST", "/containers", `{"handle":"one"}`},
				{"GET", "/containers", ""},
				{"DELETE", "/containers/one", ""},
				{"GET", "/containers", ""},
			} {
				req, _ := http.NewRequestWithContext(ctx, r.method, base+r.path, strings.NewReader(r.body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("%s %s %s %s: %v", who.name, v, r.method, r.path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got = append(got, fmt.Sprintf("%s %s → %d %s %s", r.method, r.path, resp.StatusCode, resp.Header.Get("Content-Type"), strings.TrimSpace(string(b))))
			}
			cancel()
			w.Stop(t)
			answers[who.name] = got
		}
		t.Logf("%s real Garden: %s", v, strings.Join(answers["real"], "; "))
		for i := range answers["real"] {
			if answers["real"][i] != answers["stand-in"][i] {
				t.Errorf("%s:\n  stand-in %s\n      real %s", v, answers["stand-in"][i], answers["real"][i])
			}
		}
	}
}
