package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// demoTB is the testing.TB the bed, pgtest and the release builder need, outside `go test`.
//
// testing.TB has an unexported method, so the interface is embedded (nil) to satisfy it; every
// method those packages call is implemented below (Helper, Log(f), Error(f), Fatal(f), Fail(Now),
// Failed, Skip(f/Now), Skipped, Cleanup, TempDir, Name). One they do not call today would panic
// on the nil interface: loud, never silent. Fatal and Skip end the calling goroutine with
// runtime.Goexit, as in a test, so the body must run in its own goroutine (run does that).
type demoTB struct {
	testing.TB

	name string
	out  io.Writer
	base string // parent of every TempDir, removed after the cleanups

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	skipped  bool
	tmpN     int
}

func newDemoTB(name string, out io.Writer) (*demoTB, error) {
	base, err := os.MkdirTemp("", "ccm-demo-")
	if err != nil {
		return nil, err
	}
	return &demoTB{name: name, out: out, base: base}, nil
}

// run calls body in a goroutine and waits for it to return, Fatal or panic.
func (t *demoTB) run(body func(t *demoTB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("panic: %v", p)
			}
		}()
		body(t)
	}()
	<-done
}

// finish runs the cleanups, last registered first (the bed's teardown and its leak check are
// among them), then removes the temporary directories.
func (t *demoTB) finish() {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("panic in cleanup: %v", p)
				}
			}()
			f()
		}()
	}
	if err := os.RemoveAll(t.base); err != nil {
		t.Errorf("removing %s: %v", t.base, err)
	}
}

func (t *demoTB) Helper()      {}
func (t *demoTB) Name() string { return t.name }

func (t *demoTB) Log(args ...any) { t.Logf("%s", fmt.Sprintln(args...)) }
func (t *demoTB) Logf(format string, args ...any) {
	fmt.Fprintf(t.out, "    · %s\n", trimNL(fmt.Sprintf(format, args...)))
}

func (t *demoTB) Error(args ...any) { t.Errorf("%s", fmt.Sprintln(args...)) }
func (t *demoTB) Errorf(format string, args ...any) {
	fmt.Fprintf(t.out, "    ✗ %s\n", trimNL(fmt.Sprintf(format, args...)))
	t.Fail()
}

func (t *demoTB) Fatal(args ...any)                 { t.Error(args...); t.FailNow() }
func (t *demoTB) Fatalf(format string, args ...any) { t.Errorf(format, args...); t.FailNow() }

func (t *demoTB) Fail() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
}

func (t *demoTB) FailNow() { t.Fail(); runtime.Goexit() }

func (t *demoTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *demoTB) Skip(args ...any)                 { t.Log(args...); t.SkipNow() }
func (t *demoTB) Skipf(format string, args ...any) { t.Logf(format, args...); t.SkipNow() }

func (t *demoTB) SkipNow() {
	t.mu.Lock()
	t.skipped = true
	t.mu.Unlock()
	runtime.Goexit()
}

func (t *demoTB) Skipped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.skipped
}

func (t *demoTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *demoTB) TempDir() string {
	t.mu.Lock()
	t.tmpN++
	dir := filepath.Join(t.base, fmt.Sprintf("%03d", t.tmpN))
	t.mu.Unlock()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	return dir
}

func trimNL(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}
