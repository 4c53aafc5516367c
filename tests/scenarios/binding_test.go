package scenarios

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
)

// TestBinding (issue 8 §4): the web unit's machine has two more addresses besides its private
// one, its peers binding is the first and its tsa relation with a separate worker application
// advertises the second (network-get -r, as for a cross-model relation). Each worker must dial
// the address its side was given, never the private address, and register over it: the web's
// TSA connections arrive on those addresses.
func TestBinding(t *testing.T) {
	f := NewFixture(t, FixtureOptions{CharmPath: *charmFlag, ToolsDir: *toolsFlag, Versions: []string{V1}})
	s := f.NewScenario(t)
	s.MarkShared(t)
	s.DeployPostgres(t)
	s.Deploy(t, App, 2, s.Config(nil), bed.StorageShared)
	s.Deploy(t, "worker", 1, s.Config(map[string]any{"mode": "worker", "version": ""}), bed.StorageSharedROWorkers)
	web := s.Unit(t, u0)
	private := s.C.Model.Address(u0)
	peersIP, tsaIP := s.C.Bed.SpareIP(0), s.C.Bed.SpareIP(1)
	for _, ip := range []string{peersIP, tsaIP} {
		if err := web.AddAddress(t.Context(), ip); err != nil {
			t.Fatal(err)
		}
	}
	s.C.BindAddress(u0, "peers", peersIP)
	s.IntegratePostgres(t, App)
	id, err := s.C.Integrate(App+":tsa", "worker:flight")
	if err != nil {
		t.Fatal(err)
	}
	s.C.RelationIngress(u0, id, tsaIP)
	s.Settle(t,
		// The URL comes from the tsa binding itself, which stays on the private address.
		s.WebReady(u0, V1),
		s.WorkerReady(u1, V1),
		s.WorkerReady("worker/0", V1),
		s.FileHas(u1, "/etc/concourse/worker.env", fmt.Sprintf("CONCOURSE_TSA_HOST=%q", peersIP+":2222")),
		s.FileHas("worker/0", "/etc/concourse/worker.env", fmt.Sprintf("CONCOURSE_TSA_HOST=%q", tsaIP+":2222")),
		s.FileLacks(u1, "/etc/concourse/worker.env", private+":2222"),
		s.FileLacks("worker/0", "/etc/concourse/worker.env", private+":2222"),
		// Web nodes reach each other on the peers binding.
		s.EnvIs(u0, "/etc/concourse/web.env", "CONCOURSE_PEER_ADDRESS", peersIP),
		s.Registered(u0, u1, "worker/0"),
		s.TSAArrivesOn(u0, map[string]string{u1: peersIP, "worker/0": tsaIP}),
	)
}

// TSAArrivesOn: the web unit's established TSA connections (port 2222) come from exactly these
// workers, each on the given local address of the web.
func (s *Scenario) TSAArrivesOn(web string, want map[string]string) Check {
	return func() error {
		conns, err := s.C.Unit(web).EstablishedTo(2222)
		if err != nil {
			return err
		}
		var got, wantList []string
		for _, c := range conns {
			local, _, _ := net.SplitHostPort(c.Local)
			remote, _, _ := net.SplitHostPort(c.Remote)
			from := remote
			for u := range want {
				if s.C.Model.Address(u) == remote {
					from = u
				}
			}
			got = append(got, from+"→"+local)
		}
		for u, ip := range want {
			wantList = append(wantList, u+"→"+ip)
		}
		got = slices.Compact(slices.Sorted(slices.Values(got)))
		slices.Sort(wantList)
		if !slices.Equal(got, wantList) {
			return fmt.Errorf("TSA connections on %s = %q; want %q", web, got, wantList)
		}
		return nil
	}
}

// EnvIs: the env file on the unit sets name to value. Only that line is reported, as web.env
// holds the admin password.
func (s *Scenario) EnvIs(unit, path, name, value string) Check {
	return func() error {
		b, err := s.C.Unit(unit).ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s:%s: %v", unit, path, err)
		}
		got := "(unset)"
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+"="); ok {
				got = v
			}
		}
		if want := fmt.Sprintf("%q", value); got != want {
			return fmt.Errorf("%s:%s %s = %s; want %s", unit, path, name, got, want)
		}
		return nil
	}
}
