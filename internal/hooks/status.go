package hooks

import (
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// statusSet collects candidate statuses while a hook converges; at the end the most important one
// is set, once (juju-contract §9.1: blocked > maintenance > waiting > active).
type statusSet struct {
	best  juju.Status
	found bool
}

func statusRank(n juju.StatusName) int {
	switch n {
	case juju.StatusBlocked:
		return 4
	case juju.StatusMaintenance:
		return 3
	case juju.StatusWaiting:
		return 2
	case juju.StatusActive:
		return 1
	}
	return 0
}

// add keeps the first status of the highest rank, so the earliest (most fundamental) problem of a
// kind is the one shown.
func (s *statusSet) add(name juju.StatusName, msg string) {
	if !s.found || statusRank(name) > statusRank(s.best.Name) {
		s.best = juju.Status{Name: name, Message: msg}
		s.found = true
	}
}

func (s *statusSet) blocked(msg string) { s.add(juju.StatusBlocked, msg) }
func (s *statusSet) waiting(msg string) { s.add(juju.StatusWaiting, msg) }
func (s *statusSet) active(msg string)  { s.add(juju.StatusActive, msg) }
