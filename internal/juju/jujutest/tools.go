package jujutest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// ToolResult is what a hook tool process would report.
type ToolResult struct {
	Code   int
	Stdout []byte
	Stderr []byte
}

// toolCall is one hook-tool invocation being interpreted. The model's mutex is held throughout.
type toolCall struct {
	h        *HookContext
	name     string
	args     []string
	stdin    []byte
	stdinSet bool
	dir      string
	out      bytes.Buffer
}

type toolFunc func(c *toolCall) error

// tools is the read-only table of hook tools the fake implements.
var tools = map[string]toolFunc{
	"is-leader":               isLeader,
	"config-get":              configGet,
	"relation-ids":            relationIDs,
	"relation-list":           relationList,
	"relation-get":            relationGet,
	"relation-set":            relationSet,
	"status-set":              statusSet,
	"status-get":              statusGet,
	"application-version-set": appVersionSet,
	"juju-log":                jujuLog,
	"open-port":               func(c *toolCall) error { return portChange(c, true) },
	"close-port":              func(c *toolCall) error { return portChange(c, false) },
	"opened-ports":            openedPorts,
	"unit-get":                unitGet,
	"network-get":             networkGet,
	"action-get":              actionGet,
	"action-set":              actionSet,
	"action-fail":             actionFail,
	"action-log":              actionLog,
	"secret-add":              secretAdd,
	"secret-get":              secretGet,
	"secret-set":              secretSet,
	"secret-grant":            secretGrantTool,
	"secret-revoke":           secretRevoke,
	"secret-ids":              secretIDs,
	"secret-info-get":         secretInfoGet,
	"secret-remove":           secretRemove,
	"resource-get":            resourceGet,
	"state-get":               stateGet,
	"state-set":               stateSet,
	"state-delete":            stateDelete,
}

// ToolNames lists the hook tools the fake implements, sorted (fakejuju links these).
func ToolNames() []string { return slices.Sorted(maps.Keys(tools)) }

// Run runs a hook tool in this context, with stdin given (nil is empty stdin), and returns what
// the tool process would: exit code 0, 1 (run-time error) or 2 (usage error), stdout, and
// stderr "ERROR <message>". An unknown tool fails like Juju's jujuc does.
func (h *HookContext) Run(tool string, args []string, stdin []byte) ToolResult {
	res, err := h.run(tool, args, stdin, true, h.Dir)
	if err != nil {
		return ToolResult{Code: 1, Stderr: []byte("ERROR " + err.Error() + "\n")}
	}
	return res
}

// run interprets one tool call. The error is a request-level failure (unknown command, stdin
// needed but not sent) that the jujuc server returns as an RPC error.
func (h *HookContext) run(tool string, args []string, stdin []byte, stdinSet bool, dir string) (ToolResult, error) {
	fn, ok := tools[tool]
	if !ok {
		return ToolResult{}, fmt.Errorf("bad request: unknown command: %s", tool)
	}
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if h.c.Done {
		return ToolResult{Code: 1, Stderr: []byte(fmt.Sprintf("ERROR context %q is no longer running\n", h.c.ID))}, nil
	}
	c := &toolCall{h: h, name: tool, args: args, stdin: stdin, stdinSet: stdinSet, dir: dir}
	err := fn(c)
	if errors.Is(err, errNeedStdin) {
		return ToolResult{}, err
	}
	var usage *usageError
	switch {
	case err == nil:
		return ToolResult{Stdout: c.out.Bytes()}, nil
	case errors.As(err, &usage):
		return ToolResult{Code: 2, Stderr: []byte("ERROR " + err.Error() + "\n")}, nil
	default:
		return ToolResult{Code: 1, Stderr: []byte("ERROR " + err.Error() + "\n")}, nil
	}
}

// --- helpers --------------------------------------------------------------------------------

func (c *toolCall) m() *Model         { return c.h.m }
func (c *toolCall) unit() *unitState  { return c.h.m.s.Units[c.h.c.Unit] }
func (c *toolCall) appName() string   { return c.unit().App }
func (c *toolCall) app() *appState    { return c.h.m.s.Apps[c.appName()] }
func (c *toolCall) isLeader() bool    { return c.app().Leader == c.h.c.Unit }
func (c *toolCall) pending() *pending { return &c.h.c.Pending }
func (c *toolCall) info() HookInfo    { return c.h.c.Info }
func (c *toolCall) parse(spec flagSpec) (parsedArgs, error) {
	return parseArgs(c.args, spec)
}

func (c *toolCall) print(p parsedArgs, v any) error {
	format := p.str["format"]
	if format == "" {
		format = "smart"
	}
	b, err := render(format, v)
	if err != nil {
		return err
	}
	c.out.Write(b)
	return nil
}

// readInput reads a --file argument: "-" is stdin (asking the client for it if not sent),
// anything else a path relative to the caller's working directory.
func (c *toolCall) readInput(path string) ([]byte, error) {
	if path == "-" {
		if !c.stdinSet {
			return nil, errNeedStdin
		}
		return c.stdin, nil
	}
	if !filepath.IsAbs(path) && c.dir != "" {
		path = filepath.Join(c.dir, path)
	}
	read := os.ReadFile
	if c.h.ReadFile != nil {
		read = c.h.ReadFile
	}
	b, err := read(path)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return b, nil
}

func noArgs(p parsedArgs, max int) error {
	if len(p.pos) > max {
		return usagef("unrecognized args: %s", quoteList(p.pos[max:]))
	}
	return nil
}

var relationFlag = []any{stringFlag, "relation", "r"}

// relation resolves -r (or the hook's own relation) to a relation this unit takes part in.
func (c *toolCall) relation(p parsedArgs) (*relationState, error) {
	id := c.info().RelationID
	raw, given := p.str["relation"]
	if given {
		id = juju.ParseRelationID(raw)
		if id < 0 {
			return nil, usagef("invalid value %q for option -r: invalid relation id", raw)
		}
	} else if id < 0 {
		return nil, usagef("no relation id specified")
	}
	r, ok := c.m().s.Relations[id]
	// A broken relation is still reachable from its own -broken hook.
	if !ok || !r.hasApp(c.appName()) || (r.Broken && id != c.info().RelationID) {
		if !given {
			raw = strconv.Itoa(id)
		}
		return nil, usagef("invalid value %q for option -r: relation not found", raw)
	}
	return r, nil
}

func (c *toolCall) relChange(id int) *relChange {
	p := c.pending()
	if p.Relations == nil {
		p.Relations = map[int]*relChange{}
	}
	ch, ok := p.Relations[id]
	if !ok {
		ch = &relChange{}
		p.Relations[id] = ch
	}
	return ch
}

// --- leadership, config, status -------------------------------------------------------------

func isLeader(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if err := noArgs(p, 0); err != nil {
		return err
	}
	return c.print(p, c.isLeader())
}

func configGet(c *toolCall) error {
	p, err := c.parse(flags(boolFlag, "all", "a"))
	if err != nil {
		return err
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	all := p.bool["all"]
	if all && len(p.pos) == 1 {
		return usagef("cannot use argument --all together with key %q", p.pos[0])
	}
	cfg := effectiveConfig(c.app(), all)
	if len(p.pos) == 1 {
		return c.print(p, cfg[p.pos[0]]) // missing: null
	}
	return c.print(p, cfg)
}

var validStatuses = []string{"maintenance", "blocked", "waiting", "active"}

func statusSet(c *toolCall) error {
	p, err := c.parse(flags(boolFlag, "application"))
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("invalid args, require <status> [message] [data]")
	}
	if err := noArgs(p, 2); err != nil {
		return err
	}
	if !oneOf(p.pos[0], validStatuses...) {
		return usagef("invalid status %q, expected one of %v", p.pos[0], validStatuses)
	}
	s := Status{Status: p.pos[0]}
	if len(p.pos) == 2 {
		s.Message = p.pos[1]
	}
	if p.bool["application"] {
		if !c.isLeader() {
			return errors.New("setting application status: this unit is not the leader")
		}
		c.app().Status = s
		return nil
	}
	c.unit().Status = s
	return nil
}

func statusGet(c *toolCall) error {
	p, err := c.parse(flags(boolFlag, "application", boolFlag, "include-data"))
	if err != nil {
		return err
	}
	if err := noArgs(p, 0); err != nil {
		return err
	}
	withData := p.bool["include-data"]
	view := func(s Status) map[string]any {
		if !withData {
			return map[string]any{"status": s.Status}
		}
		return map[string]any{"status": s.Status, "message": s.Message, "status-data": map[string]any{}}
	}
	if !p.bool["application"] {
		return c.print(p, view(c.unit().Status))
	}
	if !c.isLeader() {
		return errors.New("finding application status: this unit is not the leader")
	}
	units := map[string]any{}
	for name, u := range c.m().s.Units {
		if u.App == c.appName() && !u.Dead {
			units[name] = view(u.Status)
		}
	}
	app := view(c.app().Status)
	app["units"] = units
	return c.print(p, map[string]any{"application-status": app})
}

func appVersionSet(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("no version specified")
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	c.app().Version = p.pos[0]
	return nil
}

func jujuLog(c *toolCall) error {
	p, err := c.parse(flags(stringFlag, "log-level", "l", boolFlag, "debug"))
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("no message specified")
	}
	level := strings.ToUpper(p.str["log-level"])
	if p.bool["debug"] {
		level = "DEBUG"
	}
	if !oneOf(level, "TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") {
		level = "INFO" // Juju logs an invalid level at INFO, with a warning
	}
	hook := c.info().Hook
	if hook == "" {
		hook = c.info().ActionName
	}
	u := c.unit()
	u.Logs = append(u.Logs, LogLine{Level: level, Message: strings.Join(p.pos, " "), Hook: hook})
	return nil
}

// --- relations -----------------------------------------------------------------------------

func relationIDs(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	endpoint := ""
	if len(p.pos) == 1 {
		endpoint = p.pos[0]
	} else if r, ok := c.m().s.Relations[c.info().RelationID]; ok {
		endpoint = r.endpointOf(c.appName()).Name
	} else {
		return usagef("no endpoint name specified")
	}
	ids := []string{}
	for _, id := range slices.Sorted(maps.Keys(c.m().s.Relations)) {
		r := c.m().s.Relations[id]
		if !r.hasApp(c.appName()) || r.endpointOf(c.appName()).Name != endpoint {
			continue
		}
		// Juju lists a relation until it is dead: in its -broken hook it is still there.
		if r.Broken && id != c.info().RelationID {
			continue
		}
		ids = append(ids, endpoint+":"+strconv.Itoa(id))
	}
	return c.print(p, ids)
}

func relationList(c *toolCall) error {
	p, err := c.parse(flags(append(relationFlag, boolFlag, "app")...))
	if err != nil {
		return err
	}
	if err := noArgs(p, 0); err != nil {
		return err
	}
	r, err := c.relation(p)
	if err != nil {
		return err
	}
	remote := r.remoteOf(c.appName()).App
	if p.bool["app"] {
		return c.print(p, remote)
	}
	units := []string{}
	for _, u := range r.Scope {
		if juju.AppName(u) == remote && u != c.h.c.Unit {
			units = append(units, u)
		}
	}
	return c.print(p, units)
}

func relationGet(c *toolCall) error {
	p, err := c.parse(flags(append(relationFlag, boolFlag, "app")...))
	if err != nil {
		return err
	}
	if err := noArgs(p, 2); err != nil {
		return err
	}
	r, err := c.relation(p)
	if err != nil {
		return err
	}
	key := ""
	if len(p.pos) > 0 && p.pos[0] != "-" {
		key = p.pos[0]
	}
	appMode := p.bool["app"]
	target := ""
	if len(p.pos) == 2 {
		target = p.pos[1]
	} else if r.ID == c.info().RelationID && c.info().RemoteUnit != "" {
		target = c.info().RemoteUnit
	} else if r.ID == c.info().RelationID && c.info().RemoteApp != "" {
		target, appMode = c.info().RemoteApp, true
	} else {
		return usagef("no unit or application specified")
	}
	relKey := RelationInfo{ID: r.ID, Endpoints: r.Endpoints}.Key(c.appName())

	var data map[string]string
	if appMode {
		app := juju.AppName(target)
		if !r.hasApp(app) {
			return fmt.Errorf("cannot read settings for application %q in relation %q: settings not found", app, relKey)
		}
		if app == c.appName() && !r.isPeer() && !c.isLeader() {
			return errors.New("permission denied")
		}
		data = maps.Clone(r.AppData[app])
		if app == c.appName() {
			if ch, ok := c.pending().Relations[r.ID]; ok {
				mergeInto(&data, ch.App)
			}
		}
	} else {
		if !strings.Contains(target, "/") {
			return usagef("expected unit name, got application name %q", target)
		}
		bag, ok := r.UnitData[target]
		if !ok || !r.hasApp(juju.AppName(target)) {
			return fmt.Errorf("cannot read settings for unit %q in relation %q: unit %q: settings not found", target, relKey, target)
		}
		data = maps.Clone(bag)
		if target == c.h.c.Unit {
			if ch, ok := c.pending().Relations[r.ID]; ok {
				mergeInto(&data, ch.Unit)
			}
		}
	}
	if data == nil {
		data = map[string]string{}
	}
	if key != "" {
		v, ok := data[key]
		if !ok {
			return c.print(p, nil)
		}
		return c.print(p, v)
	}
	return c.print(p, data)
}

func mergeInto(dst *map[string]string, changes map[string]string) {
	if *dst == nil {
		*dst = map[string]string{}
	}
	for k, v := range changes {
		if v == "" {
			delete(*dst, k)
		} else {
			(*dst)[k] = v
		}
	}
}

func relationSet(c *toolCall) error {
	p, err := c.parse(flags(append(relationFlag, boolFlag, "app", stringFlag, "file")...))
	if err != nil {
		return err
	}
	r, err := c.relation(p)
	if err != nil {
		return err
	}
	settings, err := c.settings(p, "settings")
	if err != nil {
		return err
	}
	for k := range settings {
		if k == "" {
			return usagef("empty key in relation settings")
		}
	}
	ch := c.relChange(r.ID)
	if p.bool["app"] {
		if !c.isLeader() {
			return errors.New("cannot write relation settings")
		}
		if ch.App == nil {
			ch.App = map[string]string{}
		}
		maps.Copy(ch.App, settings)
		return nil
	}
	if ch.Unit == nil {
		ch.Unit = map[string]string{}
	}
	maps.Copy(ch.Unit, settings)
	return nil
}

// --- ports, network -------------------------------------------------------------------------

func portChange(c *toolCall, open bool) error {
	p, err := c.parse(flags(stringFlag, "endpoints"))
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usagef("expected %s, got %s", "<port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp", quoteList(p.pos))
	}
	port, err := juju.ParsePort(p.pos[0])
	if err != nil {
		return usagef("%v", err)
	}
	c.pending().Ports = append(c.pending().Ports, portOp{Open: open, Port: port.String()})
	return nil
}

func openedPorts(c *toolCall) error {
	p, err := c.parse(flags(boolFlag, "endpoints"))
	if err != nil {
		return err
	}
	if err := noArgs(p, 0); err != nil {
		return err
	}
	ports := []string{}
	for _, port := range c.unit().Ports { // committed only: pending changes are not visible
		if p.bool["endpoints"] {
			port += " (*)"
		}
		ports = append(ports, port)
	}
	return c.print(p, ports)
}

func unitGet(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("no setting specified")
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	if !oneOf(p.pos[0], "private-address", "public-address") {
		return usagef("unknown setting %q", p.pos[0])
	}
	return c.print(p, c.unit().Address)
}

func networkGet(c *toolCall) error {
	p, err := c.parse(flags(append(relationFlag, boolFlag, "ingress-address", boolFlag, "bind-address",
		boolFlag, "egress-subnets", boolFlag, "primary-address")...))
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("no arguments specified")
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	var rel *relationState
	if p.has("relation") {
		if rel, err = c.relation(p); err != nil {
			return err
		}
	}
	binding, u := p.pos[0], c.unit()
	if !c.m().hasBinding(c.app().Meta, binding) {
		return fmt.Errorf("no network config found for binding %q", binding)
	}
	addr := u.bindingAddress(binding)
	ingress := addr
	if rel != nil {
		addr, ingress = u.relationAddresses(rel)
	}
	cidr := addr + "/32"
	if i := strings.LastIndexByte(addr, '.'); i > 0 {
		cidr = addr[:i] + ".0/24"
	}
	switch {
	case p.bool["ingress-address"], p.bool["primary-address"]:
		return c.print(p, ingress)
	case p.bool["egress-subnets"]:
		return c.print(p, []string{ingress + "/32"})
	case p.bool["bind-address"]:
		return c.print(p, addr)
	}
	iface := "eth0"
	if addr != u.Address {
		iface = "eth1" // an address of another space lives on another interface
	}
	return c.print(p, map[string]any{
		"bind-addresses": []any{map[string]any{
			"mac-address": "00:16:3e:00:00:" + fmt.Sprintf("%02x", len(u.Machine)), "interface-name": iface,
			"addresses": []any{map[string]any{"hostname": "", "value": addr, "cidr": cidr}},
		}},
		"egress-subnets":    []string{ingress + "/32"},
		"ingress-addresses": []string{ingress},
	})
}

// --- actions -------------------------------------------------------------------------------

func (c *toolCall) action() (*ActionRecord, error) {
	a, ok := c.m().s.Actions[c.h.c.ActionUUID]
	if !ok {
		return nil, errors.New("not running an action")
	}
	return a, nil
}

func actionGet(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	a, err := c.action()
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return c.print(p, a.Params)
	}
	var v any = a.Params
	for _, seg := range strings.Split(p.pos[0], ".") {
		mp, ok := v.(map[string]any)
		if !ok {
			return c.print(p, nil)
		}
		if v, ok = mp[seg]; !ok {
			return c.print(p, nil)
		}
	}
	return c.print(p, v)
}

func actionSet(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	a, err := c.action()
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("no key=value pairs specified")
	}
	kv := map[string]string{}
	for _, arg := range p.pos {
		k, v, ok := strings.Cut(arg, "=")
		if !ok {
			return usagef("argument %q must be of the form key...=value", arg)
		}
		if err := juju.ValidActionKey(k); err != nil {
			return usagef("%v", err)
		}
		kv[k] = v
	}
	if a.Results == nil { // omitted from JSON when empty
		a.Results = map[string]string{}
	}
	maps.Copy(a.Results, kv)
	return nil
}

func actionFail(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	a, err := c.action()
	if err != nil {
		return err
	}
	a.Status = "failed"
	a.Message = strings.Join(p.pos, " ")
	if a.Message == "" {
		a.Message = "action failed without reason given, check action for errors"
	}
	return nil
}

func actionLog(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	a, err := c.action()
	if err != nil {
		return err
	}
	if len(p.pos) == 0 {
		return usagef("no message specified")
	}
	a.Logs = append(a.Logs, strings.Join(p.pos, " "))
	return nil
}

// --- unit state, resources ----------------------------------------------------------------

func (c *toolCall) stateView() map[string]string {
	view := maps.Clone(c.unit().State)
	for k, v := range c.pending().State {
		if v == nil {
			delete(view, k)
		} else {
			view[k] = *v
		}
	}
	return view
}

func stateGet(c *toolCall) error {
	p, err := c.parse(flags(boolFlag, "strict"))
	if err != nil {
		return err
	}
	if err := noArgs(p, 1); err != nil {
		return err
	}
	view := c.stateView()
	if len(p.pos) == 0 || p.pos[0] == "-" {
		return c.print(p, view)
	}
	v, ok := view[p.pos[0]]
	if !ok && p.bool["strict"] {
		return fmt.Errorf("%q not found", p.pos[0])
	}
	return c.print(p, v) // missing: ""
}

// Controller limits on unit state (contract §8).
const (
	maxStateKey   = 256
	maxStateValue = 64 * 1024
)

func stateSet(c *toolCall) error {
	p, err := c.parse(flags(stringFlag, "file"))
	if err != nil {
		return err
	}
	settings, err := c.settings(p, "state")
	if err != nil {
		return err
	}
	for k, v := range settings {
		if len(k) > maxStateKey {
			return fmt.Errorf("key %q is longer than %d bytes", k[:32]+"…", maxStateKey)
		}
		if len(v) > maxStateValue {
			return fmt.Errorf("value of key %q is longer than %d bytes", k, maxStateValue)
		}
	}
	pend := c.pending()
	if pend.State == nil {
		pend.State = map[string]*string{}
	}
	for k, v := range settings {
		if v == "" {
			pend.State[k] = nil
		} else {
			pend.State[k] = &v
		}
	}
	return nil
}

func stateDelete(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usagef("expected one key, got %s", quoteList(p.pos))
	}
	pend := c.pending()
	if pend.State == nil {
		pend.State = map[string]*string{}
	}
	pend.State[p.pos[0]] = nil
	return nil
}

func resourceGet(c *toolCall) error {
	p, err := c.parse(flags())
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usagef("expected one resource name, got %s", quoteList(p.pos))
	}
	path, ok := c.app().Resources[p.pos[0]]
	if !ok {
		return fmt.Errorf("could not download resource: resource %q not found", p.pos[0])
	}
	c.out.WriteString(path + "\n")
	return nil
}

// settings merges the --file input (YAML or JSON, "-" for stdin) with key=value arguments, which
// override it: relation-set and state-set share this syntax (juju-contract §2.2).
func (c *toolCall) settings(p parsedArgs, what string) (map[string]string, error) {
	settings := map[string]string{}
	if f, ok := p.str["file"]; ok {
		b, err := c.readInput(f)
		if err != nil {
			return nil, err
		}
		if settings, err = parseSettings(b); err != nil {
			return nil, usagef("cannot parse %s file: %v", what, err)
		}
	}
	kv, err := parseKeyValues(p.pos)
	if err != nil {
		return nil, err
	}
	maps.Copy(settings, kv)
	return settings, nil
}
