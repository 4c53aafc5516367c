package concourse

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestWebUnitGolden(t *testing.T) {
	t.Parallel()
	golden(t, "concourse-server.service", WebUnit(UnitOptions{
		Binary:  "/var/lib/concourse/bin/concourse",
		EnvFile: "/etc/concourse/web.env",
	}))
	args, err := SplitFlags(`--cluster-name "CI at 100% $HOME" --x-frame-options=sameorigin --display-user-id-per-connector='local:username' --weird="a\\b\"c"`)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "concourse-server-extra.service", WebUnit(UnitOptions{
		Description:      "Concourse web (test 100%)",
		Binary:           "/opt/concourse dir/bin/concourse",
		EnvFile:          "/etc/concourse/web.env",
		User:             "ci",
		Group:            "ci",
		ExtraArgs:        args,
		WorkingDirectory: "/var/lib/concourse",
	}))
}

func TestWorkerUnitGolden(t *testing.T) {
	t.Parallel()
	golden(t, "concourse-worker.service", WorkerUnit(UnitOptions{
		Binary:  "/var/lib/concourse/bin/concourse",
		EnvFile: "/etc/concourse/worker.env",
	}))
}

func TestUnitContents(t *testing.T) {
	t.Parallel()
	web := string(WebUnit(UnitOptions{Binary: "/b/concourse", EnvFile: "/e/web.env"}))
	for _, line := range []string{"User=concourse", "Group=concourse", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "EnvironmentFile=/e/web.env", "ExecStart=/b/concourse web",
		"Restart=on-failure", "RestartSec=3", "KillSignal=SIGTERM", "TimeoutStopSec=60", "LimitNOFILE=65536",
		"After=network-online.target", "Wants=network-online.target", "WantedBy=multi-user.target"} {
		if !slices.Contains(strings.Split(web, "\n"), line) {
			t.Errorf("web unit lacks %q", line)
		}
	}
	worker := string(WorkerUnit(UnitOptions{Binary: "/b/concourse", EnvFile: "/e/worker.env"}))
	for _, line := range []string{"User=root", "Delegate=yes", "TasksMax=infinity", "LimitNOFILE=65536", "LimitNPROC=infinity",
		"KillMode=mixed", "KillSignal=SIGUSR1", "Restart=on-failure", "TimeoutStopSec=300", "ExecStart=/b/concourse worker",
		"EnvironmentFile=/e/worker.env"} {
		if !slices.Contains(strings.Split(worker, "\n"), line) {
			t.Errorf("worker unit lacks %q", line)
		}
	}
}

func TestUnitPanicsOnProgrammingErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		f    func() []byte
	}{
		{"relative-binary", func() []byte { return WebUnit(UnitOptions{Binary: "concourse", EnvFile: "/e"}) }},
		{"relative-env", func() []byte { return WebUnit(UnitOptions{Binary: "/b", EnvFile: "e"}) }},
		{"newline", func() []byte {
			return WebUnit(UnitOptions{Binary: "/b", EnvFile: "/e", Description: "a\nExecStartPre=/bin/evil"})
		}},
		{"worker-user", func() []byte { return WorkerUnit(UnitOptions{Binary: "/b", EnvFile: "/e", User: "concourse"}) }},
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", tc.name)
				}
			}()
			tc.f()
		}()
	}
}

// systemdSplit undoes ExecStart quoting the way systemd does: specifiers
// ("%%" → "%") on the whole line, then extract_first_word with quotes and C
// escapes, then "$$" → "$" per word. It is the test's independent model of
// systemd.service(5) "Command lines".
func systemdSplit(line string) ([]string, error) {
	if strings.Contains(strings.ReplaceAll(line, "%%", ""), "%") {
		return nil, fmt.Errorf("unescaped specifier in %q", line)
	}
	line = strings.ReplaceAll(line, "%%", "%")
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\':
			if i+1 >= len(line) {
				return nil, fmt.Errorf("trailing backslash")
			}
			i++
			switch e := line[i]; e {
			case 'n':
				cur.WriteByte('\n')
			case 't':
				cur.WriteByte('\t')
			case 'r':
				cur.WriteByte('\r')
			case 'x':
				var b byte
				if _, err := fmt.Sscanf(line[i+1:i+3], "%02x", &b); err != nil {
					return nil, err
				}
				cur.WriteByte(b)
				i += 2
			case '\\', '"', '\'':
				cur.WriteByte(e)
			default:
				return nil, fmt.Errorf("unknown escape \\%c", e)
			}
			in = true
		case c == '"':
			quoted = !quoted
			in = true
		case c == ' ' && !quoted:
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			if !quoted && (c == '\'' || c == ';') {
				return nil, fmt.Errorf("unquoted %c", c)
			}
			cur.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unbalanced quote")
	}
	if in {
		words = append(words, cur.String())
	}
	for i, w := range words {
		if strings.Contains(strings.ReplaceAll(w, "$$", ""), "$") {
			return nil, fmt.Errorf("unescaped $ in %q", w)
		}
		words[i] = strings.ReplaceAll(w, "$$", "$")
	}
	return words, nil
}

func TestExecQuote(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"--a=1", "--a=1"},
		{"", `""`},
		{"a b", `"a b"`},
		{"100%", "100%%"},
		{"$HOME", "$$HOME"},
		{`a"b`, `"a\"b"`},
		{`a\b`, `"a\\b"`},
		{"a\nb", `"a\nb"`},
		{"a'b", `"a'b"`},
		{"x;", `"x;"`},
		{"\x01", `"\x01"`},
		{"a\xffb", `"a\xffb"`},
		{"\uFFFD", `�`},
	} {
		if got := ExecQuote(tc.in); got != tc.want {
			t.Errorf("ExecQuote(%q) = %s; want %s", tc.in, got, tc.want)
		}
		words, err := systemdSplit(ExecQuote(tc.in))
		if err != nil || len(words) != 1 || words[0] != tc.in {
			t.Errorf("systemd would read ExecQuote(%q) as %q, %v", tc.in, words, err)
		}
	}
}

func FuzzExecQuote(f *testing.F) {
	for _, s := range []string{"a", "a b", `"\%$`, "\n\t", "ü"} {
		f.Add(s, "--x="+s)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if strings.ContainsRune(a+b, 0) {
			return // NUL cannot be in an argv element at all
		}
		line := ExecQuote("/bin/concourse") + " " + ExecQuote(a) + " " + ExecQuote(b)
		words, err := systemdSplit(line)
		if err != nil || !slices.Equal(words, []string{"/bin/concourse", a, b}) {
			t.Fatalf("line %q splits into %q, %v", line, words, err)
		}
	})
}
