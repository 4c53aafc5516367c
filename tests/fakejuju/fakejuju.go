package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gofrs/flock"
	"gopkg.in/yaml.v3"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

const defaultModelUUID = "cdac5656-2423-4d8a-8ba4-1a9c0b9e2f10"

// run is main without os.Exit: it returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	s := stdio{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	name := filepath.Base(args[0])
	if slices.Contains(jujutest.ToolNames(), name) {
		return s.tool(name, args[1:])
	}
	if name != "fakejuju" {
		fmt.Fprintf(stderr, "ERROR fakejuju: unknown hook tool %q (argv[0])\n", name)
		return 1
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[1], args[2:]
	var err error
	switch cmd {
	case "tool":
		if len(rest) == 0 {
			fmt.Fprintln(stderr, "usage: fakejuju tool NAME [ARGS...]")
			return 2
		}
		if !slices.Contains(jujutest.ToolNames(), rest[0]) {
			fmt.Fprintf(stderr, "ERROR bad request: unknown command: %s\n", rest[0])
			return 1
		}
		return s.tool(rest[0], rest[1:])
	case "run":
		return s.runHook(rest)
	case "init":
		err = s.initState(rest)
	case "hook":
		err = s.startHook(rest)
	case "env":
		err = s.printEnv(rest)
	case "commit", "discard":
		err = s.endHook(cmd, rest)
	case "show":
		err = s.show(rest)
	case "link":
		err = s.link(rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "fakejuju: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "fakejuju %s: %v\n", cmd, err)
		var u usageErr
		if errors.As(err, &u) {
			return 2
		}
		return 1
	}
	return 0
}

const usage = `usage: fakejuju COMMAND [flags]

  init    --state F --unit APP/N [--leader] [--charm-dir DIR] [--config k=v]... [--resource NAME=PATH]...
          [--address IP] [--binding NAME=IP]... [--hook NAME]
  hook    --state F [--relation-id N] [--remote-unit U] [--remote-app A] [--action NAME] [--param k=v]... NAME
  run     --state F [hook flags --hook NAME] [--charm-dir DIR] -- COMMAND [ARGS...]
  env     --state F
  commit  --state F
  discard --state F
  show    --state F
  tool    NAME [ARGS...]
  link    DIR

Hook tools: run as a symlink named after the tool (see "link"), with FAKE_JUJU_STATE=F
(file mode) or JUJU_AGENT_SOCKET_ADDRESS and JUJU_CONTEXT_ID (socket mode) in the environment.
`

type usageErr struct{ error }

// --- hook tools -------------------------------------------------------------------------------

// toolsReadingStdin are the only tools that may read stdin (--file -); other tools never touch
// it, so running one from an interactive shell does not block.
var toolsReadingStdin = []string{"relation-set", "state-set", "secret-add", "secret-set"}

func (s stdio) tool(name string, args []string) int {
	if path := s.getenv("FAKE_JUJU_STATE"); path != "" {
		return s.fileTool(path, name, args)
	}
	if addr := s.getenv("JUJU_AGENT_SOCKET_ADDRESS"); addr != "" {
		return s.socketTool(addr, name, args)
	}
	fmt.Fprintln(s.stderr, "ERROR fakejuju: set FAKE_JUJU_STATE (file mode) or JUJU_AGENT_SOCKET_ADDRESS (socket mode)")
	return 1
}

// socketTool is Juju's jujuc client: one Jujuc.Main call, and a second one with stdin when the
// server says the tool needs it (contract §3.1).
func (s stdio) socketTool(addr, name string, args []string) int {
	network := s.getenv("JUJU_AGENT_SOCKET_NETWORK")
	if network == "" {
		network = "unix"
	}
	conn, err := net.Dial(network, addr)
	if err != nil {
		fmt.Fprintf(s.stderr, "ERROR %v\n", err)
		return 1
	}
	client := rpc.NewClient(conn)
	defer client.Close()
	dir, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(s.stderr, "ERROR %v\n", err)
		return 1
	}
	req := jujutest.Request{ContextId: s.getenv("JUJU_CONTEXT_ID"), Dir: dir, CommandName: name, Args: args}
	var resp jujutest.Response
	err = client.Call("Jujuc.Main", req, &resp)
	if err != nil && err.Error() == "hook tool requires stdin, none supplied" {
		if req.Stdin, err = io.ReadAll(s.stdin); err == nil {
			req.StdinSet = true
			resp = jujutest.Response{}
			err = client.Call("Jujuc.Main", req, &resp)
		}
	}
	if err != nil {
		fmt.Fprintf(s.stderr, "ERROR %v\n", err)
		return 1
	}
	s.stdout.Write(resp.Stdout)
	s.stderr.Write(resp.Stderr)
	return resp.Code
}

func (s stdio) fileTool(path, name string, args []string) int {
	var stdin []byte
	if slices.Contains(toolsReadingStdin, name) {
		var err error
		if stdin, err = io.ReadAll(s.stdin); err != nil {
			fmt.Fprintf(s.stderr, "ERROR reading stdin: %v\n", err)
			return 1
		}
	}
	var res jujutest.ToolResult
	err := withState(path, true, func(st *state) error {
		if st.hook == nil || st.hook.Done() {
			return errors.New("no hook is running: start one with \"fakejuju hook --state " + path + " NAME\"")
		}
		if dir, err := os.Getwd(); err == nil {
			st.hook.Dir = dir
		}
		res = st.hook.Run(name, args, stdin)
		return nil
	})
	if err != nil {
		fmt.Fprintf(s.stderr, "ERROR fakejuju: %v\n", err)
		return 1
	}
	s.stdout.Write(res.Stdout)
	s.stderr.Write(res.Stderr)
	return res.Code
}

// --- state file -----------------------------------------------------------------------------

type state struct {
	model *jujutest.Model
	hook  *jujutest.HookContext
}

type stateJSON struct {
	Model *jujutest.Model `json:"model"`
	Hook  json.RawMessage `json:"hook,omitempty"`
}

// withState loads the state file under an exclusive flock, calls fn, and saves the result
// atomically when write is set.
func withState(path string, write bool, fn func(*state) error) error {
	lock := flock.New(path + ".lock")
	if err := lock.Lock(); err != nil {
		return fmt.Errorf("locking %s: %w", path, err)
	}
	defer lock.Unlock()
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading state: %w (create it with \"fakejuju init\")", err)
	}
	var sj stateJSON
	sj.Model = &jujutest.Model{}
	if err := json.Unmarshal(b, &sj); err != nil {
		return fmt.Errorf("reading state %s: %w", path, err)
	}
	st := &state{model: sj.Model}
	if len(sj.Hook) > 0 && string(sj.Hook) != "null" {
		if st.hook, err = st.model.LoadHookContext(sj.Hook); err != nil {
			return fmt.Errorf("reading state %s: %w", path, err)
		}
	}
	if err := fn(st); err != nil {
		return err
	}
	if !write {
		return nil
	}
	return saveState(path, st)
}

func saveState(path string, st *state) error {
	sj := stateJSON{Model: st.model}
	if st.hook != nil {
		hb, err := json.Marshal(st.hook)
		if err != nil {
			return err
		}
		sj.Hook = hb
	}
	b, err := json.MarshalIndent(sj, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	return nil
}

// --- commands -------------------------------------------------------------------------------

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func newFlags(s stdio, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("fakejuju "+name, flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageErr{err}
	}
	return nil
}

func needState(path string) error {
	if path == "" {
		return usageErr{errors.New("--state is required")}
	}
	return nil
}

func (s stdio) initState(args []string) error {
	fs := newFlags(s, "init")
	path := fs.String("state", "", "state file to create")
	unit := fs.String("unit", "concourse-ci-machine/0", "the unit hooks run on (APP/N)")
	leader := fs.Bool("leader", false, "make the unit its application's leader")
	charmDir := fs.String("charm-dir", "", "directory with metadata.yaml and config.yaml")
	hook := fs.String("hook", "install", "first hook to start (\"\" for none)")
	modelName := fs.String("model", "test", "model name")
	address := fs.String("address", "", "the unit's private address (default 127.0.1.N+1)")
	var config, resources, bindings multiFlag
	fs.Var(&config, "config", "config option k=v (repeatable)")
	fs.Var(&resources, "resource", "attached resource NAME=PATH (repeatable)")
	fs.Var(&bindings, "binding", "address NAME=IP network-get answers for a binding (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needState(*path); err != nil {
		return err
	}
	app := juju.AppName(*unit)
	n, err := strconv.Atoi(strings.TrimPrefix(*unit, app+"/"))
	if err != nil || app == *unit || n < 0 {
		return usageErr{fmt.Errorf("--unit %q: want APP/N", *unit)}
	}
	meta := jujutest.AppMeta{Peers: map[string]string{}}
	if *charmDir != "" {
		if meta, err = readCharmMeta(*charmDir); err != nil {
			return err
		}
	}
	values := map[string]any{}
	for _, kv := range config {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usageErr{fmt.Errorf("--config %q: want key=value", kv)}
		}
		opt, known := meta.Options[k]
		if !known && len(meta.Options) > 0 {
			return fmt.Errorf("--config %q: the charm has no option %q", kv, k)
		}
		if values[k], err = convertOption(opt.Type, v); err != nil {
			return fmt.Errorf("--config %q: %w", kv, err)
		}
	}
	m := jujutest.NewModel(*modelName, defaultModelUUID)
	m.AddApp(app, meta, values)
	for range n + 1 {
		m.AddUnit(app) // units below N exist only so the unit keeps its number
	}
	for _, r := range resources {
		name, p, ok := strings.Cut(r, "=")
		if !ok || name == "" || p == "" {
			return usageErr{fmt.Errorf("--resource %q: want NAME=PATH", r)}
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		m.AttachResource(app, name, p)
	}
	if *address != "" {
		m.SetAddress(*unit, *address)
	}
	for _, b := range bindings {
		name, ip, ok := strings.Cut(b, "=")
		if !ok || name == "" || ip == "" {
			return usageErr{fmt.Errorf("--binding %q: want NAME=IP", b)}
		}
		_, peer := meta.Peers[name]
		_, prov := meta.Provides[name]
		_, req := meta.Requires[name]
		if !peer && !prov && !req && !slices.Contains(meta.ExtraBindings, name) {
			return fmt.Errorf("--binding %q: the charm has no endpoint or extra-binding %q", b, name)
		}
		m.SetBindingAddress(*unit, name, ip)
	}
	if *leader {
		m.SetLeader(app, *unit)
	} else {
		m.SetLeader(app, "")
	}
	st := &state{model: m}
	if *hook != "" {
		st.hook = m.NewHookContext(*unit, jujutest.HookInfo{Hook: *hook, RelationID: -1})
		if *charmDir != "" {
			st.hook.CharmDir, _ = filepath.Abs(*charmDir)
		}
	}
	if err := saveState(*path, st); err != nil {
		return err
	}
	fmt.Fprintf(s.stdout, "created %s: unit %s (leader: %t)", *path, *unit, *leader)
	if *hook != "" {
		fmt.Fprintf(s.stdout, ", hook %q running", *hook)
	}
	fmt.Fprintln(s.stdout)
	return nil
}

// convertOption turns a command-line value into the option's type, as `juju config` does.
func convertOption(typ, v string) (any, error) {
	switch typ {
	case "int":
		return strconv.ParseInt(v, 10, 64)
	case "float":
		return strconv.ParseFloat(v, 64)
	case "boolean":
		return strconv.ParseBool(v)
	}
	return v, nil
}

// readCharmMeta reads metadata.yaml and (optionally) config.yaml of a charm directory.
func readCharmMeta(dir string) (jujutest.AppMeta, error) {
	var md struct {
		Peers         map[string]struct{ Interface string } `yaml:"peers"`
		Provides      map[string]struct{ Interface string } `yaml:"provides"`
		Requires      map[string]struct{ Interface string } `yaml:"requires"`
		ExtraBindings map[string]any                        `yaml:"extra-bindings"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "metadata.yaml"))
	if err != nil {
		return jujutest.AppMeta{}, fmt.Errorf("reading charm metadata: %w", err)
	}
	if err := yaml.Unmarshal(b, &md); err != nil {
		return jujutest.AppMeta{}, fmt.Errorf("parsing %s: %w", filepath.Join(dir, "metadata.yaml"), err)
	}
	meta := jujutest.AppMeta{Peers: map[string]string{}, Provides: map[string]string{}, Requires: map[string]string{}}
	for k, v := range md.Peers {
		meta.Peers[k] = v.Interface
	}
	for k, v := range md.Provides {
		meta.Provides[k] = v.Interface
	}
	for k, v := range md.Requires {
		meta.Requires[k] = v.Interface
	}
	for k := range md.ExtraBindings {
		meta.ExtraBindings = append(meta.ExtraBindings, k)
	}
	slices.Sort(meta.ExtraBindings)
	var cfg struct {
		Options map[string]jujutest.Option `yaml:"options"`
	}
	b, err = os.ReadFile(filepath.Join(dir, "config.yaml"))
	if errors.Is(err, os.ErrNotExist) {
		return meta, nil
	}
	if err != nil {
		return meta, fmt.Errorf("reading charm config: %w", err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return meta, fmt.Errorf("parsing %s: %w", filepath.Join(dir, "config.yaml"), err)
	}
	meta.Options = cfg.Options
	return meta, nil
}

// hookFlags are the flags that describe a hook, shared by "hook" and "run".
type hookFlags struct {
	relationID            *int
	remoteUnit, remoteApp *string
	departing, action     *string
	secretID, secretLabel *string
	params                multiFlag
}

func addHookFlags(fs *flag.FlagSet) *hookFlags {
	h := &hookFlags{
		relationID:  fs.Int("relation-id", -1, "relation id of a relation hook"),
		remoteUnit:  fs.String("remote-unit", "", "JUJU_REMOTE_UNIT"),
		remoteApp:   fs.String("remote-app", "", "JUJU_REMOTE_APP (derived from the relation when empty)"),
		departing:   fs.String("departing-unit", "", "JUJU_DEPARTING_UNIT"),
		action:      fs.String("action", "", "run this action instead of a hook"),
		secretID:    fs.String("secret-id", "", "JUJU_SECRET_ID"),
		secretLabel: fs.String("secret-label", "", "JUJU_SECRET_LABEL"),
	}
	fs.Var(&h.params, "param", "action parameter k=v (repeatable; values are strings)")
	return h
}

func (h *hookFlags) info(hook string) jujutest.HookInfo {
	info := jujutest.HookInfo{Hook: hook, RelationID: *h.relationID, RemoteUnit: *h.remoteUnit,
		RemoteApp: *h.remoteApp, DepartingUnit: *h.departing, ActionName: *h.action,
		SecretID: *h.secretID, SecretLabel: *h.secretLabel}
	if info.ActionName != "" {
		info.Hook = ""
		info.ActionParams = map[string]any{}
		for _, kv := range h.params {
			k, v, _ := strings.Cut(kv, "=")
			info.ActionParams[k] = v
		}
	}
	return info
}

// begin starts a hook on the state's unit; a hook still running must be committed or
// discarded first, so no pending write is lost silently.
func begin(st *state, info jujutest.HookInfo, charmDir string) error {
	if st.hook != nil && !st.hook.Done() {
		return fmt.Errorf("hook %q is still running: \"fakejuju commit\" or \"fakejuju discard\" it first", hookName(st.hook.Info()))
	}
	unit := ""
	if st.hook != nil {
		unit = st.hook.Unit()
	} else {
		apps := st.model.Apps()
		units := st.model.Units(apps[0])
		unit = units[len(units)-1]
	}
	prevDir := ""
	if st.hook != nil {
		prevDir = st.hook.CharmDir
	}
	st.hook = st.model.NewHookContext(unit, info)
	if charmDir != "" {
		st.hook.CharmDir = charmDir
	} else if prevDir != "" {
		st.hook.CharmDir = prevDir
	}
	return nil
}

func hookName(i jujutest.HookInfo) string {
	if i.ActionName != "" {
		return "action " + i.ActionName
	}
	return i.Hook
}

func (s stdio) startHook(args []string) error {
	fs := newFlags(s, "hook")
	path := fs.String("state", s.getenv("FAKE_JUJU_STATE"), "state file")
	hf := addHookFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needState(*path); err != nil {
		return err
	}
	hook := fs.Arg(0)
	if (hook == "") == (*hf.action == "") {
		return usageErr{errors.New("give a hook name or --action NAME")}
	}
	return withState(*path, true, func(st *state) error {
		if err := begin(st, hf.info(hook), ""); err != nil {
			return err
		}
		fmt.Fprintf(s.stdout, "%s running on %s (context %s)\n", hookName(st.hook.Info()), st.hook.Unit(), st.hook.ID())
		return nil
	})
}

func (s stdio) printEnv(args []string) error {
	fs := newFlags(s, "env")
	path := fs.String("state", s.getenv("FAKE_JUJU_STATE"), "state file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needState(*path); err != nil {
		return err
	}
	abs, _ := filepath.Abs(*path)
	return withState(*path, false, func(st *state) error {
		if st.hook == nil {
			return errors.New("no hook is running")
		}
		for _, kv := range append(st.hook.Env(), "FAKE_JUJU_STATE="+abs) {
			k, v, _ := strings.Cut(kv, "=")
			fmt.Fprintf(s.stdout, "export %s=%s\n", k, shellQuote(v))
		}
		return nil
	})
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (s stdio) endHook(cmd string, args []string) error {
	fs := newFlags(s, cmd)
	path := fs.String("state", s.getenv("FAKE_JUJU_STATE"), "state file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needState(*path); err != nil {
		return err
	}
	return withState(*path, true, func(st *state) error {
		if st.hook == nil || st.hook.Done() {
			return errors.New("no hook is running")
		}
		if cmd == "discard" {
			st.hook.Discard()
			fmt.Fprintf(s.stdout, "%s: pending changes discarded\n", hookName(st.hook.Info()))
			return nil
		}
		printEvents(s.stdout, hookName(st.hook.Info()), st.hook.Commit())
		return nil
	})
}

func printEvents(w io.Writer, hook string, evs []jujutest.Event) {
	fmt.Fprintf(w, "%s: committed", hook)
	if len(evs) == 0 {
		fmt.Fprintln(w, "; no events for other units")
		return
	}
	fmt.Fprintln(w, "; events for other units:")
	for _, e := range evs {
		fmt.Fprintf(w, "  %s\n", e)
	}
}

// runHook starts a hook (unless the state's current one has not run yet), runs COMMAND with
// the hook environment and the tools on PATH, then commits on exit 0 or discards.
func (s stdio) runHook(args []string) int {
	fs := newFlags(s, "run")
	path := fs.String("state", s.getenv("FAKE_JUJU_STATE"), "state file")
	hook := fs.String("hook", "", "start this hook first (default: run the hook already started)")
	charmDir := fs.String("charm-dir", "", "working directory and JUJU_CHARM_DIR (default: current directory)")
	hf := addHookFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() == 0 {
		fmt.Fprintln(s.stderr, "usage: fakejuju run --state F [--hook NAME] -- COMMAND [ARGS...]")
		return 2
	}
	abs, _ := filepath.Abs(*path)
	dir := *charmDir
	if dir == "" {
		dir, _ = os.Getwd()
	}
	dir, _ = filepath.Abs(dir)

	var env []string
	var name string
	err := withState(abs, true, func(st *state) error {
		if *hook != "" || *hf.action != "" {
			if err := begin(st, hf.info(*hook), dir); err != nil {
				return err
			}
		}
		if st.hook == nil || st.hook.Done() {
			return errors.New("no hook is running: pass --hook NAME")
		}
		st.hook.CharmDir = dir
		env, name = st.hook.Env(), hookName(st.hook.Info())
		return nil
	})
	if err != nil {
		fmt.Fprintf(s.stderr, "fakejuju run: %v\n", err)
		return 1
	}
	tools, err := os.MkdirTemp("", "fakejuju-tools-")
	if err != nil {
		fmt.Fprintf(s.stderr, "fakejuju run: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tools)
	if err := s.link([]string{tools}); err != nil {
		fmt.Fprintf(s.stderr, "fakejuju run: %v\n", err)
		return 1
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Dir = dir
	// Juju replaces the environment (contract §1.1); keep PATH, with the tools first.
	cmd.Env = append(env, "PATH="+tools+string(os.PathListSeparator)+s.getenv("PATH"), "FAKE_JUJU_STATE="+abs)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, s.stdout, s.stderr
	runErr := cmd.Run()
	code := 0
	if runErr != nil {
		code = 1
		if ee, ok := errors.AsType[*exec.ExitError](runErr); ok && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		} else {
			fmt.Fprintf(s.stderr, "fakejuju run: %v\n", runErr)
		}
	}
	var out bytes.Buffer
	err = withState(abs, true, func(st *state) error {
		if st.hook == nil || st.hook.Done() {
			return errors.New("the hook ended while the command ran")
		}
		if code != 0 {
			st.hook.Discard()
			if st.hook.ActionUUID() != "" {
				fmt.Fprintf(&out, "%s: exit status %d; the action failed, pending changes discarded\n", name, code)
			} else {
				fmt.Fprintf(&out, "%s: exit status %d; pending changes discarded (Juju would retry the hook)\n", name, code)
			}
			return nil
		}
		printEvents(&out, name, st.hook.Commit())
		return nil
	})
	if err != nil {
		fmt.Fprintf(s.stderr, "fakejuju run: %v\n", err)
		return 1
	}
	s.stderr.Write(out.Bytes())
	return code
}

// show prints what an operator would look at: statuses, logs, ports, state, relation data.
func (s stdio) show(args []string) error {
	fs := newFlags(s, "show")
	path := fs.String("state", s.getenv("FAKE_JUJU_STATE"), "state file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := needState(*path); err != nil {
		return err
	}
	return withState(*path, false, func(st *state) error {
		m := st.model
		type unitView struct {
			Leader bool               `json:"leader"`
			Status jujutest.Status    `json:"status"`
			Ports  []string           `json:"ports"`
			State  map[string]string  `json:"state"`
			Logs   []jujutest.LogLine `json:"logs"`
		}
		type appView struct {
			Status  jujutest.Status     `json:"status"`
			Version string              `json:"version"`
			Config  map[string]any      `json:"config"`
			Units   map[string]unitView `json:"units"`
		}
		type relView struct {
			jujutest.RelationInfo
			AppData  map[string]map[string]string `json:"app-data"`
			UnitData map[string]map[string]string `json:"unit-data"`
		}
		out := struct {
			Model     string                  `json:"model"`
			Hook      any                     `json:"hook,omitempty"`
			Apps      map[string]appView      `json:"applications"`
			Relations []relView               `json:"relations"`
			Actions   []jujutest.ActionRecord `json:"actions,omitempty"`
		}{Model: m.Name(), Apps: map[string]appView{}, Relations: []relView{}, Actions: m.Actions()}
		if st.hook != nil {
			out.Hook = map[string]any{"unit": st.hook.Unit(), "name": hookName(st.hook.Info()), "context": st.hook.ID(), "done": st.hook.Done()}
		}
		for _, a := range m.Apps() {
			av := appView{Status: m.AppStatus(a), Version: m.AppVersion(a), Config: m.Config(a), Units: map[string]unitView{}}
			for _, u := range m.Units(a) {
				av.Units[u] = unitView{Leader: m.Leader(a) == u, Status: m.UnitStatus(u), Ports: m.OpenedPorts(u),
					State: m.UnitState(u), Logs: m.Logs(u)}
			}
			out.Apps[a] = av
		}
		for _, r := range m.Relations() {
			rv := relView{RelationInfo: r, AppData: map[string]map[string]string{}, UnitData: map[string]map[string]string{}}
			for _, ep := range r.Endpoints {
				rv.AppData[ep.App] = m.AppData(r.ID, ep.App)
			}
			for _, u := range m.RelationUnits(r.ID) {
				rv.UnitData[u] = m.UnitData(r.ID, u)
			}
			out.Relations = append(out.Relations, rv)
		}
		enc := json.NewEncoder(s.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	})
}

// link symlinks this executable into DIR under every tool name (and as fakejuju).
func (s stdio) link(args []string) error {
	if len(args) != 1 {
		return usageErr{errors.New("usage: fakejuju link DIR")}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(args[0], 0o755); err != nil {
		return err
	}
	for _, name := range append(jujutest.ToolNames(), "fakejuju") {
		p := filepath.Join(args[0], name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.Symlink(exe, p); err != nil {
			return err
		}
	}
	return nil
}
