// Command fakejuju plays Juju's hook tools for running the charm without Juju.
//
// One binary, dispatched on basename(argv[0]) like Juju's jujuc: linked as "relation-get" it is
// relation-get. Two modes, chosen by the environment:
//
//   - File mode (FAKE_JUJU_STATE=<file>): the tool loads a single-unit model and the running
//     hook's pending writes from the JSON file, runs, and saves it back under a flock.
//   - Socket mode (JUJU_AGENT_SOCKET_ADDRESS set, FAKE_JUJU_STATE not): the tool forwards argv to
//     a jujuc RPC server (jujutest.Serve, or a real unit agent) exactly as jujuc does.
//
// As "fakejuju" it manages state files:
//
//	fakejuju init --state s.json --unit concourse-ci-machine/0 --leader --charm-dir build --config mode=web
//	fakejuju run --state s.json -- ./build/dispatch           # runs the current hook, commits on exit 0
//	fakejuju hook --state s.json config-changed               # starts the next hook
//	fakejuju run --state s.json --hook start -- ./build/dispatch
//	fakejuju show --state s.json                              # statuses, logs, relation data
//	eval "$(fakejuju env --state s.json)"                     # the hook environment, for a shell
//	fakejuju tool relation-get --format=json -r 0 - concourse-ci-machine/0
//	fakejuju link DIR                                         # symlink every tool name into DIR
//	fakejuju commit|discard --state s.json
package main

import (
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// stdio bundles the process's streams and environment so tests can run fakejuju in-process.
type stdio struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}
