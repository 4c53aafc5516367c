package scenarios

import (
	"context"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// 11. What a new user does: `juju deploy -n 2` with every option at its default on machines as
// Juju gives them, then `juju integrate … postgresql`. The first version of the charm never
// installed here: nothing created /var/lib/concourse before its write probe, and the bed hid it.
//
// With no version and no release-url the charm asks GitHub for the latest release and downloads
// it from GitHub. The bed has no internet, so the model's juju-https-proxy is a TLS-inspecting
// proxy that answers for api.github.com and github.com from this scenario's release server, and
// the machines trust its CA the way cloudinit-userdata ca-certs makes them.
func testFreshDefaults(t *testing.T, f *Fixture) {
	s := f.NewScenario(t)
	s.Rel.SetLatest(V1)
	proxy, err := release.ListenProxy(s.C.Bed.HostIP()+":0", s.Rel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	s.C.Model.SetProxy(jujutest.ProxySettings{HTTPS: proxy.URL(), HTTP: proxy.URL()})
	provision := func(ctx context.Context, m *bed.Machine) error {
		// Before anything of the charm runs: the machine must be as fresh as Juju gives it.
		if err := m.CheckFresh(ctx, false); err != nil {
			return err
		}
		if err := m.WriteFile("/usr/local/share/ca-certificates/ccm-bed-proxy.crt", proxy.CAPEM, 0o644); err != nil {
			return err
		}
		_, stderr, code, err := m.Exec(ctx, nil, "update-ca-certificates")
		if err == nil && code != 0 {
			t.Logf("update-ca-certificates on %s: exit %d: %s", m.Name, code, stderr)
		}
		return err
	}
	step(t, "deploy-with-defaults", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// No config at all: mode=auto, shared-storage=none, the latest version from GitHub.
		if _, err := s.C.Deploy(ctx, App, s.F.Charm, 2, nil, bed.DeployOptions{Provision: provision}); err != nil {
			t.Fatalf("deploying: %v", err)
		}
		s.Settle(t,
			s.HasStatus(u0, "waiting", "Waiting for PostgreSQL database..."),
			s.WorkerReady(u1, V1),
			// shared-storage=none: each unit installs into its own /var/lib/concourse.
			s.Downloads(V1, 2),
			s.FileIs(u0, Root+"/.installed_version", V1),
			s.FileIs(u1, Root+"/.installed_version", V1),
			s.ServiceIs(u1, WorkerService, "active"),
		)
	})
	step(t, "integrate-postgresql", func(t *testing.T) {
		s.DeployPostgres(t)
		s.IntegratePostgres(t, App)
		s.Settle(t,
			s.WebReady(u0, V1),
			s.WorkerReady(u1, V1),
			s.ServiceIs(u0, WebService, "active"),
			s.Registered(u0, u1),
			s.Downloads(V1, 2),
		)
		if got := proxy.Refused(); len(got) > 0 {
			t.Errorf("the charm dialled through the model proxy to %q; a default deployment needs only GitHub", got)
		}
	})
}
