package bed

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"
)

// DefaultStateDir records what each live bed owns. It is outside any test's temp dir because it
// must outlive a killed test binary: `go test -timeout` exits without running t.Cleanup, and the
// next bed uses these records to sweep what the dead one left (containers keep running when their
// nspawn parent dies).
const DefaultStateDir = "/run/ccm-testbed"

// bedRecord is what a sweeper needs to undo a bed. It is rewritten atomically on every change,
// and each resource is recorded before it is created, so a crash between the two leaves a record
// of something absent, which the sweeper tolerates, rather than an unrecorded leak.
type bedRecord struct {
	Bridge   string          `json:"bridge"`
	Dir      string          `json:"dir"`
	Machines []machineRecord `json:"machines"`
}

type machineRecord struct {
	Name string `json:"name"`
	Root string `json:"root"`
	// Processes are identified by pid and start time, so that a recycled pid is never killed.
	Procs   []procID `json:"procs"`
	Cgroups []string `json:"cgroups"`
}

type procID struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// procStat is the part of /proc/<pid>/stat the bed needs.
type procStat struct {
	state byte   // field 3: R, S, Z…
	ppid  int    // field 4
	start uint64 // field 22: start time in clock ticks since boot
}

func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may contain spaces: split after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3, so field 22 is fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(fields))
	}
	ppid, err1 := strconv.Atoi(fields[1])
	start, err2 := strconv.ParseUint(fields[19], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
	}
	return procStat{state: fields[0][0], ppid: ppid, start: start}, nil
}

func newProcID(pid int) (procID, error) {
	st, err := readProcStat(pid)
	return procID{PID: pid, Start: st.start}, err
}

// alive reports whether the recorded process still runs (same pid, same start time). A zombie
// counts as gone: an orphaned container init is reparented to the host's PID 1, which may reap
// it late or never, and a zombie holds no mounts or network devices.
func (p procID) alive() bool {
	st, err := readProcStat(p.PID)
	return err == nil && st.start == p.Start && st.state != 'Z'
}

func writeRecord(path string, rec bedRecord) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	return os.Rename(tmp, path)
}

// Sweep undoes every bed under stateDir whose owner process is gone: it kills their containers,
// detaches their mounts, deletes their bridges and directories. A bed's owner holds an flock on
// "<id>.lock" for its whole life, and the kernel drops that lock when the process dies, so taking
// the lock proves the owner is dead; live beds of parallel test binaries are never touched.
func Sweep(stateDir string) error {
	beds := filepath.Join(stateDir, "beds")
	locks, err := filepath.Glob(filepath.Join(beds, "*.lock"))
	if err != nil {
		return err
	}
	var errs []error
	for _, lockPath := range locks {
		lock := flock.New(lockPath)
		ok, err := lock.TryLock()
		if err != nil {
			errs = append(errs, fmt.Errorf("locking %s: %w", lockPath, err))
			continue
		}
		if !ok {
			continue
		}
		recPath := strings.TrimSuffix(lockPath, ".lock") + ".json"
		if err := sweepRecord(recPath); err != nil {
			errs = append(errs, err)
		} else {
			os.Remove(recPath)
			os.Remove(lockPath)
		}
		lock.Unlock()
	}
	return errors.Join(errs...)
}

func sweepRecord(recPath string) error {
	data, err := os.ReadFile(recPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var rec bedRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return fmt.Errorf("parsing %s: %w", recPath, err)
	}
	var errs []error
	for _, m := range rec.Machines {
		for _, p := range m.Procs {
			if p.alive() {
				// SIGKILL to a container's PID 1 from outside kills its whole pid namespace.
				syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	}
	for _, m := range rec.Machines {
		for _, p := range m.Procs {
			if err := waitGone(p, 5*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, m := range rec.Machines {
		for _, cg := range m.Cgroups {
			if err := removeCgroup(cg); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if rec.Dir != "" {
		if err := removeTree(rec.Dir); err != nil {
			errs = append(errs, err)
		}
		// t.TempDir's per-test parent; removed only when empty.
		os.Remove(filepath.Dir(rec.Dir))
	}
	if rec.Bridge != "" && linkExists(rec.Bridge) {
		if out, err := exec.Command("ip", "link", "del", rec.Bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", rec.Bridge, err, out))
		}
	}
	return errors.Join(errs...)
}

// waitGone polls (1 ms steps, bounded) until a process has exited and been reaped.
func waitGone(p procID, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for p.alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still alive after %s", p.PID, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}
