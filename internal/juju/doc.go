// Package juju is a typed client for the Juju hook tools of a machine charm.
//
// It knows Juju — the hook environment (contract §1.3), the hook tools' exact argv and JSON output
// shapes (§2) and how failures are reported (§2.3) — and nothing of the workload the charm manages.
//
// The pieces:
//
//   - [Env] is parsed once from the process environment with [ParseEnv]; [Env.Event] names the
//     hook or action being dispatched and [Env.ProxyFunc] applies Juju's JUJU_CHARM_* proxies.
//   - [Runner] runs one hook tool. [ExecRunner] forks the tool by bare name, as ops and goops do.
//     jujutest.Runner runs it against an in-memory model instead.
//   - [Client] turns each hook-tool call into one method with typed arguments and results.
//
// Rules the client keeps so callers do not have to:
//
//   - Every call that prints data passes --format=json and parses the JSON, including the null
//     shapes Juju prints for "nothing" (relation-list, secret-ids, relation-get).
//   - Data never goes on argv: relation-set and state-set read a JSON object on stdin
//     (--file -), secret content travels in 0600 files in a private temporary directory
//     (key#file=PATH). Argv is visible in /proc and capped at 128 KiB per string.
//   - Free text (status messages, log lines, action messages, versions) comes after "--", so a
//     message starting with "-" is never read as a flag.
//   - Failures are classified once, in [ToolError.Is], into [ErrRelationNotFound],
//     [ErrSecretNotFound], [ErrNotLeader] and [ErrPermissionDenied]. Juju reports failures only
//     as text; no code above this package matches strings: use errors.Is and errors.As.
//
// There is no package-level mutable state: a Client holds its Runner and Env, so tests build
// their own and run in parallel.
package juju
