package bed

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelperDeadBed is not a test: TestSweepDeadBed runs the test binary with this test selected
// and BED_HELPER_STATE set, to own a bed in another process and be SIGKILLed.
func TestHelperDeadBed(t *testing.T) {
	state := os.Getenv("BED_HELPER_STATE")
	if state == "" {
		t.Skip("helper process for TestSweepDeadBed")
	}
	b := New(t, Options{StateDir: state})
	m, err := b.Boot(context.Background(), MachineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready " + m.Name + "\n")
	time.Sleep(time.Minute)
}

// TestSweepDeadBed covers `go test -timeout` and SIGKILL: cleanups never run, the container
// outlives its nspawn parent, and the next bed must remove everything the dead one left.
func TestSweepDeadBed(t *testing.T) {
	Require(t)
	state := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDeadBed$", "-test.v")
	cmd.Env = append(os.Environ(), "BED_HELPER_STATE="+state)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- name
			}
		}
		close(ready)
	}()
	var name string
	select {
	case name = <-ready:
	case <-time.After(2 * time.Minute):
	}
	if name == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper bed never became ready")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	recs, _ := filepath.Glob(filepath.Join(state, "beds", "*.json"))
	if len(recs) != 1 {
		t.Fatalf("records after the kill: %v; want 1", recs)
	}
	data, _ := os.ReadFile(recs[0])
	var rec bedRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	if err := Sweep(state); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if linkExists(rec.Bridge) {
		t.Errorf("bridge %s survived the sweep", rec.Bridge)
	}
	if fileExists(recs[0]) {
		t.Errorf("record %s survived the sweep", recs[0])
	}
	if mps, _ := mountsUnder(rec.Dir); len(mps) > 0 {
		t.Errorf("mounts survived the sweep: %v", mps)
	}
	for _, m := range rec.Machines {
		for _, p := range m.Procs {
			if p.alive() {
				t.Errorf("process %d of %s survived the sweep", p.PID, m.Name)
			}
		}
		for _, cg := range m.Cgroups {
			if fileExists(cg) {
				t.Errorf("cgroup %s survived the sweep", cg)
			}
		}
	}
	if fileExists(rec.Dir) {
		t.Errorf("bed directory %s survived the sweep", rec.Dir)
	}
}
