package concourse

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{"   \t ", nil, ""},
		{"--gc-interval=5m", []string{"--gc-interval=5m"}, ""},
		{"  --a=1   --b 2\t--c ", []string{"--a=1", "--b", "2", "--c"}, ""},
		{`--cluster-name 'my CI' --x="a b"`, []string{"--cluster-name", "my CI", "--x=a b"}, ""},
		{`--x="say \"hi\" \$HOME \\ \n"`, []string{`--x=say "hi" $HOME \ \n`}, ""},
		{`--x='$HOME \n "q"'`, []string{`--x=$HOME \n "q"`}, ""},
		{`--x=a\ b --y=\'`, []string{"--x=a b", "--y='"}, ""},
		{`--x=$HOME --y=* --z=~`, []string{"--x=$HOME", "--y=*", "--z=~"}, ""}, // no expansion
		{`--x=%i`, []string{"--x=%i"}, ""},
		{`--x=''`, []string{"--x="}, ""},
		{`--x ""`, []string{"--x", ""}, ""},
		{`--x="a`, nil, "unbalanced \" quote"},
		{`--x='a`, nil, "unbalanced ' quote"},
		{`--x=a\`, nil, "lone backslash"},
		{"--x=a\n--y=b", nil, "newline"},
		{"--x='a\nb'", nil, "newline"},
		{"gc-interval=5m", nil, "must start with a flag"},
		{"- --x", nil, "must start with a flag"},
		{"--x -- y", nil, `"--"`},
		{"--version", nil, "print and exit"},
		{"--a=1 --help", nil, "print and exit"},
		{"--a=1 -h", nil, "print and exit"},
	} {
		got, err := SplitFlags(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("SplitFlags(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("SplitFlags(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzSplitFlags: whatever SplitFlags accepts, shell-quoting the words again
// and splitting them gives the same words.
func FuzzSplitFlags(f *testing.F) {
	for _, s := range []string{`--a=1 --b "c d"`, `--x='y z' \"`, `--x="\$a\\"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := SplitFlags(s)
		if err != nil {
			return
		}
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+strings.ReplaceAll(w, "'", `'\''`)+"'")
		}
		again, err := SplitFlags(strings.Join(quoted, " "))
		if err != nil || !slices.Equal(again, words) {
			t.Fatalf("SplitFlags(%q) = %q; re-split gives %q, %v", s, words, again, err)
		}
	})
}

func TestSplitFlagsRejectsInvalidUTF8(t *testing.T) {
	t.Parallel()
	if _, err := SplitFlags("--x=\xff"); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("SplitFlags with invalid UTF-8 = %v", err)
	}
}
