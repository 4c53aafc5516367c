package hooks

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// The web and worker environments the hooks render are accepted by the stand-in concourse, which
// validates names and values as the real binary does (concourse-contract §9): the web starts
// against a real PostgreSQL, and the worker registers with its TSA using the rendered keys.
func TestRenderedEnvironmentsRunTheStandIn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and the stand-in Concourse")
	}
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{TLS: true})
	pg.CreateRole(t, "relation-7", "p4ss word#with$chars")
	pg.CreateDatabase(t, "concourse", "relation-7")
	dir := t.TempDir()
	paths := Paths{Root: filepath.Join(dir, "root"), ConfigDir: filepath.Join(dir, "etc"), WorkDir: filepath.Join(dir, "work"), StateDir: filepath.Join(dir, "state"), SystemdDir: filepath.Join(dir, "systemd")}
	// Installed from a release tarball, as on a unit: the worker finds its CNI plugins and
	// resource types relative to the binary (concourse-contract §1.3).
	asset, err := release.Build(dir, "7.14.3", "amd64", release.BuildFakeConcourse(t, "7.14.3"), release.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := storage.New(storage.Options{Root: paths.Root, Unit: "concourse-ci-machine/10", StripPrefix: "concourse/"})
	if _, err := st.Install(context.Background(), "7.14.3", storage.Source{LocalPath: asset.Path, SHA256: asset.SHA256}); err != nil {
		t.Fatal(err)
	}
	bin, err := filepath.EvalSymlinks(st.BinaryPath())
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(paths.ConfigDir, "keys"), 0o755)
	key := func(rel string) string {
		pub, _, err := concourse.EnsureKey(filepath.Join(paths.ConfigDir, rel), 2048, -1, -1)
		if err != nil {
			t.Fatal(err)
		}
		return pub
	}
	key(keySession)
	tsaPub := key(keyTSAHostKey)
	workerPub := key(keyWorker)
	os.WriteFile(filepath.Join(paths.ConfigDir, keyAuthorized), []byte(workerPub+"\n"), 0o640)
	os.WriteFile(filepath.Join(paths.ConfigDir, keyTSAPublicForWkr), []byte(tsaPub+"\n"), 0o644)

	webPort, tsaPortFree, promPort := freePort(t), freePort(t), freePort(t)
	cfg, err := parseConfig(map[string]any{"mode": "all", "web-port": fmt.Sprint(webPort), "log-level": "debug", "enable-metrics": true,
		"container-placement-strategy": "volume-locality,fewest-build-containers", "tag": "big",
		"extra-web-flags": `--cluster-name "stand in"`})
	if err != nil {
		t.Fatal(err)
	}
	// The database serves TLS and the web verifies it with the CA the relation hands over.
	caPath := filepath.Join(paths.ConfigDir, fileDBCA)
	os.WriteFile(caPath, pg.CACertPEM(), 0o644)
	db := concourse.DBConfig{Host: pg.Host(), Port: pg.Port(), User: "relation-7", Password: "p4ss word#with$chars", Database: "concourse",
		SSLMode: "verify-ca", CACert: caPath}
	_, webEnv, webUnit, err := renderWeb(cfg, paths, "127.0.0.1", bin, "admin-pw-123", db)
	if err != nil {
		t.Fatal(err)
	}
	// On a unit the web binds every address and the TSA port 2222; here the test must stay on
	// loopback and on free ports, so only those two settings are overridden.
	web := startStandIn(t, bin, "web", webEnv, webUnit, "CONCOURSE_BIND_IP=127.0.0.1", "CONCOURSE_TSA_BIND_IP=127.0.0.1",
		fmt.Sprintf("CONCOURSE_TSA_BIND_PORT=%d", tsaPortFree),
		"CONCOURSE_PROMETHEUS_BIND_IP=127.0.0.1", fmt.Sprintf("CONCOURSE_PROMETHEUS_BIND_PORT=%d", promPort))
	base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var info concourse.InfoResponse
	for {
		if info, err = concourse.Info(ctx, http.DefaultClient, base); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("web never answered: %v\n%s", err, web.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info.Version != "7.14.3" || info.ClusterName != "stand in" {
		t.Errorf("info = %+v", info)
	}
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)); err != nil || resp.StatusCode != 200 {
		t.Errorf("metrics listener: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	workerEnv, workerUnit, err := renderWorker(cfg, paths, "concourse-ci-machine/10", bin, []string{fmt.Sprintf("127.0.0.1:%d", tsaPortFree)}, taskHook{})
	if err != nil {
		t.Fatal(err)
	}
	wk := startStandIn(t, bin, "worker", workerEnv, workerUnit, "CONCOURSE_HEALTHCHECK_BIND_IP=127.0.0.1", "CONCOURSE_HEALTHCHECK_BIND_PORT=0",
		fmt.Sprintf("CONCOURSE_BIND_PORT=%d", freePort(t)), // its Garden: not the host's 7777
		"FAKE_CONCOURSE_ALLOW_NONROOT=1", "FAKE_CONCOURSE_RETRY=200ms")
	token, err := concourse.PasswordToken(ctx, http.DefaultClient, base, "admin", "admin-pw-123")
	if err != nil {
		t.Fatal(err)
	}
	for {
		workers, err := concourse.Workers(ctx, http.DefaultClient, base, token)
		if err == nil && len(workers) == 1 && workers[0].Name == "concourse-ci-machine-10" && workers[0].State == "running" {
			if strings.Join(workers[0].Tags, ",") != "big" {
				t.Errorf("worker tags = %v", workers[0].Tags)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("worker never registered (%v, %v)\nworker log:\n%s\nweb log:\n%s", workers, err, wk.String(), web.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startStandIn runs `<bin> <sub>` the way systemd would run the rendered unit: the environment
// file's variables (parsed by the same rules) and the ExecStart arguments after the subcommand.
func startStandIn(t *testing.T, bin, sub string, envFile, unit []byte, extra ...string) *bytes.Buffer {
	t.Helper()
	vars, err := concourse.ParseEnvFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/bin:/bin"}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	env = append(env, extra...)
	args := []string{sub}
	for _, line := range strings.Split(string(unit), "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			if _, after, ok := strings.Cut(rest, " "+sub); ok && strings.TrimSpace(after) != "" {
				words, err := concourse.SplitFlags(strings.TrimSpace(after))
				if err != nil {
					t.Fatal(err)
				}
				args = append(args, words...)
			}
		}
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return &out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
