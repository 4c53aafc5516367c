package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// The desired state of a service is plain data (serviceSpec), built without I/O. It is diffed
// against what is on disk and what the running process was started with (ServiceRecord), and the
// difference becomes a list of named steps, applied in order: Pebble's plan → Replan → tasks.

// fileSpec is one file as it should be on disk.
type fileSpec struct {
	Path     string
	Data     []byte
	Mode     os.FileMode
	UID, GID int // -1 leaves the owner alone
}

// serviceSpec is one systemd service as it should be.
type serviceSpec struct {
	Name     string     // systemd unit name
	Files    []fileSpec // what the process reads (env file, key lists), written before a (re)start
	UnitFile fileSpec
	// Inputs are what the process reads once, at start, each hashed under a name an operator
	// understands; a change restarts it. Reload are what it re-reads on SIGHUP.
	Inputs  map[string]string
	Reload  map[string]string
	Version string
	Binary  string
	// NoBlock: a restart of the running service is queued, not waited for (the worker drains
	// for up to drain-timeout; lifecycle.go), and a drain under way counts as running.
	NoBlock bool
}

// step is one named change. Its Summary is what the unit log, the tests and restart-services show.
type step struct {
	Summary string
	Do      func(context.Context) error
}

// blockedError stops a plan at a step that needs the operator (a database that refuses the
// credentials, a schema the release cannot run on): it becomes the blocked status, not a failed
// hook, and nothing after it is applied.
type blockedError struct{ msg string }

func (e *blockedError) Error() string { return e.msg }

func blocked(format string, args ...any) error {
	return &blockedError{msg: fmt.Sprintf(format, args...)}
}

// fileDiffers observes a file against its spec: content, mode and owner.
func fileDiffers(f fileSpec) bool {
	st, err := os.Stat(f.Path)
	if err != nil || st.Mode().Perm() != f.Mode.Perm() {
		return true
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if (f.UID >= 0 && int(sys.Uid) != f.UID) || (f.GID >= 0 && int(sys.Gid) != f.GID) {
			return true
		}
	}
	b, err := os.ReadFile(f.Path)
	return err != nil || !bytes.Equal(b, f.Data)
}

func writeStep(f fileSpec) step {
	return step{Summary: "Write " + f.Path, Do: func(context.Context) error {
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Dir(f.Path), err)
		}
		_, err := concourse.WriteFileAtomic(f.Path, f.Data, f.Mode, f.UID, f.GID)
		return err
	}}
}

// restartReasons says why the running service no longer matches its spec; empty means it
// matches. A service the charm never started, or that is not running, always needs a start.
func restartReasons(spec serviceSpec, rec *ServiceRecord, active bool) []string {
	switch {
	case rec == nil:
		return []string{"not started by the charm yet"}
	case !active:
		return []string{"not running"}
	case len(rec.Inputs) == 0:
		return []string{"restart requested (restart-services force=true)"}
	}
	var why []string
	if rec.Version != spec.Version {
		why = append(why, fmt.Sprintf("release %s → %s", rec.Version, spec.Version))
	}
	for _, k := range sortedKeys(spec.Inputs) {
		if k != "release" && rec.Inputs[k] != spec.Inputs[k] {
			why = append(why, k+" changed")
		}
	}
	return why
}

func reloadNeeded(spec serviceSpec, rec *ServiceRecord) bool {
	if rec == nil {
		return false
	}
	for k, v := range spec.Reload {
		if rec.Reload[k] != v {
			return true
		}
	}
	return false
}

// servicePlan is the diff of one service: its steps, and whether the process (re)starts.
type servicePlan struct {
	steps   []step
	restart bool
	reload  bool
}

// planService diffs spec against the disk and the record. preStart steps (checks, migrations)
// run only when the service is about to (re)start.
func (u *unitRun) planService(ctx context.Context, spec serviceSpec, preStart []step) (servicePlan, error) {
	var p servicePlan
	for _, f := range spec.Files {
		if fileDiffers(f) {
			p.steps = append(p.steps, writeStep(f))
		}
	}
	if fileDiffers(spec.UnitFile) {
		p.steps = append(p.steps, writeStep(spec.UnitFile), step{
			Summary: "Reload systemd: " + spec.Name + " changed",
			Do:      u.deps.Services.DaemonReload,
		})
	}
	active, err := u.serviceRunning(ctx, spec)
	if err != nil {
		return p, err
	}
	rec := u.recordOf(spec.Name)
	if why := restartReasons(spec, rec, active); len(why) > 0 {
		p.restart = true
		p.steps = append(p.steps, preStart...)
		verb, do, suffix := "Start", u.deps.Services.Start, ""
		if active {
			verb, do = "Restart", u.deps.Services.Restart
			if nb, s, ok := u.restartNoBlock(spec); ok {
				do, suffix = nb, s
			}
		}
		p.steps = append(p.steps,
			step{Summary: "Enable " + spec.Name, Do: func(ctx context.Context) error { return u.deps.Services.Enable(ctx, spec.Name) }},
			step{Summary: fmt.Sprintf("%s %s with Concourse %s: %s%s", verb, spec.Name, spec.Version, strings.Join(why, ", "), suffix),
				Do: func(ctx context.Context) error {
					if err := do(ctx, spec.Name); err != nil {
						return blocked("Cannot start %s: %v", spec.Name, err)
					}
					return nil
				}})
	} else if reloadNeeded(spec, rec) {
		p.reload = true
		p.steps = append(p.steps, step{Summary: fmt.Sprintf("Reload %s (SIGHUP): %s changed", spec.Name, strings.Join(sortedKeys(spec.Reload), ", ")),
			Do: func(ctx context.Context) error { return u.deps.Services.Kill(ctx, spec.Name, "SIGHUP") }})
	}
	return p, nil
}

// applyService runs a plan and records what the service now runs with. It reports whether the
// service is running as specified; a blocked step sets the status and stops the plan.
func (u *unitRun) applyService(ctx context.Context, spec serviceSpec, p servicePlan) (bool, error) {
	for _, s := range p.steps {
		if err := s.Do(ctx); err != nil {
			var b *blockedError
			if errors.As(err, &b) {
				u.status.blocked(b.msg)
				return false, nil
			}
			return false, fmt.Errorf("%s: %w", s.Summary, err)
		}
		u.act("%s", s.Summary)
	}
	rec := u.recordOf(spec.Name)
	switch {
	case p.restart:
		rec = &ServiceRecord{Inputs: spec.Inputs, Reload: spec.Reload, Version: spec.Version, StartedAt: u.now(), StartedWith: spec.Binary}
		u.setRecord(spec.Name, rec)
		u.changed = true
		if err := u.store.RecordRunning(spec.Version, u.deps.Paths.StateDir); err != nil {
			u.logf("recording the running version: %v", err)
		}
	case p.reload:
		rec.Reload = spec.Reload
		u.changed = true
	}
	return true, nil
}

func (u *unitRun) recordOf(name string) *ServiceRecord {
	if name == webService {
		return u.state.Web
	}
	return u.state.Worker
}

func (u *unitRun) setRecord(name string, r *ServiceRecord) {
	if name == webService {
		u.state.Web = r
	} else {
		u.state.Worker = r
	}
}
