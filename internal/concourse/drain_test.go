package concourse

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

func TestGardenContainersAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		code       int
		want       int
		wantErr    string
	}{
		{"none", `{"Handles":[]}`, 200, 0, ""},
		{"three", `{"Handles":["a","b","c"]}`, 200, 3, ""},
		{"not garden", `{"containers":["a"]}`, 200, 0, "not a Garden container list"},
		{"not json", `<html>`, 200, 0, "not a Garden container list"},
		{"error", `{"Type":"ServiceUnavailableError"}`, 503, 0, "503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || r.URL.Path != "/containers" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tc.code)
				fmt.Fprint(w, tc.body)
			}))
			defer srv.Close()
			n, err := GardenContainers(context.Background(), nil, strings.TrimPrefix(srv.URL, "http://"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || n != tc.want {
				t.Fatalf("= %d, %v; want %d", n, err, tc.want)
			}
		})
	}
	if _, err := GardenContainers(context.Background(), nil, "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "asking the worker's Garden") {
		t.Errorf("nothing listening: %v", err)
	}
}

// The real worker's Garden (houdini; no TSA needed for Garden to serve) answers GET /containers
// in the shape GardenContainers reads, and lists a container once one exists.
func TestGardenContainersRealWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Concourse workers")
	}
	set := realconcourse.Require(t)
	for _, v := range []string{"7.14.3", "8.2.5"} {
		t.Run(v, func(t *testing.T) {
			bin := set.Concourse(v)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := t.TempDir()
			realweb.GenerateKeys(t, ctx, bin, dir)
			port := realweb.FreePort(t)
			addr := "127.0.0.1:" + strconv.Itoa(port)
			w := realweb.StartHoudiniWorker(t, bin, "garden-probe", dir, realweb.FreePort(t), filepath.Join(dir, "work"), filepath.Join(dir, "worker.log"),
				"CONCOURSE_BIND_PORT="+strconv.Itoa(port))
			realweb.WaitFor(t, ctx, w, time.Minute, "the worker's Garden", func() error {
				n, err := GardenContainers(ctx, nil, addr)
				if err == nil && n != 0 {
					return fmt.Errorf("%d containers on a fresh worker", n)
				}
				return err
			})
			resp, err := http.Post("http://"+addr+"/containers", "application/json", strings.NewReader(`{"handle":"probe"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if n, err := GardenContainers(ctx, nil, addr); err != nil || n != 1 {
				t.Fatalf("after creating one container: %d, %v; want 1", n, err)
			}
		})
	}
}
