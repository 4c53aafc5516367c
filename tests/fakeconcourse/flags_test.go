package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// runInProcess calls run() with a fresh environment and the given fake version.
func runInProcess(ver string, env map[string]string, args ...string) (string, string, int) {
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	var out, errOut bytes.Buffer
	// version is the link-time variable; in-process tests run with its default unless a flavour is
	// pinned, so pin it through the documented knob instead of mutating the variable.
	if ver != "" {
		kv = append(kv, "FAKE_CONCOURSE_FLAVOR="+ver)
	}
	code := run(args, newEnvironment(kv), &out, &errOut)
	return out.String(), errOut.String(), code
}

// keyFixtures writes the key files the §2.1 error table talks about.
func keyFixtures(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{}
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	rsaKey := newRSA(t)
	write("pkcs1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	openssh, err := ssh.MarshalPrivateKey(rsaKey, "")
	if err != nil {
		t.Fatal(err)
	}
	write("openssh", pem.EncodeToMemory(openssh))
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edDER, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ed25519-pkcs8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}))
	write("pub", authorizedLine(t, rsaKey))
	return files
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	keys := keyFixtures(t)
	hostKey := map[string]string{"CONCOURSE_TSA_HOST_KEY": keys["pkcs1"]}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range hostKey {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	workDir := t.TempDir()
	worker := func(extra map[string]string) map[string]string {
		m := map[string]string{"CONCOURSE_WORK_DIR": workDir, "CONCOURSE_TSA_WORKER_PRIVATE_KEY": keys["pkcs1"]}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	tests := []struct {
		name    string
		flavour string
		env     map[string]string
		args    []string
		stderr  string // exact, or a prefix when it ends in "…"
		code    int
	}{
		{"no-command", "", nil, nil, "error: Please specify one command of: generate-key, land-worker, migrate, quickstart, retire-worker, web or worker\n", 1},
		{"unknown-command", "", nil, []string{"bogus"}, "error: Unknown command `bogus', did you mean `generate-key'?\n", 1},
		{"near-command", "", nil, []string{"wrker"}, "error: Unknown command `wrker', did you mean `worker'?\n", 1},
		{"far-command", "", nil, []string{"wbe"}, "error: Unknown command `wbe'. Please specify one command of: generate-key, land-worker, migrate, quickstart, retire-worker, web or worker\n", 1},
		{"web-no-host-key", "", nil, []string{"web"}, "error: the required flag `--tsa-host-key' was not specified\n", 1},
		{"worker-two-missing", "", nil, []string{"worker"}, "error: the required flags `--tsa-worker-private-key' and `--work-dir' were not specified\n", 1},
		{"generate-key-no-file", "", nil, []string{"generate-key"}, "error: the required flag `-f, --filename' was not specified\n", 1},
		{"bad-choice", "", with(map[string]string{"CONCOURSE_LOG_LEVEL": "verbose"}), []string{"web"},
			"error: Invalid value `verbose' for option `--log-level'. Allowed values are: debug, info, error or fatal\n", 1},
		{"bad-port", "", with(map[string]string{"CONCOURSE_BIND_PORT": "abc"}), []string{"web"},
			"error: invalid argument for flag `--bind-port' (expected uint16): strconv.ParseUint: parsing \"abc\": invalid syntax\n", 1},
		{"port-out-of-range", "", with(map[string]string{"CONCOURSE_TSA_BIND_PORT": "70000"}), []string{"web"},
			"error: invalid argument for flag `--tsa-bind-port' (expected uint16): strconv.ParseUint: parsing \"70000\": value out of range\n", 1},
		{"empty-port", "", with(map[string]string{"CONCOURSE_TLS_BIND_PORT": ""}), []string{"web"},
			"error: invalid argument for flag `--tls-bind-port' (expected uint16): strconv.ParseUint: parsing \"\": invalid syntax\n", 1},
		{"bad-duration", "", with(map[string]string{"CONCOURSE_GC_INTERVAL": "5"}), []string{"web"},
			"error: invalid argument for flag `--gc-interval' (expected time.Duration): time: missing unit in duration \"5\"\n", 1},
		{"bad-bool", "", with(map[string]string{"CONCOURSE_ENABLE_GLOBAL_RESOURCES": "yes"}), []string{"web"},
			"error: invalid argument for flag `--enable-global-resources' (expected bool): strconv.ParseBool: parsing \"yes\": invalid syntax\n", 1},
		{"hostname-as-ip", "", with(map[string]string{"CONCOURSE_BIND_IP": "localhost"}), []string{"web"},
			"error: invalid argument for flag `--bind-ip' (expected flag.IP): invalid IP: 'localhost'\n", 1},
		{"url-without-scheme", "", with(map[string]string{"CONCOURSE_EXTERNAL_URL": "ci.example.com"}), []string{"web"},
			"error: invalid argument for flag `--external-url' (expected flag.URL): missing scheme in 'ci.example.com'\n", 1},
		{"empty-url", "", with(map[string]string{"CONCOURSE_EXTERNAL_URL": ""}), []string{"web"},
			"error: invalid argument for flag `--external-url' (expected flag.URL): missing scheme in ''\n", 1},
		{"key-missing", "", map[string]string{"CONCOURSE_TSA_HOST_KEY": "/x"}, []string{"web"},
			"error: invalid argument for flag `--tsa-host-key' (expected *flag.PrivateKey): failed to read private key file (/x): open /x: no such file or directory\n", 1},
		{"openssh-key", "", map[string]string{"CONCOURSE_TSA_HOST_KEY": keys["openssh"]}, []string{"web"},
			"error: invalid argument for flag `--tsa-host-key' (expected *flag.PrivateKey): asn1: structure error: tags don't match (16 vs {class:1 tag:15 …", 1},
		{"ed25519-pkcs8", "", map[string]string{"CONCOURSE_TSA_HOST_KEY": keys["ed25519-pkcs8"]}, []string{"web"},
			"error: invalid argument for flag `--tsa-host-key' (expected *flag.PrivateKey): key is not a valid RSA private key\n", 1},
		// With the required TSA host key present: the real binary reports a missing required flag
		// before any malformed env value (seen on 7.14.3 and 8.2.5).
		{"pub-as-private", "", with(map[string]string{"CONCOURSE_SESSION_SIGNING_KEY": keys["pub"]}), []string{"web"},
			"error: invalid argument for flag `--session-signing-key' (expected *flag.PrivateKey): invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key\n", 1},
		{"required-before-env-errors", "", map[string]string{"CONCOURSE_SESSION_SIGNING_KEY": keys["pub"]}, []string{"web"},
			"error: the required flag `--tsa-host-key' was not specified\n", 1},
		// go-flags converts every subcommand's env values: a web option breaks migrate and an
		// unknown command, a quickstart worker option breaks generate-key.
		{"foreign-env-breaks-migrate", "", map[string]string{"CONCOURSE_BIND_PORT": "x"}, []string{"migrate", "--supported-db-version"},
			"error: invalid argument for flag `--bind-port' (expected uint16): strconv.ParseUint: parsing \"x\": invalid syntax\n", 1},
		{"foreign-env-before-unknown-command", "", map[string]string{"CONCOURSE_LOG_LEVEL": "warn"}, []string{"bogus"},
			"error: Invalid value `warn' for option `--log-level'. Allowed values are: debug, info, error or fatal\n", 1},
		{"quickstart-env-breaks-generate-key", "", map[string]string{"CONCOURSE_WORKER_RUNTIME": "bogus"}, []string{"generate-key", "-f", "/nonexistent/k"},
			"error: Invalid value `bogus' for option `--worker-runtime'. Allowed values are: guardian, containerd or houdini\n", 1},
		{"authorized-keys-missing", "", with(map[string]string{"CONCOURSE_TSA_AUTHORIZED_KEYS": "/x"}), []string{"web"},
			"error: invalid argument for flag `--tsa-authorized-keys' (expected flag.AuthorizedKeys): failed to read authorized keys: open /x: no such file or directory\n", 1},
		{"encryption-key-length", "", with(map[string]string{"CONCOURSE_ENCRYPTION_KEY": "short"}), []string{"web"},
			"error: invalid argument for flag `--encryption-key' (expected flag.Cipher): failed to construct AES cipher: crypto/aes: invalid key size 5\n", 1},
		{"sslmode-prefer", "", with(map[string]string{"CONCOURSE_POSTGRES_SSLMODE": "prefer"}), []string{"web"},
			"error: Invalid value `prefer' for option `--postgres-sslmode'. Allowed values are: disable, require, verify-ca or verify-full\n", 1},
		{"placement-list-element", "", with(map[string]string{"CONCOURSE_CONTAINER_PLACEMENT_STRATEGY": "volume-locality,nope"}), []string{"web"},
			"error: Invalid value `nope' for option `--container-placement-strategy'. Allowed values are: volume-locality, random, fewest-build-containers, limit-active-tasks, limit-active-containers or limit-active-volumes\n", 1},
		{"flag-beats-env", "", with(map[string]string{"CONCOURSE_BIND_PORT": "8080"}), []string{"web", "--bind-port", "x"},
			"error: invalid argument for flag `--bind-port' (expected uint16): strconv.ParseUint: parsing \"x\": invalid syntax\n", 1},
		{"unknown-flag", "", hostKey, []string{"web", "--no-such-flag"}, "error: unknown flag `no-such-flag'\n", 1},
		{"unknown-env-ignored", "", map[string]string{"CONCOURSE_FOO_UNKNOWN": "x"}, []string{"web"},
			"error: the required flag `--tsa-host-key' was not specified\n", 1},
		// 8.2-only variables are unknown (ignored) for 7.14 and parsed for 8.2.
		{"8.2-var-on-7.14", "7.14", map[string]string{"CONCOURSE_ENCRYPTION_KEY_HEX": "zz"}, []string{"web"},
			"error: the required flag `--tsa-host-key' was not specified\n", 1},
		{"8.2-var-on-8.2", "8.2", with(map[string]string{"CONCOURSE_ENCRYPTION_KEY_HEX": "zz"}), []string{"web"},
			"error: invalid argument for flag `--encryption-key-hex' (expected flag.Cipher): failed to decode hex key: …", 1},
		{"tls-without-cert", "", with(map[string]string{"CONCOURSE_TLS_BIND_PORT": "8443"}), []string{"web"},
			"error: 1 error occurred:\n\t* must specify --tls-cert and --tls-key, or --enable-lets-encrypt to use TLS\n\n", 1},
		{"bad-runtime", "7.14", worker(map[string]string{"CONCOURSE_RUNTIME": "podman"}), []string{"worker"},
			"error: Invalid value `podman' for option `--runtime'. Allowed values are: guardian, containerd or houdini\n", 1},
		{"guardian-on-arm64", "8.2", worker(map[string]string{"CONCOURSE_RUNTIME": "guardian", "FAKE_CONCOURSE_ARCH": "arm64"}), []string{"worker"},
			"error: Invalid value `guardian' for option `--runtime'. Allowed values are: containerd or houdini\n", 1},
		{"work-dir-is-file", "", worker(map[string]string{"CONCOURSE_WORK_DIR": "/etc/passwd"}), []string{"worker"},
			"error: invalid argument for flag `--work-dir' (expected flag.Dir): path '/etc/passwd' is not a directory\n", 1},
		{"worker-pub-key", "", worker(map[string]string{"CONCOURSE_TSA_WORKER_PRIVATE_KEY": keys["pub"]}), []string{"worker"},
			"error: invalid argument for flag `--tsa-worker-private-key' (expected *flag.PrivateKey): invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key\n", 1},
		{"garden-leftover-with-containerd", "8.2", worker(map[string]string{"CONCOURSE_GARDEN_DNS_SERVER": "1.1.1.1"}), []string{"worker"},
			"error: cannot use CONCOURSE_GARDEN_ environment variables with Containerd\n", 1},
		{"containerd-leftover-with-guardian", "7.14", worker(map[string]string{"CONCOURSE_CONTAINERD_BOGUS": "1"}), []string{"worker"},
			"error: cannot use CONCOURSE_CONTAINERD_ environment variables with Guardian\n", 1},
		// CONTAINERD_LOG_LEVEL is an 8.x flag, so on 7.14 it is a leftover.
		{"8.x-containerd-var-on-7.14-guardian", "7.14", worker(map[string]string{"CONCOURSE_CONTAINERD_LOG_LEVEL": "info"}), []string{"worker"},
			"error: cannot use CONCOURSE_CONTAINERD_ environment variables with Guardian\n", 1},
		{"houdini-leftovers", "8.2", worker(map[string]string{"CONCOURSE_RUNTIME": "houdini", "CONCOURSE_GARDEN_X": "1"}), []string{"worker"},
			"error: cannot use CONCOURSE_GARDEN_ or CONCOURSE_CONTAINERD_ environment variables with Houdini\n", 1},
		{"generate-key-type", "", nil, []string{"generate-key", "-t", "ed25519", "-f", "/tmp/x"},
			"error: Invalid value `ed25519' for option `-t, --type'. Allowed values are: rsa or ssh\n", 1},
		{"generate-key-small", "", nil, []string{"generate-key", "-f", filepath.Join(workDir, "k"), "-b", "512"},
			"error: failed to generate key: crypto/rsa: 512-bit keys are insecure …", 1},
		{"generate-key-no-dir", "", nil, []string{"generate-key", "-f", "/nonexistent/k", "-b", "1024"},
			"error: failed to create key file: open /nonexistent/k: no such file or directory\n", 1},
		{"migrate-nothing", "", nil, []string{"migrate"},
			"error: must specify one of `--migrate-to-latest-version`, `--current-db-version`, `--supported-db-version`, `--migrate-db-to-version`, or `--old-encryption-key`\n", 1},
		{"concourse-version-env", "", map[string]string{"CONCOURSE_VERSION": ""}, []string{"web"}, "panic: runtime error: index out of range [0] with length 0\n…", 2},
		{"bad-flavour-knob", "", map[string]string{"FAKE_CONCOURSE_FLAVOR": "9.9"}, []string{"web"}, "error: FAKE_CONCOURSE_FLAVOR=\"9.9\" is not one of 7.14, 8.0, 8.1, 8.2, 8.3\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, stderr, code := runInProcess(tt.flavour, tt.env, tt.args...)
			if code != tt.code {
				t.Errorf("exit code = %d; want %d (stderr %q)", code, tt.code, stderr)
			}
			if prefix, ok := strings.CutSuffix(tt.stderr, "…"); ok {
				if !strings.HasPrefix(stderr, prefix) {
					t.Errorf("stderr = %q; want prefix %q", stderr, prefix)
				}
			} else if stderr != tt.stderr {
				t.Errorf("stderr = %q; want %q", stderr, tt.stderr)
			}
		})
	}
}

func TestVersionFlagWinsEverywhere(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--version"}, {"-v"}, {"web", "--version"}, {"worker", "--bogus", "-v"}, {"bogus", "--version"}} {
		// Even CONCOURSE_VERSION cannot break an explicit --version: the callback runs first.
		out, stderr, code := runInProcess("", map[string]string{"CONCOURSE_VERSION": "1"}, args...)
		if code != 0 || out != version+"\n" || stderr != "" {
			t.Errorf("%v: got (%q, %q, %d); want (%q, \"\", 0)", args, out, stderr, code, version+"\n")
		}
	}
}

func TestKnownVarsUnsetAndLeftoversKept(t *testing.T) {
	t.Parallel()
	f := flavour{major: 8, minor: 2, arch: "amd64"}
	env := newEnvironment([]string{
		"CONCOURSE_WORK_DIR=" + t.TempDir(), "CONCOURSE_TSA_WORKER_PRIVATE_KEY=" + keyFixtures(t)["pkcs1"],
		"CONCOURSE_GARDEN_DNS_PROXY_ENABLE=true", "CONCOURSE_TAG=a,b", "CONCOURSE_FOO=bar",
	})
	o, err := parseOptions(workerOptions(f), nil, env, f)
	if err != nil {
		t.Fatal(err)
	}
	// A recognised CONCOURSE_GARDEN_* flag is unset before the cross-check, so containerd accepts it.
	if err := checkLeftoverRuntimeEnv(env, o.str("runtime")); err != nil {
		t.Errorf("cross-check: %v; want nil", err)
	}
	if _, ok := env.lookup("CONCOURSE_WORK_DIR"); ok {
		t.Errorf("CONCOURSE_WORK_DIR still set after parsing")
	}
	if v, _ := env.lookup("CONCOURSE_FOO"); v != "bar" {
		t.Errorf("unknown CONCOURSE_FOO = %q; want it left alone", v)
	}
	if got := o.strs("tag"); strings.Join(got, "|") != "a|b" {
		t.Errorf("tags = %q; want [a b]", got)
	}
	if o.str("runtime") != "containerd" || !o.boolean("garden-dns-proxy-enable") {
		t.Errorf("runtime=%q garden-dns-proxy-enable=%v; want containerd, true", o.str("runtime"), o.boolean("garden-dns-proxy-enable"))
	}
}

func TestEmptyBoolIsTrue(t *testing.T) {
	t.Parallel()
	f := flavour{major: 7, minor: 14, arch: "amd64"}
	o, err := parseOptions([]option{{long: "ephemeral", kind: kBool}}, nil, newEnvironment([]string{"CONCOURSE_EPHEMERAL="}), f)
	if err != nil || !o.boolean("ephemeral") {
		t.Fatalf("CONCOURSE_EPHEMERAL= gave (%v, %v); want true (go-flags treats empty bools as set)", o.boolean("ephemeral"), err)
	}
}

func TestFlavourDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version, arch, runtime string
		db                     int64
		has713Flags            bool
	}{
		{"7.14.3", "amd64", "guardian", 1746768931, true},
		{"7.14.3", "arm64", "containerd", 1746768931, true},
		{"8.0.1", "amd64", "containerd", 1765921815, false},
		{"8.1.0", "amd64", "containerd", 1771492499, false},
		{"8.2.5", "amd64", "containerd", 1776182280, false},
		{"0.0.0-dev", "amd64", "containerd", 1783024587, false},
	}
	for _, tt := range tests {
		f, err := flavourFor(tt.version, newEnvironment([]string{"FAKE_CONCOURSE_ARCH=" + tt.arch}))
		if err != nil {
			t.Fatal(err)
		}
		flags := f.featureFlags(&parsed{vals: map[string]any{}})
		_, hasRedact := flags["redact_secrets"]
		if f.defaultRuntime() != tt.runtime || f.supportedDBVersion() != tt.db || hasRedact != tt.has713Flags || len(flags) < 4 {
			t.Errorf("%s/%s: runtime %q db %d 7.14-flags %v; want %q %d %v", tt.version, tt.arch,
				f.defaultRuntime(), f.supportedDBVersion(), hasRedact, tt.runtime, tt.db, tt.has713Flags)
		}
	}
}
