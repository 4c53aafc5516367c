package hooks

import (
	"errors"
	"os"
	"path/filepath"
)

// legacyFiles are what the Python reference charm left that this charm replaces
// (reference-charm §4.4, §4.5, §7.3). Its web environment and keys sat on the install root, which
// is shared between units and applications in lxc mode: the database and admin passwords and the
// TSA host private key, readable by every unit (reference weakness #25). Once this charm's own
// services run, nothing reads them.
func (u *unitRun) legacyFiles() []string {
	workerRoot := filepath.Dir(u.deps.Paths.WorkDir) // /var/lib/concourse-worker
	files := []string{
		filepath.Join(workerRoot, "worker-config.env"),
		filepath.Join(workerRoot, "keys"),
	}
	if u.installer() {
		// Only a unit that may write the share cleans it.
		files = append(files, filepath.Join(u.deps.Paths.Root, "config.env"), filepath.Join(u.deps.Paths.Root, "keys"))
	}
	return files
}

// removeLegacy deletes the reference charm's leftovers after an upgrade-charm, once this unit's
// services run from the charm's own files.
func (u *unitRun) removeLegacy() {
	if u.f.Event.Name != "upgrade-charm" && u.f.Event.Name != "config-changed" {
		return
	}
	if u.state.Web == nil && u.state.Worker == nil {
		return // not yet: the old services may still be the ones running
	}
	for _, p := range u.legacyFiles() {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			u.logf("removing the Python charm's %s: %v", p, err)
			continue
		}
		u.act("Remove the Python charm's %s (its secrets are now kept in %s)", p, u.deps.Paths.ConfigDir)
	}
}
