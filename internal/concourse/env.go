package concourse

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// EnvVar is one variable of a systemd EnvironmentFile.
type EnvVar struct{ Name, Value string }

// FieldError names the configuration field (the Go field of WebConfig,
// WorkerConfig or DBConfig) that holds a bad value, the Concourse variable it
// feeds, and what is wrong, with the allowed values. The hooks map Field to
// the operator's config option. Secret values never appear in Reason.
type FieldError struct {
	Field  string // e.g. "LogLevel", "Postgres.Port", "Extra[2]"
	Env    string // e.g. "CONCOURSE_LOG_LEVEL"; "" when no single variable
	Reason string
}

func (e *FieldError) Error() string {
	if e.Env == "" {
		return e.Field + ": " + e.Reason
	}
	return e.Field + " (" + e.Env + "): " + e.Reason
}

// Read-only tables (style: package variables hold only these).
var (
	// Contract §2.1: go-flags choices; Concourse has no "warn".
	logLevels = []string{"debug", "info", "error", "fatal"}
	// Contract §2.3, CONCOURSE_CONTAINER_PLACEMENT_STRATEGY.
	placementStrategies = []string{"volume-locality", "random", "fewest-build-containers",
		"limit-active-tasks", "limit-active-containers", "limit-active-volumes"}
	// Contract §2.3: `prefer` (lib/pq's and libpq's default) is rejected by Concourse.
	sslModes = []string{"disable", "require", "verify-ca", "verify-full"}
	// Contract §3.1.
	runtimes            = []string{"containerd", "guardian", "houdini"}
	baggageclaimDrivers = []string{"naive", "overlay", "btrfs", "detect"}

	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
)

const (
	// DefaultTSAPort is Concourse's TSA (SSH gateway) port.
	DefaultTSAPort = 2222
	// DefaultRuntime: containerd is 8.x's default everywhere and the only
	// runtime that works on cgroup-v2 hosts for 7.14 amd64, whose default is
	// guardian (contract §3.1, §8.8), so we always render it explicitly.
	DefaultRuntime = "containerd"
	// DefaultBaggageclaimDriver is naive, as the reference charm renders.
	// overlay (what contract §8.11 recommends on plain VMs) needs overlayfs
	// mounts that unprivileged LXD containers often cannot make (and ZFS
	// before 2.2 cannot host an overlay upper dir); btrfs needs loop devices.
	// naive only copies files: slower and bigger, but it works wherever the
	// charm runs. Operators on VMs can choose overlay.
	DefaultBaggageclaimDriver = "naive"
)

// WebConfig is everything WebEnv renders for `concourse web`. Zero values
// mean "not set" where Concourse has a sensible default; the doc of each
// field says when it is required.
type WebConfig struct {
	BindPort    int    // required, 1–65535 (CONCOURSE_BIND_PORT)
	ExternalURL string // optional; http(s)://host[:port][/path]
	LogLevel    string // optional; debug|info|error|fatal

	SessionSigningKeyPath string // required: without it tokens die on restart (contract §2.2)
	TSAHostKeyPath        string // required by Concourse itself
	TSAAuthorizedKeysPath string // optional; without it every worker is refused
	TSABindPort           int    // 0 → DefaultTSAPort

	// AdminUser is the local user added and made owner of the main team:
	// web refuses to start without a main-team rule (contract §0.5).
	AdminUser     string // required; no ':' ',' or whitespace
	AdminPassword string // required; no ',' (contract §2.1: lists split on ',' with no escaping)
	// Further local users and main-team members (webauth.go); passwords as for AdminPassword.
	ExtraLocalUsers    []LocalUser
	MainTeamLocalUsers []string

	Postgres *DBConfig // nil → no CONCOURSE_POSTGRES_* at all

	ContainerPlacementStrategy string // optional; comma list of contract §2.3 strategies
	PeerAddress                string // optional; IP or DNS name other web nodes reach

	// Extra holds further variables the caller renders (e.g. lower-case
	// http_proxy). They are validated like the rest and may not redefine a
	// variable WebEnv renders, nor be CONCOURSE_VERSION.
	Extra []EnvVar
}

// WorkerConfig is everything WorkerEnv renders for `concourse worker`.
//
// The reference charm's worker-procs (CONCOURSE_WORKER_PROCS) and
// max-concurrent-downloads have no counterpart in Concourse (contract §3.1
// lists every worker setting), so there are deliberately no fields for them.
type WorkerConfig struct {
	Name                 string   // required, stable and unique per worker (contract §8.7)
	WorkDir              string   // required, absolute
	TSAHosts             []string // required, host:port each ([v6]:port)
	TSAPublicKeyPath     string   // required: without it every handshake fails (contract §0.6)
	WorkerPrivateKeyPath string   // required
	LogLevel             string   // optional; debug|info|error|fatal
	Tags                 []string // optional; trimmed, deduplicated in order, no ','
	Runtime              string   // "" → DefaultRuntime; containerd|guardian|houdini
	BaggageclaimDriver   string   // "" → DefaultBaggageclaimDriver; naive|overlay|btrfs|detect

	// DNS for containers (contract §8.9). Rendered under the runtime's own
	// namespace: CONCOURSE_CONTAINERD_DNS_* for containerd and
	// CONCOURSE_GARDEN_DNS_* for guardian. houdini has no container network,
	// so setting either there is an error rather than a silent no-op.
	DNSProxyEnable bool
	DNSServers     []string // IP addresses

	ResourceTypesDir string // optional, absolute; default <prefix>/resource-types

	Extra []EnvVar // as WebConfig.Extra
}

type checker struct{ errs []error }

func (c *checker) add(field, env, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Field: field, Env: env, Reason: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error { return errors.Join(c.errs...) }

func (c *checker) port(field, env string, p int) {
	if p < 1 || p > 65535 {
		c.add(field, env, "port %d is out of range 1-65535", p)
	}
}

func (c *checker) oneOf(field, env, v string, allowed []string) {
	if !slices.Contains(allowed, v) {
		c.add(field, env, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func (c *checker) absPath(field, env, p string, required bool) {
	switch {
	case p == "":
		if required {
			c.add(field, env, "a path is required")
		}
	case !filepath.IsAbs(p):
		c.add(field, env, "path %q is not absolute", p)
	case strings.ContainsAny(p, ",\n\r\x00"):
		c.add(field, env, "path %q contains a comma or a control character", p)
	}
}

// host accepts an IP address or a DNS name (Concourse's flag.IP settings do
// not take names, but the ones we render as hosts do).
func (c *checker) host(field, env, h string) {
	if _, err := netip.ParseAddr(h); err == nil {
		return
	}
	if !hostnameRE.MatchString(h) || len(h) > 253 {
		c.add(field, env, "%q is not an IP address or host name", h)
	}
}

func (c *checker) logLevel(field, env, v string) {
	if v == "" || slices.Contains(logLevels, v) {
		return
	}
	hint := ""
	if v == "warn" || v == "warning" {
		hint = " (Concourse has no warning level)"
	}
	c.add(field, env, "%q is not one of %s%s", v, strings.Join(logLevels, ", "), hint)
}

// WebEnv validates c and renders the variables of web.env, sorted by name.
// It never renders an empty value nor CONCOURSE_VERSION (contract §0.4).
func WebEnv(c WebConfig) ([]EnvVar, error) {
	var ck checker
	var vars []EnvVar
	set := func(name, value string) { vars = append(vars, EnvVar{name, value}) }

	ck.port("BindPort", "CONCOURSE_BIND_PORT", c.BindPort)
	set("CONCOURSE_BIND_PORT", strconv.Itoa(c.BindPort))

	if c.ExternalURL != "" {
		if u, err := checkExternalURL(c.ExternalURL); err != nil {
			ck.add("ExternalURL", "CONCOURSE_EXTERNAL_URL", "%v", err)
		} else {
			set("CONCOURSE_EXTERNAL_URL", u)
		}
	}
	ck.logLevel("LogLevel", "CONCOURSE_LOG_LEVEL", c.LogLevel)
	if c.LogLevel != "" {
		set("CONCOURSE_LOG_LEVEL", c.LogLevel)
	}

	ck.absPath("SessionSigningKeyPath", "CONCOURSE_SESSION_SIGNING_KEY", c.SessionSigningKeyPath, true)
	ck.absPath("TSAHostKeyPath", "CONCOURSE_TSA_HOST_KEY", c.TSAHostKeyPath, true)
	ck.absPath("TSAAuthorizedKeysPath", "CONCOURSE_TSA_AUTHORIZED_KEYS", c.TSAAuthorizedKeysPath, false)
	set("CONCOURSE_SESSION_SIGNING_KEY", c.SessionSigningKeyPath)
	set("CONCOURSE_TSA_HOST_KEY", c.TSAHostKeyPath)
	if c.TSAAuthorizedKeysPath != "" {
		set("CONCOURSE_TSA_AUTHORIZED_KEYS", c.TSAAuthorizedKeysPath)
	}
	tsaPort := c.TSABindPort
	if tsaPort == 0 {
		tsaPort = DefaultTSAPort
	}
	ck.port("TSABindPort", "CONCOURSE_TSA_BIND_PORT", tsaPort)
	if tsaPort == c.BindPort {
		ck.add("TSABindPort", "CONCOURSE_TSA_BIND_PORT", "port %d is also the web port: both listen on all addresses", tsaPort)
	}
	set("CONCOURSE_TSA_BIND_PORT", strconv.Itoa(tsaPort))

	switch {
	case c.AdminUser == "":
		ck.add("AdminUser", "CONCOURSE_MAIN_TEAM_LOCAL_USER", "an admin user is required: Concourse will not start without a main-team user")
	case strings.ContainsAny(c.AdminUser, ":,") || strings.ContainsFunc(c.AdminUser, isSpaceOrControl):
		ck.add("AdminUser", "CONCOURSE_ADD_LOCAL_USER", "user name %q may not contain ':', ',', spaces or control characters", c.AdminUser)
	}
	switch {
	case c.AdminPassword == "":
		ck.add("AdminPassword", "CONCOURSE_ADD_LOCAL_USER", "an admin password is required")
	case strings.Contains(c.AdminPassword, ","):
		// The value is a list split on ',' with no escaping (contract §2.1).
		ck.add("AdminPassword", "CONCOURSE_ADD_LOCAL_USER", "the password contains ',', which Concourse reads as a list separator: choose one without ','")
	case strings.ContainsFunc(c.AdminPassword, isControl):
		ck.add("AdminPassword", "CONCOURSE_ADD_LOCAL_USER", "the password contains a control character")
	}
	set("CONCOURSE_ADD_LOCAL_USER", addLocalUsers(&ck, c))
	set("CONCOURSE_MAIN_TEAM_LOCAL_USER", mainTeamLocalUsers(&ck, c))

	if c.Postgres != nil {
		ck.errs = append(ck.errs, c.Postgres.validate("Postgres.")...)
		vars = append(vars, c.Postgres.Env()...)
	}

	if c.ContainerPlacementStrategy != "" {
		var items []string
		for _, s := range strings.Split(c.ContainerPlacementStrategy, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			ck.oneOf("ContainerPlacementStrategy", "CONCOURSE_CONTAINER_PLACEMENT_STRATEGY", s, placementStrategies)
			if !slices.Contains(items, s) {
				items = append(items, s)
			}
		}
		if len(items) == 0 {
			ck.add("ContainerPlacementStrategy", "CONCOURSE_CONTAINER_PLACEMENT_STRATEGY", "%q names no strategy", c.ContainerPlacementStrategy)
		} else {
			set("CONCOURSE_CONTAINER_PLACEMENT_STRATEGY", strings.Join(items, ","))
		}
	}
	if c.PeerAddress != "" {
		ck.host("PeerAddress", "CONCOURSE_PEER_ADDRESS", c.PeerAddress)
		set("CONCOURSE_PEER_ADDRESS", c.PeerAddress)
	}
	return finish(vars, c.Extra, &ck)
}

// WorkerEnv validates c and renders the variables of worker.env, sorted by
// name. It never renders an empty value nor CONCOURSE_VERSION.
func WorkerEnv(c WorkerConfig) ([]EnvVar, error) {
	var ck checker
	var vars []EnvVar
	set := func(name, value string) { vars = append(vars, EnvVar{name, value}) }

	switch {
	case c.Name == "":
		ck.add("Name", "CONCOURSE_NAME", "a worker name is required (stable and unique per worker)")
	case strings.ContainsAny(c.Name, ",") || strings.ContainsFunc(c.Name, isSpaceOrControl):
		ck.add("Name", "CONCOURSE_NAME", "worker name %q may not contain ',', spaces or control characters", c.Name)
	}
	set("CONCOURSE_NAME", c.Name)
	ck.absPath("WorkDir", "CONCOURSE_WORK_DIR", c.WorkDir, true)
	set("CONCOURSE_WORK_DIR", c.WorkDir)

	var hosts []string
	errsBefore := len(ck.errs)
	for _, h := range c.TSAHosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			ck.add("TSAHosts", "CONCOURSE_TSA_HOST", "%q is not host:port: %v", h, err)
			continue
		}
		ck.host("TSAHosts", "CONCOURSE_TSA_HOST", host)
		p, err := strconv.Atoi(port)
		if err != nil {
			ck.add("TSAHosts", "CONCOURSE_TSA_HOST", "%q has a non-numeric port", h)
			continue
		}
		ck.port("TSAHosts", "CONCOURSE_TSA_HOST", p)
		if hp := net.JoinHostPort(host, port); !slices.Contains(hosts, hp) {
			hosts = append(hosts, hp)
		}
	}
	if len(hosts) == 0 && len(ck.errs) == errsBefore {
		ck.add("TSAHosts", "CONCOURSE_TSA_HOST", "at least one TSA host:port is required")
	}
	set("CONCOURSE_TSA_HOST", strings.Join(hosts, ","))

	ck.absPath("TSAPublicKeyPath", "CONCOURSE_TSA_PUBLIC_KEY", c.TSAPublicKeyPath, true)
	ck.absPath("WorkerPrivateKeyPath", "CONCOURSE_TSA_WORKER_PRIVATE_KEY", c.WorkerPrivateKeyPath, true)
	set("CONCOURSE_TSA_PUBLIC_KEY", c.TSAPublicKeyPath)
	set("CONCOURSE_TSA_WORKER_PRIVATE_KEY", c.WorkerPrivateKeyPath)

	ck.logLevel("LogLevel", "CONCOURSE_LOG_LEVEL", c.LogLevel)
	if c.LogLevel != "" {
		set("CONCOURSE_LOG_LEVEL", c.LogLevel)
	}

	var tags []string
	for _, t := range c.Tags {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
		case strings.Contains(t, ",") || strings.ContainsFunc(t, isControl):
			ck.add("Tags", "CONCOURSE_TAG", "tag %q may not contain ',' or control characters", t)
		case !slices.Contains(tags, t):
			tags = append(tags, t)
		}
	}
	if len(tags) > 0 {
		set("CONCOURSE_TAG", strings.Join(tags, ","))
	}

	runtime := c.Runtime
	if runtime == "" {
		runtime = DefaultRuntime
	}
	ck.oneOf("Runtime", "CONCOURSE_RUNTIME", runtime, runtimes)
	set("CONCOURSE_RUNTIME", runtime)
	driver := c.BaggageclaimDriver
	if driver == "" {
		driver = DefaultBaggageclaimDriver
	}
	ck.oneOf("BaggageclaimDriver", "CONCOURSE_BAGGAGECLAIM_DRIVER", driver, baggageclaimDrivers)
	set("CONCOURSE_BAGGAGECLAIM_DRIVER", driver)

	var dns []string
	for _, s := range c.DNSServers {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			ck.add("DNSServers", "", "%q is not an IP address (Concourse takes addresses, not names)", s)
			continue
		}
		if !slices.Contains(dns, a.String()) {
			dns = append(dns, a.String())
		}
	}
	// Contract §3.1: containerd and guardian read DNS settings under their
	// own namespaces; rendering the other's would be silently ignored.
	var ns string
	switch runtime {
	case "containerd":
		ns = "CONCOURSE_CONTAINERD_"
	case "guardian":
		ns = "CONCOURSE_GARDEN_"
	case "houdini":
		if c.DNSProxyEnable || len(dns) > 0 {
			ck.add("DNSServers", "", "runtime houdini runs steps as host processes, so DNS settings would have no effect: clear them or choose containerd")
		}
	}
	if ns != "" {
		set(ns+"DNS_PROXY_ENABLE", strconv.FormatBool(c.DNSProxyEnable))
		if len(dns) > 0 {
			set(ns+"DNS_SERVER", strings.Join(dns, ","))
		}
	}

	if c.ResourceTypesDir != "" {
		ck.absPath("ResourceTypesDir", "CONCOURSE_RESOURCE_TYPES", c.ResourceTypesDir, false)
		set("CONCOURSE_RESOURCE_TYPES", c.ResourceTypesDir)
	}
	return finish(vars, c.Extra, &ck)
}

// finish adds the caller's extra variables, checks the whole set and sorts it.
func finish(vars, extra []EnvVar, ck *checker) ([]EnvVar, error) {
	for i, e := range extra {
		if slices.ContainsFunc(vars, func(v EnvVar) bool { return v.Name == e.Name }) {
			ck.add(fmt.Sprintf("Extra[%d]", i), e.Name, "this variable is rendered from its own field and cannot be set again")
			continue
		}
		vars = append(vars, e)
	}
	if err := ck.err(); err != nil {
		return nil, err
	}
	// Every field has been validated; CheckEnv catches anything the field
	// checks could miss (an empty required value, a newline) in one place.
	if err := CheckEnv(vars); err != nil {
		return nil, err
	}
	slices.SortStableFunc(vars, func(a, b EnvVar) int { return strings.Compare(a.Name, b.Name) })
	return vars, nil
}

// checkExternalURL accepts http(s) URLs with a host and no query, fragment or
// user info, and drops a trailing "/" (Concourse trims it anyway).
func checkExternalURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q must start with http:// or https://", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("%q may not carry user info, a query or a fragment", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q has an invalid port", s)
		}
	}
	if strings.ContainsAny(s, ", \t\n\r") {
		return "", fmt.Errorf("%q contains a comma or whitespace", s)
	}
	return strings.TrimRight(s, "/"), nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool { return r == ' ' || isControl(r) }

// CheckEnv reports whether RenderEnv can write vars faithfully and Concourse
// can start with them: names are shell identifiers and unique, no value is
// empty (an empty port/URL/duration aborts Concourse, contract §2.1), values
// are UTF-8 (systemd drops other lines) without control characters other than
// tab (a newline would end the assignment), and CONCOURSE_VERSION is absent
// (it makes every subcommand panic, contract §0.4).
func CheckEnv(vars []EnvVar) error {
	var errs []error
	seen := make(map[string]bool, len(vars))
	for _, v := range vars {
		switch {
		case !envNameRE.MatchString(v.Name):
			errs = append(errs, fmt.Errorf("variable name %q is not a valid identifier", v.Name))
			continue
		case v.Name == "CONCOURSE_VERSION":
			errs = append(errs, errors.New("CONCOURSE_VERSION may never be set: it makes every concourse subcommand panic"))
		case seen[v.Name]:
			errs = append(errs, fmt.Errorf("variable %s is set twice", v.Name))
		case v.Value == "":
			errs = append(errs, fmt.Errorf("variable %s has an empty value: omit it instead", v.Name))
		case !utf8.ValidString(v.Value):
			errs = append(errs, fmt.Errorf("the value of %s is not valid UTF-8", v.Name))
		case strings.ContainsFunc(v.Value, func(r rune) bool { return r != '\t' && isControl(r) }):
			errs = append(errs, fmt.Errorf("the value of %s contains a newline or another control character", v.Name))
		}
		seen[v.Name] = true
	}
	return errors.Join(errs...)
}

// envFileHeader tells an operator who reads the file that edits are lost.
const envFileHeader = "# Written by concourse-ci-machine; local changes are overwritten.\n"

// RenderEnv writes vars (sorted by name) in systemd EnvironmentFile syntax,
// every value double-quoted so that spaces, '#', quotes and backslashes
// survive: inside double quotes systemd (systemd.exec(5), "EnvironmentFile=")
// takes `\"`, `\\`, "\\`" and `\$` as the escaped character and performs no
// variable expansion; escaping '$' and '`' anyway keeps the file correct for
// a shell that sources it too. vars must pass CheckEnv (WebEnv and WorkerEnv
// guarantee it); anything else is a programming error and panics.
func RenderEnv(vars []EnvVar) []byte {
	if err := CheckEnv(vars); err != nil {
		panic("internal error: RenderEnv: " + err.Error())
	}
	sorted := slices.Clone(vars)
	slices.SortStableFunc(sorted, func(a, b EnvVar) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	b.WriteString(envFileHeader)
	for _, v := range sorted {
		b.WriteString(v.Name)
		b.WriteString(`="`)
		for _, r := range v.Value {
			if r == '"' || r == '\\' || r == '$' || r == '`' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteString("\"\n")
	}
	return []byte(b.String())
}

// ParseEnvFile reads an EnvironmentFile with systemd's rules (env-file.c):
// blank lines and lines starting with '#' or ';' are comments, lines without
// '=' are ignored, whitespace around the key and around an unquoted value is
// dropped, single quotes are literal, double quotes honour `\"` `\\` "\\`"
// `\$` and backslash-newline, an unquoted backslash keeps the next character,
// adjacent quoted and unquoted parts concatenate, and the last assignment of
// a name wins. Unlike systemd it reports an unterminated quote, an invalid
// name and invalid UTF-8 as errors instead of guessing.
func ParseEnvFile(data []byte) (map[string]string, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("environment file is not valid UTF-8")
	}
	const (
		preKey = iota
		key
		preValue
		value
		valueEscape
		singleQuote
		doubleQuote
		doubleQuoteEscape
		comment
	)
	out := map[string]string{}
	state := preKey
	line := 1
	startLine := 1
	var k, v strings.Builder
	lastWS := -1 // byte offset in v where trailing unquoted whitespace starts
	push := func() error {
		name := strings.TrimRight(k.String(), " \t")
		val := v.String()
		if lastWS >= 0 {
			val = val[:lastWS]
		}
		k.Reset()
		v.Reset()
		lastWS = -1
		if !envNameRE.MatchString(name) {
			return fmt.Errorf("line %d: invalid variable name %q", startLine, name)
		}
		out[name] = val
		return nil
	}
	for _, c := range string(data) {
		switch state {
		case preKey:
			switch {
			case c == '#' || c == ';':
				state = comment
			case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			default:
				state = key
				startLine = line
				k.WriteRune(c)
			}
		case key:
			switch c {
			case '\n', '\r':
				// No '=': systemd ignores the line.
				k.Reset()
				state = preKey
			case '=':
				state = preValue
			default:
				k.WriteRune(c)
			}
		case preValue:
			switch c {
			case '\n', '\r':
				if err := push(); err != nil {
					return nil, err
				}
				state = preKey
			case '\'':
				state = singleQuote
			case '"':
				state = doubleQuote
			case '\\':
				state = valueEscape
			case ' ', '\t':
			default:
				state = value
				v.WriteRune(c)
			}
		case value:
			switch {
			case c == '\n' || c == '\r':
				if err := push(); err != nil {
					return nil, err
				}
				state = preKey
			case c == '\\':
				state = valueEscape
				lastWS = -1
			case c == ' ' || c == '\t':
				if lastWS < 0 {
					lastWS = v.Len()
				}
				v.WriteRune(c)
			default:
				lastWS = -1
				v.WriteRune(c)
			}
		case valueEscape:
			state = value
			if c != '\n' && c != '\r' {
				v.WriteRune(c)
			}
		case singleQuote:
			if c == '\'' {
				state = preValue
			} else {
				v.WriteRune(c)
			}
		case doubleQuote:
			switch c {
			case '"':
				state = preValue
			case '\\':
				state = doubleQuoteEscape
			default:
				v.WriteRune(c)
			}
		case doubleQuoteEscape:
			state = doubleQuote
			switch c {
			case '"', '\\', '`', '$':
				v.WriteRune(c)
			case '\n':
			default:
				v.WriteByte('\\')
				v.WriteRune(c)
			}
		case comment:
			if c == '\n' || c == '\r' {
				state = preKey
			}
		}
		if c == '\n' {
			line++
		}
	}
	switch state {
	case singleQuote, doubleQuote, doubleQuoteEscape:
		return nil, fmt.Errorf("line %d: unterminated quote", startLine)
	case preValue, value, valueEscape:
		if err := push(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
