package hooks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// The real web on what the charm renders for tls-enabled: HTTPS on web-port with the
// configured certificate (the charm's pinned client and fly --ca-cert both log in over it), and
// Concourse's plain listener on tls-redirect-port sending a browser to the https URL while its
// API still answers there (what the option's doc says).
func TestRealWebTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real Concourse web and PostgreSQL")
	}
	set := realconcourse.Require(t)
	db := realDB(t)
	for _, v := range realconcourse.Versions() {
		t.Run(v, func(t *testing.T) { testRealWebTLS(t, set, v, db) })
	}
}

func testRealWebTLS(t *testing.T, set realconcourse.Set, version string, db concourse.DBConfig) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := newRealWeb(t, set.Concourse(version), db)
	redirect := realweb.FreePort(t)
	cert, key := validTLSPair(t, "127.0.0.1")
	cfg, err := parseConfig(map[string]any{"mode": "web", "version": version, "web-port": r.lb.WebPort,
		"tls-enabled": true, "tls-certificate": cert, "tls-key": key, "tls-redirect-port": redirect})
	if err != nil {
		t.Fatal(err)
	}
	cfg.hashPassword = placeholderHash
	p := Paths{ConfigDir: r.dir}
	env, envFile, _, err := renderWeb(cfg, p, "127.0.0.1", r.bin, r.admin, r.db)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := concourse.HashPassword(r.admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range webTLSFiles(cfg, p, os.Getgid()) {
		os.MkdirAll(filepath.Dir(f.Path), 0o755)
		if err := os.WriteFile(f.Path, f.Data, f.Mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r.dir, fileWebEnv), envFile, 0o600); err != nil {
		t.Fatal(err)
	}
	https := fmt.Sprintf("https://127.0.0.1:%d", r.lb.WebPort)
	// The loopback overrides, then what they would undo of the rendered TLS listeners.
	vars := append(envListOf(env), r.lb.WebEnv(t)...)
	vars = append(vars, "CONCOURSE_BIND_PORT="+strconv.Itoa(redirect), "CONCOURSE_EXTERNAL_URL="+https,
		"CONCOURSE_ADD_LOCAL_USER=admin:"+admin, "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	web := realweb.Start(t, r.bin, []string{"web"}, vars, filepath.Join(r.dir, "web-tls.log"))

	client, err := LocalWebClient(p, https, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	realweb.WaitFor(t, ctx, web, 90*time.Second, "the web's /api/v1/info over TLS", func() error {
		info, err := concourse.Info(ctx, client, https)
		if err == nil && info.Version != version {
			err = fmt.Errorf("version %s", info.Version)
		}
		return err
	})
	if _, err := concourse.PasswordToken(ctx, client, https, "admin", r.admin); err != nil {
		t.Errorf("the charm's login over TLS (as RetireWorker does): %v", err)
	}
	// Another certificate for the same address is refused by the charm's client.
	other, _ := validTLSPair(t, "127.0.0.1")
	otherDir := Paths{ConfigDir: t.TempDir()}
	os.MkdirAll(filepath.Join(otherDir.ConfigDir, "tls"), 0o755)
	os.WriteFile(filepath.Join(otherDir.ConfigDir, fileTLSCert), []byte(other), 0o644)
	if c, err := LocalWebClient(otherDir, https, 5*time.Second); err == nil {
		if _, err := concourse.Info(ctx, c, https); err == nil || !strings.Contains(err.Error(), "other than tls-certificate") {
			t.Errorf("a client pinned to another certificate: %v; want refused", err)
		}
	}

	fly := realweb.NewFly(t, set.Fly(version), r.dir)
	caFile := filepath.Join(r.dir, fileTLSCert)
	if out, err := fly.Run(ctx, "login", "-c", https, "--ca-cert", caFile, "-u", "admin", "-p", r.admin); err != nil {
		t.Errorf("fly login over https with --ca-cert: %v\n%s\n%s", err, out, web.LogTail())
	}
	if out, err := fly.Run(ctx, "workers"); err != nil {
		t.Errorf("fly workers over https: %v\n%s", err, out)
	}

	// The plain port: a browser is redirected to the https URL; the API answers unencrypted.
	plain := fmt.Sprintf("http://127.0.0.1:%d", redirect)
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(plain + "/teams/main/pipelines?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != https+"/teams/main/pipelines?x=1" {
		t.Errorf("GET on the plain port = %s, Location %q; want 301 to %s/teams/main/pipelines?x=1", resp.Status, loc, https)
	}
	resp, err = noFollow.Get(plain + "/api/v1/info")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("Concourse %s, plain port: /api/v1/info = %s %s", version, resp.Status, body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the API on the plain port answers %s; the tls-enabled doc says it answers", resp.Status)
	}
	web.Stop(t)
}
