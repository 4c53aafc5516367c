package hooks

// Role is what a unit runs in the current hook. It is decided afresh in every hook from the mode and
// leadership and never stored, so a leadership change is followed by the next hook on each unit
// (leader-elected on the new leader, leader-settings-changed on the others: juju-contract §4.4).
type Role struct {
	Web    bool
	Worker bool
}

func (r Role) String() string {
	switch {
	case r.Web && r.Worker:
		return "all"
	case r.Web:
		return "web"
	case r.Worker:
		return "worker"
	}
	return "none"
}

// decideRole implements the mode table. Unlike the reference charm (reference-charm §3), an unknown
// mode is never guessed at: parseConfig rejects it before a role is decided.
func decideRole(mode string, leader bool) Role {
	switch mode {
	case "web":
		return Role{Web: true}
	case "worker":
		return Role{Worker: true}
	case "all":
		return Role{Web: true, Worker: true}
	default: // "auto"
		if leader {
			return Role{Web: true}
		}
		return Role{Worker: true}
	}
}
