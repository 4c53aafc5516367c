package hooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// unitRun is one convergence of one unit: the facts, the decisions taken from them, and what was
// done. It lives for a single hook.
type unitRun struct {
	*handler
	f      *Facts
	cfg    Config
	role   Role
	status statusSet

	store     Store
	want      string // version this unit should have installed
	installed string // version installed and verified in this hook ("" when not ready)
	binary    string // resolved path of the binary of `installed`

	peerApp  map[string]string // leader: app data to write on peers at the end (only changes)
	tsaApp   map[string]string // leader web: app data for related worker applications
	unitData map[string]string // our unit bag on peers/tsa/flight
	state    LocalState
	changed  bool // state must be saved
	actions  []string

	webUID, webGID   int
	tsaPub           string   // this unit's TSA host public key (web role)
	workerPub        string   // this unit's worker public key (worker role)
	newAdminPassword string   // generated in this hook, before the secret is committed
	adminRead        string   // the admin password, when this hook read its secret (recordAdmin)
	newWebKeys       *webKeys // the shared web keys created or rotated in this hook (webkeys.go)
	webKeysWait      string   // why this web cannot run its shared keys yet (webkeys.go)
	webKeysBlocked   bool     // webKeysWait needs the operator
	followedHold     string   // the upgrade-held value this web follows in this hook (upgrade.go)
}

// converge is the one pipeline every hook runs: gather facts, validate, decide, apply, report.
func (h *handler) converge(ctx context.Context) error {
	f, err := h.gather(ctx)
	if err != nil {
		return err
	}
	cfg, err := parseConfig(f.RawConfig)
	var ce *ConfigError
	if errors.As(err, &ce) {
		// Nothing is applied with an invalid configuration: the unit keeps running what it ran.
		return h.juju.SetStatus(ctx, juju.Status{Name: juju.StatusBlocked, Message: ce.Error()})
	}
	if err != nil {
		return err
	}
	u := &unitRun{
		handler:  h,
		f:        f,
		cfg:      cfg,
		role:     decideRole(cfg.Mode, f.Leader),
		peerApp:  map[string]string{},
		tsaApp:   map[string]string{},
		unitData: map[string]string{},
		state:    f.State,
	}
	h.logf("role %s (mode=%s, leader=%t)", u.role, cfg.Mode, f.Leader)
	if err := u.run(ctx); err != nil {
		return err
	}
	return nil
}

func (u *unitRun) run(ctx context.Context) error {
	if u.f.Leader {
		if err := u.leaderDuties(ctx); err != nil {
			return err
		}
	}
	u.ensureInstalled(ctx)
	// Nothing is written on the machine before a release is installed: keys, users and files come
	// with the first install, and an invalid or unreachable release leaves the machine untouched.
	if u.installed != "" {
		if err := u.ensureKeys(ctx); err != nil {
			return err
		}
	} else {
		// Keys made in earlier hooks stay published while an install is pending or failing:
		// the services they belong to keep running (found by scenario 10).
		u.loadKeys()
	}
	webReady, err := u.ensureWeb(ctx)
	if err != nil {
		return err
	}
	if u.f.Leader {
		u.publishHeldUpgrade() // after ensureWeb: a retry or a failure of this hook counts (upgrade.go)
	}
	workerReady, workerVersion, err := u.ensureWorker(ctx)
	if err != nil {
		return err
	}
	// The active messages keep the reference's wording: operators and its CI parse them.
	switch {
	case u.role.Web && u.role.Worker && webReady && workerReady:
		u.status.active(fmt.Sprintf("Ready (v%s) %s", u.state.Web.Version, u.webURL()))
	case u.role.Web && !u.role.Worker && webReady:
		u.status.active(fmt.Sprintf("Web server ready (v%s) %s", u.state.Web.Version, u.webURL()))
	case u.role.Worker && !u.role.Web && workerReady:
		u.status.active(fmt.Sprintf("Worker ready (v%s)", workerVersion))
	}
	u.removeLegacy()
	if err := u.publish(ctx); err != nil {
		return err
	}
	if err := u.ensurePorts(ctx); err != nil {
		return err
	}
	if u.changed {
		if err := saveState(u.deps.Paths.StateDir, u.state); err != nil {
			return err
		}
	}
	if !u.status.found {
		u.status.waiting("Setting up: waiting for the next hook")
	}
	u.lineNote()
	if err := u.juju.SetStatus(ctx, u.status.best); err != nil {
		return err
	}
	// Last, once nothing can fail any more: what the cache says was published is what Juju
	// commits (relcache.go, invariants 5 and 6).
	if u.f.Kept != nil {
		u.recordAdmin()
		return saveRelationCache(u.deps.Paths.StateDir, u.f.Kept)
	}
	return nil
}

// leaderDuties are the decisions only the leader takes for the application: which version to
// install when none is pinned, the admin password secret, and the database request.
func (u *unitRun) leaderDuties(ctx context.Context) error {
	var peers map[string]string
	if u.f.Peers != nil {
		peers = u.f.Peers.AppData
	}
	target := u.cfg.Version
	if target == "" && u.cfg.Mode == "worker" {
		// A worker application follows the web application it is related to; it never asks
		// GitHub on its own, or the two could pick different releases.
		target = u.flightTarget()
	}
	if target == "" && u.cfg.Mode != "worker" && u.cfg.VersionLine != "" {
		target = u.resolveLine(ctx, peers[keyTargetVersion]) // a release line (upgrade.go)
	} else if target == "" && u.cfg.Mode != "worker" {
		target = peers[keyTargetVersion]
		ev := u.f.Event.Name
		// Resolve "latest" only when asked to reconsider, not in every hook: the reference charm
		// called the GitHub API on every config-changed and update-status (reference weakness #30).
		if target == "" || ev == "config-changed" || ev == "upgrade-charm" || ev == "install" {
			latest, err := concourse.LatestVersion(ctx, u.deps.HTTP, u.githubAPI(), u.cfg.GitHubToken)
			switch {
			case err == nil:
				target = latest
			case target != "":
				u.logf("keeping Concourse %s: the latest release could not be determined: %v", target, err)
			default:
				u.status.blocked(fmt.Sprintf("Cannot determine the latest Concourse release (%v): set the version option, or github-token/the model proxy", err))
			}
		}
	}
	if u.f.Peers != nil && target != "" {
		u.setPeerApp(keyTargetVersion, target)
	}
	u.tsaApp[keyTargetVersion] = target
	if u.cfg.Mode != "worker" && u.f.Peers != nil && peers[keyAdminSecret] == "" {
		// A refresh from the Python charm finds its plaintext password in the peer data: keep
		// it (users and pipelines know it) but move it into a secret (reference weakness #26).
		pw := peers[keyLegacyAdminPassword]
		if pw == "" || strings.Contains(pw, ",") {
			var err error
			if pw, err = randomPassword(u.deps.Random, 32); err != nil {
				return err
			}
		}
		id, err := u.juju.AddSecret(ctx, juju.SecretAddOptions{
			Content:     map[string]string{"password": pw},
			Label:       "admin-password",
			Description: "Concourse main team admin password",
			Owner:       juju.OwnerApplication,
		})
		if err != nil {
			return fmt.Errorf("creating the admin password secret: %w", err)
		}
		u.setPeerApp(keyAdminSecret, id)
		if peers[keyLegacyAdminPassword] != "" {
			u.peerApp[keyLegacyAdminPassword] = "" // deletes it
			u.act("Move the reference charm's admin password from peer data into a secret")
		}
		u.newAdminPassword = pw
	}
	if err := u.ensureWebKeysSecret(ctx); err != nil {
		return err
	}
	if db := u.f.DB; db != nil && u.cfg.Mode != "worker" {
		want := databaseRequest()
		if db.OurAppData["database"] != databaseName || db.OurAppData["requested-secrets"] != requestedSecrets {
			if err := u.juju.SetAppRelationData(ctx, db.RelationID, want); err != nil {
				return fmt.Errorf("requesting database %q: %w", databaseName, err)
			}
			u.act("Request database %q from %s", databaseName, "postgresql")
		}
		// Kept (saved only if the hook succeeds), so later hooks of this leader need not read it.
		u.f.Kept.recordAppData(db.RelationID, want)
	}
	return nil
}

func (u *unitRun) setPeerApp(k, v string) {
	if u.f.Peers == nil || u.f.Peers.AppData[k] == v {
		return
	}
	u.peerApp[k] = v
}

// wantVersion is the version this unit should install: the pinned option, else what the leader
// chose for the application, else (separate worker application) what the web application chose.
// Units never resolve "latest" on their own (reference weakness #5). A major jump from the
// running web's release waits for allow-major-upgrade (guardMajor, upgrade.go).
func (u *unitRun) wantVersion() string { return u.guardMajor(u.targetVersion()) }

func (u *unitRun) targetVersion() string {
	if u.cfg.Version != "" {
		return u.cfg.Version
	}
	if v := u.peerApp[keyTargetVersion]; v != "" {
		return v
	}
	if u.f.Peers != nil && u.f.Peers.AppData[keyTargetVersion] != "" {
		return u.f.Peers.AppData[keyTargetVersion]
	}
	return u.flightTarget()
}

// flightTarget is the version the related web application chose, for a separate worker app.
func (u *unitRun) flightTarget() string {
	for _, r := range u.f.Flight {
		if v := r.AppData[keyTargetVersion]; v != "" {
			return v
		}
	}
	return ""
}

// installer reports whether this unit downloads releases. With shared storage only the web leader
// does (seed report); without it, every unit installs into its own root.
func (u *unitRun) installer() bool {
	return u.cfg.SharedStorage != "lxc" || (u.role.Web && u.f.Leader)
}

func (u *unitRun) ensureInstalled(ctx context.Context) {
	u.want = u.wantVersion()
	if u.want == "" {
		switch {
		case u.cfg.Mode == "worker" && len(u.f.Flight) == 0:
			u.status.blocked(needWebMessage(u.f.Env.AppName))
		case u.cfg.Mode == "worker":
			u.status.waiting("Waiting for the web application to choose the Concourse version")
		case !u.f.Leader:
			u.status.waiting("Waiting for the leader to choose the Concourse version")
		}
		return
	}
	shared := u.cfg.SharedStorage == "lxc"
	var lastPct int64 = -1
	progress := func(done, total int64) {
		if total <= 0 {
			return
		}
		pct := done * 100 / total
		if pct/10 == lastPct/10 && pct != 100 {
			return // at most one status-set per 10%: each is a process
		}
		lastPct = pct
		_ = u.juju.SetStatus(ctx, juju.Status{Name: juju.StatusMaintenance,
			Message: fmt.Sprintf("Downloading Concourse v%s... %d%%", u.want, pct)})
	}
	u.store = u.deps.NewStore(u.deps.Paths.Root, u.f.Env.UnitName, progress)
	if shared {
		if err := u.store.CheckShared(); err != nil {
			var mm *storage.MarkerMissingError
			switch {
			case errors.As(err, &mm) && (u.state.Web != nil || u.state.Worker != nil):
				// It was there when the services started: the mount went away under them.
				u.status.blocked(fmt.Sprintf("Shared storage unavailable: %s is gone; the LXD disk device may have been removed: re-add it at %s and recreate the marker", mm.Path, u.deps.Paths.Root))
			case errors.As(err, &mm):
				u.status.waiting(fmt.Sprintf("Waiting for shared storage: %s is missing (create it once the LXD disk device is mounted on every unit)", mm.Path))
			default:
				u.status.blocked(fmt.Sprintf("Shared storage unavailable: %v", err))
			}
			return
		}
	}
	installed, err := u.store.Installed()
	if err != nil {
		u.status.blocked(fmt.Sprintf("Cannot read the Concourse install in %s: %v", u.deps.Paths.Root, err))
		return
	}
	damaged := false
	if installed == u.want && u.f.Event.Name == "update-status" {
		// The cheap check of every update-status: presence, sizes and the binary's --version.
		if err := u.store.VerifyQuick(u.probe(ctx, u.want)); err != nil {
			u.logf("install of %s damaged: %v", u.want, err)
			damaged = true
		}
	}
	// A kill late in an install (after `current` switched, before the marker or the bin,
	// resource-types and fly-assets links were renamed) leaves the release right and the root
	// around it wrong; only Install repairs that, so the installer goes there (it finds the
	// release installed and downloads nothing). Others may be on a read-only share: they report it.
	repair := false
	if pc, ok := u.store.(interface{ Problems() ([]string, error) }); ok && installed == u.want && !damaged {
		if ps, err := pc.Problems(); err == nil && len(ps) > 0 {
			if u.installer() {
				u.logf("install root %s disagrees with current, repairing: %s", u.deps.Paths.Root, strings.Join(ps, "; "))
				repair = true
			} else {
				u.jlog(juju.LogWarning, fmt.Sprintf("install root %s disagrees with current (the installing unit repairs it): %s", u.deps.Paths.Root, strings.Join(ps, "; ")))
			}
		}
	}
	if installed == u.want && !damaged && !repair {
		if u.installer() && u.f.Event.Name == "update-status" {
			// A full or read-only root is found before the next upgrade needs it.
			if err := u.store.CheckWritable(); err != nil {
				u.status.blocked(err.Error())
			}
		}
		u.setInstalled(installed)
		return
	}
	if !u.installer() {
		if damaged {
			u.status.blocked(fmt.Sprintf("Concourse v%s in %s is damaged; the leader reinstalls it (run `concourse-ci-machine storage verify` for details)", u.want, u.deps.Paths.Root))
			return
		}
		start := time.Now()
		ok, err := u.store.WaitInstalled(ctx, u.want, u.deps.InstallWait)
		if err != nil {
			u.status.blocked(fmt.Sprintf("Cannot wait for the Concourse install in %s: %v", u.deps.Paths.Root, err))
			return
		}
		if !ok {
			u.logf("Concourse %s not installed yet (waited %s); the leader's publication will wake this unit", u.want, time.Since(start).Round(time.Millisecond))
			u.status.waiting(fmt.Sprintf("Waiting for leader to install Concourse %s", u.want))
			return
		}
		u.logf("Concourse %s installed by another unit (waited %s)", u.want, time.Since(start).Round(time.Millisecond))
		u.setInstalled(u.want)
		return
	}
	if err := u.store.CheckWritable(); err != nil {
		u.status.blocked(err.Error())
		return
	}
	src, err := u.source(ctx)
	if err != nil {
		u.status.blocked(fmt.Sprintf("Cannot install Concourse v%s: %v", u.want, err))
		return
	}
	if !repair {
		_ = u.juju.SetStatus(ctx, juju.Status{Name: juju.StatusMaintenance, Message: fmt.Sprintf("Downloading Concourse v%s...", u.want)})
	}
	res, err := u.store.Install(ctx, u.want, src)
	if err != nil {
		u.status.blocked(installFailure(u.want, src, err))
		u.jlog(juju.LogError, storage.RedactText(fmt.Sprintf("installing Concourse %s failed: %v", u.want, err)))
		return
	}
	if res.Downloaded {
		u.jlog(juju.LogInfo, fmt.Sprintf("installed Concourse %s (%d bytes, waited %s for the lock, took %s)", u.want, res.Bytes, res.Waited.Round(time.Millisecond), res.Took.Round(time.Millisecond)))
		u.act("Install Concourse %s into %s", u.want, u.deps.Paths.Root)
	}
	u.setInstalled(u.want)
}

func (u *unitRun) setInstalled(v string) {
	u.installed = v
	if p, err := filepath.EvalSymlinks(u.store.BinaryPath()); err == nil {
		u.binary = p
	} else if p, err := filepath.EvalSymlinks(filepath.Join(u.deps.Paths.Root, storage.CurrentLink, "bin", "concourse")); err == nil {
		// bin is missing (an install killed before it was linked, not yet repaired): current is
		// the truth, and units name the resolved versioned path anyway.
		u.binary = p
	} else {
		u.binary = u.store.BinaryPath()
	}
	if u.f.Leader {
		u.setPeerApp(keyInstalledVersion, v)
		u.tsaApp[keyInstalledVersion] = v
	}
}

func (u *unitRun) probe(ctx context.Context, want string) func(string) error {
	return func(binary string) error {
		if u.deps.ProbeVersion == nil {
			return nil
		}
		got, err := u.deps.ProbeVersion(ctx, binary)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s --version says %q, want %q", binary, got, want)
		}
		return nil
	}
}

// source picks where the release comes from: an attached concourse-release resource (offline
// installs), else the mirror or GitHub.
func (u *unitRun) source(ctx context.Context) (storage.Source, error) {
	if path, err := u.juju.ResourceGet(ctx, "concourse-release"); err == nil && path != "" {
		if st, serr := os.Stat(path); serr == nil && st.Size() > 0 {
			return storage.Source{LocalPath: path, SHA256: u.cfg.ReleaseSHA256}, nil
		}
	}
	arch, err := concourse.Arch(u.deps.GOARCH)
	if err != nil {
		return storage.Source{}, fmt.Errorf("unsupported machine architecture: %v", err)
	}
	base := u.cfg.ReleaseURL
	if base == "" {
		base = concourse.DefaultReleaseBase
	}
	url := concourse.DownloadURL(base, u.want, arch)
	src := storage.Source{URL: url, SHA256: u.cfg.ReleaseSHA256}
	if src.SHA256 == "" {
		src.SHA1URL = url + ".sha1"
	}
	return src, nil
}

// installFailure turns an install error into a status that names the problem and the fix. The
// status is public (juju status): credentials in release-url never reach it.
func installFailure(version string, src storage.Source, err error) string {
	return storage.RedactText(installFailureText(version, src, err))
}

func installFailureText(version string, src storage.Source, err error) string {
	var ce *storage.ChecksumError
	var de *storage.DownloadError
	var ue *storage.UnsafePathError
	var nw *storage.NotWritableError
	var df *storage.DiskFullError
	var re *storage.RefusedError
	var pe *storage.ProbeError
	var tl *storage.TooLargeError
	var se *storage.StallError
	switch {
	case errors.As(err, &df):
		return fmt.Sprintf("Cannot install Concourse v%s: %v", version, df)
	case errors.As(err, &re):
		return fmt.Sprintf("Concourse v%s from %s was refused: %s; set another version or release-url/release-sha256, or attach a good concourse-release resource (remove %s to retry the same source)",
			version, re.Source, re.Reason, re.Record)
	case errors.As(err, &pe):
		return fmt.Sprintf("Concourse v%s rejected, its binary does not work (%v); the current release keeps running: use another release-url or attach the concourse-release resource", version, pe.Err)
	case errors.As(err, &tl):
		return fmt.Sprintf("Concourse v%s rejected: %v", version, tl)
	case errors.As(err, &ce):
		return fmt.Sprintf("Concourse v%s failed verification (%v): check release-url/release-sha256 or the attached resource", version, err)
	case errors.As(err, new(*storage.ArchiveError)):
		return fmt.Sprintf("Concourse v%s is broken as published (%v): use another release-url or attach the concourse-release resource", version, err)
	case errors.As(err, &ue):
		return fmt.Sprintf("Concourse v%s tarball rejected (%v): use an official release tarball", version, err)
	case errors.As(err, &nw):
		return err.Error()
	case errors.As(err, &se):
		return fmt.Sprintf("Cannot download Concourse v%s: the download stalled (%v): check the mirror at release-url and the model proxy, or attach the concourse-release resource", version, se)
	case errors.As(err, &de):
		return fmt.Sprintf("Cannot download Concourse v%s (%v): check release-url, the model proxy, or attach the concourse-release resource", version, err)
	}
	return fmt.Sprintf("Installing Concourse v%s from %s failed: %v", version, src, err)
}

func (u *unitRun) act(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	u.actions = append(u.actions, s)
	u.logf("%s", s)
}

func saveState(dir string, s LocalState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if _, err := concourse.WriteFileAtomic(filepath.Join(dir, "state.json"), b, 0o600, -1, -1); err != nil {
		return fmt.Errorf("saving charm state: %w", err)
	}
	return nil
}

func hashOf(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (u *unitRun) githubAPI() string {
	if u.deps.GitHubAPI != "" {
		return u.deps.GitHubAPI
	}
	return concourse.DefaultGitHubAPI
}

// needWebMessage is the blocked status of a worker application with no web to register with.
func needWebMessage(app string) string {
	return fmt.Sprintf("Relate to a Concourse web application: juju integrate %s:flight <web-app>:tsa", app)
}
