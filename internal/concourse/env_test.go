package concourse

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
)

func goodWeb() WebConfig {
	return WebConfig{
		BindPort:              8080,
		ExternalURL:           "http://10.0.0.10:8080/",
		LogLevel:              "info",
		SessionSigningKeyPath: "/etc/concourse/keys/session_signing_key",
		TSAHostKeyPath:        "/etc/concourse/keys/tsa_host_key",
		TSAAuthorizedKeysPath: "/etc/concourse/keys/authorized_worker_keys",
		AdminUser:             "admin",
		AdminPassword:         `p@ss w#rd"$HOME\`,
		Postgres: &DBConfig{Host: "10.0.0.5", Port: 5432, User: "relation_id_5", Password: "dbpass",
			Database: "concourse-ci-machine", SSLMode: "require"},
		ContainerPlacementStrategy: "limit-active-tasks, volume-locality",
		PeerAddress:                "10.0.0.10",
		Extra:                      []EnvVar{{"http_proxy", "http://proxy:3128"}},
	}
}

func goodWorker() WorkerConfig {
	return WorkerConfig{
		Name:                 "concourse-ci-machine-10",
		WorkDir:              "/var/lib/concourse-worker/work",
		TSAHosts:             []string{"10.0.0.10:2222", "[fd00::1]:2222", "10.0.0.10:2222"},
		TSAPublicKeyPath:     "/etc/concourse/keys/tsa_host_key.pub",
		WorkerPrivateKeyPath: "/etc/concourse/keys/worker_key",
		LogLevel:             "debug",
		Tags:                 []string{" gpu ", "cuda", "gpu", ""},
		DNSProxyEnable:       false,
		DNSServers:           []string{"1.1.1.1", " 8.8.8.8", "1.1.1.1"},
		ResourceTypesDir:     "/var/lib/concourse/resource-types",
	}
}

func TestWebEnvGolden(t *testing.T) {
	t.Parallel()
	vars, err := WebEnv(goodWeb())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "web.env", RenderEnv(vars))

	// Minimal: no Postgres, no optional fields.
	vars, err = WebEnv(WebConfig{BindPort: 80, SessionSigningKeyPath: "/k/s", TSAHostKeyPath: "/k/t",
		AdminUser: "admin", AdminPassword: "x"})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "web-minimal.env", RenderEnv(vars))
}

func TestWorkerEnvGolden(t *testing.T) {
	t.Parallel()
	vars, err := WorkerEnv(goodWorker())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "worker.env", RenderEnv(vars))

	g := goodWorker()
	g.Runtime, g.BaggageclaimDriver, g.DNSProxyEnable, g.Tags, g.ResourceTypesDir, g.LogLevel = "guardian", "overlay", true, nil, "", ""
	vars, err = WorkerEnv(g)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "worker-guardian.env", RenderEnv(vars))
}

func TestWebEnvValues(t *testing.T) {
	t.Parallel()
	vars, err := WebEnv(goodWeb())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range vars {
		got[v.Name] = v.Value
	}
	want := map[string]string{
		"CONCOURSE_ADD_LOCAL_USER":               `admin:p@ss w#rd"$HOME\`,
		"CONCOURSE_BIND_PORT":                    "8080",
		"CONCOURSE_CONTAINER_PLACEMENT_STRATEGY": "limit-active-tasks,volume-locality",
		"CONCOURSE_EXTERNAL_URL":                 "http://10.0.0.10:8080",
		"CONCOURSE_LOG_LEVEL":                    "info",
		"CONCOURSE_MAIN_TEAM_LOCAL_USER":         "admin",
		"CONCOURSE_PEER_ADDRESS":                 "10.0.0.10",
		"CONCOURSE_POSTGRES_DATABASE":            "concourse-ci-machine",
		"CONCOURSE_POSTGRES_HOST":                "10.0.0.5",
		"CONCOURSE_POSTGRES_PASSWORD":            "dbpass",
		"CONCOURSE_POSTGRES_PORT":                "5432",
		"CONCOURSE_POSTGRES_SSLMODE":             "require",
		"CONCOURSE_POSTGRES_USER":                "relation_id_5",
		"CONCOURSE_SESSION_SIGNING_KEY":          "/etc/concourse/keys/session_signing_key",
		"CONCOURSE_TSA_AUTHORIZED_KEYS":          "/etc/concourse/keys/authorized_worker_keys",
		"CONCOURSE_TSA_BIND_PORT":                "2222",
		"CONCOURSE_TSA_HOST_KEY":                 "/etc/concourse/keys/tsa_host_key",
		"http_proxy":                             "http://proxy:3128",
	}
	if !maps.Equal(got, want) {
		t.Errorf("WebEnv =\n%v\nwant\n%v", got, want)
	}
	for i := 1; i < len(vars); i++ {
		if vars[i-1].Name >= vars[i].Name {
			t.Errorf("not sorted: %s before %s", vars[i-1].Name, vars[i].Name)
		}
	}
}

func TestWorkerEnvValues(t *testing.T) {
	t.Parallel()
	vars, err := WorkerEnv(goodWorker())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range vars {
		got[v.Name] = v.Value
	}
	want := map[string]string{
		"CONCOURSE_BAGGAGECLAIM_DRIVER":         "naive",
		"CONCOURSE_CONTAINERD_DNS_PROXY_ENABLE": "false",
		"CONCOURSE_CONTAINERD_DNS_SERVER":       "1.1.1.1,8.8.8.8",
		"CONCOURSE_LOG_LEVEL":                   "debug",
		"CONCOURSE_NAME":                        "concourse-ci-machine-10",
		"CONCOURSE_RESOURCE_TYPES":              "/var/lib/concourse/resource-types",
		"CONCOURSE_RUNTIME":                     "containerd",
		"CONCOURSE_TAG":                         "gpu,cuda",
		"CONCOURSE_TSA_HOST":                    "10.0.0.10:2222,[fd00::1]:2222",
		"CONCOURSE_TSA_PUBLIC_KEY":              "/etc/concourse/keys/tsa_host_key.pub",
		"CONCOURSE_TSA_WORKER_PRIVATE_KEY":      "/etc/concourse/keys/worker_key",
		"CONCOURSE_WORK_DIR":                    "/var/lib/concourse-worker/work",
	}
	if !maps.Equal(got, want) {
		t.Errorf("WorkerEnv =\n%v\nwant\n%v", got, want)
	}

	// No tags → no CONCOURSE_TAG at all (never an empty value).
	w := goodWorker()
	w.Tags = []string{" ", ""}
	vars, err = WorkerEnv(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		if v.Name == "CONCOURSE_TAG" {
			t.Errorf("CONCOURSE_TAG rendered for blank tags: %q", v.Value)
		}
	}
}

func TestWebEnvInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mutate func(*WebConfig)
		field  string
		reason string
	}{
		{"port-zero", func(c *WebConfig) { c.BindPort = 0 }, "BindPort", "out of range 1-65535"},
		{"port-high", func(c *WebConfig) { c.BindPort = 70000 }, "BindPort", "70000"},
		{"url-no-scheme", func(c *WebConfig) { c.ExternalURL = "ci.example.com" }, "ExternalURL", "http:// or https://"},
		{"url-ftp", func(c *WebConfig) { c.ExternalURL = "ftp://ci.example.com" }, "ExternalURL", "http:// or https://"},
		{"url-no-host", func(c *WebConfig) { c.ExternalURL = "http://" }, "ExternalURL", "no host"},
		{"url-query", func(c *WebConfig) { c.ExternalURL = "https://ci.example.com/?a=b" }, "ExternalURL", "query"},
		{"url-space", func(c *WebConfig) { c.ExternalURL = "https://ci.example.com/a b" }, "ExternalURL", ""},
		{"log-warn", func(c *WebConfig) { c.LogLevel = "warn" }, "LogLevel", "no warning level"},
		{"log-verbose", func(c *WebConfig) { c.LogLevel = "verbose" }, "LogLevel", "debug, info, error, fatal"},
		{"no-host-key", func(c *WebConfig) { c.TSAHostKeyPath = "" }, "TSAHostKeyPath", "required"},
		{"relative-key", func(c *WebConfig) { c.SessionSigningKeyPath = "keys/s" }, "SessionSigningKeyPath", "not absolute"},
		{"tsa-port-clash", func(c *WebConfig) { c.TSABindPort = 8080 }, "TSABindPort", "also the web port"},
		{"tsa-port-high", func(c *WebConfig) { c.TSABindPort = 65536 }, "TSABindPort", "out of range"},
		{"no-admin", func(c *WebConfig) { c.AdminUser = "" }, "AdminUser", "main-team"},
		{"admin-colon", func(c *WebConfig) { c.AdminUser = "ad:min" }, "AdminUser", "':'"},
		{"admin-space", func(c *WebConfig) { c.AdminUser = "ad min" }, "AdminUser", "spaces"},
		{"no-password", func(c *WebConfig) { c.AdminPassword = "" }, "AdminPassword", "required"},
		{"password-comma", func(c *WebConfig) { c.AdminPassword = "a,b" }, "AdminPassword", "list separator"},
		{"password-newline", func(c *WebConfig) { c.AdminPassword = "a\nb" }, "AdminPassword", "control character"},
		{"placement", func(c *WebConfig) { c.ContainerPlacementStrategy = "volume-locality,fastest" }, "ContainerPlacementStrategy", `"fastest" is not one of volume-locality, random`},
		{"placement-empty-list", func(c *WebConfig) { c.ContainerPlacementStrategy = " , " }, "ContainerPlacementStrategy", "names no strategy"},
		{"peer", func(c *WebConfig) { c.PeerAddress = "not a host" }, "PeerAddress", "not an IP address or host name"},
		{"pg-host", func(c *WebConfig) { c.Postgres.Host = "" }, "Postgres.Host", "required"},
		{"pg-port", func(c *WebConfig) { c.Postgres.Port = 0 }, "Postgres.Port", "out of range"},
		{"pg-user", func(c *WebConfig) { c.Postgres.User = "" }, "Postgres.User", "required"},
		{"pg-db", func(c *WebConfig) { c.Postgres.Database = "" }, "Postgres.Database", "required"},
		{"pg-sslmode", func(c *WebConfig) { c.Postgres.SSLMode = "prefer" }, "Postgres.SSLMode", "disable, require, verify-ca, verify-full"},
		{"extra-version", func(c *WebConfig) { c.Extra = []EnvVar{{"CONCOURSE_VERSION", "7.14.3"}} }, "", "CONCOURSE_VERSION may never be set"},
		{"extra-dup", func(c *WebConfig) { c.Extra = []EnvVar{{"CONCOURSE_BIND_PORT", "9090"}} }, "Extra[0]", "cannot be set again"},
		{"extra-empty", func(c *WebConfig) { c.Extra = []EnvVar{{"no_proxy", ""}} }, "", "empty value"},
		{"extra-name", func(c *WebConfig) { c.Extra = []EnvVar{{"A-B", "x"}} }, "", "not a valid identifier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := goodWeb()
			pg := *c.Postgres
			c.Postgres = &pg
			tc.mutate(&c)
			vars, err := WebEnv(c)
			if err == nil {
				t.Fatalf("WebEnv = %v; want an error", vars)
			}
			if tc.field != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("error %q: want a *FieldError for %s", err, tc.field)
				}
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not contain %q", err, tc.reason)
			}
			if strings.Contains(err.Error(), "p@ss") || strings.Contains(err.Error(), "dbpass") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

func TestWorkerEnvInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mutate func(*WorkerConfig)
		field  string
		reason string
	}{
		{"no-name", func(c *WorkerConfig) { c.Name = "" }, "Name", "required"},
		{"name-space", func(c *WorkerConfig) { c.Name = "a b" }, "Name", "spaces"},
		{"no-workdir", func(c *WorkerConfig) { c.WorkDir = "" }, "WorkDir", "required"},
		{"relative-workdir", func(c *WorkerConfig) { c.WorkDir = "work" }, "WorkDir", "not absolute"},
		{"no-tsa", func(c *WorkerConfig) { c.TSAHosts = nil }, "TSAHosts", "at least one"},
		{"tsa-no-port", func(c *WorkerConfig) { c.TSAHosts = []string{"10.0.0.1"} }, "TSAHosts", "not host:port"},
		{"tsa-bad-port", func(c *WorkerConfig) { c.TSAHosts = []string{"10.0.0.1:0"} }, "TSAHosts", "out of range"},
		{"tsa-blank", func(c *WorkerConfig) { c.TSAHosts = []string{" "} }, "TSAHosts", "at least one"},
		{"no-tsa-pub", func(c *WorkerConfig) { c.TSAPublicKeyPath = "" }, "TSAPublicKeyPath", "required"},
		{"no-worker-key", func(c *WorkerConfig) { c.WorkerPrivateKeyPath = "" }, "WorkerPrivateKeyPath", "required"},
		{"log", func(c *WorkerConfig) { c.LogLevel = "warning" }, "LogLevel", "no warning level"},
		{"tag-comma", func(c *WorkerConfig) { c.Tags = []string{"a,b"} }, "Tags", "','"},
		{"runtime", func(c *WorkerConfig) { c.Runtime = "podman" }, "Runtime", "containerd, guardian, houdini"},
		{"driver", func(c *WorkerConfig) { c.BaggageclaimDriver = "zfs" }, "BaggageclaimDriver", "naive, overlay, btrfs, detect"},
		{"dns-name", func(c *WorkerConfig) { c.DNSServers = []string{"dns.google"} }, "DNSServers", "not an IP address"},
		{"houdini-dns", func(c *WorkerConfig) { c.Runtime = "houdini" }, "DNSServers", "no effect"},
		{"extra-version", func(c *WorkerConfig) { c.Extra = []EnvVar{{"CONCOURSE_VERSION", "x"}} }, "", "CONCOURSE_VERSION"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := goodWorker()
			tc.mutate(&c)
			vars, err := WorkerEnv(c)
			if err == nil {
				t.Fatalf("WorkerEnv = %v; want an error", vars)
			}
			if tc.field != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("error %q: want a *FieldError for %s", err, tc.field)
				}
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not contain %q", err, tc.reason)
			}
		})
	}
	// houdini without DNS settings is fine and renders no DNS variables.
	c := goodWorker()
	c.Runtime, c.DNSServers = "houdini", nil
	vars, err := WorkerEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		if strings.Contains(v.Name, "DNS") {
			t.Errorf("houdini rendered %s", v.Name)
		}
	}
}

// TestEnvNeverEmptyNorVersion runs many combinations of optional fields and
// checks the two rules that make Concourse crash (contract §0.4).
func TestEnvNeverEmptyNorVersion(t *testing.T) {
	t.Parallel()
	check := func(label string, vars []EnvVar) {
		t.Helper()
		for _, v := range vars {
			if v.Value == "" {
				t.Errorf("%s: %s rendered empty", label, v.Name)
			}
			if v.Name == "CONCOURSE_VERSION" {
				t.Errorf("%s: CONCOURSE_VERSION rendered", label)
			}
		}
		env := RenderEnv(vars)
		if strings.Contains(string(env), "CONCOURSE_VERSION") || strings.Contains(string(env), `=""`) {
			t.Errorf("%s: rendered file:\n%s", label, env)
		}
	}
	n := 0
	for mask := 0; mask < 1<<7; mask++ {
		c := goodWeb()
		if mask&1 != 0 {
			c.ExternalURL = ""
		}
		if mask&2 != 0 {
			c.LogLevel = ""
		}
		if mask&4 != 0 {
			c.TSAAuthorizedKeysPath = ""
		}
		if mask&8 != 0 {
			c.Postgres = nil
		} else {
			pg := *c.Postgres
			if mask&64 != 0 {
				pg.Password, pg.SSLMode = "", ""
			}
			c.Postgres = &pg
		}
		if mask&16 != 0 {
			c.ContainerPlacementStrategy, c.PeerAddress = "", ""
		}
		if mask&32 != 0 {
			c.Extra, c.TSABindPort = nil, 2223
		}
		vars, err := WebEnv(c)
		if err != nil {
			t.Fatalf("web mask %b: %v", mask, err)
		}
		check(fmt.Sprintf("web mask %b", mask), vars)
		n++
	}
	for mask := 0; mask < 1<<6; mask++ {
		c := goodWorker()
		if mask&1 != 0 {
			c.LogLevel = ""
		}
		if mask&2 != 0 {
			c.Tags = nil
		}
		if mask&4 != 0 {
			c.DNSServers = nil
		}
		if mask&8 != 0 {
			c.ResourceTypesDir = ""
		}
		if mask&16 != 0 {
			c.Runtime = "guardian"
		}
		if mask&32 != 0 {
			c.DNSProxyEnable = true
		}
		vars, err := WorkerEnv(c)
		if err != nil {
			t.Fatalf("worker mask %b: %v", mask, err)
		}
		check(fmt.Sprintf("worker mask %b", mask), vars)
		n++
	}
	if n != 128+64 {
		t.Fatalf("checked %d configs", n)
	}
}

func TestRenderEnvQuoting(t *testing.T) {
	t.Parallel()
	vars := []EnvVar{
		{"B", `has "quotes" and \backslash\`},
		{"A", "spaces  inside # not a comment"},
		{"C", "$HOME ${PATH} `cmd`"},
		{"D", "tab\there, ünïcödé, 'single'"},
		{"E", `trailing\`},
		{"F", "  leading and trailing spaces  "},
	}
	got := string(RenderEnv(vars))
	want := envFileHeader +
		`A="spaces  inside # not a comment"` + "\n" +
		`B="has \"quotes\" and \\backslash\\"` + "\n" +
		`C="\$HOME \${PATH} \` + "`cmd\\`" + `"` + "\n" +
		"D=\"tab\there, ünïcödé, 'single'\"\n" +
		`E="trailing\\"` + "\n" +
		`F="  leading and trailing spaces  "` + "\n"
	if got != want {
		t.Errorf("RenderEnv =\n%s\nwant\n%s", got, want)
	}
	parsed, err := ParseEnvFile([]byte(got))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		if parsed[v.Name] != v.Value {
			t.Errorf("round trip of %s: got %q; want %q", v.Name, parsed[v.Name], v.Value)
		}
	}
}

func TestRenderEnvPanicsOnInvalid(t *testing.T) {
	t.Parallel()
	for _, vars := range [][]EnvVar{
		{{"A", "line\nbreak"}},
		{{"A", ""}},
		{{"CONCOURSE_VERSION", "1"}},
		{{"1A", "x"}},
		{{"A", "x"}, {"A", "y"}},
		{{"A", "\xff"}},
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("RenderEnv(%q) did not panic", vars)
				}
			}()
			RenderEnv(vars)
		}()
	}
}

// TestParseEnvFileSystemdRules pins the parser to systemd's env-file rules
// (systemd.exec(5), EnvironmentFile=).
func TestParseEnvFileSystemdRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     map[string]string
		err      string
	}{
		{"plain", "A=1\nB=two words\n", map[string]string{"A": "1", "B": "two words"}, ""},
		{"comments", "# c\n; c\n\n  A=1\n", map[string]string{"A": "1"}, ""},
		{"no-equals-ignored", "JUNK\nA=1\n", map[string]string{"A": "1"}, ""},
		{"spaces-around", "  A  =   x y  \n", map[string]string{"A": "x y"}, ""},
		{"empty", "A=\nB=", map[string]string{"A": "", "B": ""}, ""},
		{"single-quotes-literal", `A='a \"$b'`, map[string]string{"A": `a \"$b`}, ""},
		{"double-quote-escapes", `A="q\" b\\ d\$ t\` + "`" + ` x\y"`, map[string]string{"A": "q\" b\\ d$ t` x\\y"}, ""},
		{"unquoted-backslash", `A=a\ b\\c`, map[string]string{"A": `a b\c`}, ""},
		{"quote-inside-unquoted-literal", `A=x"y"`, map[string]string{"A": `x"y"`}, ""},
		{"concatenation", `A="x" 'y'z`, map[string]string{"A": "xyz"}, ""},
		{"continuation-unquoted", "A=a\\\nb\n", map[string]string{"A": "ab"}, ""},
		{"continuation-double", "A=\"a\\\nb\"\n", map[string]string{"A": "ab"}, ""},
		{"multi-line-double", "A=\"a\nb\"\n", map[string]string{"A": "a\nb"}, ""},
		{"last-wins", "A=1\nA=2\n", map[string]string{"A": "2"}, ""},
		{"hash-in-value", "A=x # y\n", map[string]string{"A": "x # y"}, ""},
		{"crlf", "A=1\r\nB=2\r\n", map[string]string{"A": "1", "B": "2"}, ""},
		{"unterminated", "A=\"abc\n", nil, "unterminated quote"},
		{"bad-name", "A-B=1\n", nil, "invalid variable name"},
		{"bad-utf8", "A=\xff\n", nil, "UTF-8"},
	} {
		got, err := ParseEnvFile([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: ParseEnvFile = %v, %v; want error %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("%s: ParseEnvFile(%q) = %q, %v; want %q", tc.name, tc.in, got, err, tc.want)
		}
	}
}

func FuzzRenderParse(f *testing.F) {
	for _, s := range []string{"x", `a"b\c$d` + "`e", "  sp  ", "# not comment", "'", "\\", "ünï\tcode"} {
		f.Add("NAME", s, "SECOND", s+s)
	}
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string) {
		vars := []EnvVar{{n1, v1}, {n2, v2}}
		if CheckEnv(vars) != nil {
			return
		}
		got, err := ParseEnvFile(RenderEnv(vars))
		if err != nil {
			t.Fatalf("ParseEnvFile(RenderEnv(%q)): %v", vars, err)
		}
		want := map[string]string{n1: v1, n2: v2}
		if !maps.Equal(got, want) {
			t.Fatalf("round trip of %q = %q", vars, got)
		}
	})
}
