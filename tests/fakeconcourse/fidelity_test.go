package main

// The fidelity tests keep the stand-in honest against the real Concourse binaries
// (../shared/concourse, via realconcourse.Require): every option the charm renders must be a real
// option of each version, the stand-in must declare it exactly as the real binary does, and the
// commands the charm runs must answer in the same shape from both.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/tests/release"
)

// helpOption is one option as `concourse <cmd> --help` lists it.
type helpOption struct {
	long       string
	short      string
	takesValue bool
	choices    string // "a|b|c" as the help prints them; "" when free-form
	def        string // the help's "(default: …)", list items joined by ", "
	env        string // "" when the option has no environment variable
}

func (o helpOption) String() string {
	s := "--" + o.long
	if o.short != "" {
		s = "-" + o.short + ", " + s
	}
	if o.takesValue {
		s += "=" + o.choices
	}
	if o.def != "" {
		s += " (default: " + o.def + ")"
	}
	if o.env != "" {
		s += " [$" + o.env + "]"
	}
	return s
}

var (
	helpLineRE = regexp.MustCompile(`^\s+(?:-(\w), )?--([a-z0-9][a-z0-9-]*)(=\S*)?(?:\s+(.*))?$`)
	// Choices print as =[a|b|c]; a value name such as =[TEAM/[PIPELINE/]]VAR=VALUE is not one.
	helpChoicesRE = regexp.MustCompile(`^=\[([^\]\s|]+(?:\|[^\]\s|]+)+)\]$`)
	helpEnvRE     = regexp.MustCompile(`\[\$([A-Za-z0-9_]+)\]\s*$`)
	helpDefRE     = regexp.MustCompile(`\(default: (.*?)\)(?: \[\$|\s*$)`)
)

// parseHelp reads go-flags' help for one command, keyed by long name. Only the options under the
// "[<cmd> command options]" heading and its groups count (the application options are --version
// and --help).
func parseHelp(out string) map[string]helpOption {
	opts := map[string]helpOption{}
	inCommand := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "[") && strings.Contains(line, "command options]") {
			inCommand = true
			continue
		}
		m := helpLineRE.FindStringSubmatch(line)
		if !inCommand || m == nil {
			continue
		}
		o := helpOption{short: m[1], long: m[2], takesValue: m[3] != ""}
		if c := helpChoicesRE.FindStringSubmatch(m[3]); c != nil {
			o.choices = c[1]
		}
		if e := helpEnvRE.FindStringSubmatch(m[4]); e != nil {
			o.env = e[1]
		}
		if d := helpDefRE.FindStringSubmatch(m[4]); d != nil {
			o.def = d[1]
		}
		opts[o.long] = o
	}
	return opts
}

// realHelp runs `<bin> <cmd> --help` with a very wide terminal on stdin: go-flags wraps the help
// to the width it reads from fd 0, and without a terminal it splits every word (env names too)
// onto its own line.
func realHelp(t *testing.T, bin, cmd string) map[string]helpOption {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to read the real help with: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pty: %v", err)
	}
	defer pts.Close()
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 10000}); err != nil {
		t.Fatalf("sizing the pty: %v", err)
	}
	c := exec.Command(bin, cmd, "--help")
	c.Env = []string{"PATH=/usr/bin:/bin"}
	c.Stdin = pts
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("%s %s --help: %v\n%s", bin, cmd, err, stderr.String())
	}
	opts := parseHelp(stdout.String())
	if len(opts) < 3 {
		t.Fatalf("%s %s --help lists %d options; the parser does not understand it:\n%s", bin, cmd, len(opts), stdout.String())
	}
	return opts
}

// fakeHelp is the stand-in's own declaration of a command's options, in the help's terms.
func fakeHelp(opts []option, f flavour) map[string]helpOption {
	out := map[string]helpOption{}
	for _, o := range opts {
		if !o.availableIn(f) {
			continue
		}
		h := helpOption{long: o.long, takesValue: o.kind != kBool, def: o.def, choices: strings.Join(o.choices, "|")}
		if o.short != 0 {
			h.short = string(o.short)
		}
		if o.env != "-" {
			h.env = o.envName()
		}
		out[o.long] = h
	}
	return out
}

func flavourOf(t *testing.T, v string) flavour {
	f, err := flavourFor(v, newEnvironment(nil))
	if err != nil {
		t.Fatal(err)
	}
	f.arch = "amd64" // the real binaries are linux/amd64
	return f
}

var updateRealOptions = flag.Bool("update-real-options", false, "regenerate real_options.txt from the real binaries' --help")

// fidelityCommands are the subcommands whose options the stand-in declares.
var fidelityCommands = []string{"web", "worker", "migrate", "generate-key", "land-worker", "retire-worker", "quickstart"}

// TestFidelityStandInDeclaresOptionsLikeTheRealBinary: the stand-in declares exactly the options
// of the real binary of the same version (same env name, short name, argument, choices and
// default): none that the real one lacks, none missing, so the stand-in refuses a flag exactly
// when the real binary does.
func TestFidelityStandInDeclaresOptionsLikeTheRealBinary(t *testing.T) {
	set := realconcourse.Require(t)
	real := map[string]map[string]map[string]helpOption{} // version → command → long → option
	for _, v := range realconcourse.Versions() {
		real[v] = map[string]map[string]helpOption{}
		for _, cmd := range fidelityCommands {
			real[v][cmd] = realHelp(t, set.Concourse(v), cmd)
		}
	}
	if *updateRealOptions {
		writeRealOptions(t, real)
	}
	for _, v := range realconcourse.Versions() {
		f := flavourOf(t, v)
		for _, cmd := range fidelityCommands {
			t.Run(v+"/"+cmd, func(t *testing.T) {
				fake := fakeHelp(commandOptions(cmd, f), f)
				if diffs := helpDiff(real[v][cmd], fake); len(diffs) > 0 {
					t.Errorf("concourse %s %s (regenerate real_options.txt with -update-real-options if only passive options differ):\n  %s", v, cmd, strings.Join(diffs, "\n  "))
				}
			})
		}
	}
}

func helpDiff(real, fake map[string]helpOption) []string {
	var diffs []string
	for _, name := range sortedKeys(fake) {
		r, ok := real[name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("stand-in has %s; the real binary has no such option", fake[name]))
		case r != fake[name]:
			diffs = append(diffs, fmt.Sprintf("stand-in %s\n      real %s", fake[name], r))
		}
	}
	var missing []string
	for _, name := range sortedKeys(real) {
		if _, ok := fake[name]; !ok {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) > 0 {
		diffs = append(diffs, fmt.Sprintf("%d real options unknown to the stand-in: %s", len(missing), strings.Join(missing, " ")))
	}
	return diffs
}

// writeRealOptions regenerates real_options.txt: every real option that the typed tables of
// options.go do not declare for any version.
func writeRealOptions(t *testing.T, real map[string]map[string]map[string]helpOption) {
	versions := realconcourse.Versions()
	oldest, newest := versions[0], versions[len(versions)-1]
	var b strings.Builder
	b.WriteString("# Generated from the real binaries' --help; see realOptionsTable in options.go. Do not edit.\n")
	for _, cmd := range fidelityCommands {
		if cmd == "quickstart" {
			continue // built from web's and worker's tables, passive rows included
		}
		typed := map[string]bool{}
		for _, v := range versions {
			for _, o := range commandOptions(cmd, flavourOf(t, v)) {
				if !o.passive {
					typed[o.long] = true
				}
			}
		}
		for _, name := range sortedKeys(real[newest][cmd]) {
			if typed[name] {
				continue
			}
			o := real[newest][cmd][name]
			since := ""
			if old, ok := real[oldest][cmd][name]; !ok {
				since = "8.2"
			} else if old != o {
				t.Fatalf("%s --%s differs between %s and %s (%s / %s): declare it in the typed tables of options.go", cmd, name, oldest, newest, old, o)
			}
			arg := ""
			if o.takesValue {
				arg = "="
			}
			fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cmd, since, o.long, o.short, arg, o.choices, o.def, o.env)
		}
		for _, name := range sortedKeys(real[oldest][cmd]) {
			if _, ok := real[newest][cmd][name]; !ok && !typed[name] {
				t.Fatalf("%s --%s exists in %s but not %s: declare it in the typed tables of options.go", cmd, name, oldest, newest)
			}
		}
	}
	if err := os.WriteFile("real_options.txt", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote real_options.txt; run the test again (the table is embedded at build time)")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// result is what one run of a binary showed.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// runBin runs bin with exactly env (no inherited variables: the hook environment must not leak,
// as in the charm) and a deadline, so a binary that unexpectedly starts serving is stopped.
func runExact(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bin, args...)
	c.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	c.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within 60s (it started serving?)\nstderr: %s", bin, strings.Join(args, " "), stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running %s: %v", bin, err)
	}
	return result{stdout.String(), stderr.String(), code}
}

// fakeBin is the stand-in built by TestMain for version v.
func fakeBin(t *testing.T, v string) string {
	switch v {
	case "7.14.3":
		return bin714
	case "8.2.5":
		return bin825
	}
	t.Fatalf("no stand-in built for %s", v)
	return ""
}

// renderedEnv is one environment file (or command line) the charm renders, from its golden files.
type renderedEnv struct {
	source string   // where it came from, for messages
	role   string   // "web" or "worker": the subcommand that reads it
	env    []string // NAME=value, unquoted
	args   []string // flags after `concourse web` on ExecStart (extra-web-flags)
}

// charmRendered collects every environment file and web command line in the charm's golden
// files (kept equal to the code by the hooks and concourse golden tests), plus the database
// variables the web gets with TLS, which no golden file shows.
func charmRendered(t *testing.T) []renderedEnv {
	t.Helper()
	var out []renderedEnv
	hooks, _ := filepath.Glob("../../internal/hooks/testdata/render/*.golden")
	lib, _ := filepath.Glob("../../internal/concourse/testdata/*.env")
	if len(hooks) == 0 || len(lib) == 0 {
		t.Fatalf("no golden files found (hooks %d, concourse %d): run from tests/fakeconcourse", len(hooks), len(lib))
	}
	for _, p := range hooks {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var cur *renderedEnv
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case strings.HasPrefix(line, "# ---- "):
				cur = nil
				path := strings.Fields(strings.TrimPrefix(line, "# ---- "))[0]
				switch filepath.Base(path) {
				case "web.env", "worker.env":
					out = append(out, renderedEnv{source: filepath.Base(p) + " " + path, role: strings.TrimSuffix(filepath.Base(path), ".env")})
					cur = &out[len(out)-1]
				}
			case cur != nil && envLineRE.MatchString(line):
				cur.env = append(cur.env, unquoteEnvLine(t, line))
			case strings.HasPrefix(line, "ExecStart=") && strings.Contains(line, "/bin/concourse web"):
				_, flags, _ := strings.Cut(line, "/bin/concourse web")
				words, err := concourse.SplitFlags(flags)
				if err != nil {
					t.Fatalf("%s ExecStart: %v", p, err)
				}
				if len(words) > 0 {
					out = append(out, renderedEnv{source: filepath.Base(p) + " ExecStart", role: "web", args: words})
				}
			}
		}
	}
	for _, p := range lib {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		r := renderedEnv{source: "internal/concourse/testdata/" + filepath.Base(p), role: "web"}
		if strings.HasPrefix(filepath.Base(p), "worker") {
			r.role = "worker"
		}
		for _, line := range strings.Split(string(b), "\n") {
			if envLineRE.MatchString(line) {
				r.env = append(r.env, unquoteEnvLine(t, line))
			}
		}
		out = append(out, r)
	}
	tls := renderedEnv{source: "concourse.DBConfig with TLS", role: "web"}
	for _, v := range (concourse.DBConfig{Host: "10.0.0.9", Port: 5432, User: "u", Password: "p", Database: "concourse",
		SSLMode: "verify-ca", CACert: "/etc/concourse/keys/postgresql-ca.pem"}).Env() {
		tls.env = append(tls.env, v.Name+"="+v.Value)
	}
	return append(out, tls)
}

var envLineRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*="`)

// unquoteEnvLine reads NAME="value" as systemd does for the charm's files: backslash escapes the
// next character.
func unquoteEnvLine(t *testing.T, line string) string {
	name, q, _ := strings.Cut(line, "=")
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		t.Fatalf("env line %q is not NAME=\"value\"", line)
	}
	var v strings.Builder
	esc := false
	for _, r := range q[1 : len(q)-1] {
		if !esc && r == '\\' {
			esc = true
			continue
		}
		esc = false
		v.WriteRune(r)
	}
	return name + "=" + v.String()
}

// TestFidelityCharmRendersRealOptions: every CONCOURSE_* variable and web flag the charm renders
// is a real option of the subcommand that reads it, in both versions, and the stand-in declares it
// with a type (not as a passive option), so the stand-in checks its value.
func TestFidelityCharmRendersRealOptions(t *testing.T) {
	set := realconcourse.Require(t)
	rendered := charmRendered(t)
	for _, v := range realconcourse.Versions() {
		f := flavourOf(t, v)
		for _, role := range []string{"web", "worker"} {
			real := realHelp(t, set.Concourse(v), role)
			realByEnv := map[string]helpOption{}
			for _, o := range real {
				realByEnv[o.env] = o
			}
			typedByEnv, typedByLong := map[string]bool{}, map[string]bool{}
			for _, o := range commandOptions(role, f) {
				if !o.passive {
					typedByEnv[o.envName()], typedByLong[o.long] = true, true
				}
			}
			checked := 0
			for _, r := range rendered {
				if r.role != role {
					continue
				}
				for _, kv := range r.env {
					name, _, _ := strings.Cut(kv, "=")
					if !strings.HasPrefix(name, "CONCOURSE_") {
						continue // http_proxy and friends: read by Go's HTTP client, not flags
					}
					checked++
					_, known := realByEnv[name]
					if !known && strings.HasPrefix(name, "CONCOURSE_GARDEN_") && slices.Contains(r.env, "CONCOURSE_RUNTIME=guardian") {
						// Not a concourse flag by design: a guardian worker hands unrecognised
						// CONCOURSE_GARDEN_<X> to `gdn server` as --<x> (contract §3.1). gdn is not
						// among the real binaries, so that flag cannot be checked here.
						continue
					}
					if !known && name == "CONCOURSE_VAULT_ENABLE_KV_MOUNT_CACHE" && v == "7.14.3" {
						// Known to be 8.2+ only and ignored by 7.x (the option's description says so);
						// the check of 8.2.5 below still holds the name to the real binary.
						continue
					}
					if !known {
						t.Errorf("%s renders %s, which concourse %s %s does not know (it would be silently ignored)", r.source, name, v, role)
					} else if !typedByEnv[name] {
						t.Errorf("%s renders %s; the stand-in declares it only passively: give it a type in options.go", r.source, name)
					}
				}
				for _, a := range r.args {
					if !strings.HasPrefix(a, "--") {
						continue
					}
					long, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					checked++
					if _, ok := real[long]; !ok {
						t.Errorf("%s passes --%s, which concourse %s web does not know (it would refuse to start)", r.source, long, v)
					}
				}
			}
			if checked < 10 {
				t.Errorf("only %d rendered %s names found: the golden files were not read", checked, role)
			}
		}
	}
}

// fidelityFiles are real files for the paths the charm renders: RSA keys in PEM, OpenSSH public
// keys, a CA file and directories, created once per test in a temp dir.
type fidelityFiles struct {
	dir             string
	privPEM, pubSSH []byte
}

func newFidelityFiles(t *testing.T) *fidelityFiles {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &fidelityFiles{dir: t.TempDir(),
		privPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		pubSSH:  ssh.MarshalAuthorizedKey(pub)}
}

// materialize moves every absolute path in env under f.dir and creates what the variable names.
func (f *fidelityFiles) materialize(t *testing.T, env []string) []string {
	t.Helper()
	var out []string
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(val, "<") && strings.HasSuffix(val, ", not shown>") {
			// render hides secret values; a value of the variable's type takes its place, so
			// the variable is still converted by both binaries.
			val = "redacted-secret"
			if strings.HasSuffix(name, "ENCRYPTION_KEY") {
				val = "0123456789abcdef" // an AES-128 key
			}
			kv = name + "=" + val
		}
		// Vault paths and lookup templates start with "/" but name secrets in Vault, not files.
		notFile := strings.HasSuffix(name, "_LOOKUP_TEMPLATES") || strings.HasSuffix(name, "_PATH_PREFIX") || strings.HasSuffix(name, "_SHARED_PATH")
		if !strings.HasPrefix(val, "/") || notFile {
			out = append(out, kv)
			continue
		}
		p := filepath.Join(f.dir, val)
		os.MkdirAll(filepath.Dir(p), 0o755)
		var err error
		switch {
		case strings.HasSuffix(name, "_WORK_DIR") || strings.HasSuffix(name, "_RESOURCE_TYPES"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasSuffix(name, "_AUTHORIZED_KEYS") || strings.HasSuffix(name, "_PUBLIC_KEY"):
			err = os.WriteFile(p, f.pubSSH, 0o644)
		case strings.HasSuffix(name, "_KEY"):
			err = os.WriteFile(p, f.privPEM, 0o600)
		case strings.HasSuffix(name, "_CA_CERT") || strings.HasSuffix(name, "_CLIENT_CERT") || strings.HasSuffix(name, "_TLS_CERT"):
			err = os.WriteFile(p, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644)
		default:
			t.Fatalf("%s=%s: the fidelity test does not know what file this is; teach materialize", name, val)
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, name+"="+p)
	}
	return out
}

// TestFidelityRenderedConfigurationParsesAlike: the real binary and the stand-in of each version
// both accept every value the charm renders. go-flags converts every subcommand's variables on
// every run, so `migrate --supported-db-version` (which needs no database) with a rendered file
// proves each value converts with its real type; extra web flags go on a `web` command line
// without the TSA host key, so both must stop at exactly that missing flag, after parsing them.
func TestFidelityRenderedConfigurationParsesAlike(t *testing.T) {
	set := realconcourse.Require(t)
	files := newFidelityFiles(t)
	for _, r := range charmRendered(t) {
		env := files.materialize(t, r.env)
		for _, v := range realconcourse.Versions() {
			supported := fmt.Sprint(flavourOf(t, v).supportedDBVersion())
			var args []string
			want := result{stdout: supported + "\n"}
			if len(r.args) > 0 {
				args = append([]string{"web"}, r.args...)
				want = result{stderr: "error: the required flag `--tsa-host-key' was not specified\n", code: 1}
			} else {
				args = []string{"migrate", "--supported-db-version"}
			}
			real, fake := runExact(t, set.Concourse(v), env, args...), runExact(t, fakeBin(t, v), env, args...)
			if real != want {
				t.Errorf("%s, real %s: %s; want %s", r.source, v, real, want)
			}
			if fake != real {
				t.Errorf("%s, %s: stand-in %s; real %s", r.source, v, fake, real)
			}
		}
	}
}

// TestFidelityBadInputFailsAlike: a malformed value of a variable the charm renders, an unknown
// flag, an unknown variable, a missing command: the stand-in answers with the real binary's exit
// code and stderr, byte for byte.
func TestFidelityBadInputFailsAlike(t *testing.T) {
	set := realconcourse.Require(t)
	files := newFidelityFiles(t)
	supported := []string{"migrate", "--supported-db-version"}
	web := files.materialize(t, []string{"CONCOURSE_TSA_HOST_KEY=/k/tsa_host_key"})
	worker := files.materialize(t, []string{"CONCOURSE_WORK_DIR=/w/work", "CONCOURSE_TSA_WORKER_PRIVATE_KEY=/k/worker_key"})
	sshPriv := filepath.Join(files.dir, "openssh-format")
	os.WriteFile(sshPriv, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600)
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"web port not a number", []string{"CONCOURSE_BIND_PORT=http"}, supported},
		{"empty port", []string{"CONCOURSE_BIND_PORT="}, supported},
		{"port out of range", []string{"CONCOURSE_TSA_BIND_PORT=70000"}, supported},
		{"external URL without scheme", []string{"CONCOURSE_EXTERNAL_URL=ci.example.com"}, supported},
		{"log level warn", []string{"CONCOURSE_LOG_LEVEL=warn"}, supported},
		{"unknown placement strategy", []string{"CONCOURSE_CONTAINER_PLACEMENT_STRATEGY=volume-locality,nearest"}, supported},
		{"database port", []string{"CONCOURSE_POSTGRES_PORT=five"}, supported},
		{"sslmode prefer", []string{"CONCOURSE_POSTGRES_SSLMODE=prefer"}, supported},
		{"CA file missing", []string{"CONCOURSE_POSTGRES_CA_CERT=/nonexistent/ca.pem"}, supported},
		{"signing key missing", []string{"CONCOURSE_SESSION_SIGNING_KEY=/nonexistent/key"}, supported},
		{"TSA host key in OpenSSH format", []string{"CONCOURSE_TSA_HOST_KEY=" + sshPriv}, supported},
		{"authorized keys missing", []string{"CONCOURSE_TSA_AUTHORIZED_KEYS=/nonexistent/keys"}, supported},
		{"metrics IP a name", []string{"CONCOURSE_PROMETHEUS_BIND_IP=localhost"}, supported},
		{"runtime docker", []string{"CONCOURSE_RUNTIME=docker"}, supported},
		{"baggageclaim driver zfs", []string{"CONCOURSE_BAGGAGECLAIM_DRIVER=zfs"}, supported},
		{"DNS proxy yes", []string{"CONCOURSE_CONTAINERD_DNS_PROXY_ENABLE=yes"}, supported},
		{"work dir is a file", []string{"CONCOURSE_WORK_DIR=/etc/passwd"}, supported},
		{"TSA public key missing", []string{"CONCOURSE_TSA_PUBLIC_KEY=/nonexistent/tsa.pub"}, supported},
		{"unknown variable is ignored", []string{"CONCOURSE_NOT_A_FLAG=1", "CONCOURSE_WORKER_PROCS=4"}, supported},
		{"quickstart's worker namespace", []string{"CONCOURSE_WORKER_RUNTIME=docker"}, supported},
		{"CONCOURSE_VERSION makes it panic", []string{"CONCOURSE_VERSION="}, supported},
		{"web: required before env errors", []string{"CONCOURSE_BIND_PORT=x"}, []string{"web"}},
		{"web: malformed env with the required key", append([]string{"CONCOURSE_BIND_PORT=x"}, web...), []string{"web"}},
		{"web: unknown flag", web, []string{"web", "--not-a-flag"}},
		{"web: bool flag with a value", web, []string{"web", "--enable-global-resources=yes"}},
		{"web: flag without its argument", web, []string{"web", "--cluster-name"}},
		{"web: malformed flag value", web, []string{"web", "--bind-port=x"}},
		{"web: bad choice on the command line", web, []string{"web", "--log-level", "warn"}},
		{"worker: required flags", nil, []string{"worker"}},
		{"worker: unknown flag", worker, []string{"worker", "--not-a-flag"}},
		{"migrate: no action", nil, []string{"migrate"}},
		{"land-worker: required flags", nil, []string{"land-worker"}},
		{"retire-worker: required flags", nil, []string{"retire-worker", "--team", "main"}},
		{"generate-key: no file name", nil, []string{"generate-key", "-t", "ssh"}},
		{"generate-key: unknown type", nil, []string{"generate-key", "-t", "ed25519", "-f", "/nonexistent/k"}},
		{"no command", nil, nil},
		{"unknown command", nil, []string{"bogus"}},
		{"unknown command after a bad env value", []string{"CONCOURSE_BIND_PORT=x"}, []string{"bogus"}},
	}
	for _, v := range realconcourse.Versions() {
		for _, c := range cases {
			real, fake := runExact(t, set.Concourse(v), c.env, c.args...), runExact(t, fakeBin(t, v), c.env, c.args...)
			if c.name == "CONCOURSE_VERSION makes it panic" {
				// Same exit code and panic message; the goroutine trace has real addresses.
				real.stderr, _, _ = strings.Cut(real.stderr, "\n")
				fake.stderr, _, _ = strings.Cut(fake.stderr, "\n")
			}
			if real.code == 0 && real.stdout == "" {
				t.Errorf("%s, %s: the real binary printed nothing and succeeded; the case tests nothing", c.name, v)
			}
			if fake != real {
				t.Errorf("%s (%s %s), %s:\n  stand-in %s\n      real %s", c.name, strings.Join(c.env, " "), strings.Join(c.args, " "), v, fake, real)
			}
		}
	}
}

// TestFidelityMigrateAgainstPostgres: the migrate commands the charm runs (with the web's whole
// environment, as the charm does), on one real throwaway PostgreSQL, answer the same from the
// stand-in as from the real binaries, including histories the real binaries wrote.
func TestFidelityMigrateAgainstPostgres(t *testing.T) {
	set := realconcourse.Require(t)
	pg := pgtest.Start(t, pgtest.Options{})
	pg.CreateRole(t, "concourse", "s3cret")
	files := newFidelityFiles(t)
	var webEnv []string
	for _, r := range charmRendered(t) {
		if r.source == "web-every-option.golden /etc/concourse/web.env" {
			webEnv = files.materialize(t, r.env)
		}
	}
	if webEnv == nil {
		t.Fatal("web-every-option.golden has no web.env section")
	}
	n := 0
	freshDB := func(password string) []string {
		n++
		db := fmt.Sprintf("fidelity%d", n)
		pg.CreateDatabase(t, db, "concourse")
		env := slices.DeleteFunc(slices.Clone(webEnv), func(kv string) bool { return strings.HasPrefix(kv, "CONCOURSE_POSTGRES_") })
		return append(env, "CONCOURSE_POSTGRES_HOST="+pg.Host(), fmt.Sprintf("CONCOURSE_POSTGRES_PORT=%d", pg.Port()),
			"CONCOURSE_POSTGRES_USER=concourse", "CONCOURSE_POSTGRES_PASSWORD="+password, "CONCOURSE_POSTGRES_DATABASE="+db)
	}
	real := func(v string) string { return set.Concourse(v) }
	migrate := func(bin string, env []string, arg string) result { return runExact(t, bin, env, "migrate", arg) }
	// same runs arg with the real binary and the stand-in of each version and wants equal answers.
	same := func(step string, env []string, arg string, want map[string]string) {
		t.Helper()
		for _, v := range realconcourse.Versions() {
			r, f := migrate(real(v), env, arg), migrate(fakeBin(t, v), env, arg)
			if f != r {
				t.Errorf("%s, migrate %s, %s:\n  stand-in %s\n      real %s", step, arg, v, f, r)
			}
			if w, ok := want[v]; ok && r.stdout != w {
				t.Errorf("%s, migrate %s, real %s: %s; want stdout %q", step, arg, v, r, w)
			}
		}
	}
	v714, v825 := "1746768931\n", "1776182280\n"

	env := freshDB("s3cret")
	same("fresh database", env, "--current-db-version", map[string]string{"7.14.3": "", "8.2.5": ""})
	same("fresh database", env, "--supported-db-version", map[string]string{"7.14.3": v714, "8.2.5": v825})
	if r := migrate(real("7.14.3"), env, "--migrate-to-latest-version"); r != (result{}) {
		t.Fatalf("real 7.14.3 migrate --migrate-to-latest-version: %s; want silence", r)
	}
	same("after real 7.14.3 migrated", env, "--current-db-version", map[string]string{"7.14.3": v714, "8.2.5": v714})
	if r := migrate(real("8.2.5"), env, "--migrate-to-latest-version"); r != (result{}) {
		t.Fatalf("real 8.2.5 migrate --migrate-to-latest-version: %s; want silence", r)
	}
	same("after real 8.2.5 migrated", env, "--current-db-version", map[string]string{"7.14.3": v825, "8.2.5": v825})
	if r := migrate(real("8.2.5"), env, "--migrate-db-to-version=1746768931"); r.stdout != "Successfully migrated to version: 1746768931\n" || r.code != 0 {
		t.Fatalf("real 8.2.5 down to 7.14's schema: %s", r)
	}
	// The old binary reports the newest undone migration, which it lacks, not its own version.
	same("after real 8.2.5 migrated down", env, "--current-db-version", map[string]string{"7.14.3": "1747084615\n", "8.2.5": v714})

	// The stand-in's own history, read by the real binaries: one row per release line, so only
	// the answers that do not depend on the real migration list are compared.
	env = freshDB("s3cret")
	for _, step := range []struct{ v, arg string }{{"7.14.3", "--migrate-to-latest-version"}, {"8.2.5", "--migrate-to-latest-version"}} {
		if f := migrate(fakeBin(t, step.v), env, step.arg); f != (result{}) {
			t.Fatalf("stand-in %s migrate %s: %s; want silence", step.v, step.arg, f)
		}
		same("after the stand-in "+step.v+" migrated", env, "--current-db-version", nil)
	}

	// Any target is taken: below the first migration nothing happens, above the last all do.
	for _, target := range []string{"1", "1800000000"} {
		for _, v := range realconcourse.Versions() {
			rEnv, fEnv := freshDB("s3cret"), freshDB("s3cret")
			r := migrate(real(v), rEnv, "--migrate-db-to-version="+target)
			f := migrate(fakeBin(t, v), fEnv, "--migrate-db-to-version="+target)
			if f != r {
				t.Errorf("fresh database, migrate --migrate-db-to-version=%s, %s:\n  stand-in %s\n      real %s", target, v, f, r)
			}
			if r, f := migrate(real(v), rEnv, "--current-db-version"), migrate(fakeBin(t, v), fEnv, "--current-db-version"); f != r {
				t.Errorf("after --migrate-db-to-version=%s, %s, --current-db-version:\n  stand-in %s\n      real %s", target, v, f, r)
			}
		}
	}

	same("wrong password", freshDB("wrong"), "--current-db-version", nil)
	closed := append(slices.Clone(webEnv), "CONCOURSE_POSTGRES_HOST=127.0.0.1", fmt.Sprintf("CONCOURSE_POSTGRES_PORT=%d", closedPort(t)), "CONCOURSE_POSTGRES_USER=concourse")
	same("nothing listening", closed, "--current-db-version", nil)
	same("nothing listening", closed, "--supported-db-version", map[string]string{"7.14.3": v714, "8.2.5": v825})
}

// closedPort is a loopback port nothing listens on (it was just bound and released).
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// keyShape is what a caller can rely on in the files `generate-key` writes.
type keyShape struct {
	stdout            string
	privMode, pubMode os.FileMode
	pemType           string
	pkcs1, pubMatch   bool
	bits              int
	pubLine           string // the public key file with its base64 blob replaced by "…"
}

func generateKeyShape(t *testing.T, bin string, args ...string) keyShape {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	r := runExact(t, bin, nil, append([]string{"generate-key", "-f", path}, args...)...)
	if r.code != 0 {
		t.Fatalf("%s generate-key %v: %s", bin, args, r)
	}
	s := keyShape{stdout: strings.ReplaceAll(r.stdout, dir, "<dir>")}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s.privMode = fi.Mode()
	b, _ := os.ReadFile(path)
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s generate-key wrote no PEM: %q", bin, b)
	}
	s.pemType = block.Type
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if s.pkcs1 = err == nil; s.pkcs1 {
		s.bits = key.N.BitLen()
	}
	if pb, err := os.ReadFile(path + ".pub"); err == nil {
		fi, _ := os.Stat(path + ".pub")
		s.pubMode = fi.Mode()
		fields := strings.Fields(string(pb))
		s.pubLine = regexp.MustCompile(`AAAA[A-Za-z0-9+/=]+`).ReplaceAllString(string(pb), "…")
		if pk, _, _, _, err := ssh.ParseAuthorizedKey(pb); err == nil && key != nil && len(fields) > 0 {
			want, _ := ssh.NewPublicKey(&key.PublicKey)
			s.pubMatch = bytes.Equal(pk.Marshal(), want.Marshal())
		}
	}
	return s
}

// TestFidelityGenerateKeyAndVersion: `generate-key` writes the same kind of files (PEM label,
// PKCS#1, size, modes, public key line) and `--version` prints the same, from both.
func TestFidelityGenerateKeyAndVersion(t *testing.T) {
	set := realconcourse.Require(t)
	for _, v := range realconcourse.Versions() {
		for _, args := range [][]string{nil, {"-t", "ssh", "-b", "2048"}, {"-t", "rsa", "-b", "1024"}} {
			r, f := generateKeyShape(t, set.Concourse(v), args...), generateKeyShape(t, fakeBin(t, v), args...)
			if f != r {
				t.Errorf("generate-key %v, %s:\n  stand-in %+v\n      real %+v", args, v, f, r)
			}
			if !r.pkcs1 || r.pemType != "PRIVATE KEY" {
				t.Errorf("real %s generate-key %v: PEM %q, PKCS#1 %v; the contract says PKCS#1 labelled PRIVATE KEY", v, args, r.pemType, r.pkcs1)
			}
		}
		for _, args := range [][]string{{"--version"}, {"-v"}, {"web", "--version"}, {"migrate", "--supported-db-version", "--version"}} {
			r, f := runExact(t, set.Concourse(v), nil, args...), runExact(t, fakeBin(t, v), nil, args...)
			if r != (result{stdout: v + "\n"}) || f != r {
				t.Errorf("%v, %s: real %s, stand-in %s; want both to print %q", args, v, r, f, v)
			}
		}
	}
}

// webRun is one running `concourse web` (real or stand-in) on loopback ports.
type webRun struct {
	base, metrics string
	cmd           *exec.Cmd
	out           *bytes.Buffer
	exited        <-chan struct{}  // closed when the process has been reaped
	state         *os.ProcessState // valid after exited
}

// startWeb runs bin as the charm would (its web.env and extra flags) on a fresh database, with
// every listener moved to a free loopback port, and waits (bounded) until /api/v1/info answers.
func startWeb(t *testing.T, bin string, env, args []string) *webRun {
	t.Helper()
	port, tsa, dbg, tsaDbg, prom := closedPort(t), closedPort(t), closedPort(t), closedPort(t), closedPort(t)
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		listener := (strings.HasSuffix(name, "_PORT") || strings.HasSuffix(name, "_IP")) && !strings.HasPrefix(name, "CONCOURSE_POSTGRES_")
		return listener || name == "CONCOURSE_EXTERNAL_URL" || name == "CONCOURSE_PEER_ADDRESS"
	})
	env = append(env, "CONCOURSE_BIND_IP=127.0.0.1", fmt.Sprintf("CONCOURSE_BIND_PORT=%d", port),
		"CONCOURSE_TSA_BIND_IP=127.0.0.1", fmt.Sprintf("CONCOURSE_TSA_BIND_PORT=%d", tsa),
		fmt.Sprintf("CONCOURSE_DEBUG_BIND_PORT=%d", dbg), fmt.Sprintf("CONCOURSE_TSA_DEBUG_BIND_PORT=%d", tsaDbg),
		"CONCOURSE_PROMETHEUS_BIND_IP=127.0.0.1", fmt.Sprintf("CONCOURSE_PROMETHEUS_BIND_PORT=%d", prom),
		fmt.Sprintf("CONCOURSE_EXTERNAL_URL=http://127.0.0.1:%d", port), "CONCOURSE_PEER_ADDRESS=127.0.0.1",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	w := &webRun{base: fmt.Sprintf("http://127.0.0.1:%d", port), metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", prom), out: &bytes.Buffer{}}
	w.cmd = exec.Command(bin, append([]string{"web"}, args...)...)
	w.cmd.Env, w.cmd.Stdout, w.cmd.Stderr, w.cmd.Dir = env, w.out, w.out, t.TempDir()
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { w.state, _ = w.cmd.Process.Wait(); close(exited) }()
	w.exited = exited
	t.Cleanup(func() {
		w.cmd.Process.Signal(syscall.SIGKILL) // by the pid this test started; a no-op once it exited
		<-exited
	})
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("%s web exited before serving:\n%s", bin, w.out.String())
		default:
		}
		if resp, err := client.Get(w.base + "/api/v1/info"); err == nil {
			resp.Body.Close()
			return w
		}
	}
	t.Fatalf("%s web did not answer /api/v1/info within 60s:\n%s", bin, w.out.String())
	return nil
}

// answer is what one HTTP exchange showed, normalised so the real and the stand-in compare.
type answer struct {
	status            int
	contentType, body string
	headers           string // the security and version headers, "Name: value" lines
}

func (w *webRun) do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: strings.ReplaceAll(string(b), w.base, "<web>")}
	for _, h := range []string{"Cache-Control", "Content-Security-Policy", "Vary", "X-Concourse-Version", "X-Content-Type-Options", "X-Download-Options", "X-Frame-Options", "X-Xss-Protection"} {
		a.headers += h + ": " + resp.Header.Get(h) + "\n"
	}
	return a
}

func (w *webRun) get(t *testing.T, path, token string) answer {
	req, _ := http.NewRequest(http.MethodGet, w.base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return w.do(t, req)
}

// login is the charm's PasswordToken request.
func (w *webRun) login(t *testing.T, user, pass string) (answer, map[string]any) {
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}, "scope": {"openid profile email federated:id groups"}}
	req, _ := http.NewRequest(http.MethodPost, w.base+"/sky/issuer/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("fly", "Zmx5")
	a := w.do(t, req)
	var tok map[string]any
	json.Unmarshal([]byte(a.body), &tok)
	return a, tok
}

// TestFidelityWebAPI: a web started from the charm's rendered web.env and extra flags answers the
// requests the charm makes (info, the password login, workers) and the ones operators make (fly
// download, metrics) in the same shape from the stand-in as from the real binary: status codes,
// content types, security headers, and bodies (the token values aside).
func TestFidelityWebAPI(t *testing.T) {
	set := realconcourse.Require(t)
	pg := pgtest.Start(t, pgtest.Options{})
	pg.CreateRole(t, "concourse", "s3cret")
	files := newFidelityFiles(t)
	var env, args []string
	for _, r := range charmRendered(t) {
		switch r.source {
		case "web-every-option.golden /etc/concourse/web.env":
			env = files.materialize(t, r.env)
		case "web-every-option.golden ExecStart":
			args = r.args
		}
	}
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "CONCOURSE_POSTGRES_") })
	user, pass := "ops", "from-the-admin-password-secret" // what web-every-option.golden renders
	n := 0
	for _, v := range realconcourse.Versions() {
		// The real binary runs from a release laid out like the published one, so it finds its
		// fly-assets beside bin/, as the stand-in built by TestMain does.
		rel := t.TempDir()
		a, _, err := release.BuildReal(rel, v, "amd64", set, release.RealOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("tar", "-xzf", a.Path, "-C", rel).CombinedOutput(); err != nil {
			t.Fatalf("tar: %v\n%s", err, out)
		}
		answers := map[string]map[string]answer{}
		for _, who := range []struct{ name, bin, fly string }{
			{"real", filepath.Join(rel, "concourse", "bin", "concourse"), set.Fly(v)},
			{"stand-in", fakeBin(t, v), ""},
		} {
			n++
			db := fmt.Sprintf("web%d", n)
			pg.CreateDatabase(t, db, "concourse")
			w := startWeb(t, who.bin, append(slices.Clone(env), "CONCOURSE_POSTGRES_HOST="+pg.Host(), fmt.Sprintf("CONCOURSE_POSTGRES_PORT=%d", pg.Port()),
				"CONCOURSE_POSTGRES_USER=concourse", "CONCOURSE_POSTGRES_PASSWORD=s3cret", "CONCOURSE_POSTGRES_DATABASE="+db), args)
			got := map[string]answer{
				"GET /api/v1/info":                      w.get(t, "/api/v1/info", ""),
				"GET /api/v1/workers without a token":   w.get(t, "/api/v1/workers", ""),
				"GET /api/v1/workers with a bad token":  w.get(t, "/api/v1/workers", "garbage"),
				"GET /api/v1/health (8.3 only)":         w.get(t, "/api/v1/health", ""),
				"GET /api/v1/cli for a missing archive": w.get(t, "/api/v1/cli?arch=arm64&platform=linux", ""),
			}
			cli := w.get(t, "/api/v1/cli?arch=amd64&platform=linux", "")
			wantFly := flyFixture
			if who.fly != "" {
				b, _ := os.ReadFile(who.fly)
				wantFly = string(b)
			}
			if cli.body != wantFly {
				t.Errorf("%s %s: /api/v1/cli served %d bytes; want its own fly-assets' fly (%d bytes)", who.name, v, len(cli.body), len(wantFly))
			}
			cli.body = "<fly>"
			got["GET /api/v1/cli?arch=amd64&platform=linux"] = cli
			bad, _ := w.login(t, user, "wrong")
			got["login with a wrong password"] = bad
			ok, tok := w.login(t, user, pass)
			token, _ := tok["access_token"].(string)
			ok.body = fmt.Sprintf("token_type=%v expires_in=%v access_token set=%v id_token set=%v", tok["token_type"], tok["expires_in"], token != "", tok["id_token"] != nil)
			got["login"] = ok
			got["GET /api/v1/workers with the token"] = w.get(t, "/api/v1/workers", token)
			req, _ := http.NewRequest(http.MethodGet, w.metrics, nil)
			m := w.do(t, req)
			m.body, m.headers = "", "" // the metric families differ: the stand-in exports a handful
			got["GET /metrics"] = m
			w.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-w.exited:
				if w.state.ExitCode() != 0 {
					t.Errorf("%s %s web after SIGTERM: %v; want exit 0\n%s", who.name, v, w.state, w.out.String())
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s %s web still running 30s after SIGTERM", who.name, v)
			}
			answers[who.name] = got
		}
		for _, k := range sortedKeys(answers["real"]) {
			r, f := answers["real"][k], answers["stand-in"][k]
			// The missing archive's path is each one's own prefix.
			r.body = regexp.MustCompile(`open \S+/fly-assets/`).ReplaceAllString(r.body, "open <prefix>/fly-assets/")
			f.body = regexp.MustCompile(`open \S+/fly-assets/`).ReplaceAllString(f.body, "open <prefix>/fly-assets/")
			if r != f {
				t.Errorf("%s, %s:\n  stand-in %+v\n      real %+v", k, v, f, r)
			}
		}
	}
}
