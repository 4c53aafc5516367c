package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/bed"
)

// Check is one assertion on a scenario: nil, or an error saying "got …; want …".
type Check func() error

// Services the charm runs, and where their files are on a unit.
const (
	WebService    = "concourse-server.service"
	WorkerService = "concourse-worker.service"
	SystemdDir    = "/etc/systemd/system"
	Root          = "/var/lib/concourse"
)

// HasStatus: the unit's workload status and message are exactly these.
func (s *Scenario) HasStatus(unit, status, message string) Check {
	return func() error {
		got := s.C.Model.UnitStatus(unit)
		if got.Status != status || got.Message != message {
			return fmt.Errorf("%s status = %s %q; want %s %q", unit, got.Status, got.Message, status, message)
		}
		return nil
	}
}

// StatusHas: the unit's workload status is status and its message contains every part.
func (s *Scenario) StatusHas(unit, status string, parts ...string) Check {
	return func() error {
		got := s.C.Model.UnitStatus(unit)
		ok := got.Status == status
		for _, p := range parts {
			ok = ok && strings.Contains(got.Message, p)
		}
		if !ok {
			return fmt.Errorf("%s status = %s %q; want %s containing %q", unit, got.Status, got.Message, status, parts)
		}
		return nil
	}
}

// WebReady and WorkerReady are the active statuses of the two roles (the reference's wording).
func (s *Scenario) WebReady(unit, version string) Check {
	return s.HasStatus(unit, "active", fmt.Sprintf("Web server ready (v%s) http://%s:8080", version, s.C.Model.Address(unit)))
}

func (s *Scenario) WorkerReady(unit, version string) Check {
	return s.HasStatus(unit, "active", fmt.Sprintf("Worker ready (v%s)", version))
}

// Downloads: the release of version was served in full exactly n times by this scenario's server.
func (s *Scenario) Downloads(version string, n int) Check {
	return func() error {
		a, ok := s.F.Assets[version]
		if !ok {
			return fmt.Errorf("no release %s in the fixture", version)
		}
		if got := s.Rel.Downloads(a.Name); got != n {
			return fmt.Errorf("downloads of %s = %d (%+v); want %d", a.Name, got, s.Rel.Stats(a.Name), n)
		}
		return nil
	}
}

// FileIs: path reads exactly want on the unit.
func (s *Scenario) FileIs(unit, path, want string) Check {
	return func() error {
		got, err := s.C.Unit(unit).ReadFile(path)
		if err != nil || string(got) != want {
			return fmt.Errorf("%s:%s = %q, %v; want %q", unit, path, got, err, want)
		}
		return nil
	}
}

// FileHas: path on the unit contains every part.
func (s *Scenario) FileHas(unit, path string, parts ...string) Check {
	return func() error {
		got, err := s.C.Unit(unit).ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s:%s: %v; want it to contain %q", unit, path, err, parts)
		}
		for _, p := range parts {
			if !strings.Contains(string(got), p) {
				return fmt.Errorf("%s:%s = %q; want it to contain %q", unit, path, got, p)
			}
		}
		return nil
	}
}

// FileLacks: path on the unit exists and contains none of parts.
func (s *Scenario) FileLacks(unit, path string, parts ...string) Check {
	return func() error {
		got, err := s.C.Unit(unit).ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s:%s: %v", unit, path, err)
		}
		for _, p := range parts {
			if strings.Contains(string(got), p) {
				return fmt.Errorf("%s:%s = %q; want no %q", unit, path, got, p)
			}
		}
		return nil
	}
}

// Exists and Absent: a path inside the unit (symlinks followed).
func (s *Scenario) Exists(unit, path string) Check {
	return func() error {
		if _, err := s.C.Unit(unit).Stat(path); err != nil {
			return fmt.Errorf("%s:%s: %v; want it to exist", unit, path, err)
		}
		return nil
	}
}

func (s *Scenario) Absent(unit, path string) Check {
	return func() error {
		st, err := s.C.Unit(unit).Stat(path)
		if err == nil {
			return fmt.Errorf("%s:%s exists (%+v); want it absent", unit, path, st)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s:%s: %v; want not-exist", unit, path, err)
		}
		return nil
	}
}

// SameInode: path is one file (same device and inode) on every unit.
func (s *Scenario) SameInode(path string, units ...string) Check {
	return func() error {
		var first bed.FileStat
		for i, u := range units {
			st, err := s.C.Unit(u).Stat(path)
			if err != nil {
				return fmt.Errorf("%s:%s: %v", u, path, err)
			}
			if !st.Mode.IsRegular() {
				return fmt.Errorf("%s:%s is %s; want a regular file", u, path, st.Mode)
			}
			if i == 0 {
				first = st
			} else if st.Dev != first.Dev || st.Ino != first.Ino {
				return fmt.Errorf("%s:%s is dev %d inode %d; want dev %d inode %d as on %s", u, path, st.Dev, st.Ino, first.Dev, first.Ino, units[0])
			}
		}
		return nil
	}
}

// ShareHas: the shared host directory holds exactly these entries (names; directories and
// symlinks included), ignoring none.
func (s *Scenario) ShareHas(want ...string) Check {
	return func() error {
		entries, err := os.ReadDir(s.Shared)
		if err != nil {
			return err
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				return fmt.Errorf("share holds %q; want %q among them", got, w)
			}
		}
		return nil
	}
}

// Versions: the complete releases in the share's versions/ (one per "<v>-<id>" directory), and
// nothing in .staging.
func (s *Scenario) Versions(want ...string) Check {
	return func() error {
		got, err := s.VersionDirs()
		if err != nil {
			return err
		}
		var vs []string
		for _, d := range got {
			v, _, _ := strings.Cut(d, "-")
			vs = append(vs, v)
		}
		sort.Strings(vs)
		w := slices.Sorted(slices.Values(want))
		if !slices.Equal(vs, w) {
			return fmt.Errorf("versions/ holds %q; want one directory each for %q", got, w)
		}
		staging, err := os.ReadDir(filepath.Join(s.Shared, ".staging"))
		if err == nil && len(staging) > 0 {
			var names []string
			for _, e := range staging {
				names = append(names, e.Name())
			}
			return fmt.Errorf(".staging holds %q; want it empty once installs are over", names)
		}
		return nil
	}
}

// VersionDirs lists versions/ of the share (hidden entries left out).
func (s *Scenario) VersionDirs() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.Shared, "versions"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// LinkTo: the share's symlink name (current, previous) points at versions/<version>-….
func (s *Scenario) LinkTo(name, version string) Check {
	return func() error {
		target, err := os.Readlink(filepath.Join(s.Shared, name))
		if err != nil || !strings.HasPrefix(filepath.Base(target), version+"-") {
			return fmt.Errorf("share %s -> %q, %v; want versions/%s-…", name, target, err, version)
		}
		return nil
	}
}

// --- services --------------------------------------------------------------------------------

// Service is what systemd says about one service on one unit.
type Service struct {
	Active       string // ActiveState
	InvocationID string // changes on every start
	NRestarts    int    // automatic restarts by systemd (Restart=on-failure)
	ActiveSince  uint64 // ActiveEnterTimestampMonotonic, µs: comparable across containers (one kernel)
	UnitFile     string // LoadState: "not-found" once the unit file is gone
}

// ServiceOf reads a service's state on a unit.
func ServiceOf(ctx context.Context, u *bed.Unit, svc string) (Service, error) {
	out, err := u.Systemctl(ctx, "show", "--property=ActiveState,InvocationID,NRestarts,ActiveEnterTimestampMonotonic,LoadState", svc)
	if err != nil {
		return Service{}, err
	}
	var st Service
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "ActiveState":
			st.Active = v
		case "InvocationID":
			st.InvocationID = v
		case "NRestarts":
			st.NRestarts, _ = strconv.Atoi(v)
		case "ActiveEnterTimestampMonotonic":
			st.ActiveSince, _ = strconv.ParseUint(v, 10, 64)
		case "LoadState":
			st.UnitFile = v
		}
	}
	return st, nil
}

// Snapshot is the state of every charm service on every unit, keyed "unit service".
type Snapshot map[string]Service

// Snap records the services of the given units (the ones a unit does not run read inactive).
func (s *Scenario) Snap(units ...string) (Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap := Snapshot{}
	for _, u := range units {
		for _, svc := range []string{WebService, WorkerService} {
			st, err := ServiceOf(ctx, s.C.Unit(u), svc)
			if err != nil {
				return nil, err
			}
			snap[u+" "+svc] = st
		}
	}
	return snap, nil
}

// Unrestarted: every service active in before is still the same invocation now.
func (s *Scenario) Unrestarted(before Snapshot) Check {
	return func() error {
		var units []string
		for k := range before {
			u, _, _ := strings.Cut(k, " ")
			if !slices.Contains(units, u) {
				units = append(units, u)
			}
		}
		now, err := s.Snap(units...)
		if err != nil {
			return err
		}
		var bad []string
		for k, b := range before {
			if b.Active != "active" {
				continue
			}
			n := now[k]
			if n.Active != "active" || n.InvocationID != b.InvocationID || n.NRestarts != b.NRestarts {
				bad = append(bad, fmt.Sprintf("%s: %s invocation %s restarts %d (was active, %s, %d)", k, n.Active, n.InvocationID, n.NRestarts, b.InvocationID, b.NRestarts))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("services restarted: %s; want none", strings.Join(bad, "; "))
		}
		return nil
	}
}

// ServiceIs: the service's ActiveState on the unit.
func (s *Scenario) ServiceIs(unit, svc, state string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := ServiceOf(ctx, s.C.Unit(unit), svc)
		if err != nil || st.Active != state {
			return fmt.Errorf("%s %s is %q, %v; want %s", unit, svc, st.Active, err, state)
		}
		return nil
	}
}

// --- the Concourse API, from the host ----------------------------------------------------------

var apiClient = &http.Client{Timeout: 10 * time.Second}

// AdminLogin runs get-admin-password on the web unit and logs in with the password grant.
func (s *Scenario) AdminLogin(ctx context.Context, web string) (baseURL, token string, err error) {
	rec, err := s.C.RunAction(ctx, web, "get-admin-password", nil)
	if err != nil {
		return "", "", err
	}
	if rec.Status != "completed" || rec.Results["password"] == "" {
		return "", "", fmt.Errorf("get-admin-password on %s: %s %q %v; want completed with a password", web, rec.Status, rec.Message, rec.Results)
	}
	baseURL = fmt.Sprintf("http://%s:8080", s.C.Model.Address(web))
	if rec.Results["url"] != baseURL {
		return "", "", fmt.Errorf("get-admin-password url = %q; want %q", rec.Results["url"], baseURL)
	}
	token, err = concourse.PasswordToken(ctx, apiClient, baseURL, rec.Results["username"], rec.Results["password"])
	return baseURL, token, err
}

// Registered: the web unit's API lists every worker (by unit) as running. A worker retries its
// registration every few seconds, so this polls for at most a minute.
func (s *Scenario) Registered(web string, workers ...string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		base, token, err := s.AdminLogin(ctx, web)
		if err != nil {
			return fmt.Errorf("logging in to %s: %v", web, err)
		}
		var last []string
		for {
			list, err := concourse.Workers(ctx, apiClient, base, token)
			if err == nil {
				last = last[:0]
			}
			missing := 0
			for _, w := range workers {
				found := false
				for _, got := range list {
					if got.Name == UnitTag(w) && got.State == "running" {
						found = true
					}
				}
				if !found {
					missing++
				}
			}
			for _, got := range list {
				last = append(last, got.Name+"="+got.State)
			}
			if err == nil && missing == 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				want := make([]string, len(workers))
				for i, w := range workers {
					want[i] = UnitTag(w) + "=running"
				}
				return fmt.Errorf("workers at %s = %q (err %v); want %q", base, last, err, want)
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// WebVersion: /api/v1/info of the web unit reports version.
func (s *Scenario) WebVersion(web, version string) Check {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := concourse.Info(ctx, apiClient, fmt.Sprintf("http://%s:8080", s.C.Model.Address(web)))
		if err != nil || info.Version != version {
			return fmt.Errorf("%s /api/v1/info version = %q, %v; want %q", web, info.Version, err, version)
		}
		return nil
	}
}

// --- hooks -------------------------------------------------------------------------------------

// HookSaid: some hook of the unit wrote text on its stderr (the charm's trace).
func (s *Scenario) HookSaid(unit, text string) Check {
	return func() error {
		for _, r := range s.C.Unit(unit).Hooks() {
			if strings.Contains(r.Stderr, text) {
				return nil
			}
		}
		return fmt.Errorf("no hook of %s printed %q; hooks: %q", unit, text, s.C.Unit(unit).HookNames())
	}
}

// KillDispatch SIGKILLs the unit's running dispatch process (the hook), found in the
// container's pid namespace by its executable path, and returns its host pid.
func KillDispatch(u *bed.Unit) (int, error) {
	exe := u.CharmDir + "/dispatch"
	ps, err := u.Processes()
	if err != nil {
		return 0, err
	}
	for _, p := range ps {
		if len(p.Argv) > 0 && p.Argv[0] == exe {
			if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
				return 0, fmt.Errorf("killing %s's dispatch (pid %d): %w", u.Name, p.PID, err)
			}
			return p.PID, nil
		}
	}
	return 0, fmt.Errorf("no %s process in %s", exe, u.Name)
}

// RealtimeOf converts a CLOCK_MONOTONIC reading in µs (systemd's *TimestampMonotonic, taken in
// a container: containers share the host's kernel clocks) into wall-clock time.
func RealtimeOf(monotonicUsec uint64) time.Time {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	now := time.Now()
	return now.Add(-time.Duration(ts.Nano() - int64(monotonicUsec)*1000))
}

// Workers lists the workers the web at baseURL knows (token from AdminLogin).
func (s *Scenario) Workers(ctx context.Context, baseURL, token string) ([]concourse.WorkerInfo, error) {
	return concourse.Workers(ctx, apiClient, baseURL, token)
}

// NoHookFailed: no dispatch run of any unit exited non-zero (or could not run).
func (s *Scenario) NoHookFailed() Check {
	return func() error {
		var bad []string
		for _, app := range s.C.Model.Apps() {
			for _, u := range s.C.Units(app) {
				for _, r := range u.Hooks() {
					if r.Exit != 0 || r.Err != "" {
						bad = append(bad, fmt.Sprintf("%s %s: %s", u.Name, r, strings.TrimSpace(r.Stderr)))
					}
				}
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("failed hooks: %s; want none", strings.Join(bad, "; "))
		}
		return nil
	}
}

// PeerBagHas: the unit's databag on the peer relation holds non-empty values for keys (what the
// other units build their TSA and authorized-key lists from).
func (s *Scenario) PeerBagHas(unit string, keys ...string) Check {
	return func() error {
		id := s.C.Model.RelationID(AppName(unit), "peers")
		bag := s.C.Model.UnitData(id, unit)
		for _, k := range keys {
			if bag[k] == "" {
				return fmt.Errorf("%s peer databag = %v; want a non-empty %q", unit, bag, k)
			}
		}
		return nil
	}
}
