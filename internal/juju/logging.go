package juju

import (
	"context"
	"fmt"
	"unicode/utf8"
)

// LogLevel is a juju-log level.
type LogLevel string

const (
	LogTrace   LogLevel = "TRACE"
	LogDebug   LogLevel = "DEBUG"
	LogInfo    LogLevel = "INFO"
	LogWarning LogLevel = "WARNING"
	LogError   LogLevel = "ERROR"
)

// maxArgLen is the longest single argv string Linux accepts (MAX_ARG_STRLEN is 128 KiB
// including the terminating NUL); ops splits juju-log messages at the same size.
const maxArgLen = 128*1024 - 1

// Log sends msg to the unit's log in `juju debug-log`. A message too long for one argv string is
// sent in several calls, split on UTF-8 boundaries. Never log secret values.
func (c *Client) Log(ctx context.Context, level LogLevel, msg string) error {
	for _, part := range splitArg(msg, maxArgLen) {
		if _, err := c.run(ctx, toolJujuLog, []string{"--log-level", string(level), endOfFlags, part}, nil); err != nil {
			return fmt.Errorf("writing to the juju log: %w", err)
		}
	}
	return nil
}

// splitArg cuts s into pieces of at most n bytes without splitting a UTF-8 sequence.
// An empty s is one empty piece: juju-log then still records the (empty) line.
func splitArg(s string, n int) []string {
	if len(s) <= n {
		return []string{s}
	}
	var parts []string
	for len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if cut == 0 {
			cut = n // not UTF-8 at all: cut anywhere rather than loop forever
		}
		parts = append(parts, s[:cut])
		s = s[cut:]
	}
	if s != "" {
		parts = append(parts, s)
	}
	return parts
}
