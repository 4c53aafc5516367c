package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// This file reproduces the parts of jessevdk/go-flags v1.6.1 and concourse's flag types that a charm
// can observe: env names, precedence, comma lists, and the exact error strings of contract §2.1. A
// small table-driven parser is enough because the fake only needs the options a charm renders, and
// it keeps the module's dependency list to what DEVELOPERS.md allows.

// environment is the process environment as a map. Known keys are deleted after parsing (§2.1
// "Known vars after parse"), which is what the leftover-runtime check in `worker` relies on.
type environment struct {
	vals map[string]string
}

func newEnvironment(kv []string) *environment {
	e := &environment{vals: make(map[string]string, len(kv))}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		e.vals[k] = v
	}
	return e
}

func (e *environment) lookup(k string) (string, bool) {
	v, ok := e.vals[k]
	return v, ok
}

func (e *environment) get(k string) string { return e.vals[k] }

func (e *environment) unset(k string) { delete(e.vals, k) }

// withPrefix lists the keys starting with p, sorted so error messages are stable.
func (e *environment) withPrefix(p string) []string {
	var out []string
	for k := range e.vals {
		if strings.HasPrefix(k, p) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

type kind int

const (
	kString kind = iota
	kStrings
	kBool
	kUint16
	kUint64
	kInt
	kDuration
	kIP
	kURL
	kURLs
	kPrivateKey
	kAuthorizedKeys
	kFile
	kDir
	kCipher
	kCipherBase64 // 8.2+ --encryption-key-base64
	kCipherHex    // 8.2+ --encryption-key-hex
)

// typeNames are what go-flags prints after "expected" (the Go type of the struct field).
var typeNames = map[kind]string{
	kString: "string", kStrings: "[]string", kBool: "bool", kUint16: "uint16", kUint64: "uint64",
	kInt: "int", kDuration: "time.Duration", kIP: "flag.IP", kURL: "flag.URL", kURLs: "[]flag.URL",
	kPrivateKey: "*flag.PrivateKey", kAuthorizedKeys: "flag.AuthorizedKeys", kFile: "flag.File",
	kDir: "flag.Dir", kCipher: "flag.Cipher", kCipherBase64: "flag.Cipher", kCipherHex: "flag.Cipher",
}

func (k kind) isList() bool { return k == kStrings || k == kURLs }

type option struct {
	long     string
	short    byte
	kind     kind
	def      string
	choices  []string
	required bool
	env      string // overrides CONCOURSE_<LONG>; "-" means the option has no env var
	since    [2]int // first release line with this option; zero means every line
	passive  bool   // accepted as the real binary does, but the stand-in never acts on it
}

// String is the option's name as go-flags prints it in messages: "-t, --type" or "--bind-port".
func (o option) String() string {
	if o.short != 0 {
		return fmt.Sprintf("-%c, --%s", o.short, o.long)
	}
	return "--" + o.long
}

// envName follows §2.1: CONCOURSE_ + long name (with namespace) upper-cased, "-" → "_".
func (o option) envName() string {
	if o.env != "" {
		return o.env
	}
	return "CONCOURSE_" + strings.ToUpper(strings.ReplaceAll(o.long, "-", "_"))
}

func (o option) availableIn(f flavour) bool {
	return o.since == [2]int{} || f.atLeast(o.since[0], o.since[1])
}

// parsed holds converted values by long name. set records options given on the command line or in
// the environment (not defaults), which the commands need for "only when both are set" rules.
type parsed struct {
	vals map[string]any
	raw  map[string]string // last raw text per option, e.g. a key file's path for SIGHUP reloads
	set  map[string]bool
	args []string
}

func (p *parsed) str(n string) string { s, _ := p.vals[n].(string); return s }
func (p *parsed) strs(n string) []string {
	s, _ := p.vals[n].([]string)
	return s
}
func (p *parsed) boolean(n string) bool             { b, _ := p.vals[n].(bool); return b }
func (p *parsed) integer(n string) int64            { i, _ := p.vals[n].(int64); return i }
func (p *parsed) duration(n string) time.Duration   { d, _ := p.vals[n].(time.Duration); return d }
func (p *parsed) ip(n string) net.IP                { ip, _ := p.vals[n].(net.IP); return ip }
func (p *parsed) key(n string) *rsa.PrivateKey      { k, _ := p.vals[n].(*rsa.PrivateKey); return k }
func (p *parsed) authKeys(n string) []ssh.PublicKey { k, _ := p.vals[n].([]ssh.PublicKey); return k }
func (p *parsed) isSet(n string) bool               { return p.set[n] }

// hostPort joins an IP option and a port option the way net.Listen wants them.
func (p *parsed) hostPort(ipName, portName string) string {
	return net.JoinHostPort(p.ip(ipName).String(), strconv.FormatInt(p.integer(portName), 10))
}

// parseError is a go-flags error: printed as "error: <msg>", exit 1.
type parseError struct{ msg string }

func (e *parseError) Error() string { return e.msg }

func errorf(format string, args ...any) error { return &parseError{fmt.Sprintf(format, args...)} }

// parseOptions applies argv, then env, then defaults (§2.1 precedence), converts every value, checks
// required options, and finally unsets every known env var.
func parseOptions(opts []option, args []string, env *environment, f flavour) (*parsed, error) {
	var active []option
	byLong := map[string]option{}
	byShort := map[byte]option{}
	for _, o := range opts {
		if !o.availableIn(f) {
			continue
		}
		active = append(active, o)
		byLong[o.long] = o
		if o.short != 0 {
			byShort[o.short] = o
		}
	}
	p := &parsed{vals: map[string]any{}, raw: map[string]string{}, set: map[string]bool{}}
	fromArgv := map[string]bool{}

	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.args = append(p.args, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			p.args = append(p.args, a)
			continue
		}
		var o option
		var found bool
		var value string
		hasValue := false
		if strings.HasPrefix(a, "--") {
			name := a[2:]
			if n, v, ok := strings.Cut(name, "="); ok {
				name, value, hasValue = n, v, true
			}
			o, found = byLong[name]
			if !found {
				return nil, errorf("unknown flag `%s'", name)
			}
		} else {
			o, found = byShort[a[1]]
			if !found {
				return nil, errorf("unknown flag `%c'", a[1])
			}
			if len(a) > 2 {
				value, hasValue = strings.TrimPrefix(a[2:], "="), true
			}
		}
		if o.kind == kBool {
			if hasValue {
				return nil, errorf("bool flag `%s' cannot have an argument", o)
			}
			value = "true"
		} else if !hasValue {
			if i+1 >= len(args) {
				return nil, errorf("expected argument for flag `%s'", o)
			}
			i++
			value = args[i]
		}
		if err := setOption(p, o, value, !fromArgv[o.long]); err != nil {
			return nil, err
		}
		fromArgv[o.long] = true
		p.set[o.long] = true
	}

	// go-flags reports the env/default error of the last option it visits; we keep the first one,
	// which only matters when several env values are malformed at once. The real binary checks
	// required flags before it reports an env error (seen: `CONCOURSE_BIND_PORT=x concourse web`
	// names the missing --tsa-host-key), so the error waits until after that check.
	var envErr error
	for _, o := range active {
		if fromArgv[o.long] {
			continue
		}
		raw, ok := "", false
		if o.env != "-" {
			raw, ok = env.lookup(o.envName())
		}
		if ok {
			p.set[o.long] = true
		} else if o.def != "" {
			raw = o.def
		} else {
			continue
		}
		if err := setFromEnv(p, o, raw); err != nil && envErr == nil {
			envErr = err
		}
	}

	var missing []string
	for _, o := range active {
		if o.required && !p.set[o.long] {
			missing = append(missing, "`"+o.String()+"'")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		if len(missing) == 1 {
			return nil, errorf("the required flag %s was not specified", missing[0])
		}
		return nil, errorf("the required flags %s and %s were not specified",
			strings.Join(missing[:len(missing)-1], ", "), missing[len(missing)-1])
	}
	if envErr != nil {
		return nil, envErr
	}
	// go-flags converts the env values of every subcommand's options, not just this one's: a
	// malformed CONCOURSE_BIND_PORT (a web option) aborts `concourse migrate` too.
	if err := checkForeignEnv(env, f, active); err != nil {
		return nil, err
	}

	for _, o := range active {
		if o.env != "-" {
			env.unset(o.envName())
		}
	}
	return p, nil
}

// setFromEnv sets o from an env value or default: lists split on ',' (§2.1).
func setFromEnv(p *parsed, o option, raw string) error {
	values := []string{raw}
	if o.kind.isList() {
		values = strings.Split(raw, ",")
	}
	for i, v := range values {
		if err := setOption(p, o, v, i == 0); err != nil {
			return err
		}
	}
	return nil
}

// checkForeignEnv converts the env values of the options of every other subcommand (those not in
// active), as go-flags does on every invocation, and returns the first conversion error.
func checkForeignEnv(env *environment, f flavour, active []option) error {
	handled := map[string]bool{}
	for _, o := range active {
		handled[o.envName()] = true
	}
	scratch := &parsed{vals: map[string]any{}, raw: map[string]string{}, set: map[string]bool{}}
	for _, cmd := range commandNames {
		for _, o := range commandOptions(cmd, f) {
			if o.env == "-" || !o.availableIn(f) || handled[o.envName()] {
				continue
			}
			if raw, ok := env.lookup(o.envName()); ok {
				if err := setFromEnv(scratch, o, raw); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// setOption validates a choice, converts the value, and stores it (appending for lists).
func setOption(p *parsed, o option, raw string, first bool) error {
	if len(o.choices) > 0 && !contains(o.choices, raw) {
		allowed := strings.Join(o.choices[:len(o.choices)-1], ", ")
		if len(o.choices) > 1 {
			allowed += " or " + o.choices[len(o.choices)-1]
		}
		return errorf("Invalid value `%s' for option `%s'. Allowed values are: %s", raw, o, allowed)
	}
	v, err := convert(o.kind, raw)
	if err != nil {
		return errorf("invalid argument for flag `%s' (expected %s): %s", o, typeNames[o.kind], err)
	}
	p.raw[o.long] = raw
	if o.kind.isList() {
		var cur []string
		if !first {
			cur = p.strs(o.long)
		}
		p.vals[o.long] = append(cur, v.(string))
		return nil
	}
	p.vals[o.long] = v
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// convert turns one raw value into its typed form with the error texts of the real converters.
func convert(k kind, raw string) (any, error) {
	switch k {
	case kString, kStrings:
		return raw, nil
	case kBool:
		// go-flags treats an empty value as true; anything else goes through ParseBool.
		if raw == "" {
			return true, nil
		}
		return strconv.ParseBool(raw)
	case kUint16:
		n, err := strconv.ParseUint(raw, 10, 16)
		return int64(n), err
	case kUint64:
		n, err := strconv.ParseUint(raw, 10, 64)
		return int64(n), err
	case kInt:
		n, err := strconv.ParseInt(raw, 10, 64)
		return n, err
	case kDuration:
		return time.ParseDuration(raw)
	case kIP:
		ip := net.ParseIP(raw)
		if ip == nil {
			return nil, fmt.Errorf("invalid IP: '%s'", raw)
		}
		return ip, nil
	case kURL, kURLs:
		v := strings.TrimRight(raw, "/")
		u, err := url.Parse(v)
		if err != nil {
			return nil, err
		}
		if u.Scheme == "" {
			return nil, fmt.Errorf("missing scheme in '%s'", v)
		}
		return v, nil
	case kPrivateKey:
		blob, err := os.ReadFile(raw)
		if err != nil {
			return nil, fmt.Errorf("failed to read private key file (%s): %s", raw, err)
		}
		return parseRSAPrivateKeyFromPEM(blob)
	case kAuthorizedKeys:
		blob, err := os.ReadFile(raw)
		if err != nil {
			return nil, fmt.Errorf("failed to read authorized keys: %s", err)
		}
		return parseAuthorizedKeys(blob), nil
	case kFile:
		st, err := os.Stat(raw)
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			return nil, fmt.Errorf("path '%s' is a directory, not a file", raw)
		}
		return filepath.Abs(raw)
	case kDir:
		if st, err := os.Stat(raw); err == nil && !st.IsDir() {
			return nil, fmt.Errorf("path '%s' is not a directory", raw)
		}
		return filepath.Abs(raw)
	case kCipher:
		return newAEAD([]byte(raw))
	case kCipherBase64:
		// [I] 8.2+ decodes before building the cipher; the decode wording is ours.
		b, err := decodeBase64(raw)
		if err != nil {
			return nil, fmt.Errorf("failed to decode base64 key: %s", err)
		}
		return newAEAD(b)
	case kCipherHex:
		b, err := decodeHex(raw)
		if err != nil {
			return nil, fmt.Errorf("failed to decode hex key: %s", err)
		}
		return newAEAD(b)
	}
	return nil, fmt.Errorf("internal error: no converter for kind %d", k)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("failed to construct AES cipher: %s", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("failed to construct AES-GCM: %s", err)
	}
	return aead, nil
}

// Errors of golang-jwt's ParseRSAPrivateKeyFromPEM, which concourse's flag.PrivateKey uses.
var (
	errKeyMustBePEMEncoded = errors.New("invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key")
	errNotRSAPrivateKey    = errors.New("key is not a valid RSA private key")
)

// parseRSAPrivateKeyFromPEM mirrors golang-jwt: first PEM block only, its type ignored, PKCS#1 then
// PKCS#8, RSA only (§4). The PKCS#8 error is returned as is, which yields the asn1 "tags don't
// match" text for OpenSSH-format keys.
func parseRSAPrivateKeyFromPEM(blob []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(blob)
	if block == nil {
		return nil, errKeyMustBePEMEncoded
	}
	var parsed any
	parsed, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		if parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
			return nil, err
		}
	}
	k, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, errNotRSAPrivateKey
	}
	return k, nil
}

// parseAuthorizedKeys keeps every parseable authorized_keys line; ssh.ParseAuthorizedKey skips bad
// lines itself and fails only when none is left, so garbage yields zero keys rather than an error.
func parseAuthorizedKeys(blob []byte) []ssh.PublicKey {
	var keys []ssh.PublicKey
	for len(blob) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(blob)
		if err != nil {
			break
		}
		keys = append(keys, k)
		blob = rest
	}
	return keys
}

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
func decodeHex(s string) ([]byte, error)    { return hex.DecodeString(s) }
