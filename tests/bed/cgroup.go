package bed

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Each container gets its own cgroup. Without a systemd on the host, `nspawn --keep-unit` uses the
// cgroup it was started in and splits it into "supervisor" and "payload"; started from the root
// cgroup, every container shared one payload tree, so one container's systemd saw the others'
// processes in "its" system.slice and waited for them at poweroff (a 10 s hang per stop, found the
// hard way). A cgroup per machine under ccm-testbed/ keeps them apart and is easy to sweep.

// cgroupHierarchies returns, for the hierarchies systemd uses (the v1 name=systemd one and
// cgroup2), the directory of our own cgroup in each.
func cgroupHierarchies() ([]string, error) {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	// Lines "0::/path" (cgroup2) and "N:name=systemd:/path" (v1).
	paths := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			paths["cgroup2"] = parts[2]
		case parts[1] == "name=systemd":
			paths["name=systemd"] = parts[2]
		}
	}
	var dirs []string
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// mountinfo: id parent major:minor root mountpoint opts... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		mp, root := unescapeMountinfo(f[4]), f[3]
		var key string
		switch {
		case g[0] == "cgroup2":
			key = "cgroup2"
		case g[0] == "cgroup" && strings.Contains(","+g[2]+",", ",name=systemd,"):
			key = "name=systemd"
		default:
			continue
		}
		p, ok := paths[key]
		if !ok {
			continue
		}
		// A hierarchy mounted from a sub-cgroup (root != "/") shows paths relative to it.
		rel := strings.TrimPrefix(p, root)
		dirs = append(dirs, filepath.Join(mp, rel))
		delete(paths, key)
	}
	if len(dirs) == 0 {
		return nil, errors.New("no cgroup2 or name=systemd hierarchy mounted")
	}
	return dirs, nil
}

// machineCgroups creates <own cgroup>/ccm-testbed/<name> in every hierarchy.
func machineCgroups(name string) ([]string, error) {
	parents, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, p := range parents {
		d := filepath.Join(p, "ccm-testbed", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return dirs, fmt.Errorf("creating cgroup %s: %w", d, err)
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}

// removeCgroup removes a cgroup and its children, deepest first. cgroupfs refuses rmdir while a
// process is inside (EBUSY), so this only succeeds once the container is gone.
func removeCgroup(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
