package main

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Log levels in lager's order. Concourse has no "warn" (§2.3: debug|info|error|fatal).
const (
	levelDebug = iota
	levelInfo
	levelError
	levelFatal
)

var levelNames = [...]string{"debug", "info", "error", "fatal"}

// logger writes lager-style JSON lines (§2.4): the charm and its tests read these lines, so the shape
// matters more than the wording. It is a value type; the writer and its mutex are shared so lines from
// concurrent goroutines never interleave.
type logger struct {
	out    *lockedWriter
	min    int
	source string
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func newLogger(w io.Writer, source string, min int) logger {
	return logger{out: &lockedWriter{w: w}, min: min, source: source}
}

// withSource returns a logger sharing the same output but tagging lines with another component
// ("atc", "tsa"), as the real web process does for its sub-runners.
func (l logger) withSource(source string) logger {
	l.source = source
	return l
}

type logData map[string]any

func (l logger) log(level int, message string, data logData) {
	if level < l.min {
		return
	}
	if data == nil {
		data = logData{}
	}
	line, err := json.Marshal(struct {
		Timestamp string  `json:"timestamp"`
		Level     string  `json:"level"`
		Source    string  `json:"source"`
		Message   string  `json:"message"`
		Data      logData `json:"data"`
	}{time.Now().UTC().Format(time.RFC3339Nano), levelNames[level], l.source, message, data})
	if err != nil {
		// Only unmarshalable data can fail; keep the line rather than lose the event.
		line = []byte(`{"level":"error","message":"` + message + `","data":{}}`)
	}
	l.out.mu.Lock()
	defer l.out.mu.Unlock()
	_, _ = l.out.w.Write(append(line, '\n'))
}

func (l logger) Debug(message string, data logData) { l.log(levelDebug, message, data) }
func (l logger) Info(message string, data logData)  { l.log(levelInfo, message, data) }

// Error logs err under "error", lager's key for it.
func (l logger) Error(message string, err error, data logData) {
	if data == nil {
		data = logData{}
	}
	if err != nil {
		data["error"] = err.Error()
	}
	l.log(levelError, message, data)
}

func parseLevel(s string) int {
	for i, n := range levelNames {
		if n == s {
			return i
		}
	}
	return levelInfo
}
