package hooks

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := parseConfig(map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "auto" || c.SharedStorage != "none" || c.WebPort != 8080 || c.LogLevel != "info" || c.AdminUser != "admin" || c.Version != "" || c.WorkerRuntime != "containerd" {
		t.Errorf("defaults = %+v", c)
	}
}

func TestParseConfigValid(t *testing.T) {
	t.Parallel()
	c, err := parseConfig(map[string]any{
		"mode": "all", "version": "v7.14.3", "shared-storage": "lxc", "web-port": json.Number("443"),
		"external-url": "https://ci.example.com/", "log-level": "warn", "tag": "gpu, big,gpu",
		"container-placement-strategy": "limit-active-tasks,random", "containerd-dns-proxy-enable": true,
		"containerd-dns-server": "1.1.1.1, 9.9.9.9", "extra-web-flags": `--cluster-name "CI one" --enable-global-resources`,
		"release-sha256": strings.Repeat("AB", 32), "release-url": "http://mirror.internal/concourse/",
		"worker-runtime": "guardian",
	})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"version", c.Version, "7.14.3"},
		{"port", c.WebPort, 443},
		{"external-url", c.ExternalURL, "https://ci.example.com"},
		{"log-level warn→info", c.LogLevel, "info"},
		{"tags deduplicated", strings.Join(c.Tags, ","), "gpu,big"},
		{"placement", c.ContainerPlacementStrategy, "limit-active-tasks,random"},
		{"dns", strings.Join(c.DNSServers, ","), "1.1.1.1,9.9.9.9"},
		{"flags", strings.Join(c.ExtraWebFlags, "|"), "--cluster-name|CI one|--enable-global-resources"},
		{"sha256 lower-cased", c.ReleaseSHA256, strings.Repeat("ab", 32)},
		{"release-url trimmed", c.ReleaseURL, "http://mirror.internal/concourse"},
		{"worker-runtime", c.WorkerRuntime, "guardian"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v; want %v", ch.name, ch.got, ch.want)
		}
	}
}

// Every invalid option is named, with the bad value and what is allowed: that sentence becomes
// the blocked status.
func TestParseConfigInvalid(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key   string
		value any
		want  []string
	}{
		{"mode", "both", []string{"mode", `"both"`, "auto, web, worker, all"}},
		{"shared-storage", "nfs", []string{"shared-storage", `"nfs"`, "none, lxc"}},
		{"version", "7.14.x", []string{"version", `"7.14.x"`, "X.Y.Z", "X.Y"}},
		{"version", "latest", []string{"version", `"latest"`}},
		{"web-port", json.Number("70000"), []string{"web-port", "70000", "1 to 65535"}},
		{"web-port", json.Number("0"), []string{"web-port"}},
		{"web-port", json.Number("2222"), []string{"web-port", "TSA"}},
		{"external-url", "ci.example.com", []string{"external-url", "http(s)"}},
		{"log-level", "verbose", []string{"log-level", "debug, info, error, fatal"}},
		{"initial-admin-username", "ad min", []string{"initial-admin-username"}},
		{"container-placement-strategy", "fastest", []string{"container-placement-strategy", "volume-locality"}},
		{"containerd-dns-server", "dns.example.com", []string{"containerd-dns-server", "IP"}},
		{"extra-web-flags", `--cluster-name "unterminated`, []string{"extra-web-flags"}},
		{"release-sha256", "abc", []string{"release-sha256", "64"}},
		{"release-url", "ftp://x", []string{"release-url"}},
		{"tag", `a b`, []string{"tag"}},
		{"worker-runtime", "docker", []string{"worker-runtime", `"docker"`, "containerd, guardian, houdini"}},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			_, err := parseConfig(map[string]any{c.key: c.value})
			if err == nil {
				t.Fatalf("%s=%v accepted", c.key, c.value)
			}
			var ce *ConfigError
			if !asConfigError(err, &ce) {
				t.Fatalf("error %T is not a *ConfigError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func asConfigError(err error, ce **ConfigError) bool {
	e, ok := err.(*ConfigError)
	*ce = e
	return ok
}

func TestDecideRole(t *testing.T) {
	t.Parallel()
	cases := []struct {
		mode   string
		leader bool
		want   Role
	}{
		{"auto", true, Role{Web: true}},
		{"auto", false, Role{Worker: true}},
		{"web", true, Role{Web: true}},
		{"web", false, Role{Web: true}},
		{"worker", true, Role{Worker: true}},
		{"worker", false, Role{Worker: true}},
		{"all", true, Role{Web: true, Worker: true}},
		{"all", false, Role{Web: true, Worker: true}},
	}
	for _, c := range cases {
		if got := decideRole(c.mode, c.leader); got != c.want {
			t.Errorf("decideRole(%q, leader=%t) = %v; want %v", c.mode, c.leader, got, c.want)
		}
	}
	// Leadership moving in auto mode swaps the roles of exactly the two units involved.
	oldLeader, newLeader := decideRole("auto", false), decideRole("auto", true)
	if oldLeader.Web || !oldLeader.Worker || !newLeader.Web || newLeader.Worker {
		t.Errorf("after a leadership change: old leader %v, new leader %v", oldLeader, newLeader)
	}
}

// houdini has no container network: the DNS proxy cannot be turned on for it, while the
// containerd-dns-server default is simply not rendered (see TestRenderGolden's worker-houdini).
func TestParseConfigHoudiniDNSProxy(t *testing.T) {
	t.Parallel()
	_, err := parseConfig(map[string]any{"worker-runtime": "houdini", "containerd-dns-proxy-enable": true})
	if err == nil || !strings.Contains(err.Error(), "containerd-dns-proxy-enable") || !strings.Contains(err.Error(), "houdini") {
		t.Fatalf("worker-runtime=houdini with the DNS proxy on: %v; want a containerd-dns-proxy-enable error naming houdini", err)
	}
	if _, err := parseConfig(map[string]any{"worker-runtime": "houdini", "containerd-dns-server": "1.1.1.1"}); err != nil {
		t.Fatalf("worker-runtime=houdini with the default DNS servers: %v; want it accepted", err)
	}
}

// Issue 11 item 6: a mirror's credentials in an invalid release-url do not reach the status.
func TestInvalidReleaseURLStatusHidesCredentials(t *testing.T) {
	t.Parallel()
	_, err := parseConfig(map[string]any{"release-url": "ftp://mirror-user:s3cret-pw@mirror.internal/concourse"})
	if err == nil {
		t.Fatal("ftp:// release-url accepted")
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cret-pw") || strings.Contains(msg, "mirror-user") {
		t.Errorf("status %q shows the mirror's credentials", msg)
	}
	if !strings.Contains(msg, "mirror.internal") || !strings.Contains(msg, "invalid release-url") {
		t.Errorf("status %q no longer names the option and the host", msg)
	}
}
