package concourse

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// SplitFlags splits an operator's extra command-line flags for `concourse
// web` into words the way a POSIX shell would, but without any expansion:
// single quotes are literal, double quotes honour `\"` `\\` `\$` "\\`", an
// unquoted backslash keeps the next character, and `$`, `*`, `~` stay as
// they are. Each word becomes one argv element (units.go quotes it for
// systemd), so a value can never smuggle in another directive (reference
// weakness #23: the flags were spliced into ExecStart unescaped).
//
// It refuses what cannot be meant: unbalanced quotes, a trailing backslash,
// newlines or other control characters, a first word that is not a flag,
// a bare "--" (web takes no positional arguments), and --version/--help,
// which make `concourse web` print and exit 0 so systemd would never restart
// it. An empty or blank string yields no words.
func SplitFlags(s string) ([]string, error) {
	if !utf8.ValidString(s) {
		return nil, errors.New("extra flags are not valid UTF-8")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r != '\t' && isControl(r) }) {
		return nil, errors.New("extra flags contain a newline or another control character: put all flags on one line")
	}
	var (
		words   []string
		cur     strings.Builder
		inWord  bool
		escaped bool
		quote   rune // 0, '\'' or '"'
	)
	for _, r := range s {
		switch {
		case escaped:
			escaped = false
			if quote == '"' && r != '"' && r != '\\' && r != '$' && r != '`' {
				// Inside double quotes a backslash before anything else is
				// kept, as in a shell.
				cur.WriteByte('\\')
			}
			cur.WriteRune(r)
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case quote == '"':
			switch r {
			case '"':
				quote = 0
			case '\\':
				escaped = true
			default:
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	switch {
	case escaped:
		return nil, errors.New("extra flags end with a lone backslash")
	case quote != 0:
		return nil, fmt.Errorf("extra flags have an unbalanced %c quote", quote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, nil
	}
	if !strings.HasPrefix(words[0], "-") || words[0] == "-" {
		return nil, fmt.Errorf("extra flags must start with a flag such as --gc-interval=5m, not %q", words[0])
	}
	for _, w := range words {
		name, _, _ := strings.Cut(w, "=")
		switch name {
		case "--":
			return nil, errors.New(`extra flags may not contain "--": concourse web takes no arguments`)
		case "--version", "-v", "--help", "-h":
			return nil, fmt.Errorf("extra flag %s makes concourse web print and exit instead of serving", name)
		}
	}
	return words, nil
}
