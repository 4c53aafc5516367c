package main

import (
	_ "embed"
	"fmt"
	"strings"
)

// Option tables per subcommand. They cover what a machine charm renders (contract §2.3, §3.1, §4, §5)
// plus the neighbours whose malformed values a charm could plausibly produce, with typed values and
// the real error texts. Every other option the real binary has is a passive option (real_options.txt):
// accepted with the real name, argument and choices, never acted on, so an operator's extra flag
// that the real binary takes is not refused by the stand-in. Any other CONCOURSE_* name is unknown
// and ignored, as in the real binary. `since` marks options that older lines lack, so e.g.
// CONCOURSE_POSTGRES_APPLICATION_NAME is an unknown (ignored) variable for 7.14. The fidelity test
// (fidelity_test.go) checks both tables against the real binaries' --help.

var logLevels = []string{"debug", "info", "error", "fatal"}

func postgresOptions() []option {
	return []option{
		{long: "postgres-host", kind: kString, def: "127.0.0.1"},
		{long: "postgres-port", kind: kUint16, def: "5432"},
		{long: "postgres-socket", kind: kString},
		{long: "postgres-user", kind: kString},
		{long: "postgres-password", kind: kString},
		{long: "postgres-sslmode", kind: kString, def: "disable", choices: []string{"disable", "require", "verify-ca", "verify-full"}},
		{long: "postgres-sslnegotiation", kind: kString, def: "postgres", choices: []string{"postgres", "direct"}},
		{long: "postgres-ca-cert", kind: kFile},
		{long: "postgres-client-cert", kind: kFile},
		{long: "postgres-client-key", kind: kFile},
		{long: "postgres-connect-timeout", kind: kDuration, def: "5m"},
		{long: "postgres-database", kind: kString, def: "atc"},
		{long: "postgres-application-name", kind: kString, def: "concourse", since: [2]int{8, 0}},
	}
}

func encryptionOptions() []option {
	return []option{
		{long: "encryption-key", kind: kCipher},
		{long: "old-encryption-key", kind: kCipher},
		{long: "encryption-key-base64", kind: kCipherBase64, since: [2]int{8, 2}},
		{long: "encryption-key-hex", kind: kCipherHex, since: [2]int{8, 2}},
		{long: "old-encryption-key-base64", kind: kCipherBase64, since: [2]int{8, 2}},
		{long: "old-encryption-key-hex", kind: kCipherHex, since: [2]int{8, 2}},
	}
}

// mainTeamRuleOptions are the options that count as a main-team auth rule (§2.2).
func mainTeamRuleOptions() []option {
	var out []option
	for _, n := range []string{
		"main-team-local-user",
		"main-team-ldap-user", "main-team-ldap-group",
		"main-team-oauth-user", "main-team-oauth-group",
		"main-team-oidc-user", "main-team-oidc-group",
		"main-team-github-user", "main-team-github-org", "main-team-github-team",
		"main-team-gitlab-user", "main-team-gitlab-group",
		"main-team-cf-user", "main-team-cf-org", "main-team-cf-space",
		"main-team-saml-user", "main-team-saml-group",
		"main-team-microsoft-user", "main-team-microsoft-group",
		"main-team-bitbucket-cloud-user", "main-team-bitbucket-cloud-team",
	} {
		out = append(out, option{long: n, kind: kStrings})
	}
	for _, n := range []string{"main-team-gitea-user", "main-team-gitea-org", "main-team-gitea-team"} {
		out = append(out, option{long: n, kind: kStrings, since: [2]int{8, 2}})
	}
	return append(out, option{long: "main-team-config", short: 'c', kind: kFile})
}

func webOptions(f flavour) []option {
	compression := []string{"gzip", "zstd", "raw"}
	if f.major >= 8 {
		// In this order: it is the order of "Allowed values are: …" in the error text.
		compression = []string{"gzip", "zstd", "s2", "raw"}
	}
	strategies := []string{"volume-locality", "random", "fewest-build-containers", "limit-active-tasks", "limit-active-containers", "limit-active-volumes"}
	// The no-input and check strategies cannot be volume-locality (seen in the real --help).
	secondaryStrategies := strategies[1:]
	opts := []option{
		{long: "bind-ip", kind: kIP, def: "0.0.0.0"},
		{long: "bind-port", kind: kUint16, def: "8080"},
		{long: "tls-bind-port", kind: kUint16},
		{long: "tls-cert", kind: kFile},
		{long: "tls-key", kind: kFile},
		{long: "tls-ca-cert", kind: kFile},
		{long: "enable-lets-encrypt", kind: kBool},
		{long: "lets-encrypt-acme-url", kind: kURL, def: "https://acme-v02.api.letsencrypt.org/directory"},
		{long: "external-url", kind: kURL},
		{long: "peer-address", kind: kString, def: "127.0.0.1"},
		{long: "cluster-name", kind: kString},
		{long: "log-level", kind: kString, def: "info", choices: logLevels},
		{long: "log-db-queries", kind: kBool},
		{long: "log-cluster-name", kind: kBool},
		{long: "debug-bind-ip", kind: kIP, def: "127.0.0.1"},
		{long: "debug-bind-port", kind: kUint16, def: "8079"},
		{long: "x-frame-options", kind: kString, def: "deny"},
		{long: "content-security-policy", kind: kString, def: "frame-ancestors 'none'"},
		{long: "strict-transport-security", kind: kString},
		{long: "oidc-issuer-url", kind: kURL, since: [2]int{8, 0}},
		{long: "api-max-conns", kind: kInt, def: "10"},
		{long: "backend-max-conns", kind: kInt, def: "50"},

		{long: "session-signing-key", kind: kPrivateKey},
		{long: "tsa-host-key", kind: kPrivateKey, required: true},
		{long: "tsa-authorized-keys", kind: kAuthorizedKeys},
		{long: "tsa-team-authorized-keys", kind: kStrings},
		{long: "tsa-team-authorized-keys-file", kind: kFile},
		{long: "tsa-bind-ip", kind: kIP, def: "0.0.0.0"},
		{long: "tsa-bind-port", kind: kUint16, def: "2222"},
		{long: "tsa-debug-bind-ip", kind: kIP, def: "127.0.0.1"},
		{long: "tsa-debug-bind-port", kind: kUint16, def: "2221"},
		{long: "tsa-peer-address", kind: kString, def: "127.0.0.1"},
		{long: "tsa-heartbeat-interval", kind: kDuration, def: "30s"},
		{long: "tsa-atc-url", kind: kURLs},
		{long: "tsa-token-url", kind: kURL},
		{long: "tsa-client-id", kind: kString, def: "concourse-worker"},
		{long: "tsa-client-secret", kind: kString},
		{long: "tsa-scope", kind: kStrings},
		{long: "tsa-log-level", kind: kString, def: "info", choices: logLevels},
		{long: "tsa-garden-request-timeout", kind: kDuration, def: "5m"},

		// The dex connectors the charm renders (skymarshal's ldap, generic oauth and oidc flags).
		// The CA certificates are flag.File (oauth and oidc: []flag.File; the charm renders one).
		{long: "ldap-display-name", kind: kString},
		{long: "ldap-host", kind: kString},
		{long: "ldap-bind-dn", kind: kString},
		{long: "ldap-bind-pw", kind: kString},
		{long: "ldap-insecure-no-ssl", kind: kBool},
		{long: "ldap-insecure-skip-verify", kind: kBool},
		{long: "ldap-start-tls", kind: kBool},
		{long: "ldap-ca-cert", kind: kFile},
		{long: "ldap-user-search-base-dn", kind: kString},
		{long: "ldap-user-search-filter", kind: kString},
		{long: "ldap-user-search-username", kind: kString},
		{long: "ldap-user-search-id-attr", kind: kString},
		{long: "ldap-user-search-email-attr", kind: kString},
		{long: "ldap-user-search-name-attr", kind: kString},
		{long: "ldap-group-search-base-dn", kind: kString},
		{long: "ldap-group-search-filter", kind: kString},
		{long: "ldap-group-search-user-attr", kind: kString},
		{long: "ldap-group-search-group-attr", kind: kString},
		{long: "ldap-group-search-name-attr", kind: kString},
		{long: "oauth-display-name", kind: kString},
		{long: "oauth-client-id", kind: kString},
		{long: "oauth-client-secret", kind: kString},
		{long: "oauth-auth-url", kind: kString},
		{long: "oauth-token-url", kind: kString},
		{long: "oauth-userinfo-url", kind: kString},
		{long: "oauth-scope", kind: kStrings},
		{long: "oauth-groups-key", kind: kString, def: "groups"},
		{long: "oauth-user-id-key", kind: kString, def: "user_id"},
		{long: "oauth-user-name-key", kind: kString, def: "user_name"},
		{long: "oauth-ca-cert", kind: kFile},
		{long: "oauth-skip-ssl-validation", kind: kBool},
		{long: "oidc-display-name", kind: kString},
		{long: "oidc-issuer", kind: kString},
		{long: "oidc-client-id", kind: kString},
		{long: "oidc-client-secret", kind: kString},
		{long: "oidc-scope", kind: kStrings},
		{long: "oidc-groups-key", kind: kString, def: "groups"},
		{long: "oidc-user-name-key", kind: kString, def: "username"},
		{long: "oidc-ca-cert", kind: kFile},
		{long: "oidc-skip-ssl-validation", kind: kBool},

		{long: "add-local-user", kind: kStrings},
		{long: "password-connector", kind: kString, def: "local", choices: []string{"local", "ldap"}},
		{long: "auth-duration", kind: kDuration, def: "24h"},
		{long: "cookie-secure", kind: kBool},
		{long: "client-id", kind: kString, def: "concourse-web"},
		{long: "client-secret", kind: kString},
		{long: "add-client", kind: kStrings},
		{long: "system-claim-key", kind: kString, def: "aud"},
		{long: "system-claim-value", kind: kStrings, def: "concourse-worker"},

		// A plain string in the real binaries (they accept "localhost"), unlike the other bind IPs.
		{long: "prometheus-bind-ip", kind: kString},
		{long: "prometheus-bind-port", kind: kUint16},
		{long: "metrics-host-name", kind: kString},
		{long: "metrics-attribute", kind: kStrings},
		{long: "metrics-buffer-size", kind: kUint64, def: "1000"},
		{long: "capture-error-metrics", kind: kBool},

		{long: "gc-interval", kind: kDuration, def: "30s"},
		{long: "gc-one-off-grace-period", kind: kDuration, def: "5m"},
		{long: "gc-missing-grace-period", kind: kDuration, def: "5m"},
		{long: "gc-hijack-grace-period", kind: kDuration, def: "5m"},
		{long: "gc-failed-grace-period", kind: kDuration, def: "120h"},
		{long: "gc-check-recycle-period", kind: kDuration, def: "1m"},
		{long: "gc-var-source-recycle-period", kind: kDuration, def: "5m"},
		{long: "default-build-logs-to-retain", kind: kUint64},
		{long: "max-build-logs-to-retain", kind: kUint64},
		{long: "default-days-to-retain-build-logs", kind: kUint64},
		{long: "max-days-to-retain-build-logs", kind: kUint64},

		{long: "container-placement-strategy", kind: kStrings, def: "volume-locality", choices: strategies},
		{long: "no-input-container-placement-strategy", kind: kString, choices: secondaryStrategies},
		{long: "check-container-placement-strategy", kind: kString, def: "random", choices: secondaryStrategies},
		{long: "max-active-tasks-per-worker", kind: kInt, def: "0"},
		{long: "max-active-containers-per-worker", kind: kInt, def: "0"},
		{long: "max-active-volumes-per-worker", kind: kInt, def: "0"},
		{long: "resource-checking-interval", kind: kDuration, def: "1m"},
		{long: "resource-type-checking-interval", kind: kDuration, def: "1m"},
		{long: "resource-with-webhook-checking-interval", kind: kDuration, def: "1m"},
		{long: "default-get-timeout", kind: kDuration},
		{long: "default-put-timeout", kind: kDuration},
		{long: "default-task-timeout", kind: kDuration},
		{long: "default-task-cache-ttl", kind: kDuration, def: "0s", since: [2]int{8, 2}},
		{long: "streaming-artifacts-compression", kind: kString, def: "gzip", choices: compression},

		{long: "enable-global-resources", kind: kBool},
		{long: "enable-rerun-when-worker-disappears", kind: kBool},
		{long: "enable-p2p-volume-streaming", kind: kBool},
		{long: "enable-cache-streamed-volumes", kind: kBool},
		{long: "enable-resource-causality", kind: kBool},
		{long: "enable-redact-secrets", kind: kBool},
		{long: "enable-across-step", kind: kBool},
		{long: "enable-pipeline-instances", kind: kBool},
		{long: "disable-redact-secrets", kind: kBool, since: [2]int{8, 1}},
		{long: "base-resource-type-defaults", kind: kFile},
		{long: "config-rbac", kind: kFile},

		{long: "vault-url", kind: kURL},
		{long: "vault-path-prefix", kind: kString, def: "/concourse"},
		{long: "vault-ca-cert", kind: kFile},
		{long: "vault-client-token", kind: kString},
		{long: "vault-auth-backend", kind: kString},
		{long: "vault-insecure-skip-verify", kind: kBool},
		{long: "vault-client-cert", kind: kFile},
		{long: "vault-client-key", kind: kFile},
		{long: "vault-auth-backend-max-ttl", kind: kDuration},
		{long: "vault-auth-param", kind: kStrings}, // NAME:VALUE,… (a map in go-flags)
		{long: "vault-lookup-templates", kind: kStrings, def: "/{{.Team}}/{{.Pipeline}}/{{.Secret}}, /{{.Team}}/{{.Secret}}"},
		{long: "vault-shared-path", kind: kString},
		{long: "vault-namespace", kind: kString},
		// Seen in 8.2.5's --help and not in 7.14.3's; the 8.0 and 8.1 binaries were not available.
		{long: "vault-enable-kv-mount-cache", kind: kBool, since: [2]int{8, 2}},
		{long: "secret-cache-enabled", kind: kBool},
		{long: "secret-cache-duration", kind: kDuration, def: "1m"},
		{long: "secret-cache-duration-notfound", kind: kDuration, def: "10s"},
		{long: "secret-retry-attempts", kind: kInt, def: "5"},
		{long: "secret-retry-interval", kind: kDuration, def: "1s"},
	}
	for _, a := range []string{"build", "container", "job", "pipeline", "resource", "system", "team", "worker", "volume"} {
		opts = append(opts, option{long: "enable-" + a + "-auditing", kind: kBool})
	}
	opts = append(opts, postgresOptions()...)
	opts = append(opts, encryptionOptions()...)
	opts = append(opts, mainTeamRuleOptions()...)
	return append(opts, passiveOptions("web")...)
}

// tsaClientOptions are what worker, land-worker and retire-worker need to reach a TSA.
func tsaClientOptions() []option {
	return []option{
		{long: "name", kind: kString},
		{long: "tsa-host", kind: kStrings, def: "127.0.0.1:2222"},
		{long: "tsa-public-key", kind: kAuthorizedKeys},
		{long: "tsa-worker-private-key", kind: kPrivateKey, required: true},
	}
}

func workerOptions(f flavour) []option {
	opts := append(tsaClientOptions(),
		option{long: "work-dir", kind: kDir, required: true},
		option{long: "tag", kind: kStrings},
		option{long: "team", kind: kString},
		option{long: "ephemeral", kind: kBool},
		option{long: "runtime", kind: kString, def: f.defaultRuntime(), choices: f.runtimeChoices()},
		option{long: "rebalance-interval", kind: kDuration, def: "4h"},
		option{long: "connection-drain-timeout", kind: kDuration, def: "1h"},
		option{long: "bind-ip", kind: kIP, def: "127.0.0.1"},
		option{long: "bind-port", kind: kUint16, def: "7777"},
		option{long: "debug-bind-ip", kind: kIP, def: "127.0.0.1"},
		option{long: "debug-bind-port", kind: kUint16, def: "7776"},
		option{long: "healthcheck-bind-ip", kind: kIP, def: "0.0.0.0"},
		option{long: "healthcheck-bind-port", kind: kUint16, def: "8888"},
		option{long: "healthcheck-timeout", kind: kDuration, def: "5s"},
		option{long: "sweep-interval", kind: kDuration, def: "30s"},
		option{long: "volume-sweeper-max-in-flight", kind: kUint16, def: "3"},
		option{long: "container-sweeper-max-in-flight", kind: kUint16, def: "5"},
		option{long: "certs-dir", kind: kString},
		option{long: "resource-types", kind: kDir},
		option{long: "external-garden-url", kind: kURL},
		option{long: "log-level", kind: kString, def: "info", choices: logLevels},
		// Proxies are read from the lower-case names without prefix (§3.1).
		option{long: "http-proxy", kind: kString, env: "http_proxy"},
		option{long: "https-proxy", kind: kString, env: "https_proxy"},
		option{long: "no-proxy", kind: kStrings, env: "no_proxy"},

		option{long: "baggageclaim-bind-ip", kind: kIP, def: "127.0.0.1"},
		option{long: "baggageclaim-bind-port", kind: kUint16, def: "7788"},
		option{long: "baggageclaim-driver", kind: kString, def: "detect", choices: []string{"detect", "naive", "btrfs", "overlay"}},
		option{long: "baggageclaim-log-level", kind: kString, def: "info", choices: logLevels},
		option{long: "baggageclaim-p2p-interface-name-pattern", kind: kString, def: "eth0"},
		option{long: "baggageclaim-p2p-interface-family", kind: kString, def: "4", choices: []string{"4", "6"}},
		option{long: "baggageclaim-disable-user-namespaces", kind: kBool},
		option{long: "baggageclaim-overlays-dir", kind: kString},
		option{long: "baggageclaim-btrfs-bin", kind: kString, def: "btrfs"},
		option{long: "baggageclaim-mkfs-bin", kind: kString, def: "mkfs.btrfs"},

		option{long: "containerd-bin", kind: kString},
		option{long: "containerd-config", kind: kFile},
		option{long: "containerd-init-bin", kind: kString},
		option{long: "containerd-cni-plugins-dir", kind: kString},
		option{long: "containerd-dns-server", kind: kStrings},
		option{long: "containerd-dns-proxy-enable", kind: kBool},
		option{long: "containerd-allow-host-access", kind: kBool},
		option{long: "containerd-restricted-network", kind: kStrings},
		option{long: "containerd-additional-hosts", kind: kStrings},
		option{long: "containerd-network-pool", kind: kString, def: "10.80.0.0/16"},
		option{long: "containerd-mtu", kind: kInt},
		option{long: "containerd-external-ip", kind: kIP},
		option{long: "containerd-v6-enable", kind: kBool},
		option{long: "containerd-v6-pool", kind: kString, def: "fd9c:31a6:c759::/64"},
		option{long: "containerd-v6-disable-masquerade", kind: kBool},
		option{long: "containerd-max-containers", kind: kInt, def: "250"},
		option{long: "containerd-request-timeout", kind: kDuration, def: "5m"},
		option{long: "containerd-privileged-mode", kind: kString, def: "full", choices: []string{"full", "fuse-only", "ignore"}},
		option{long: "containerd-seccomp-profile", kind: kFile},
		option{long: "containerd-oci-hooks-dir", kind: kString},
		// containerd's own levels, not lager's (real 8.2.5 --help).
		option{long: "containerd-log-level", kind: kString, def: "info", choices: []string{"trace", "debug", "info", "warn", "error", "fatal", "panic"}, since: [2]int{8, 0}},
		option{long: "containerd-allowed-device", kind: kStrings, since: [2]int{8, 1}},

		option{long: "garden-bin", kind: kString},
		option{long: "garden-config", kind: kFile},
		option{long: "garden-request-timeout", kind: kDuration, def: "5m"},
		option{long: "garden-dns-proxy-enable", kind: kBool},
		option{long: "garden-network-pool", kind: kString},
		option{long: "garden-max-containers", kind: kInt},
	)
	return append(opts, passiveOptions("worker")...)
}

func migrateOptions() []option {
	opts := []option{
		{long: "supported-db-version", kind: kBool},
		{long: "current-db-version", kind: kBool},
		{long: "migrate-to-latest-version", kind: kBool},
		{long: "migrate-db-to-version", kind: kInt},
	}
	opts = append(opts, postgresOptions()...)
	opts = append(opts, encryptionOptions()...)
	return append(opts, passiveOptions("migrate")...)
}

// generateKeyOptions: the options have no namespace, hence the odd env names CONCOURSE_TYPE etc. (§4).
func generateKeyOptions() []option {
	return []option{
		{long: "type", short: 't', kind: kString, def: "rsa", choices: []string{"rsa", "ssh"}},
		{long: "filename", short: 'f', kind: kString, required: true},
		{long: "bits", short: 'b', kind: kInt, def: "4096"},
	}
}

// landRetireOptions: land-worker and retire-worker reach the TSA like a worker and need --name;
// retire-worker also takes --team (a passive option).
func landRetireOptions(cmd string) []option {
	opts := tsaClientOptions()
	for i := range opts {
		if opts[i].long == "name" {
			opts[i].required = true
		}
	}
	return append(opts, passiveOptions(cmd)...)
}

// realOptionsTable lists, per command, the real binaries' options that the typed tables above do
// not declare. It is generated from the real `concourse <cmd> --help` of each version by
// `go test ./tests/fakeconcourse -run TestFidelityStandInDeclaresOptionsLikeTheRealBinary
// -update-real-options`. Columns (tab-separated): command, since ("8.2" when 7.14.3 lacks it),
// long name, short name, "=" when it takes an argument, choices ("a|b"), default, env name.
//
//go:embed real_options.txt
var realOptionsTable string

// passiveOptions are cmd's rows of realOptionsTable. They take a string (or nothing, for a bool)
// and check only the choices: their values' types are not checked, which is the one way the
// stand-in is more lenient than the real binary for them.
func passiveOptions(cmd string) []option {
	var out []option
	for n, line := range strings.Split(realOptionsTable, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		col := strings.Split(line, "\t")
		if len(col) != 8 {
			panic(fmt.Sprintf("real_options.txt line %d has %d columns; want 8 (regenerate it)", n+1, len(col)))
		}
		if col[0] != cmd {
			continue
		}
		o := option{long: col[2], kind: kBool, def: col[6], passive: true}
		if col[1] == "8.2" {
			o.since = [2]int{8, 2}
		}
		if col[3] != "" {
			o.short = col[3][0]
		}
		if col[4] == "=" {
			o.kind = kString
		}
		if col[5] != "" {
			o.choices = strings.Split(col[5], "|")
		}
		if want := "CONCOURSE_" + strings.ToUpper(strings.ReplaceAll(o.long, "-", "_")); col[7] != want {
			o.env = col[7]
			if col[7] == "" {
				o.env = "-"
			}
		}
		out = append(out, o)
	}
	return out
}

// commandOptions are the options of one subcommand, as `concourse <cmd> --help` lists them.
func commandOptions(cmd string, f flavour) []option {
	switch cmd {
	case "web":
		return webOptions(f)
	case "worker":
		return workerOptions(f)
	case "migrate":
		return migrateOptions()
	case "generate-key":
		return generateKeyOptions()
	case "land-worker", "retire-worker":
		return landRetireOptions(cmd)
	case "quickstart":
		return quickstartOptions(f)
	}
	return nil
}

// quickstartOptions are web's options plus worker's under a "worker-" prefix (CONCOURSE_WORKER_*),
// as the real quickstart declares them. The stand-in does not run quickstart, but go-flags reads
// these env names on every command, so a malformed CONCOURSE_WORKER_RUNTIME breaks `migrate` too.
func quickstartOptions(f flavour) []option {
	opts := webOptions(f)
	for _, o := range workerOptions(f) {
		// The proxies keep their un-prefixed lower-case env names (http_proxy …) in quickstart too.
		o.long = "worker-" + o.long
		o.short = 0
		o.required = false
		opts = append(opts, o)
	}
	return opts
}
