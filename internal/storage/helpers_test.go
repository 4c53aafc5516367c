package storage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary plays its own helper processes (os/exec's exec_test.go
// pattern): TestMain runs the helper named in STORAGE_TEST_HELPER instead of
// the tests. Real processes are what flock(2) coordinates, and SIGKILL needs a
// process to kill.
const helperEnv = "STORAGE_TEST_HELPER"

var helperCommands = map[string]func(args []string) int{
	"install": helperInstall,
	"wait":    helperWait,
	"lockx":   helperLockExclusive,
}

// helperUsed records which helpers a test started; after a full run, an
// unused helper fails the suite, which keeps stale helpers from accreting.
var helperUsed sync.Map

func TestMain(m *testing.M) {
	flag.Parse()
	if name := os.Getenv(helperEnv); name != "" {
		fn, ok := helperCommands[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(fn(flag.Args()))
	}
	code := m.Run()
	if code == 0 && !testing.Short() && flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.bench").Value.String() == "" {
		for name := range helperCommands {
			if _, ok := helperUsed.Load(name); !ok {
				fmt.Fprintf(os.Stderr, "helper %q was never used\n", name)
				code = 1
			}
		}
	}
	os.Exit(code)
}

// helperCommand returns a command running helper name with args.
func helperCommand(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	if _, ok := helperCommands[name]; !ok {
		t.Fatalf("no helper %q", name)
	}
	helperUsed.Store(name, true)
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	return cmd
}

type stderrLogger struct{}

func (stderrLogger) Printf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000000")+" "+format+"\n", args...)
}

// helperInstall: install <root> <unit> <url> <version>; prints the result as JSON.
func helperInstall(args []string) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: install root unit url version")
		return 2
	}
	s := New(Options{
		Root: args[0], Unit: args[1], Logger: stderrLogger{}, StripPrefix: "concourse/",
		Retry: RetryPolicy{Attempts: 3, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	})
	res, err := s.Install(context.Background(), args[3], Source{URL: args[2]})
	if err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// helperWait: wait <root> <version> <maxWait>. Proves it is waiting first:
// prints "busy" after a failed TryRLock (style.md §2.7), then waits and prints
// "installed=<bool> at=<unix nanos>".
func helperWait(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: wait root version maxwait")
		return 2
	}
	maxWait, err := time.ParseDuration(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s := New(Options{Root: args[0], Unit: "concourse-ci-machine/10", Logger: stderrLogger{}})
	ok, err := s.newLock(true).TryRLock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "trylock:", err)
		return 1
	}
	if ok {
		fmt.Println("free")
	} else {
		fmt.Println("busy")
	}
	installed, err := s.WaitInstalled(context.Background(), args[1], maxWait)
	at := time.Now().UnixNano()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wait:", err)
		return 1
	}
	fmt.Printf("installed=%v at=%d\n", installed, at)
	return 0
}

// helperLockExclusive: lockx <root> <maxWait>. Takes the install lock as an
// installer does (lockExclusive), waiting at most maxWait, and prints
// "took=<bool> cpu_us=<user+system CPU of this process>".
func helperLockExclusive(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: lockx root maxwait")
		return 2
	}
	maxWait, err := time.ParseDuration(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s := New(Options{Root: args[0], Unit: "concourse-ci-machine/0", Logger: stderrLogger{}})
	var before unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &before)
	ctx, cancel := context.WithTimeout(context.Background(), maxWait)
	defer cancel()
	fl, _, _, err := s.lockExclusive(ctx, "test", nil)
	var after unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := (after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()) / 1000
	if err == nil {
		fl.Unlock()
	}
	fmt.Printf("took=%v cpu_us=%d\n", err == nil, cpu)
	return 0
}

// ---- tarballs ----

type entry struct {
	Name     string
	Body     []byte
	Mode     int64
	Type     byte // 0 = regular
	Linkname string
}

func buildTarball(t testing.TB, entries []entry, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	writeTar(t, gz, entries)
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeTar(t testing.TB, w io.Writer, entries []entry) {
	t.Helper()
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Typeflag: e.Type, Linkname: e.Linkname, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// compressibleBytes looks like text: compresses several-fold.
func compressibleBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"concourse", "worker", "web", "pipeline", "resource", "garden", "containerd", "volume", "build", "check", "\n", "get", "put", "task", "=", "{", "}"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// releaseEntries is a small but realistic release (concourse-contract §1.3).
func releaseEntries(version string, extraRandom int) []entry {
	script := fmt.Sprintf("#!/bin/sh\necho %s\n", version)
	es := []entry{
		{Name: "concourse/", Type: tar.TypeDir},
		{Name: "concourse/bin/", Type: tar.TypeDir},
		{Name: "concourse/bin/concourse", Body: []byte(script), Mode: 0o755},
		{Name: "concourse/bin/gdn", Body: randomBytes(1, 40<<10), Mode: 0o755},
		{Name: "concourse/bin/runc", Body: randomBytes(2, 20<<10), Mode: 0o755},
		{Name: "concourse/resource-types/", Type: tar.TypeDir},
		{Name: "concourse/resource-types/git/", Type: tar.TypeDir},
		{Name: "concourse/resource-types/git/resource_metadata.json", Body: []byte(`{"type":"git","version":"1.0","privileged":false}`)},
		{Name: "concourse/resource-types/git/rootfs.tgz", Body: randomBytes(3, 32<<10)},
		{Name: "concourse/fly-assets/", Type: tar.TypeDir},
		{Name: "concourse/fly-assets/fly-linux-amd64.tgz", Body: randomBytes(4, 16<<10)},
		{Name: "concourse/bin/README.md", Body: compressibleBytes(5, 64<<10)},
	}
	if extraRandom > 0 {
		es = append(es, entry{Name: "concourse/bin/containerd", Body: randomBytes(6, extraRandom), Mode: 0o755})
	}
	return es
}

// ---- loopback release server ----

type releaseServer struct {
	*httptest.Server
	asset string
	mu    sync.Mutex
	data  []byte
	sum   string // sidecar content

	tarballGets atomic.Int64 // every tarball request
	fullBodies  atomic.Int64 // tarball requests answered 200 with the whole body
	ranges      atomic.Int64 // requests carrying a Range header
	sidecarGets atomic.Int64

	fail500     atomic.Int64 // answer this many tarball requests with 500
	cutAfter    atomic.Int64 // cut the first full body after this many bytes (0 = never)
	ignoreRange atomic.Bool
	trickle     atomic.Int64 // delay in microseconds between 4 KiB chunks
	sidecarCode atomic.Int64 // non-zero: status for the sidecar
	sidecarHang atomic.Bool  // send the sidecar's headers, then nothing until the client gives up
	cutEvery    atomic.Int64 // cut every full body after this many bytes (0 = never)
	breakRanges atomic.Bool  // answer every Range request 206 and close the connection before any byte
}

func newReleaseServer(t testing.TB, version string, tarball []byte) *releaseServer {
	t.Helper()
	rs := &releaseServer{asset: "concourse-" + version + "-linux-amd64.tgz"}
	rs.setData(tarball)
	rs.Server = httptest.NewServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *releaseServer) setData(b []byte) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.data = b
	sum := sha1.Sum(b)
	rs.sum = hex.EncodeToString(sum[:]) + "  " + rs.asset + "\n"
}

func (rs *releaseServer) URL() string { return rs.Server.URL + "/" + rs.asset }

func (rs *releaseServer) serve(w http.ResponseWriter, r *http.Request) {
	rs.mu.Lock()
	data, sum := rs.data, rs.sum
	rs.mu.Unlock()
	switch r.URL.Path {
	case "/" + rs.asset + ".sha1":
		rs.sidecarGets.Add(1)
		if c := rs.sidecarCode.Load(); c != 0 {
			http.Error(w, "injected", int(c))
			return
		}
		if rs.sidecarHang.Load() {
			w.Header().Set("Content-Length", strconv.Itoa(len(sum)))
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		io.WriteString(w, sum)
		return
	case "/" + rs.asset:
	default:
		http.NotFound(w, r)
		return
	}
	rs.tarballGets.Add(1)
	if rs.fail500.Load() > 0 && rs.fail500.Add(-1) >= 0 {
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	start := int64(0)
	if rg := r.Header.Get("Range"); rg != "" {
		rs.ranges.Add(1)
		if !rs.ignoreRange.Load() {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
			if err != nil || v >= int64(len(data)) {
				http.Error(w, "bad range", http.StatusRequestedRangeNotSatisfiable)
				return
			}
			start = v
		}
	}
	w.Header().Set("ETag", `"`+sum[:16]+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)-int(start)))
	if start > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		rs.fullBodies.Add(1)
		w.WriteHeader(http.StatusOK)
	}
	body := data[start:]
	if start > 0 && rs.breakRanges.Load() {
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	if cut := rs.cutEvery.Load(); start == 0 && cut > 0 {
		w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	if start == 0 {
		if cut := rs.cutAfter.Swap(0); cut > 0 {
			w.Write(body[:cut])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // closes the connection mid-body
		}
	}
	delay := time.Duration(rs.trickle.Load()) * time.Microsecond
	if delay == 0 {
		w.Write(body)
		return
	}
	bw := bufio.NewWriterSize(w, 4096)
	for len(body) > 0 {
		n := min(4096, len(body))
		if _, err := bw.Write(body[:n]); err != nil {
			return
		}
		bw.Flush()
		w.(http.Flusher).Flush()
		body = body[n:]
		time.Sleep(delay)
	}
}

// ---- helpers for assertions ----

type testLogger struct {
	t  testing.TB
	mu sync.Mutex
	b  strings.Builder
}

func (l *testLogger) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *testLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestStore(t testing.TB, root string, mod ...func(*Options)) (*Store, *testLogger) {
	t.Helper()
	lg := &testLogger{t: t}
	o := Options{
		Root: root, Unit: "concourse-ci-machine/0", Logger: lg, StripPrefix: "concourse/",
		Retry: RetryPolicy{Attempts: 4, Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Total: 30 * time.Second},
	}
	for _, m := range mod {
		m(&o)
	}
	return New(o), lg
}

// checkConsistent asserts the crash invariant: current is absent or names a
// release that verifies fully; .installed_version is absent or names that
// release's version; nothing else claims to be installed.
func checkConsistent(t testing.TB, root string) (installed string) {
	t.Helper()
	s, _ := newTestStore(t, root)
	v, err := s.Installed()
	if err != nil {
		t.Fatalf("Installed() on %s: %v", root, err)
	}
	marker, err := s.readMarker()
	if err != nil {
		t.Fatal(err)
	}
	if v == "" {
		if marker != "" {
			t.Fatalf(".installed_version = %q but no current release", marker)
		}
		return ""
	}
	if err := s.VerifyFull(); err != nil {
		t.Fatalf("current release does not verify: %v", err)
	}
	if marker != "" && marker != v {
		t.Fatalf(".installed_version = %q, current = %q", marker, v)
	}
	return v
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func countDirs(t testing.TB, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
