package hooks

import (
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// statusSet collects candidate statuses while a hook converges; at the end the most important one
// is set, once (juju-contract §9.1: blocked > maintenance > waiting > active).
type statusSet struct {
	best  juju.Status
	found bool
	base  string   // the message of best, before the notes
	notes []string // problems that do not change the status but must not go unseen
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
		s.best = juju.Status{Name: name}
		s.base = msg
		s.found = true
		s.render()
	}
}

// note appends a problem to whatever status wins, e.g. a worker whose key the web refused while
// the web serves every other worker: the unit stays what it is, and the operator still sees it.
func (s *statusSet) note(msg string) {
	s.notes = append(s.notes, msg)
	s.render()
}

func (s *statusSet) render() {
	s.best.Message = s.base
	if len(s.notes) > 0 {
		if s.best.Message != "" {
			s.best.Message += "; "
		}
		s.best.Message += strings.Join(s.notes, "; ")
	}
}

func (s *statusSet) blocked(msg string) { s.add(juju.StatusBlocked, msg) }
func (s *statusSet) waiting(msg string) { s.add(juju.StatusWaiting, msg) }
func (s *statusSet) active(msg string)  { s.add(juju.StatusActive, msg) }

// cut shortens a value someone else chose to at most max runes, "…" marking the cut: a 100 KB
// config value must not become a 100 KB status.
func cut(s string, max int) string {
	n := 0
	for i := range s {
		if n == max {
			return s[:i] + "…"
		}
		n++
	}
	return s
}
