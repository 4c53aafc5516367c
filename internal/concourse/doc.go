// Package concourse knows Concourse CI: its releases, the configuration it
// reads (CONCOURSE_* environment files for systemd), the systemd units that
// run it, its RSA keys, its PostgreSQL database and migrations, and the small
// part of its HTTP API a charm needs for health checks.
//
// It knows nothing of Juju: no hook names, no relation keys, no config option
// names. Callers (internal/hooks) translate Juju facts into the plain structs
// here. Everything that talks to the outside world (HTTP, PostgreSQL,
// systemctl, the concourse binary) takes its client or runner as an argument
// or struct field, so tests hand in loopback servers and fakes; there is no
// package-level mutable state.
//
// References in comments such as "contract §2.1" point at
// shared/docs/concourse-contract.md.
package concourse
