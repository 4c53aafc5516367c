package main

// Option tables per subcommand. They cover what a machine charm renders (contract §2.3, §3.1, §4, §5)
// plus the neighbours whose malformed values a charm could plausibly produce; any other CONCOURSE_*
// name is unknown and ignored, as in the real binary. `since` marks options that older lines lack, so
// e.g. CONCOURSE_POSTGRES_APPLICATION_NAME is an unknown (ignored) variable for 7.14.

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
	return append(out, option{long: "main-team-config", kind: kFile})
}

func webOptions(f flavour) []option {
	compression := []string{"gzip", "zstd", "raw"}
	if f.major >= 8 {
		compression = append(compression, "s2")
	}
	strategies := []string{"volume-locality", "random", "fewest-build-containers", "limit-active-tasks", "limit-active-containers", "limit-active-volumes"}
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
		{long: "tsa-peer-address", kind: kString},
		{long: "tsa-heartbeat-interval", kind: kDuration, def: "30s"},
		{long: "tsa-atc-url", kind: kURLs},
		{long: "tsa-token-url", kind: kURL},
		{long: "tsa-client-id", kind: kString, def: "concourse-worker"},
		{long: "tsa-client-secret", kind: kString},
		{long: "tsa-scope", kind: kStrings},
		{long: "tsa-log-level", kind: kString, def: "info", choices: logLevels},
		{long: "tsa-garden-request-timeout", kind: kDuration, def: "5m"},

		{long: "add-local-user", kind: kStrings},
		{long: "password-connector", kind: kString, def: "local", choices: []string{"local", "ldap"}},
		{long: "auth-duration", kind: kDuration, def: "24h"},
		{long: "cookie-secure", kind: kBool},
		{long: "client-id", kind: kString, def: "concourse-web"},
		{long: "client-secret", kind: kString},
		{long: "add-client", kind: kStrings},
		{long: "system-claim-key", kind: kString, def: "aud"},
		{long: "system-claim-value", kind: kStrings, def: "concourse-worker"},

		{long: "prometheus-bind-ip", kind: kIP},
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
		{long: "no-input-container-placement-strategy", kind: kString, choices: strategies},
		{long: "check-container-placement-strategy", kind: kString, def: "random", choices: strategies},
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
		{long: "secret-cache-enabled", kind: kBool},
		{long: "secret-cache-duration", kind: kDuration, def: "1m"},
		{long: "secret-retry-attempts", kind: kInt, def: "5"},
		{long: "secret-retry-interval", kind: kDuration, def: "1s"},
	}
	for _, a := range []string{"build", "container", "job", "pipeline", "resource", "system", "team", "worker", "volume"} {
		opts = append(opts, option{long: "enable-" + a + "-auditing", kind: kBool})
	}
	opts = append(opts, postgresOptions()...)
	opts = append(opts, encryptionOptions()...)
	return append(opts, mainTeamRuleOptions()...)
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
		option{long: "containerd-v6-pool", kind: kString},
		option{long: "containerd-v6-disable-masquerade", kind: kBool},
		option{long: "containerd-max-containers", kind: kInt, def: "250"},
		option{long: "containerd-request-timeout", kind: kDuration, def: "5m"},
		option{long: "containerd-privileged-mode", kind: kString, def: "full", choices: []string{"full", "fuse-only", "ignore"}},
		option{long: "containerd-seccomp-profile", kind: kFile},
		option{long: "containerd-oci-hooks-dir", kind: kString},
		option{long: "containerd-log-level", kind: kString, def: "info", choices: logLevels, since: [2]int{8, 0}},
		option{long: "containerd-allowed-device", kind: kStrings, since: [2]int{8, 1}},

		option{long: "garden-bin", kind: kString},
		option{long: "garden-config", kind: kFile},
		option{long: "garden-request-timeout", kind: kDuration, def: "5m"},
		option{long: "garden-dns-proxy-enable", kind: kBool},
		option{long: "garden-network-pool", kind: kString},
		option{long: "garden-max-containers", kind: kInt},
	)
	return opts
}

func migrateOptions() []option {
	opts := []option{
		{long: "supported-db-version", kind: kBool},
		{long: "current-db-version", kind: kBool},
		{long: "migrate-to-latest-version", kind: kBool},
		{long: "migrate-db-to-version", kind: kInt},
		{long: "log-level", kind: kString, def: "info", choices: logLevels},
	}
	opts = append(opts, postgresOptions()...)
	return append(opts, encryptionOptions()...)
}

// generateKeyOptions: the options have no namespace, hence the odd env names CONCOURSE_TYPE etc. (§4).
func generateKeyOptions() []option {
	return []option{
		{long: "type", short: 't', kind: kString, def: "rsa", choices: []string{"rsa", "ssh"}},
		{long: "filename", short: 'f', kind: kString, required: true},
		{long: "bits", short: 'b', kind: kInt, def: "4096"},
	}
}
