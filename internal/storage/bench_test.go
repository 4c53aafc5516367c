package storage

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkWakeLatency: from the installer's release of the lock to a
// waiting PROCESS proceeding (goal < 50 ms). Run with -benchtime=20x.
func BenchmarkWakeLatency(b *testing.B) {
	root := b.TempDir()
	s, _ := newTestStore(b, root)
	var lat []time.Duration
	for b.Loop() {
		fl, _, _, err := s.lockExclusive(context.Background(), "bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		cmd, first, rest := startWaiter(b, root, "7.14.3", time.Minute)
		if first != "busy" {
			b.Fatalf("waiter saw %q; want busy", first)
		}
		// Well into its polling, at a random phase of its retry delay.
		time.Sleep(20*time.Millisecond + time.Duration(rand.Int64N(int64(10*time.Millisecond))))
		released := time.Now()
		fl.Unlock()
		_, at := parseWaiter(b, rest)
		cmd.Wait()
		lat = append(lat, at.Sub(released))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(lat))/1000, "mean-wake-ms")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-wake-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-wake-ms")
}

// largeRelease writes a synthetic release tarball of about 340 MB uncompressed
// (240 MB incompressible, like binaries and rootfs tarballs; 100 MB of text)
// to dir and serves it with its .sha1 sidecar.
func largeRelease(b *testing.B, dir string) (url string, tgzSize int64) {
	b.Helper()
	tgz := filepath.Join(dir, "concourse-9.9.9-linux-amd64.tgz")
	f, err := os.Create(tgz)
	if err != nil {
		b.Fatal(err)
	}
	h := sha1.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	gz, _ := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			b.Fatal(err)
		}
		tw.Write(body)
	}
	dirs := []string{"concourse/", "concourse/bin/", "concourse/fly-assets/", "concourse/resource-types/"}
	for _, d := range dirs {
		tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir})
	}
	add("concourse/bin/concourse", 0o755, randomBytes(10, 130<<20))
	add("concourse/bin/gdn", 0o755, randomBytes(11, 30<<20))
	add("concourse/bin/containerd", 0o755, randomBytes(12, 40<<20))
	for i := range 10 {
		name := fmt.Sprintf("concourse/resource-types/type%d/", i)
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir})
		add(name+"rootfs.tgz", 0o644, randomBytes(uint64(20+i), 4<<20))
		add(name+"resource_metadata.json", 0o644, []byte(`{"type":"x"}`))
	}
	add("concourse/fly-assets/docs.txt", 0o644, compressibleBytes(30, 100<<20))
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	gz.Close()
	bw.Flush()
	f.Close()
	os.WriteFile(tgz+".sha1", []byte(hex.EncodeToString(h.Sum(nil))+"  "+filepath.Base(tgz)+"\n"), 0o644)
	fi, _ := os.Stat(tgz)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	b.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(tgz), fi.Size()
}

// BenchmarkLargeRelease: (b) one install of a large release against the plain
// shell pipeline on the same data; (c) 50 racing unit processes against one.
// Run with -benchtime=3x; results go to docs/bench-storage.md.
func BenchmarkLargeRelease(b *testing.B) {
	data := b.TempDir()
	url, size := largeRelease(b, data)
	b.Logf("tarball %d bytes", size)

	b.Run("install-vs-pipeline", func(b *testing.B) {
		if _, err := exec.LookPath("curl"); err != nil {
			b.Skip("curl not installed: no pipeline to compare with")
		}
		var storage, pipeline time.Duration
		for b.Loop() {
			dir := filepath.Join(b.TempDir(), "x")
			os.Mkdir(dir, 0o755)
			unix.Sync()
			start := time.Now()
			cmd := exec.Command("bash", "-c", `set -o pipefail; curl -sf "$1" | tee >(sha1sum >/dev/null) | tar xz -C "$2"`, "bash", url, dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("pipeline: %v\n%s", err, out)
			}
			pipeline += time.Since(start)

			root := filepath.Join(b.TempDir(), "root")
			s := New(Options{Root: root, Unit: "concourse-ci-machine/0", StripPrefix: "concourse/"})
			unix.Sync()
			start = time.Now()
			if _, err := s.Install(context.Background(), "9.9.9", Source{URL: url}); err != nil {
				b.Fatal(err)
			}
			storage += time.Since(start)
			os.RemoveAll(dir)
			os.RemoveAll(root)
		}
		n := float64(b.N)
		b.ReportMetric(storage.Seconds()/n, "install-s")
		b.ReportMetric(pipeline.Seconds()/n, "pipeline-s")
		b.ReportMetric(storage.Seconds()/pipeline.Seconds(), "ratio")
		b.ReportMetric(float64(size)/1e6/(storage.Seconds()/n), "install-MB/s")
	})

	b.Run("race-50-processes", func(b *testing.B) {
		var one, fifty time.Duration
		for b.Loop() {
			unix.Sync()
			root := filepath.Join(b.TempDir(), "one")
			start := time.Now()
			if out, err := helperCommand(b, "install", root, "concourse-ci-machine/0", url, "9.9.9").CombinedOutput(); err != nil {
				b.Fatalf("install: %v\n%s", err, out)
			}
			one += time.Since(start)
			os.RemoveAll(root)

			unix.Sync()
			root = filepath.Join(b.TempDir(), "fifty")
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			start = time.Now()
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if out, err := helperCommand(b, "install", root, fmt.Sprintf("concourse-ci-machine/%d", i), url, "9.9.9").CombinedOutput(); err != nil {
						errs <- fmt.Errorf("unit %d: %v\n%s", i, err, out)
					}
				}()
			}
			wg.Wait()
			fifty += time.Since(start)
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			os.RemoveAll(root)
		}
		n := float64(b.N)
		b.ReportMetric(one.Seconds()/n, "one-s")
		b.ReportMetric(fifty.Seconds()/n, "fifty-s")
		b.ReportMetric(fifty.Seconds()/one.Seconds(), "ratio")
	})
}
