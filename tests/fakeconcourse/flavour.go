package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
)

// flavour is the release line the fake imitates. Behaviour that differs between Concourse lines
// (default runtime, schema version, feature flags, env vars, DB retries) hangs off it, so one source
// tree can stand in for 7.14.x and every 8.x (contract §9.2 "version-specific surface").
type flavour struct {
	major, minor int
	arch         string // Go arch name; decides which runtimes exist (§3.1)
}

// dbVersions is the highest embedded migration per line (contract §0.9, §5). Read-only table.
var dbVersions = []struct {
	major, minor int
	version      int64
}{
	{7, 14, 1746768931},
	{8, 0, 1765921815},
	{8, 1, 1771492499},
	{8, 2, 1776182280},
	{8, 3, 1783024587},
}

// flavourFor derives the flavour from the baked version, unless FAKE_CONCOURSE_FLAVOR (a non-CONCOURSE_
// name, so a real binary would ignore it) pins one. FAKE_CONCOURSE_ARCH lets a test exercise the arm64
// runtime rules without cross-compiling.
func flavourFor(ver string, env *environment) (flavour, error) {
	f := flavour{arch: runtime.GOARCH}
	if a, ok := env.lookup("FAKE_CONCOURSE_ARCH"); ok && a != "" {
		f.arch = a
	}
	if pinned, ok := env.lookup("FAKE_CONCOURSE_FLAVOR"); ok && pinned != "" {
		maj, min, ok := parseMajorMinor(pinned)
		if !ok || !knownLine(maj, min) {
			return f, fmt.Errorf("FAKE_CONCOURSE_FLAVOR=%q is not one of 7.14, 8.0, 8.1, 8.2, 8.3", pinned)
		}
		f.major, f.minor = maj, min
		return f, nil
	}
	maj, min, ok := parseMajorMinor(ver)
	switch {
	case !ok, maj == 0:
		// Dev builds print 0.0.0-dev and are built from master, i.e. the newest line.
		f.major, f.minor = 8, 3
	case maj < 8:
		f.major, f.minor = 7, 14
	case maj == 8 && min <= 3:
		f.major, f.minor = 8, min
	default:
		f.major, f.minor = 8, 3
	}
	return f, nil
}

func parseMajorMinor(v string) (int, int, bool) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	min, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
	return maj, min, err1 == nil && err2 == nil
}

func knownLine(maj, min int) bool {
	for _, d := range dbVersions {
		if d.major == maj && d.minor == min {
			return true
		}
	}
	return false
}

func (f flavour) String() string { return fmt.Sprintf("%d.%d", f.major, f.minor) }

// atLeast reports whether this line is maj.min or newer; 7.14 counts as older than every 8.x.
func (f flavour) atLeast(maj, min int) bool {
	return f.major > maj || (f.major == maj && f.minor >= min)
}

func (f flavour) supportedDBVersion() int64 {
	for _, d := range dbVersions {
		if d.major == f.major && d.minor == f.minor {
			return d.version
		}
	}
	return dbVersions[len(dbVersions)-1].version
}

// knownMigrations are the schema versions this binary "contains": its own and every older line's.
// The fake treats each line's number as a single migration step.
func (f flavour) knownMigrations() []int64 {
	var out []int64
	for _, d := range dbVersions {
		if d.version <= f.supportedDBVersion() {
			out = append(out, d.version)
		}
	}
	return out
}

// runtimeChoices: guardian is not selectable on arm64 (§3.1).
func (f flavour) runtimeChoices() []string {
	if f.arch == "arm64" {
		return []string{"containerd", "houdini"}
	}
	return []string{"guardian", "containerd", "houdini"}
}

// defaultRuntime: 7.14 amd64 still defaults to guardian; containerd everywhere else (§0.6).
func (f flavour) defaultRuntime() string {
	if f.major == 7 && f.arch != "arm64" {
		return "guardian"
	}
	return "containerd"
}

// featureFlags are the keys /api/v1/info reports (§6.1); 7.14 has three more.
func (f flavour) featureFlags(o *parsed) map[string]bool {
	flags := map[string]bool{
		"build_rerun":            o.boolean("enable-rerun-when-worker-disappears"),
		"cache_streamed_volumes": o.boolean("enable-cache-streamed-volumes"),
		"global_resources":       o.boolean("enable-global-resources"),
		"resource_causality":     o.boolean("enable-resource-causality"),
	}
	if f.major == 7 {
		flags["redact_secrets"] = o.boolean("enable-redact-secrets")
		flags["across_step"] = o.boolean("enable-across-step")
		flags["pipeline_instances"] = o.boolean("enable-pipeline-instances")
	}
	return flags
}

// retriesDBConnect: 8.x wraps the driver in a retrying connector; 7.14 gives up at once (§2.1).
func (f flavour) retriesDBConnect() bool { return f.major >= 8 }

// hasHealthEndpoint: /api/v1/health is 8.3/master only (§6.1).
func (f flavour) hasHealthEndpoint() bool { return f.atLeast(8, 3) }
