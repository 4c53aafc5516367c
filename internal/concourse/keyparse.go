package concourse

import (
	"bytes"
	"errors"
	"strings"

	"golang.org/x/crypto/ssh"
)

// CanonicalPublicKey reads s as exactly one SSH public key in authorized_keys
// form ("ssh-rsa AAAA… [comment]") and returns it re-marshalled, without the
// comment and without a trailing newline, which is what the TSA files hold.
//
// Public keys reach the charm from other units' relation data (the worker's
// key the TSA authorizes, the TSA's host key a worker trusts), and over tsa
// from another application, so anything else is refused: a second key (a
// newline would authorize it too), authorized_keys options such as
// command="…" or from="…", a certificate, a private key. Errors describe the
// problem without repeating the value, which may be secret.
func CanonicalPublicKey(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", errors.New("it is empty")
	case strings.Contains(s, "PRIVATE KEY"):
		// Checked first: the message must say so rather than "not a key", and the
		// parser's error must not be what an operator copies around.
		return "", errors.New("it is a private key, which must never leave its unit: publish the public half")
	case strings.ContainsAny(s, "\n\r"):
		return "", errors.New("it has more than one line: exactly one key is accepted")
	}
	pub, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return "", errors.New("it is not an SSH public key in authorized_keys form (ssh-rsa AAAA…)")
	}
	if len(options) > 0 {
		// Option names only, and only a few short ones: the values (a command, a
		// source address list) are the other side's and may be anything.
		var names []string
		for _, o := range options[:min(len(options), 3)] {
			name, _, _ := strings.Cut(o, "=")
			if len(name) > 16 {
				name = name[:16] + "…"
			}
			names = append(names, name)
		}
		return "", errors.New("it carries authorized_keys options (" + strings.Join(names, ",") + "): only a bare key is accepted")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return "", errors.New("it has more than one key: exactly one key is accepted")
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return "", errors.New("it is an SSH certificate, not a plain public key")
	}
	return strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pub)), "\n"), nil
}
