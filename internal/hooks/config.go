package hooks

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// Config is the charm's configuration, validated. Field comments name the option.
type Config struct {
	Mode                       string // mode
	Version                    string // version, bare X.Y.Z or "" for latest
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
	ExtraWebFlags              []string
	EnableMetrics              bool
}

// ConfigError names the option, the bad value and what is allowed; it becomes the blocked status.
type ConfigError struct {
	Option  string
	Value   string
	Allowed string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Option, e.Value, e.Allowed)
}

var (
	modes          = []string{"auto", "web", "worker", "all"}
	sharedStorages = []string{"none", "lxc"}
	// Concourse accepts debug|info|error|fatal (concourse-contract §2.3); the reference charm offered
	// "warn", which Concourse rejects, so it is accepted for compatibility and logged at info.
	logLevels      = []string{"debug", "info", "warn", "error", "fatal"}
	placements     = []string{"volume-locality", "random", "fewest-build-containers", "limit-active-tasks", "limit-active-containers", "limit-active-volumes"}
	adminUserChars = "letters, digits, '-', '_' and '.'"
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
			return c, &ConfigError{"version", v, "expected X.Y.Z such as 7.14.3 (a leading v is accepted), or empty for the latest release"}
		}
	}
	c.GitHubToken = str("github-token")
	if u := str("release-url"); u != "" {
		pu, perr := url.Parse(u)
		if perr != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return c, &ConfigError{"release-url", u, "expected an http(s) base URL laid out like https://github.com/concourse/concourse/releases/download"}
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
	if c.EnableMetrics, err = rawBool(raw["enable-metrics"]); err != nil {
		return c, &ConfigError{"enable-metrics", rawString(raw["enable-metrics"]), "expected true or false"}
	}
	if c.EnableMetrics && c.WebPort == metricsPort {
		return c, &ConfigError{"web-port", strconv.Itoa(c.WebPort), "9391 is the metrics port when enable-metrics is true; choose another"}
	}
	if f := str("extra-web-flags"); f != "" {
		if c.ExtraWebFlags, err = concourse.SplitFlags(f); err != nil {
			return c, &ConfigError{"extra-web-flags", f, err.Error()}
		}
	}
	return c, nil
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
