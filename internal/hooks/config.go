package hooks

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// Config is the charm's configuration, validated. Field comments name the option.
type Config struct {
	Mode                       string // mode
	Version                    string // version, bare X.Y.Z or "" for latest (or a line)
	VersionLine                string // version as a release line ("8", "8.2"); Version is "" then
	GitHubToken                string // github-token
	ReleaseURL                 string // release-url, without trailing slash; "" = GitHub
	ReleaseSHA256              string // release-sha256, lower-case hex or ""
	SharedStorage              string // shared-storage: none | lxc
	WebPort                    int    // web-port
	ExternalURL                string // external-url
	AdminUser                  string // initial-admin-username
	LogLevel                   string // log-level, as Concourse spells it
	Tags                       []string
	ContainerPlacementStrategy string
	DNSProxyEnable             bool
	DNSServers                 []string
	WorkerRuntime              string // worker-runtime: containerd | guardian | houdini
	ExtraWebFlags              []string
	EnableMetrics              bool
	// Opts holds the checked, non-default values of the option table (options.go), by option.
	Opts map[string]string
	// hashPassword turns a local user's password into what web.env holds (bcrypt); nil hashes
	// afresh. The hooks reuse web.env's hashes (reusingHasher), `render` shows a placeholder.
	hashPassword func(user, password string) (string, error)
	hashes       *hashCache // behind hashPassword in the hooks, for the checks file
	// vaultKV is the Vault the vault-kv relation gives (hooks only; vault.go), nil without one.
	vaultKV *concourse.VaultConfig
}

// ConfigError names the option, the bad value and what is allowed; it becomes the blocked status.
type ConfigError struct {
	Option  string
	Value   string
	Allowed string
}

// Error is the whole status message. The value is cut and quoted (so a newline or a control
// character stays escaped on one line) and the explanation cut too: a 100 KB value must not
// become a 100 KB status.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Option, cut(e.Value, maxStatusValue), cut(e.Allowed, maxStatusReason))
}

// How much of an operator's value and of an explanation a status shows.
const (
	maxStatusValue  = 64
	maxStatusReason = 320
)

var (
	modes          = []string{"auto", "web", "worker", "all"}
	sharedStorages = []string{"none", "lxc"}
	// Concourse accepts debug|info|error|fatal (concourse-contract §2.3); the reference charm offered
	// "warn", which Concourse rejects, so it is accepted for compatibility and logged at info.
	logLevels      = []string{"debug", "info", "warn", "error", "fatal"}
	placements     = []string{"volume-locality", "random", "fewest-build-containers", "limit-active-tasks", "limit-active-containers", "limit-active-volumes"}
	adminUserChars = "letters, digits, '-', '_' and '.'"
	// Concourse's runtimes (concourse-contract §3.1); the release carries gdn for guardian and
	// containerd with runc for containerd, houdini needs nothing.
	workerRuntimes = []string{"containerd", "guardian", "houdini"}
)

// parseConfig validates the raw config-get map. The first invalid option wins, in a fixed order so
// the status is stable from hook to hook.
func parseConfig(raw map[string]any) (Config, error) {
	var c Config
	var err error
	str := func(k string) string { return strings.TrimSpace(rawString(raw[k])) }

	c.Mode = str("mode")
	if c.Mode == "" {
		c.Mode = "auto"
	}
	if !contains(modes, c.Mode) {
		return c, &ConfigError{"mode", c.Mode, "allowed values are " + strings.Join(modes, ", ")}
	}
	c.SharedStorage = str("shared-storage")
	if c.SharedStorage == "" {
		c.SharedStorage = "none"
	}
	if !contains(sharedStorages, c.SharedStorage) {
		return c, &ConfigError{"shared-storage", c.SharedStorage, "allowed values are " + strings.Join(sharedStorages, ", ")}
	}
	if v := str("version"); v != "" {
		if c.Version, err = concourse.ParseVersion(v); err != nil {
			line, ok := parseReleaseLine(v)
			if !ok {
				return c, &ConfigError{"version", v, "expected X.Y.Z such as 7.14.3 (a leading v is accepted), a release line X or X.Y such as 8 or 8.2 (its newest release), or empty for the latest release"}
			}
			c.VersionLine = line
		}
	}
	c.GitHubToken = str("github-token")
	if u := str("release-url"); u != "" {
		pu, perr := url.Parse(u)
		if perr != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			// The mirror's credentials, if any, must not reach the status (issue 11 item 6).
			return c, &ConfigError{"release-url", storage.RedactText(u), "expected an http(s) base URL laid out like https://github.com/concourse/concourse/releases/download"}
		}
		c.ReleaseURL = strings.TrimRight(u, "/")
	}
	if s := strings.ToLower(str("release-sha256")); s != "" {
		if !isHex(s, 64) {
			return c, &ConfigError{"release-sha256", s, "expected 64 hexadecimal characters (sha256sum of the tarball), or empty"}
		}
		c.ReleaseSHA256 = s
	}
	port, perr := rawInt(raw["web-port"], 8080)
	if perr != nil || port < 1 || port > 65535 {
		return c, &ConfigError{"web-port", rawString(raw["web-port"]), "expected a port number from 1 to 65535"}
	}
	if port == tsaPort {
		return c, &ConfigError{"web-port", strconv.Itoa(port), "2222 is the TSA port of the web node; choose another"}
	}
	c.WebPort = port
	if u := str("external-url"); u != "" {
		pu, perr := url.Parse(u)
		if perr != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return c, &ConfigError{"external-url", u, "expected an absolute http(s) URL such as https://ci.example.com, or empty"}
		}
		c.ExternalURL = strings.TrimRight(u, "/")
	}
	c.AdminUser = str("initial-admin-username")
	if c.AdminUser == "" {
		c.AdminUser = "admin"
	}
	if !isName(c.AdminUser) {
		return c, &ConfigError{"initial-admin-username", c.AdminUser, "expected " + adminUserChars}
	}
	lvl := strings.ToLower(str("log-level"))
	if lvl == "" {
		lvl = "info"
	}
	if !contains(logLevels, lvl) {
		return c, &ConfigError{"log-level", lvl, "allowed values are debug, info, error, fatal"}
	}
	if lvl == "warn" {
		lvl = "info"
	}
	c.LogLevel = lvl
	for _, t := range splitList(str("tag")) {
		if strings.ContainsAny(t, " \t\"'") {
			return c, &ConfigError{"tag", str("tag"), "tags are comma-separated words without spaces or quotes"}
		}
		if !contains(c.Tags, t) {
			c.Tags = append(c.Tags, t)
		}
	}
	ps := splitList(str("container-placement-strategy"))
	for _, p := range ps {
		if !contains(placements, p) {
			return c, &ConfigError{"container-placement-strategy", str("container-placement-strategy"), "allowed (comma-separated) values are " + strings.Join(placements, ", ")}
		}
	}
	c.ContainerPlacementStrategy = strings.Join(ps, ",")
	if c.DNSProxyEnable, err = rawBool(raw["containerd-dns-proxy-enable"]); err != nil {
		return c, &ConfigError{"containerd-dns-proxy-enable", rawString(raw["containerd-dns-proxy-enable"]), "expected true or false"}
	}
	for _, s := range splitList(str("containerd-dns-server")) {
		if net.ParseIP(s) == nil {
			return c, &ConfigError{"containerd-dns-server", str("containerd-dns-server"), "expected comma-separated IP addresses such as 1.1.1.1,8.8.8.8, or empty"}
		}
		c.DNSServers = append(c.DNSServers, s)
	}
	c.WorkerRuntime = str("worker-runtime")
	if c.WorkerRuntime == "" {
		c.WorkerRuntime = concourse.DefaultRuntime
	}
	if !contains(workerRuntimes, c.WorkerRuntime) {
		return c, &ConfigError{"worker-runtime", str("worker-runtime"), "allowed values are " + strings.Join(workerRuntimes, ", ")}
	}
	if c.WorkerRuntime == "houdini" && c.DNSProxyEnable {
		// houdini runs steps as host processes: there is no container network to proxy DNS for.
		return c, &ConfigError{"containerd-dns-proxy-enable", "true", "worker-runtime houdini has no container network; set it to false or choose worker-runtime containerd"}
	}
	if c.EnableMetrics, err = rawBool(raw["enable-metrics"]); err != nil {
		return c, &ConfigError{"enable-metrics", rawString(raw["enable-metrics"]), "expected true or false"}
	}
	if c.EnableMetrics && c.WebPort == metricsPort {
		return c, &ConfigError{"web-port", strconv.Itoa(c.WebPort), "9391 is the metrics port when enable-metrics is true; choose another"}
	}
	if c.Opts, err = parseOptions(raw); err != nil {
		return c, err
	}
	if f := str("extra-web-flags"); f != "" {
		if c.ExtraWebFlags, err = parseExtraWebFlags(f); err != nil {
			return c, err
		}
	}
	return c, nil
}

// parseExtraWebFlags splits extra-web-flags and refuses any flag the charm renders itself (the
// operator's copy would fight the charm's, and --postgres-password=… would land in argv and the
// world-readable unit file) and any flag that carries a secret. A refusal names the flag, never
// its value. The words are checked twice: loosely before splitting, so a string SplitFlags
// rejects (an unbalanced quote) is not echoed into the status with a password in it, and
// exactly after, so quoting cannot disguise a name ('--postgres-pass'word=…).
func parseExtraWebFlags(raw string) ([]string, error) {
	managed, err := charmWebFlags()
	if err != nil {
		return nil, err
	}
	for _, o := range optionTable() {
		// A switch in argv can only agree with its option or turn it on, and the Python charm
		// had no options for the LDAP TLS switches (operators passed them here): still allowed.
		if o.Role&roleWeb != 0 && strings.HasPrefix(o.Env, "CONCOURSE_") && o.Type != "boolean" {
			managed[flagOfEnv(o.Env)] = "option:" + o.Name
		}
	}
	for _, w := range strings.Fields(raw) {
		if ce := checkExtraWebWord(strings.Trim(w, `'"`), managed); ce != nil {
			return nil, ce
		}
	}
	words, err := concourse.SplitFlags(raw)
	if err != nil {
		return nil, &ConfigError{"extra-web-flags", raw, err.Error()}
	}
	for _, w := range words {
		if ce := checkExtraWebWord(w, managed); ce != nil {
			return nil, ce
		}
	}
	return words, nil
}

// checkExtraWebWord judges one word of extra-web-flags: a flag (--name or --name=value; a value
// given as the next word is judged by its flag), or the environment form NAME=value, which this
// option does not take.
func checkExtraWebWord(w string, managed map[string]string) *ConfigError {
	name, _, hasValue := strings.Cut(w, "=")
	env := ""
	switch {
	case strings.HasPrefix(name, "--") && len(name) > 2:
		name = strings.ToLower(name) // refusing more than go-flags matches is the safe side
	case hasValue && envNameRE.MatchString(name):
		env, name = name, flagOfEnv(name)
	default:
		return nil
	}
	shown := name
	if env != "" {
		shown = env
	}
	if v, ok := managed[name]; ok {
		hint := managedFlagHint(v)
		if opt, ok := strings.CutPrefix(v, "option:"); ok {
			hint = "use the " + opt + " option"
		}
		return &ConfigError{"extra-web-flags", shown, fmt.Sprintf("the charm sets %s itself: %s", name, hint)}
	}
	if carriesSecret(name) {
		return &ConfigError{"extra-web-flags", shown, fmt.Sprintf("%s carries a secret, which would be readable in the process list and in the world-readable unit file: extra-web-flags takes no secrets, and the charm has no option for this one", name)}
	}
	if env != "" {
		return &ConfigError{"extra-web-flags", shown, fmt.Sprintf("environment variables are not accepted here: give the flag instead, %s=…", name)}
	}
	return nil
}

// envNameRE is a Concourse environment variable, the form web.env uses and this option does not.
var envNameRE = regexp.MustCompile(`^CONCOURSE_[A-Z0-9_]+$`)

// flagOfEnv is the `concourse web` flag a CONCOURSE_* variable sets: Concourse names each
// variable after its flag (CONCOURSE_POSTGRES_PASSWORD is --postgres-password).
func flagOfEnv(env string) string {
	return "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "CONCOURSE_")), "_", "-")
}

// carriesSecret says whether a flag's value is a secret: its name ends in password, secret, key
// or token (--postgres-password, --github-client-secret, --encryption-key, --vault-client-token),
// or mentions private. Only the last word counts for the nouns, so settings about secrets stay
// allowed: --enable-redact-secrets, --secret-cache-duration, --aws-ssm-pipeline-secret-template,
// --vault-client-token-path (a path), --oauth-token-url.
func carriesSecret(flag string) bool {
	words := strings.Split(strings.TrimPrefix(flag, "--"), "-")
	if contains(words, "private") {
		return true
	}
	return contains([]string{"password", "passwd", "secret", "key", "token"}, words[len(words)-1])
}

// rawString renders a config value as the operator typed it (json.Number, bool, string).
func rawString(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case json.Number:
		return t.String()
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	default:
		return fmt.Sprint(t)
	}
}

func rawInt(v any, def int) (int, error) {
	switch t := v.(type) {
	case nil:
		return def, nil
	case json.Number:
		i, err := t.Int64()
		return int(i), err
	case float64:
		if t != float64(int(t)) {
			return 0, fmt.Errorf("not an integer: %v", t)
		}
		return int(t), nil
	case int:
		return t, nil
	case int64:
		return int(t), nil
	case string:
		return strconv.Atoi(strings.TrimSpace(t))
	default:
		return 0, fmt.Errorf("not an integer: %v", t)
	}
}

func rawBool(v any) (bool, error) {
	switch t := v.(type) {
	case nil:
		return false, nil
	case bool:
		return t, nil
	case string:
		return strconv.ParseBool(strings.TrimSpace(t))
	default:
		return false, fmt.Errorf("not a boolean: %v", t)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

func isName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return s != ""
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
