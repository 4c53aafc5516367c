package concourse

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// UnitOptions describes one systemd service running the concourse binary.
type UnitOptions struct {
	Description      string   // "" → a default naming the role
	Binary           string   // absolute path of the concourse binary
	Subcommand       string   // "" → "web" / "worker"
	EnvFile          string   // absolute path of the EnvironmentFile
	User, Group      string   // web: "" → concourse; worker: must be "" or root
	ExtraArgs        []string // appended after the subcommand, one argv element each
	WorkingDirectory string   // optional, absolute
	// StopTimeout is the worker's TimeoutStopSec, how long a stop or restart waits for it to
	// land (finish its builds) before SIGKILL; 0 → DefaultWorkerStopTimeout. Whole seconds.
	StopTimeout time.Duration
}

// validate covers the fields that come from the charm's own code; they cannot
// be escaped in every directive, so a bad one is a programming error.
func (o UnitOptions) validate() error {
	if !filepath.IsAbs(o.Binary) {
		return fmt.Errorf("binary %q is not an absolute path", o.Binary)
	}
	if !filepath.IsAbs(o.EnvFile) {
		return fmt.Errorf("environment file %q is not an absolute path", o.EnvFile)
	}
	if o.WorkingDirectory != "" && !filepath.IsAbs(o.WorkingDirectory) {
		return fmt.Errorf("working directory %q is not an absolute path", o.WorkingDirectory)
	}
	for _, s := range []string{o.Description, o.Binary, o.Subcommand, o.EnvFile, o.User, o.Group, o.WorkingDirectory} {
		if strings.ContainsFunc(s, isControl) {
			return fmt.Errorf("%q contains a control character", s)
		}
	}
	for _, s := range []string{o.EnvFile, o.User, o.Group, o.WorkingDirectory, o.Subcommand} {
		if strings.ContainsAny(s, " \"'\\") {
			return fmt.Errorf("%q contains a space, quote or backslash", s)
		}
	}
	return nil
}

const unitHeader = "# Written by concourse-ci-machine; local changes are overwritten.\n" +
	"# Use a drop-in (systemctl edit) to add settings.\n"

// WebUnit renders the unit for `concourse web`. It follows the official
// systemd guide (contract §7) and adds what it lacks: the capability to bind
// ports below 1024 as the unprivileged user, BOSH's file limit, and
// network-online ordering because web connects to PostgreSQL at once.
// The EnvironmentFile is mandatory (no "-"), so a missing file fails the
// start loudly instead of running Concourse without its configuration.
func WebUnit(o UnitOptions) []byte {
	if err := o.validate(); err != nil {
		panic("internal error: WebUnit: " + err.Error())
	}
	if o.Description == "" {
		o.Description = "Concourse CI web node (ATC and TSA)"
	}
	if o.Subcommand == "" {
		o.Subcommand = "web"
	}
	if o.User == "" {
		o.User = "concourse"
	}
	if o.Group == "" {
		o.Group = "concourse"
	}
	var b strings.Builder
	b.WriteString(unitHeader)
	unitSection(&b, o.Description)
	b.WriteString("[Service]\nType=simple\n")
	fmt.Fprintf(&b, "User=%s\nGroup=%s\n", escapeSpecifiers(o.User), escapeSpecifiers(o.Group))
	serviceCommon(&b, o)
	b.WriteString("AmbientCapabilities=CAP_NET_BIND_SERVICE\n")
	b.WriteString("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n")
	b.WriteString("NoNewPrivileges=yes\n")
	b.WriteString("LimitNOFILE=65536\n")
	b.WriteString("Restart=on-failure\nRestartSec=3\n")
	// web drains and exits 0 on SIGTERM (contract §2.4); 60 s as in the guide.
	b.WriteString("KillSignal=SIGTERM\nTimeoutStopSec=60\n")
	installSection(&b)
	return []byte(b.String())
}

// WorkerUnit renders the unit for `concourse worker`, which must run as root
// and manages cgroups of its own (contract §7).
func WorkerUnit(o UnitOptions) []byte {
	if err := o.validate(); err != nil {
		panic("internal error: WorkerUnit: " + err.Error())
	}
	if (o.User != "" && o.User != "root") || (o.Group != "" && o.Group != "root") {
		panic("internal error: WorkerUnit: concourse worker refuses to run as " + o.User + ":" + o.Group + ", it needs root")
	}
	if o.Description == "" {
		o.Description = "Concourse CI worker"
	}
	if o.Subcommand == "" {
		o.Subcommand = "worker"
	}
	var b strings.Builder
	b.WriteString(unitHeader)
	unitSection(&b, o.Description)
	b.WriteString("[Service]\nType=simple\nUser=root\nGroup=root\n")
	serviceCommon(&b, o)
	// containerd/guardian create cgroups below ours; the default TasksMax
	// breaks Garden (concourse/concourse#480).
	b.WriteString("Delegate=yes\nTasksMax=infinity\n")
	b.WriteString("LimitNOFILE=65536\nLimitNPROC=infinity\n")
	b.WriteString("Restart=on-failure\nRestartSec=3\n")
	// Every stop or restart lands the worker (SIGUSR1): it stops taking new
	// work, waits for running builds, and keeps its registration and caches,
	// so a restart for an upgrade or a config change costs no volumes
	// (contract §7). SIGUSR2 (retire) would deregister the worker and drop
	// its caches on every restart; it is right only when the machine goes
	// away, so the caller sends it explicitly with Systemd.Kill before the
	// final stop. KillMode=mixed: the signal goes to the worker process only
	// (not to containerd or the containers), and whatever is left after it
	// exits, or after TimeoutStopSec, gets SIGKILL; BOSH's KillMode=none
	// leaves strays and newer systemd warns about it.
	b.WriteString("KillMode=mixed\nKillSignal=SIGUSR1\nSendSIGKILL=yes\n")
	// Landing waits for running builds, up to the operator's drain-timeout (300 s, as in the
	// official guide, when none is given); a restart sent with --no-block does not hold a hook.
	stop := o.StopTimeout
	if stop <= 0 {
		stop = DefaultWorkerStopTimeout
	}
	fmt.Fprintf(&b, "TimeoutStopSec=%d\n", int64((stop+time.Second-1)/time.Second))
	installSection(&b)
	return []byte(b.String())
}

func unitSection(b *strings.Builder, desc string) {
	b.WriteString("[Unit]\n")
	fmt.Fprintf(b, "Description=%s\n", escapeSpecifiers(desc))
	b.WriteString("Documentation=https://concourse-ci.org/\n")
	b.WriteString("Wants=network-online.target\nAfter=network-online.target\n\n")
}

func serviceCommon(b *strings.Builder, o UnitOptions) {
	fmt.Fprintf(b, "EnvironmentFile=%s\n", escapeSpecifiers(o.EnvFile))
	if o.WorkingDirectory != "" {
		fmt.Fprintf(b, "WorkingDirectory=%s\n", escapeSpecifiers(o.WorkingDirectory))
	}
	b.WriteString("ExecStart=")
	b.WriteString(ExecQuote(o.Binary))
	b.WriteByte(' ')
	b.WriteString(ExecQuote(o.Subcommand))
	for _, a := range o.ExtraArgs {
		b.WriteByte(' ')
		b.WriteString(ExecQuote(a))
	}
	b.WriteByte('\n')
}

func installSection(b *strings.Builder) {
	b.WriteString("\n[Install]\nWantedBy=multi-user.target\n")
}

// escapeSpecifiers doubles '%' so systemd does not expand specifiers
// (systemd.unit(5), "Specifiers") in a value meant literally.
func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// ExecQuote renders one argv element for ExecStart= (systemd.service(5),
// "Command lines"): '%' becomes "%%" (specifiers) and '$' becomes "$$"
// (variable expansion); a word with nothing special is written bare, any
// other is double-quoted with C escapes, which systemd undoes when it splits
// the line (`\\`, `\"`, `\n`, `\t`, `\xNN` for other control bytes and
// bytes that are not UTF-8). An empty
// argument is written as "".
func ExecQuote(arg string) string {
	if arg != "" && utf8.ValidString(arg) && !strings.ContainsFunc(arg, needsExecQuote) {
		return strings.NewReplacer("%", "%%", "$", "$$").Replace(arg)
	}
	var b strings.Builder
	b.WriteByte('"')
	for i, r := range arg {
		if r == utf8.RuneError && !strings.HasPrefix(arg[i:], "\uFFFD") {
			// An invalid byte: keep it as it is rather than as U+FFFD.
			fmt.Fprintf(&b, `\x%02x`, arg[i])
			continue
		}
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '%':
			b.WriteString("%%")
		case '$':
			b.WriteString("$$")
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if isControl(r) {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// needsExecQuote: whitespace separates words, quotes and backslashes are
// syntax, ';' alone separates commands in old systemd versions, and a word
// beginning with one of "@-:+!" would be read as a prefix only on the
// executable, but quoting is harmless everywhere.
func needsExecQuote(r rune) bool {
	return r == ' ' || r == '"' || r == '\'' || r == '\\' || r == ';' || isControl(r)
}
