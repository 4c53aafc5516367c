package jujutest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// usageError is a bad flag or argument: exit 2, like gnuflag/cmd in Juju (contract §2.1).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errNeedStdin is what the jujuc server answers when a tool reads stdin the client did not send
// (contract §3.1); the client retries with StdinSet.
var errNeedStdin = errors.New("hook tool requires stdin, none supplied")

// flagKind says whether a flag takes a value.
type flagKind int

const (
	boolFlag flagKind = iota
	stringFlag
)

// flagSpec maps each accepted flag name (without dashes; aliases included) to its kind and
// canonical name.
type flagSpec map[string]flagDef

type flagDef struct {
	kind  flagKind
	canon string
}

func flags(defs ...any) flagSpec {
	// defs: kind, "name", "alias"... , kind, "name", ...
	spec := flagSpec{}
	var kind flagKind
	canon := ""
	for _, d := range defs {
		switch v := d.(type) {
		case flagKind:
			kind, canon = v, ""
		case string:
			if canon == "" {
				canon = v
			}
			spec[v] = flagDef{kind: kind, canon: canon}
		}
	}
	return spec
}

// parsedArgs is a parsed command line: flags by canonical name, positionals in order.
type parsedArgs struct {
	str  map[string]string
	set  map[string]bool
	pos  []string
	bool map[string]bool
}

func (p parsedArgs) has(name string) bool { return p.set[name] }

// parseArgs parses like gnuflag with interspersed flags, which Juju's hook tools use:
// "--name=value", "--name value", "-r 3", "-r=3", bare "-" is a positional, "--" ends flags.
// "--format" is accepted by every tool (some only print a deprecation note for it in Juju).
func parseArgs(args []string, spec flagSpec) (parsedArgs, error) {
	p := parsedArgs{str: map[string]string{}, set: map[string]bool{}, bool: map[string]bool{}}
	if _, ok := spec["format"]; !ok {
		spec["format"] = flagDef{kind: stringFlag, canon: "format"}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.pos = append(p.pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			p.pos = append(p.pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if n, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = n, v, true
		}
		def, ok := spec[name]
		if !ok {
			return p, usagef("flag provided but not defined: %s", strings.SplitN(a, "=", 2)[0])
		}
		p.set[def.canon] = true
		if def.kind == boolFlag {
			b := true
			if hasValue {
				var err error
				if b, err = strconv.ParseBool(value); err != nil {
					return p, usagef("invalid value %q for flag %s: parse error", value, a)
				}
			}
			p.bool[def.canon] = b
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return p, usagef("flag needs an argument: %s", a)
			}
			i++
			value = args[i]
		}
		p.str[def.canon] = value
	}
	if f, ok := p.str["format"]; ok && f != "json" && f != "yaml" && f != "smart" {
		return p, usagef("invalid value %q for option --format: unknown format %q", f, f)
	}
	return p, nil
}

// render prints v in the requested format: JSON (one document and a newline), YAML, or "smart"
// (strings raw, booleans True/False, lists one per line, maps as YAML), Juju's default.
func render(format string, v any) ([]byte, error) {
	switch format {
	case "json":
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	case "yaml":
		if v == nil {
			return nil, nil
		}
		return yaml.Marshal(v)
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(x + "\n"), nil
	case bool:
		if x {
			return []byte("True\n"), nil
		}
		return []byte("False\n"), nil
	case []string:
		if len(x) == 0 {
			return nil, nil
		}
		return []byte(strings.Join(x, "\n") + "\n"), nil
	}
	return yaml.Marshal(v)
}

// parseKeyValues parses "k=v" arguments.
func parseKeyValues(args []string) (map[string]string, error) {
	kv := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("expected \"key=value\", got %q", a)
		}
		kv[k] = v
	}
	return kv, nil
}

// parseSettings parses a YAML (or JSON) map of strings as relation-set/state-set --file read it.
// A null value becomes "" (delete).
func parseSettings(b []byte) (map[string]string, error) {
	var raw map[string]*string
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range raw {
		if v == nil {
			out[k] = ""
		} else {
			out[k] = *v
		}
	}
	return out, nil
}

func quoteList(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, " ") + "]"
}

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }
