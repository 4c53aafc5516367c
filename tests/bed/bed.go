package bed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

// Options tunes a Bed. The zero value gives the defaults.
type Options struct {
	Rootfs RootfsOptions
	// StateDir defaults to $CCM_TESTBED_STATE, then DefaultStateDir.
	StateDir string
	// BootTimeout bounds one container's boot; default 60 s.
	BootTimeout time.Duration
	// StopTimeout bounds the orderly poweroff before the container is killed; default 10 s.
	StopTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.StateDir == "" {
		o.StateDir = os.Getenv("CCM_TESTBED_STATE")
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 60 * time.Second
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	return o
}

// subnetPrefix is the private range beds take their /24s from: 10.231.<n>.0/24, n in 0..255.
const subnetPrefix = "10.231."

// Bed is one test's network and containers. Create it with New; it tears itself down in
// t.Cleanup and fails the test if anything it created is left behind.
type Bed struct {
	t      testing.TB
	opts   Options
	id     string // 4 hex digits, in every name the bed creates
	dir    string // host directory holding machine roots and overlay layers
	rootfs string

	bridge     string
	subnet     int // third octet
	subnetLock *flock.Flock
	ownerLock  *flock.Flock
	recordPath string

	mu       sync.Mutex
	record   bedRecord
	machines []*Machine
	next     int
	closed   bool
}

// New builds (or reuses) the rootfs, sweeps beds left by dead test binaries, and creates this
// bed's bridge. It skips or fails t through Require when the host cannot run containers.
func New(t testing.TB, opts Options) *Bed {
	t.Helper()
	Require(t)
	opts = opts.withDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rootfs, err := EnsureRootfsWith(ctx, opts.Rootfs)
	if err != nil {
		t.Fatalf("cannot prepare the rootfs: %v", err)
	}
	if err := Sweep(opts.StateDir); err != nil {
		t.Logf("sweeping stale beds: %v", err)
	}
	b := &Bed{t: t, opts: opts, rootfs: rootfs, dir: t.TempDir()}
	// Registered after TempDir, so it runs before TempDir's removal (cleanups run LIFO).
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("tearing down bed %s: %v", b.id, err)
		}
		if leaks := b.Leaks(); len(leaks) > 0 {
			t.Errorf("bed %s leaked: %s", b.id, strings.Join(leaks, "; "))
		}
	})
	if err := b.register(); err != nil {
		t.Fatalf("cannot register bed: %v", err)
	}
	if err := b.createBridge(); err != nil {
		t.Fatalf("cannot create bed network: %v", err)
	}
	return b
}

// register picks a unique id and takes the owner lock that tells sweepers this bed is alive.
func (b *Bed) register() error {
	beds := filepath.Join(b.opts.StateDir, "beds")
	if err := os.MkdirAll(beds, 0o755); err != nil {
		return err
	}
	for range 100 {
		var raw [2]byte
		rand.Read(raw[:])
		id := hex.EncodeToString(raw[:])
		lock := flock.New(filepath.Join(beds, id+".lock"))
		ok, err := lock.TryLock()
		if err != nil {
			return err
		}
		// The lock file may belong to a dead bed awaiting a sweep; only a fresh id is ours.
		if !ok || fileExists(filepath.Join(beds, id+".json")) {
			if ok {
				lock.Unlock()
			}
			continue
		}
		b.id, b.ownerLock = id, lock
		b.recordPath = filepath.Join(beds, id+".json")
		b.bridge = "ccmb" + id
		b.record = bedRecord{Bridge: b.bridge, Dir: b.dir}
		return writeRecord(b.recordPath, b.record)
	}
	return errors.New("no free bed id after 100 tries")
}

// createBridge takes a free /24 and creates the bridge with the host address .1 on it. A /24 is
// free when no host interface has an address in it and no live bed holds its flock (two test
// binaries could otherwise pick the same one between checking and adding the address).
func (b *Bed) createBridge() error {
	subnets := filepath.Join(b.opts.StateDir, "subnets")
	if err := os.MkdirAll(subnets, 0o755); err != nil {
		return err
	}
	used, err := hostPrefixes()
	if err != nil {
		return err
	}
	startN, _ := rand.Int(rand.Reader, big.NewInt(256))
	start := int(startN.Int64())
	for i := range 256 {
		n := (start + i) % 256
		if used[fmt.Sprintf("%s%d", subnetPrefix, n)] {
			continue
		}
		lock := flock.New(filepath.Join(subnets, fmt.Sprintf("%s%d.lock", subnetPrefix, n)))
		ok, err := lock.TryLock()
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		b.subnet, b.subnetLock = n, lock
		break
	}
	if b.subnetLock == nil {
		return fmt.Errorf("no free /24 in %s0.0/16", subnetPrefix)
	}
	script := fmt.Sprintf("link add %[1]s type bridge\naddr add %[2]s/24 dev %[1]s\nlink set %[1]s up\n", b.bridge, b.HostIP())
	return runIP(context.Background(), nil, script)
}

// hostPrefixes returns the "a.b.c" prefixes of every IPv4 address on the host.
func hostPrefixes() (map[string]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing host addresses: %w", err)
	}
	used := map[string]bool{}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil {
			continue
		}
		ip := ipn.IP.To4()
		used[fmt.Sprintf("%d.%d.%d", ip[0], ip[1], ip[2])] = true
	}
	return used, nil
}

// runIP runs `ip -batch -` (in the network namespace of pid when nsPID is set), one process for
// a whole script.
func runIP(ctx context.Context, nsPID *int, script string) error {
	argv := []string{"ip", "-batch", "-"}
	if nsPID != nil {
		// Only the network namespace is entered, so this is the host's ip binary acting on the
		// container's interfaces.
		argv = append([]string{"nsenter", "-t", fmt.Sprint(*nsPID), "-n", "--"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s <<%q: %v: %s", strings.Join(argv, " "), script, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// ID is the bed's 4-hex-digit id, part of every name it creates.
func (b *Bed) ID() string { return b.id }

// Bridge is the name of the bed's Linux bridge.
func (b *Bed) Bridge() string { return b.bridge }

// HostIP is the host's address on the bridge: bind test servers (release server, PostgreSQL)
// here so that containers reach them and nothing else does.
func (b *Bed) HostIP() string { return fmt.Sprintf("%s%d.1", subnetPrefix, b.subnet) }

// Subnet is the bed's /24 in CIDR form.
func (b *Bed) Subnet() string { return fmt.Sprintf("%s%d.0/24", subnetPrefix, b.subnet) }

// Dir is a host directory owned by the bed, removed after the test.
func (b *Bed) Dir() string { return b.dir }

// Machines returns the machines booted so far, in boot order.
func (b *Bed) Machines() []*Machine {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*Machine(nil), b.machines...)
}

func (b *Bed) updateRecord(f func(*bedRecord)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.record)
	return writeRecord(b.recordPath, b.record)
}

// Close stops every machine (in parallel), deletes the bridge and releases the bed's records.
// It is idempotent; New registers it in t.Cleanup.
func (b *Bed) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	machines := append([]*Machine(nil), b.machines...)
	b.mu.Unlock()

	var wg sync.WaitGroup
	errs := make([]error, len(machines))
	for i, m := range machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Stop()
		}()
	}
	wg.Wait()
	if b.bridge != "" && linkExists(b.bridge) {
		if err := runIP(context.Background(), nil, fmt.Sprintf("link del %s\n", b.bridge)); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if b.ownerLock != nil && len(b.leaks(false)) == 0 {
		// Only the record is left (a forced stop still cleaned up). Otherwise it stays, so that
		// the next bed's sweep retries the cleanup.
		os.Remove(b.recordPath)
		os.Remove(b.ownerLock.Path())
	}
	if b.subnetLock != nil {
		b.subnetLock.Unlock()
	}
	if b.ownerLock != nil {
		b.ownerLock.Unlock()
	}
	return err
}

// Leaks lists what the bed created and still exists: network links, mounts under its directory,
// container processes. Empty after a successful Close.
func (b *Bed) Leaks() []string { return b.leaks(true) }

func (b *Bed) leaks(withRecord bool) []string {
	var leaks []string
	if b.bridge != "" && linkExists(b.bridge) {
		leaks = append(leaks, "bridge "+b.bridge)
	}
	if links, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, l := range links {
			// nspawn names the host end of a machine's veth "vb-<machine>", truncated to 15 bytes.
			if strings.HasPrefix(l.Name(), "vb-ccm"+b.id) {
				leaks = append(leaks, "link "+l.Name())
			}
		}
	}
	if mps, err := mountsUnder(b.dir); err == nil {
		for _, mp := range mps {
			leaks = append(leaks, "mount "+mp)
		}
	}
	for _, m := range b.Machines() {
		for _, cg := range m.cgroups {
			if fileExists(cg) {
				leaks = append(leaks, "cgroup "+cg)
			}
		}
		for _, p := range m.procs() {
			if p.alive() {
				leaks = append(leaks, fmt.Sprintf("process %d of %s", p.PID, m.Name))
			}
		}
	}
	if withRecord && fileExists(b.recordPath) {
		leaks = append(leaks, "record "+b.recordPath)
	}
	return leaks
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
