// Command concourse is a stand-in for the real `concourse` binary, for offline charm tests. It
// implements the observable contract of docs concourse-contract.md §9: flags and env vars with the
// real error texts, `web` (HTTP API on PostgreSQL + an SSH TSA), `worker` (beacon registering over
// SSH), `migrate` and `generate-key`. Build it with
//
//	go build -ldflags "-X main.version=7.14.3" -o concourse ./tests/fakeconcourse
//
// Knobs for tests use FAKE_CONCOURSE_* names, which the real binary ignores:
// FAKE_CONCOURSE_FLAVOR (7.14|8.0|8.1|8.2|8.3), FAKE_CONCOURSE_ARCH, FAKE_CONCOURSE_ALLOW_NONROOT=1,
// FAKE_CONCOURSE_RETRY (worker retry delay, default 5s), FAKE_CONCOURSE_DB_RETRY (8.x DB retry window,
// default 30s).
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// version is set at link time (-X main.version=…), like the real release build; unset it prints
// what real dev builds print.
var version = "0.0.0-dev"

func main() {
	env := newEnvironment(os.Environ())
	code := run(os.Args[1:], env, os.Stdout, os.Stderr)
	os.Exit(code)
}

// commandNames in go-flags' sorted order, used by the "Please specify" and "Unknown command" texts.
var commandNames = []string{"generate-key", "land-worker", "migrate", "quickstart", "retire-worker", "web", "worker"}

// goFlagsPanic imitates what go-flags prints when CONCOURSE_VERSION maps onto the --version
// callback (§0.4): a runtime panic, exit status 2.
const goFlagsPanic = `panic: runtime error: index out of range [0] with length 0

goroutine 1 [running]:
github.com/jessevdk/go-flags.(*Option).call(0xc0001a2000, 0x0)
	github.com/jessevdk/go-flags@v1.6.1/option.go:447 +0x1c5
github.com/jessevdk/go-flags.(*Option).set(0xc0001a2000, 0xc000012345)
	github.com/jessevdk/go-flags@v1.6.1/option.go:259 +0x2a5
github.com/jessevdk/go-flags.(*Option).clearDefault(0xc0001a2000)
	github.com/jessevdk/go-flags@v1.6.1/option.go:398 +0x2d3
main.main()
	github.com/concourse/concourse/cmd/concourse/main.go:23 +0x8d
`

// run is the whole program minus os.Exit, so parse errors can be tested in-process.
func run(args []string, env *environment, stdout, stderr io.Writer) int {
	// §1.5: --version is a parse-time callback; it wins over every other problem, anywhere in argv.
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-v" || a == "--version" {
			fmt.Fprintln(stdout, version)
			return 0
		}
	}
	if _, ok := env.lookup("CONCOURSE_VERSION"); ok {
		fmt.Fprint(stderr, goFlagsPanic)
		return 2
	}
	f, err := flavourFor(version, env)
	if err != nil {
		return fail(stderr, err)
	}

	var cmd string
	var rest []string
	for i, a := range args {
		if a == "-h" || a == "--help" {
			printUsage(stdout, "", f)
			return 0
		}
		if strings.HasPrefix(a, "-") {
			return fail(stderr, errorf("unknown flag `%s'", strings.TrimLeft(a, "-")))
		}
		cmd, rest = a, args[i+1:]
		break
	}
	if cmd == "" || !contains(commandNames, cmd) {
		// go-flags converts every subcommand's env values before it looks at the command.
		if err := checkForeignEnv(env, f, nil); err != nil {
			return fail(stderr, err)
		}
	}
	if cmd == "" {
		return fail(stderr, errorf("Please specify one command of: %s or %s",
			strings.Join(commandNames[:len(commandNames)-1], ", "), commandNames[len(commandNames)-1]))
	}
	for _, a := range rest {
		if a == "--" {
			break
		}
		if a == "-h" || a == "--help" {
			printUsage(stdout, cmd, f)
			return 0
		}
	}

	c := cmdEnv{env: env, flavour: f, stdout: stdout, stderr: stderr}
	switch cmd {
	case "web":
		err = runWeb(c, rest)
	case "worker":
		err = runWorker(c, rest)
	case "migrate":
		err = runMigrate(c, rest)
	case "generate-key":
		err = runGenerateKey(c, rest)
	case "land-worker":
		err = runLandOrRetire(c, rest, "land-worker")
	case "retire-worker":
		err = runLandOrRetire(c, rest, "retire-worker")
	case "quickstart":
		// Honest refusal: quickstart needs web+worker in one process with a real runtime.
		err = fmt.Errorf("quickstart is not implemented by the fake concourse (version %s); run web and worker", version)
	default:
		err = unknownCommand(cmd)
	}
	if err != nil {
		return fail(stderr, err)
	}
	return 0
}

// cmdEnv is what every subcommand gets: the environment (mutated by option parsing), the flavour and
// the two output streams.
type cmdEnv struct {
	env     *environment
	flavour flavour
	stdout  io.Writer
	stderr  io.Writer
}

func fail(stderr io.Writer, err error) int {
	msg := err.Error()
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	fmt.Fprint(stderr, "error: "+msg)
	return 1
}

// unknownCommand reproduces go-flags' suggestion, including its Levenshtein quirk (below) that makes
// `bogus' suggest `generate-key' (§2.1).
func unknownCommand(cmd string) error {
	best, dist := "", -1
	for _, c := range commandNames {
		if l := goFlagsLevenshtein(cmd, c); dist < 0 || l < dist {
			best, dist = c, l
		}
	}
	if float32(dist)/float32(len(best)) < 0.5 {
		return errorf("Unknown command `%s', did you mean `%s'?", cmd, best)
	}
	return errorf("Unknown command `%s'. Please specify one command of: %s or %s", cmd,
		strings.Join(commandNames[:len(commandNames)-1], ", "), commandNames[len(commandNames)-1])
}

// goFlagsLevenshtein is go-flags' distance, bug included: the first row is initialised only up to
// len(t)-1, so dists[0][len(t)] stays 0 and long candidates look closer than they are.
func goFlagsLevenshtein(s, t string) int {
	if len(s) == 0 {
		return len(t)
	}
	if len(t) == 0 {
		return len(s)
	}
	dists := make([][]int, len(s)+1)
	for i := range dists {
		dists[i] = make([]int, len(t)+1)
		dists[i][0] = i
	}
	for j := range t {
		dists[0][j] = j
	}
	for i, sc := range s {
		for j, tc := range t {
			if sc == tc {
				dists[i+1][j+1] = dists[i][j]
			} else {
				dists[i+1][j+1] = dists[i][j] + 1
				if dists[i+1][j] < dists[i+1][j+1] {
					dists[i+1][j+1] = dists[i+1][j] + 1
				}
				if dists[i][j+1] < dists[i+1][j+1] {
					dists[i+1][j+1] = dists[i][j+1] + 1
				}
			}
		}
	}
	return dists[len(s)][len(t)]
}

func printUsage(w io.Writer, cmd string, f flavour) {
	var opts []option
	switch cmd {
	case "":
		fmt.Fprintf(w, "Usage:\n  concourse [OPTIONS] <command>\n\nApplication Options:\n  -v, --version  Print the version of Concourse and exit\n\nHelp Options:\n  -h, --help     Show this help message\n\nAvailable commands:\n")
		for _, c := range commandNames {
			fmt.Fprintf(w, "  %s\n", c)
		}
		return
	default:
		opts = commandOptions(cmd, f)
	}
	fmt.Fprintf(w, "Usage:\n  concourse [OPTIONS] %s [%s-OPTIONS]\n\n[%s command options]\n", cmd, cmd, cmd)
	for _, o := range opts {
		if !o.availableIn(f) {
			continue
		}
		line := "      " + o.String()
		if o.kind != kBool {
			line += "="
		}
		if o.def != "" {
			line += fmt.Sprintf(" (default: %s)", o.def)
		}
		if o.env != "-" {
			line += fmt.Sprintf(" [$%s]", o.envName())
		}
		fmt.Fprintln(w, line)
	}
}
