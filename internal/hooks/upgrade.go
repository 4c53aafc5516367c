package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// Upgrades as one guarded step (issue 13 §2). A web moving to another release goes through six
// named steps, each shown in the status while it runs and recorded with its times in the unit's
// LocalState (check-status reports them):
//
//  1. pause   the old web's runtime components (tracker, scanner, scheduler; 8.2+ only: 7.x has
//     no component API, the step is skipped with a note). First, because it needs the old web's
//     API, and a paused scheduler starts no build the migration would strand.
//  2. stop    every web of the application (stopForUpgrade).
//  3. backup  pg_dump of the database (upgrade-backup): after the stop, so the dump holds every
//     write the old release made; pg_dump and the directory are checked before step 1, so a
//     missing pg_dump blocks with nothing stopped.
//  4. migrate once, by the leader.
//  5. start   the new web.
//  6. resume  the components step 1 paused, once the new web answers.
//
// A major jump (7.x → 8.x) is held, before any of this, until allow-major-upgrade names the
// target's major or the exact target: a value left from an earlier jump never approves the next.
// A failed backup or migration starts the previous release again when the database schema is
// still one it supports (the old binary stays on disk: the store keeps `previous`), else
// blocks; either way the status names the dump and the restore command. The failed target is
// not retried until the next config-changed or upgrade-charm, so hooks do not stop the web
// again and again. The other webs of the application (mode=web -n 3) follow the leader's: it
// publishes the held upgrade in the peers application data (upgrade-held), and they run the
// old release again with it, or stay stopped with it (followLeaderHold).

// The upgrade steps, in order; their position is the "(n/6)" of the status.
const (
	stepPause   = "pause"
	stepStop    = "stop"
	stepBackup  = "backup"
	stepMigrate = "migrate"
	stepStart   = "start"
	stepResume  = "resume"
)

var upgradeSteps = []string{stepPause, stepStop, stepBackup, stepMigrate, stepStart, stepResume}

// upgradeStepText is what the status says while a step runs.
var upgradeStepText = map[string]string{
	stepPause:   "pausing the build components",
	stepStop:    "stopping the web",
	stepBackup:  "backing up the database",
	stepMigrate: "migrating the database",
	stepStart:   "starting the web",
	stepResume:  "resuming the build components",
}

// UpgradeRecord is the last upgrade of this unit's web, kept in LocalState across the hooks it
// spans (the other webs stop in their own hooks; the new web may answer only in a later one).
type UpgradeRecord struct {
	From    string        `json:"from"`
	To      string        `json:"to"`
	Started time.Time     `json:"started"`
	Ended   time.Time     `json:"ended,omitzero"`
	Result  string        `json:"result,omitempty"` // "" while under way
	Steps   []UpgradeStep `json:"steps,omitempty"`
	// Paused: step 1 paused the components and step 6 has not resumed them yet.
	Paused bool `json:"paused,omitempty"`
	// Backup is the dump step 3 wrote ("" without one).
	Backup string `json:"backup,omitempty"`
	// Failed: the upgrade to To stopped; it is retried at the next config-changed or
	// upgrade-charm only (the web runs From again, or stays stopped when it cannot).
	Failed bool `json:"failed,omitempty"`
	// Restored: after the failure the old release runs again (else the web stays stopped).
	Restored bool `json:"restored,omitempty"`
	// FromBinary is the binary the old web ran (a rollback starts it again).
	FromBinary string `json:"from-binary,omitempty"`
}

// UpgradeStep is one step as it ran.
type UpgradeStep struct {
	Name  string    `json:"name"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
	Note  string    `json:"note,omitempty"`
}

// UpgradeDeps are what the upgrade steps need from the outside world.
type UpgradeDeps struct {
	// LookPGDump finds pg_dump on the unit (FindPGDump); an error means it is not installed.
	LookPGDump func() (string, error)
	// Backup dumps the database into dir, keeping keep dumps (concourse.Backup).
	Backup func(ctx context.Context, db concourse.DBConfig, dir string, keep int, pgDump string) (string, error)
	// Components pauses (pause=true) or unpauses the web's runtime components at baseURL,
	// logged in as user; concourse.ErrComponentsUnsupported before 8.2.
	Components func(ctx context.Context, baseURL, user, password string, pause bool) error
}

// FindPGDump looks for pg_dump in PATH, then in the PostgreSQL packages' own directories
// (/usr/lib/postgresql/<major>/bin: Debian's postgresql-client puts only a wrapper in PATH,
// and a server package none), newest major first, since pg_dump refuses a server newer than
// itself.
func FindPGDump(lookPath func(string) (string, error), glob func(string) ([]string, error)) (string, error) {
	if p, err := lookPath("pg_dump"); err == nil {
		return p, nil
	}
	found, _ := glob("/usr/lib/postgresql/*/bin/pg_dump")
	sort.Slice(found, func(i, j int) bool { return pgMajorOf(found[i]) > pgMajorOf(found[j]) })
	for _, p := range found {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("pg_dump is not installed (looked in PATH and /usr/lib/postgresql/*/bin)")
}

// RealUpgradeDeps are the production upgrade dependencies; webClient gives the client for the
// web at a base URL on this unit (LocalWebClient).
func RealUpgradeDeps(paths Paths) UpgradeDeps {
	return UpgradeDeps{
		LookPGDump: func() (string, error) { return FindPGDump(exec.LookPath, filepath.Glob) },
		Backup:     concourse.Backup,
		Components: func(ctx context.Context, base, user, password string, pause bool) error {
			c, err := LocalWebClient(paths, base, 10*time.Second)
			if err != nil {
				return err
			}
			token, err := concourse.PasswordToken(ctx, c, base, user, password)
			if err != nil {
				return fmt.Errorf("logging in to %s as %s: %w", base, user, err)
			}
			if pause {
				return concourse.PauseComponents(ctx, c, base, token, concourse.RuntimeComponents...)
			}
			return concourse.UnpauseComponents(ctx, c, base, token, concourse.RuntimeComponents...)
		},
	}
}

func pgMajorOf(path string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return n
}

// upgradeOptions are the options of the guarded upgrade (not in the Python charm).
func upgradeOptions() []option {
	return []option{
		{Name: "allow-major-upgrade", Type: "string", Role: roleNone, Check: checkMajorApproval,
			Doc: "Confirms an upgrade across a major version (e.g. 7.14.3 → 8.2.5), which is held until then: the target's major (8) or the exact target (8.2.5). A value left from one jump does not approve the next (9 needs allow-major-upgrade=9). Not in the Python charm."},
		{Name: "upgrade-backup", Type: "boolean", Default: "false", Role: roleNone, Check: checkSwitch,
			Doc: "Dump the database with pg_dump (custom format) after the webs stop and before the migration of every upgrade that moves the schema. Needs pg_dump on the web units (apt install postgresql-client, at least the server's major version); without it the upgrade is held with nothing stopped. Not in the Python charm."},
		{Name: "upgrade-backup-dir", Type: "string", Role: roleNone, Check: checkBackupDir,
			Doc: "Unit-local directory of the upgrade dumps (empty: /var/lib/concourse-charm/backups). Never on the shared storage under /var/lib/concourse. Not in the Python charm."},
		{Name: "upgrade-backup-keep", Type: "int", Default: "3", Role: roleNone, Check: checkPositive,
			Doc: "How many upgrade dumps to keep in upgrade-backup-dir; older ones are removed after a new dump is complete. Not in the Python charm."},
	}
}

// majorApprovalRE is a major ("8") or an exact version ("8.2.5", "v8.2.5").
var majorApprovalRE = regexp.MustCompile(`^v?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*))?$`)

func checkMajorApproval(v string) (string, error) {
	if !majorApprovalRE.MatchString(v) {
		return "", errors.New("expected the major version the upgrade goes to (e.g. 8) or the exact target (e.g. 8.2.5)")
	}
	return strings.TrimPrefix(v, "v"), nil
}

func checkBackupDir(v string) (string, error) {
	c := filepath.Clean(v)
	if !filepath.IsAbs(v) {
		return "", errors.New("expected an absolute directory on the unit, e.g. /var/lib/concourse-charm/backups")
	}
	if root := DefaultPaths().Root; c == root || strings.HasPrefix(c, root+"/") {
		return "", errors.New("is on the install root " + root + ", shared between units with shared-storage=lxc: dumps are unit-local, choose a directory elsewhere")
	}
	return c, nil
}

// releaseLineRE is a release line the version option accepts besides an exact version: a major
// ("8") or a major.minor ("8.2"), as concourse.ResolveVersion resolves them.
var releaseLineRE = regexp.MustCompile(`^v?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?$`)

// parseReleaseLine returns the line of v ("8.2" for "8.2" or "v8.2"), ok false when v is none.
func parseReleaseLine(v string) (string, bool) {
	if !releaseLineRE.MatchString(v) {
		return "", false
	}
	return strings.TrimPrefix(v, "v"), true
}

// inReleaseLine says whether the exact version v belongs to line.
func inReleaseLine(v, line string) bool { return v != "" && strings.HasPrefix(v, line+".") }

// resolveLine is the leader's exact target for a version line: the one it published (current)
// while it still belongs to the line, else, and in the events that reconsider (config-changed,
// upgrade-charm, install), the newest release of the line. Steady hooks ask GitHub nothing.
func (u *unitRun) resolveLine(ctx context.Context, current string) string {
	line := u.cfg.VersionLine
	ev := u.f.Event.Name
	if inReleaseLine(current, line) && ev != "config-changed" && ev != "upgrade-charm" && ev != "install" {
		return current
	}
	v, err := concourse.ResolveVersion(ctx, u.deps.HTTP, u.githubAPI(), u.cfg.GitHubToken, line)
	switch {
	case err == nil:
		if v != current {
			u.logf("version %s resolved to Concourse %s", line, v)
		}
		return v
	case inReleaseLine(current, line):
		u.logf("keeping Concourse %s of line %s: the releases could not be listed: %v", current, line, err)
		return current
	}
	u.status.blocked(fmt.Sprintf("Cannot resolve version %s to a release (%v): set an exact version, or github-token/the model proxy", line, err))
	return current
}

// lineNote says what the version line stands for now, on every unit whose status is not
// active: the active messages keep the reference charm's exact wording (operators' CI parses
// them), and check-status reports the line always (upgradeReport).
func (u *unitRun) lineNote() {
	if u.status.best.Name == juju.StatusActive {
		return
	}
	if u.cfg.VersionLine != "" && u.want != "" && inReleaseLine(u.want, u.cfg.VersionLine) {
		u.status.note(fmt.Sprintf("version %s is %s", u.cfg.VersionLine, u.want))
	}
}

// runningWebVersion is the release the application's web runs: this unit's own web, else the
// one the leader (or the related web application) publishes.
func (u *unitRun) runningWebVersion() string {
	if u.state.Web != nil && u.state.Web.Version != "" {
		return u.state.Web.Version
	}
	if u.f.Peers != nil && u.f.Peers.AppData[keyWebVersion] != "" {
		return u.f.Peers.AppData[keyWebVersion]
	}
	for _, r := range u.f.Flight {
		if v := r.AppData[keyWebVersion]; v != "" {
			return v
		}
	}
	return ""
}

// guardMajor holds a major jump from the running web's release to candidate until
// allow-major-upgrade approves it: every unit then keeps the running release (nothing is
// downloaded, stopped or migrated) and says what to run.
func (u *unitRun) guardMajor(candidate string) string {
	running := u.runningWebVersion()
	if !concourse.MajorJump(running, candidate) {
		return candidate
	}
	major, _, _ := strings.Cut(candidate, ".")
	if ok := u.cfg.Opts["allow-major-upgrade"]; ok == major || ok == candidate {
		return candidate
	}
	from, _, _ := strings.Cut(running, ".")
	hint := ""
	if u.cfg.Opts["upgrade-backup"] != "true" {
		hint = " (consider upgrade-backup=true first)"
	}
	u.status.blocked(fmt.Sprintf("Upgrade %s → %s crosses a major version (%s → %s) and is held: run `juju config %s allow-major-upgrade=%s` to go ahead%s",
		running, candidate, from, major, u.f.Env.AppName, major, hint))
	return running
}

// backupSettings are the backup options with their defaults.
func (u *unitRun) backupSettings() (on bool, dir string, keep int) {
	on = u.cfg.Opts["upgrade-backup"] == "true"
	dir = u.cfg.Opts["upgrade-backup-dir"]
	if dir == "" {
		dir = filepath.Join(u.deps.Paths.StateDir, "backups")
	}
	keep = 3
	if n, err := strconv.Atoi(u.cfg.Opts["upgrade-backup-keep"]); err == nil && n > 0 {
		keep = n
	}
	return on, dir, keep
}

// upgrading is the record of the upgrade of this unit's web to the installed release, started
// here when there is none yet.
func (u *unitRun) upgrading() *UpgradeRecord {
	rec := u.state.Upgrade
	if rec != nil && rec.To == u.installed && rec.From == u.state.Web.Version && rec.Result == "" {
		return rec
	}
	rec = &UpgradeRecord{From: u.state.Web.Version, To: u.installed, Started: u.now(), FromBinary: u.state.Web.StartedWith}
	u.state.Upgrade = rec
	u.changed = true
	return rec
}

// beginStep records and shows that a step starts.
func (u *unitRun) beginStep(ctx context.Context, rec *UpgradeRecord, name string) {
	n := 0
	for i, s := range upgradeSteps {
		if s == name {
			n = i + 1
		}
	}
	rec.Steps = append(rec.Steps, UpgradeStep{Name: name, Start: u.now()})
	u.changed = true
	_ = u.juju.SetStatus(ctx, juju.Status{Name: juju.StatusMaintenance,
		Message: fmt.Sprintf("Upgrading %s → %s: %s (%d/%d)", rec.From, rec.To, upgradeStepText[name], n, len(upgradeSteps))})
}

// endStep records that the last step ended, with a note ("" for a plain success).
func (u *unitRun) endStep(rec *UpgradeRecord, note string) {
	if len(rec.Steps) == 0 {
		return
	}
	s := &rec.Steps[len(rec.Steps)-1]
	s.End, s.Note = u.now(), note
	u.changed = true
	u.logf("upgrade %s → %s: %s done in %s%s", rec.From, rec.To, s.Name, s.End.Sub(s.Start).Round(time.Millisecond), noteSuffix(note))
}

// skipStep records a step that had nothing to do.
func (u *unitRun) skipStep(rec *UpgradeRecord, name, why string) {
	now := u.now()
	rec.Steps = append(rec.Steps, UpgradeStep{Name: name, Start: now, End: now, Note: "skipped: " + why})
	u.changed = true
}

func noteSuffix(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}

// upgradePreflight checks, with nothing stopped yet, what the upgrade's backup will need.
// It returns a blocked status message, or "".
func (u *unitRun) upgradePreflight(db concourse.DBConfig) string {
	on, dir, _ := u.backupSettings()
	if !on {
		return ""
	}
	if root := filepath.Clean(u.deps.Paths.Root); dir == root || strings.HasPrefix(dir, root+"/") {
		return fmt.Sprintf("upgrade-backup-dir %s is on the install root %s: choose a unit-local directory", dir, root)
	}
	if u.deps.Upgrade.LookPGDump == nil || u.deps.Upgrade.Backup == nil {
		return "upgrade-backup is on, but this build of the charm cannot run pg_dump"
	}
	if _, err := u.deps.Upgrade.LookPGDump(); err != nil {
		return fmt.Sprintf("Upgrade to Concourse %s held: upgrade-backup is on and %v: install it with `juju exec --unit %s -- apt-get install -y postgresql-client` (at least the server's major version), or set upgrade-backup=false",
			u.installed, err, u.f.Env.UnitName)
	}
	return ""
}

// pauseStep (1/6) pauses the running old web's components. A web without the component API
// (7.x) skips it; any other failure is noted and the upgrade goes on: a pause only spares the
// builds, the stop that follows is what keeps the old release off the new schema.
func (u *unitRun) pauseStep(ctx context.Context, rec *UpgradeRecord) {
	if u.deps.Upgrade.Components == nil {
		u.skipStep(rec, stepPause, "no component API client")
		return
	}
	u.beginStep(ctx, rec, stepPause)
	pw, err := u.adminPassword(ctx)
	if err == nil {
		err = u.deps.Upgrade.Components(ctx, u.localWebURL(), u.cfg.AdminUser, pw, true)
	}
	switch {
	case errors.Is(err, concourse.ErrComponentsUnsupported):
		u.endStep(rec, fmt.Sprintf("skipped: Concourse %s has no component API (8.2 and later pause)", rec.From))
	case err != nil:
		u.jlog(juju.LogWarning, fmt.Sprintf("pausing the components of Concourse %s before the upgrade: %v; going on without", rec.From, err))
		u.endStep(rec, "failed, going on: "+err.Error())
	default:
		rec.Paused = true
		u.endStep(rec, "paused "+strings.Join(concourse.RuntimeComponents, ", "))
	}
}

// backupStep (3/6) dumps the database, when upgrade-backup is on and the schema moves. On
// failure the old web starts again (nothing has migrated) and the upgrade is held.
func (u *unitRun) backupStep(ctx context.Context, rec *UpgradeRecord, db concourse.DBConfig, moves bool) bool {
	on, dir, keep := u.backupSettings()
	switch {
	case hasStep(rec, stepBackup):
		return true // an earlier hook of this upgrade made it (the plan after it was blocked)
	case !moves:
		u.skipStep(rec, stepBackup, "no migration to run")
		return true
	case !on:
		u.skipStep(rec, stepBackup, "upgrade-backup is off")
		return true
	}
	if msg := u.upgradePreflight(db); msg != "" {
		// Checked before the stop too; this is a pg_dump removed in between.
		u.failUpgrade(ctx, rec, db, msg, true)
		return false
	}
	u.beginStep(ctx, rec, stepBackup)
	pgDump, _ := u.deps.Upgrade.LookPGDump()
	path, err := u.deps.Upgrade.Backup(ctx, db, dir, keep, pgDump)
	if path != "" {
		rec.Backup = path
	}
	if err != nil && path == "" {
		u.endStep(rec, "failed: "+err.Error())
		u.failUpgrade(ctx, rec, db, fmt.Sprintf("Upgrade to Concourse %s stopped: the backup failed (%v)", rec.To, err), true)
		return false
	}
	note := path
	if err != nil {
		note += " (" + err.Error() + ")" // written; only pruning older dumps failed
	}
	u.endStep(rec, note)
	u.jlog(juju.LogInfo, fmt.Sprintf("backed up the database before the upgrade %s → %s: %s", rec.From, rec.To, path))
	return true
}

// afterMigrate records the migrate step's end and opens the start step; on a migration
// failure it restores the previous release when it can (failUpgrade) and returns the status.
func (u *unitRun) afterMigrate(ctx context.Context, rec *UpgradeRecord, db concourse.DBConfig, err error) error {
	if err == nil {
		u.endStep(rec, "")
		u.beginStep(ctx, rec, stepStart)
		return nil
	}
	var b *blockedError
	msg := err.Error()
	if errors.As(err, &b) {
		msg = b.msg
	}
	u.endStep(rec, "failed: "+msg)
	return blocked("%s", u.failUpgrade(ctx, rec, db, "Upgrade to Concourse "+rec.To+" failed: "+msg, false))
}

// failUpgrade ends the upgrade: the old release starts again when the database schema is one it
// supports (always before the migration ran), else the web stays stopped. The status (returned,
// and set) and the log name the dump and how to restore it. beforeMigration: nothing migrated.
func (u *unitRun) failUpgrade(ctx context.Context, rec *UpgradeRecord, db concourse.DBConfig, why string, beforeMigration bool) string {
	rec.Failed, rec.Result, rec.Ended = true, why, u.now()
	u.changed = true
	restored, err := u.restorePrevious(ctx, rec, db, beforeMigration)
	var msg string
	switch {
	case restored:
		rec.Restored = true
		msg = fmt.Sprintf("%s; Concourse %s runs again", why, rec.From)
		u.unitData[keyWebVersion] = rec.From
	case err != nil:
		msg = fmt.Sprintf("%s; Concourse %s cannot run again (%v): the web stays stopped", why, rec.From, err)
	}
	if rec.Backup != "" {
		msg += fmt.Sprintf("; to go back to %s, restore %s with (every web stopped, then set version=%s): %s", rec.From, rec.Backup, rec.From, concourse.RestoreCommand(rec.Backup, db))
	} else if !beforeMigration {
		msg += "; no backup was taken (upgrade-backup is off)"
	}
	msg += "; fixed? any `juju config` change retries"
	rec.Result = msg
	u.jlog(juju.LogError, msg)
	u.status.blocked(msg) // the components it paused resume once the old web answers (webStarted)
	return msg
}

// restorePrevious starts the web that ran before the upgrade: its binary (kept on disk as
// `previous`) with the files rendered for it, when the database schema is one it supports.
func (u *unitRun) restorePrevious(ctx context.Context, rec *UpgradeRecord, db concourse.DBConfig, beforeMigration bool) (bool, error) {
	if rec.FromBinary == "" {
		return false, errors.New("the binary it ran is not recorded")
	}
	if _, err := os.Stat(rec.FromBinary); err != nil {
		return false, fmt.Errorf("its binary is gone: %w", err)
	}
	if !beforeMigration {
		env, _, _, err := u.renderPrevious(ctx, rec, db)
		if err != nil {
			return false, err
		}
		m := u.deps.NewMigrator(rec.FromBinary, env)
		supported, err := m.SupportedVersion(ctx)
		if err != nil {
			return false, fmt.Errorf("reading the schema it supports: %w", err)
		}
		current, err := m.CurrentVersion(ctx)
		if err != nil {
			return false, fmt.Errorf("reading the database schema: %w", err)
		}
		if current > supported {
			return false, fmt.Errorf("the database is at schema %d, newer than its %d", current, supported)
		}
	}
	if err := u.writePreviousFiles(ctx, rec, db); err != nil {
		return false, err
	}
	if err := u.deps.Services.Start(ctx, webService); err != nil {
		return false, fmt.Errorf("starting %s: %w", webService, err)
	}
	u.act("Start %s with Concourse %s again: the upgrade to %s failed", webService, rec.From, rec.To)
	return true, nil
}

// renderPrevious renders the web's files for the binary the old web ran.
func (u *unitRun) renderPrevious(ctx context.Context, rec *UpgradeRecord, db concourse.DBConfig) ([]string, []byte, []byte, error) {
	password, err := u.webAdminPassword(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	webCfg := u.cfg
	webCfg.ExternalURL = u.webURL()
	if webCfg, err = u.resolveOptionSecrets(ctx, webCfg); err != nil {
		return nil, nil, nil, err
	}
	webCfg.vaultKV = u.vaultFromRelation()
	env, envFile, unitFile, err := renderWeb(webCfg, u.deps.Paths, u.f.Addr.Peers, rec.FromBinary, password, db)
	if err != nil {
		return nil, nil, nil, err
	}
	return envListOf(env), envFile, unitFile, nil
}

// writePreviousFiles puts back the env and unit file of the old web (the plan of this hook may
// have written the new release's) and reloads systemd when the unit changed.
func (u *unitRun) writePreviousFiles(ctx context.Context, rec *UpgradeRecord, db concourse.DBConfig) error {
	_, envFile, unitFile, err := u.renderPrevious(ctx, rec, db)
	if err != nil {
		return err
	}
	env := fileSpec{Path: u.path(fileWebEnv), Data: envFile, Mode: 0o640, UID: 0, GID: u.webGID}
	unit := fileSpec{Path: u.unitPath(webService), Data: unitFile, Mode: 0o644, UID: -1, GID: -1}
	if fileDiffers(env) {
		if err := writeStep(env).Do(ctx); err != nil {
			return err
		}
	}
	if fileDiffers(unit) {
		if err := writeStep(unit).Do(ctx); err != nil {
			return err
		}
		if err := u.deps.Services.DaemonReload(ctx); err != nil {
			return err
		}
	}
	return nil
}

// heldRelease swaps in, for the web of this hook, the release a failed upgrade went back to:
// the failed target is not retried (and the web not stopped again) until the operator
// reconsiders (config-changed, upgrade-charm). hold: the old release could not run again, so
// the web stays stopped (starting it would put it on a schema it does not know). swapBack
// undoes the swap. A web without a failed upgrade of its own follows the leader's
// (followLeaderHold).
func (u *unitRun) heldRelease(ctx context.Context) (swapBack func(), hold bool, err error) {
	rec := u.state.Upgrade
	if rec == nil || !rec.Failed || rec.To != u.installed || u.state.Web == nil || u.state.Web.Version != rec.From {
		return u.followLeaderHold(ctx)
	}
	if u.retryEvent() {
		u.logf("retrying the upgrade %s → %s (%s)", rec.From, rec.To, u.f.Event.Name)
		// A new record, so the retry runs every step again: the old web took writes since the
		// first attempt's dump, which a retry reusing it would lose. Components a failed attempt
		// left paused stay known.
		u.state.Upgrade = &UpgradeRecord{From: rec.From, To: rec.To, Started: u.now(), FromBinary: rec.FromBinary, Paused: rec.Paused}
		u.changed = true
		return func() {}, false, nil
	}
	u.status.blocked(rec.Result)
	if !rec.Restored {
		return func() {}, true, nil
	}
	return u.swapRelease(rec.From, rec.FromBinary), false, nil
}

// retryEvent says whether this hook is one where the operator reconsiders a failed upgrade.
func (u *unitRun) retryEvent() bool {
	ev := u.f.Event.Name
	return ev == "config-changed" || ev == "upgrade-charm"
}

// swapRelease makes this hook's web run version from binary; the returned func undoes it.
func (u *unitRun) swapRelease(version, binary string) func() {
	installed, was := u.installed, u.binary
	u.installed, u.binary = version, binary
	return func() { u.installed, u.binary = installed, was }
}

// heldUpgrade is the leader's failed upgrade as the other webs of the application read it in
// the peers application data (keyUpgradeHeld, "<from> <to> restored|stopped <leader unit>"):
// with several webs (mode=web -n 3) every web stopped for the upgrade, and without it they
// would wait, stopped, for a migration that does not come while only the leader serves.
// Plain versions and a unit name: nothing secret.
type heldUpgrade struct {
	From, To string
	Restored bool   // the leader's web runs From again; else it stays stopped
	Leader   string // whose status has the cause and the restore instructions
}

func (h heldUpgrade) String() string {
	state := "stopped"
	if h.Restored {
		state = "restored"
	}
	return strings.Join([]string{h.From, h.To, state, h.Leader}, " ")
}

func parseHeldUpgrade(s string) (heldUpgrade, bool) {
	f := strings.Fields(s)
	if len(f) != 4 || (f[2] != "restored" && f[2] != "stopped") {
		return heldUpgrade{}, false
	}
	return heldUpgrade{From: f[0], To: f[1], Restored: f[2] == "restored", Leader: f[3]}, true
}

// publishHeldUpgrade (leader) publishes the failed upgrade its web holds, for the installed
// target, and removes it once the upgrade is retried or the target changes, which sends the
// other webs back to stopping and waiting for the migration. A new leader that follows the
// previous leader's hold keeps it until the operator retries.
func (u *unitRun) publishHeldUpgrade() {
	v := u.followedHold
	if rec := u.state.Upgrade; u.role.Web && rec != nil && rec.Failed && rec.To == u.installed &&
		u.state.Web != nil && u.state.Web.Version == rec.From {
		v = heldUpgrade{From: rec.From, To: rec.To, Restored: rec.Restored, Leader: u.f.Env.UnitName}.String()
	}
	u.setPeerApp(keyUpgradeHeld, v)
}

// followLeaderHold makes a web whose last release is the one the leader's failed upgrade went
// back to, and whose installed target is the failed one, do as the leader's web: run that
// release again (its binary, kept on disk as the store's `previous`), or stay stopped when the
// leader's could not run again (the schema may have moved past it). A leader follows only a
// hold published by the one before it, and only until the operator retries.
func (u *unitRun) followLeaderHold(ctx context.Context) (swapBack func(), hold bool, err error) {
	none := func() {}
	if u.f.Peers == nil || u.state.Web == nil {
		return none, false, nil
	}
	h, ok := parseHeldUpgrade(u.f.Peers.AppData[keyUpgradeHeld])
	if !ok || h.From != u.state.Web.Version || h.To != u.installed || h.Leader == u.f.Env.UnitName ||
		(u.f.Leader && u.retryEvent()) {
		return none, false, nil
	}
	u.followedHold = u.f.Peers.AppData[keyUpgradeHeld]
	failed := fmt.Sprintf("Upgrade %s → %s failed on the leader %s", h.From, h.To, h.Leader)
	see := fmt.Sprintf("see %s's status for the cause and the restore instructions; fixed? any `juju config` change retries", h.Leader)
	if !h.Restored {
		return none, true, u.stopHeldWeb(ctx, fmt.Sprintf("%s, whose web could not run Concourse %s again: this web stays stopped too (the database schema may be past what %s supports); %s",
			failed, h.From, h.From, see))
	}
	binary := u.state.Web.StartedWith
	if binary == "" {
		return none, true, u.stopHeldWeb(ctx, fmt.Sprintf("%s: Concourse %s cannot run again here, the binary it ran is not recorded: this web stays stopped; `juju config %s version=%s` goes back to it everywhere; %s",
			failed, h.From, u.f.Env.AppName, h.From, see))
	}
	if _, err := os.Stat(binary); err != nil {
		return none, true, u.stopHeldWeb(ctx, fmt.Sprintf("%s: Concourse %s cannot run again here, its binary %s is gone: this web stays stopped; `juju config %s version=%s` goes back to it everywhere; %s",
			failed, h.From, binary, u.f.Env.AppName, h.From, see))
	}
	u.status.blocked(fmt.Sprintf("%s: Concourse %s runs again here; %s", failed, h.From, see))
	return u.swapRelease(h.From, binary), false, nil
}

// stopHeldWeb keeps the web of a unit following the leader's hold stopped (it is already, from
// the upgrade's stop step, unless it never stopped for it) and says why.
func (u *unitRun) stopHeldWeb(ctx context.Context, msg string) error {
	u.status.blocked(msg)
	u.unitData[keyWebVersion] = "" // stopped: nobody waits for it
	active, err := u.deps.Services.IsActive(ctx, webService)
	if err != nil || !active {
		return err
	}
	if err := u.deps.Services.Stop(ctx, webService); err != nil {
		return fmt.Errorf("stopping %s while the leader's upgrade is held: %w", webService, err)
	}
	u.act("Stop %s (Concourse %s): the leader's upgrade to %s failed and its web stays stopped", webService, u.state.Web.Version, u.installed)
	return nil
}

// activeUpgrade is the upgrade of this unit's web to the installed release under way, or nil.
func (u *unitRun) activeUpgrade() *UpgradeRecord {
	if rec := u.state.Upgrade; rec != nil && rec.Result == "" && !rec.Failed && rec.To == u.installed {
		return rec
	}
	return nil
}

func hasStep(rec *UpgradeRecord, name string) bool {
	for _, s := range rec.Steps {
		if s.Name == name {
			return true
		}
	}
	return false
}

// migrateStep (4/6) is the plan's migration, recorded, with the rollback of a failure.
func (u *unitRun) migrateStep(ctx context.Context, db concourse.DBConfig, env []string) error {
	rec := u.activeUpgrade()
	if rec == nil {
		return u.migrate(ctx, env)
	}
	u.beginStep(ctx, rec, stepMigrate)
	err := u.migrate(ctx, env)
	if err != nil && concourse.CompareVersions(rec.To, rec.From) < 0 {
		// A downgrade the schema refuses (migrate says how to go down first) is no failed
		// upgrade: nothing moved, and the newer release's web stays stopped as before.
		u.endStep(rec, "refused: "+err.Error())
		rec.Result, rec.Ended = "refused", u.now()
		return err
	}
	return u.afterMigrate(ctx, rec, db, err)
}

// beginUpgrade runs, on the leader, what comes before the old web stops: the preflight (a
// blocked message, nothing touched) and the pause step. The record starts here.
func (u *unitRun) beginUpgrade(ctx context.Context, db concourse.DBConfig) (*UpgradeRecord, string) {
	if msg := u.upgradePreflight(db); msg != "" {
		return nil, msg
	}
	rec := u.upgrading()
	if !hasStep(rec, stepPause) {
		u.pauseStep(ctx, rec)
	}
	u.beginStep(ctx, rec, stepStop)
	return rec, ""
}

// webStarted runs once the web answers: the end of the start step and the resume step of an
// upgrade, or the resume of the components a failed upgrade paused, on the old release.
func (u *unitRun) webStarted(ctx context.Context) {
	rec := u.state.Upgrade
	if rec == nil || u.state.Web == nil {
		return
	}
	if rec.Failed && rec.Paused && u.state.Web.Version == rec.From {
		u.resume(ctx, rec)
		return
	}
	if rec.Result != "" || rec.Failed || rec.To != u.state.Web.Version {
		return
	}
	if n := len(rec.Steps); n > 0 && rec.Steps[n-1].Name == stepStart && rec.Steps[n-1].End.IsZero() {
		u.endStep(rec, "")
	}
	if rec.Paused {
		u.resume(ctx, rec)
	} else {
		u.skipStep(rec, stepResume, "nothing was paused")
	}
	rec.Result, rec.Ended = "completed", u.now()
	u.jlog(juju.LogInfo, fmt.Sprintf("upgraded Concourse %s → %s in %s", rec.From, rec.To, rec.Ended.Sub(rec.Started).Round(time.Second)))
}

// resume (6/6) unpauses what step 1 paused. A failure is logged loudly: a paused scheduler runs
// no build, and `fly unpause-component` is the manual fix.
func (u *unitRun) resume(ctx context.Context, rec *UpgradeRecord) {
	u.beginStep(ctx, rec, stepResume)
	pw, err := u.adminPassword(ctx)
	if err == nil {
		err = u.deps.Upgrade.Components(ctx, u.localWebURL(), u.cfg.AdminUser, pw, false)
	}
	if err != nil {
		u.endStep(rec, "failed: "+err.Error())
		u.status.note(fmt.Sprintf("could not resume the build components (%v): run `fly -t <target> unpause-component --runtime-components`", err))
		u.jlog(juju.LogError, fmt.Sprintf("resuming the components after the upgrade: %v", err))
		return
	}
	rec.Paused = false
	u.endStep(rec, "")
}

// upgradeReport adds the last upgrade to check-status.
func (u *unitRun) upgradeReport(r map[string]string) {
	if u.cfg.VersionLine != "" {
		v := ""
		if u.f.Peers != nil {
			v = u.f.Peers.AppData[keyTargetVersion]
		}
		r["version-line"] = fmt.Sprintf("%s resolves to %s", u.cfg.VersionLine, v)
	}
	rec := u.state.Upgrade
	if rec == nil {
		return
	}
	res := rec.Result
	if res == "" {
		res = "under way"
	}
	r["last-upgrade"] = fmt.Sprintf("%s → %s, started %s: %s", rec.From, rec.To, rec.Started.UTC().Format(time.RFC3339), res)
	var steps []string
	for _, s := range rec.Steps {
		end := "…"
		if !s.End.IsZero() {
			end = s.End.UTC().Format(time.RFC3339)
		}
		steps = append(steps, fmt.Sprintf("%s %s–%s%s", s.Name, s.Start.UTC().Format(time.RFC3339), end, noteSuffix(s.Note)))
	}
	r["last-upgrade-steps"] = strings.Join(steps, "; ")
	if rec.Backup != "" {
		r["last-upgrade-backup"] = rec.Backup
	}
}
