package release

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixture is a server with one padded asset, shared by the read-only subtests of one test.
type fixture struct {
	srv   *Server
	asset Asset
	data  []byte
}

func newFixture(t *testing.T, addr string) *fixture {
	t.Helper()
	bin := fmt.Sprintf("%s/concourse", t.TempDir())
	os.WriteFile(bin, []byte("#!/bin/sh\necho 7.14.3\n"), 0o755)
	a, err := Build(t.TempDir(), "7.14.3", "amd64", bin, BuildOptions{PadBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(addr)
	t.Cleanup(s.Close)
	s.Add(a)
	return &fixture{srv: s, asset: a, data: data}
}

var client = &http.Client{Timeout: 20 * time.Second}

func fetch(t *testing.T, url string, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func (f *fixture) url() string { return f.srv.DownloadURL("7.14.3", f.asset.Name) }

func TestServerCountsAndChecksum(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "127.0.0.1:0")
	if !strings.HasPrefix(f.url(), f.srv.URL()+"/concourse/concourse/releases/download/v7.14.3/") {
		t.Errorf("DownloadURL = %s; want the GitHub path shape", f.url())
	}
	for i := 0; i < 2; i++ {
		resp, body, err := fetch(t, f.url())
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, f.data) {
			t.Fatalf("download %d: %v %v", i, resp, err)
		}
	}
	resp, body, err := fetch(t, f.url()+".sha1")
	if err != nil || resp.StatusCode != 200 || string(body) != f.asset.SHA1Line() {
		t.Fatalf(".sha1 = %q, %v; want %q", body, err, f.asset.SHA1Line())
	}
	if got := f.srv.Stats(f.asset.Name); got != (Stats{Requests: 2, Full: 2}) {
		t.Errorf("stats = %+v; want 2 requests, 2 full", got)
	}
	if f.srv.Downloads(f.asset.Name+".sha1") != 1 || f.srv.Requests(f.asset.Name+".sha1") != 1 {
		t.Errorf(".sha1 stats = %+v", f.srv.Stats(f.asset.Name+".sha1"))
	}
	// Wrong tag or unknown file: 404, not counted against the asset.
	if resp, _, _ := fetch(t, f.srv.DownloadURL("8.2.5", f.asset.Name)); resp.StatusCode != 404 {
		t.Errorf("wrong tag = %d; want 404", resp.StatusCode)
	}
	if f.srv.Requests(f.asset.Name) != 2 {
		t.Errorf("404s were counted as asset requests")
	}
}

func TestServerConcurrentCounting(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "127.0.0.1:0")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fetch(t, f.url())
		}()
	}
	wg.Wait()
	if got := f.srv.Downloads(f.asset.Name); got != 8 {
		t.Errorf("Downloads = %d; want 8", got)
	}
}

func TestServerRangeAndResumeAfterCut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "127.0.0.1:0")
	resp, body, err := fetch(t, f.url(), "Range", "bytes=10-19")
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(body, f.data[10:20]) {
		t.Fatalf("range = %v %q %v", resp, body, err)
	}

	// The first request is cut after 1000 bytes; a resume with Range gets the rest.
	f.srv.SetFault(f.asset.Name, Fault{CutAfter: 1000, CutRequests: 1})
	resp, body, err = fetch(t, f.url())
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || resp.StatusCode != 200 || len(body) != 1000 {
		t.Fatalf("cut download: status %v, %d bytes, err %v; want 200, 1000 bytes, unexpected EOF", resp.StatusCode, len(body), err)
	}
	resp, rest, err := fetch(t, f.url(), "Range", "bytes=1000-", "If-Range", resp.Header.Get("ETag"))
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(append(body, rest...), f.data) {
		t.Fatalf("resume: %v %v; want 206 completing the file", resp.StatusCode, err)
	}
	if got := f.srv.Stats(f.asset.Name); got != (Stats{Requests: 3, Full: 0, Partial: 2, Failed: 1}) {
		t.Errorf("stats = %+v; want 3 requests, 2 partial, 1 failed", got)
	}
}

func TestServerFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault Fault
		check func(t *testing.T, f *fixture)
	}{
		{"status500-then-ok", Fault{Status500: 2}, func(t *testing.T, f *fixture) {
			for i, want := range []int{500, 500, 200} {
				if resp, _, err := fetch(t, f.url()); err != nil || resp.StatusCode != want {
					t.Errorf("request %d = %v, %v; want %d", i, resp.StatusCode, err, want)
				}
			}
			if got := f.srv.Stats(f.asset.Name); got != (Stats{Requests: 3, Full: 1, Failed: 2}) {
				t.Errorf("stats = %+v", got)
			}
		}},
		{"cut-every-request", Fault{CutAfter: 10}, func(t *testing.T, f *fixture) {
			for i := 0; i < 2; i++ {
				if _, body, err := fetch(t, f.url()); err == nil || len(body) != 10 {
					t.Errorf("request %d: %d bytes, %v; want a cut after 10", i, len(body), err)
				}
			}
		}},
		{"delay", Fault{Delay: 300 * time.Millisecond}, func(t *testing.T, f *fixture) {
			start := time.Now()
			if resp, _, err := fetch(t, f.url()); err != nil || resp.StatusCode != 200 {
				t.Fatal(resp, err)
			}
			if d := time.Since(start); d < 300*time.Millisecond {
				t.Errorf("answered after %v; want at least the 300ms delay", d)
			}
		}},
		{"throttle", Fault{BytesPerSecond: 1 << 20}, func(t *testing.T, f *fixture) {
			// ~300 KiB at 1 MiB/s cannot arrive in under ~0.2s (lower bound only).
			start := time.Now()
			if _, body, err := fetch(t, f.url()); err != nil || !bytes.Equal(body, f.data) {
				t.Fatal(err)
			}
			if d, min := time.Since(start), time.Duration(len(f.data))*time.Second/(1<<20)*2/3; d < min {
				t.Errorf("throttled download took %v; want at least %v", d, min)
			}
		}},
		{"corrupt-byte", Fault{Corrupt: true, CorruptByte: 5}, func(t *testing.T, f *fixture) {
			_, body, err := fetch(t, f.url())
			if err != nil || len(body) != len(f.data) {
				t.Fatal(err)
			}
			for i := range body {
				if (body[i] != f.data[i]) != (i == 5) {
					t.Fatalf("byte %d differs=%v; want only byte 5 flipped", i, body[i] != f.data[i])
				}
			}
			// A range read over the offset is corrupted the same way.
			_, part, _ := fetch(t, f.url(), "Range", "bytes=4-6")
			if part[1] != f.data[5]^0xff {
				t.Errorf("range over the corrupt byte not corrupted")
			}
		}},
		{"wrong-checksum", Fault{WrongChecksum: true}, func(t *testing.T, f *fixture) {
			_, body, _ := fetch(t, f.url()+".sha1")
			if string(body) == f.asset.SHA1Line() || !regexp.MustCompile(`^[0-9a-f]{40}  `+regexp.QuoteMeta(f.asset.Name)+"\n$").Match(body) {
				t.Errorf(".sha1 = %q; want a well-formed wrong digest", body)
			}
			if _, body, _ := fetch(t, f.url()); !bytes.Equal(body, f.data) {
				t.Errorf("asset itself changed")
			}
		}},
		{"no-range", Fault{NoRange: true}, func(t *testing.T, f *fixture) {
			resp, body, err := fetch(t, f.url(), "Range", "bytes=10-19")
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, f.data) {
				t.Errorf("Range with NoRange = %d, %d bytes; want 200 full", resp.StatusCode, len(body))
			}
		}},
		{"down-asset", Fault{Down: true}, func(t *testing.T, f *fixture) {
			if resp, _, err := fetch(t, f.url()); err != nil || resp.StatusCode != 503 {
				t.Errorf("got %v, %v; want 503", resp.StatusCode, err)
			}
			if resp, _, _ := fetch(t, f.url()+".sha1"); resp.StatusCode != 200 {
				t.Errorf(".sha1 affected by the asset's fault")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "127.0.0.1:0")
			f.srv.SetFault(f.asset.Name, tt.fault)
			tt.check(t, f)
			// Clearing the fault restores normal service.
			f.srv.SetFault(f.asset.Name, Fault{})
			f.srv.SetFault(f.asset.Name+".sha1", Fault{})
			if resp, body, err := fetch(t, f.url()); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, f.data) {
				t.Errorf("after clearing: %v, %v", resp.StatusCode, err)
			}
		})
	}
}

func TestServerSetDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "127.0.0.1:0")
	if err := f.srv.SetDown(true); err != nil {
		t.Fatal(err)
	}
	_, _, err := fetch(t, f.url())
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("while down: %v; want a connection error", err)
	}
	if err := f.srv.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if resp, _, err := fetch(t, f.url()); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after coming back: %v", err)
	}
}

func TestServerBindsGivenAddress(t *testing.T) {
	t.Parallel()
	// Any 127.0.0.0/8 address is local on Linux; this stands in for a bridge IP.
	f := newFixture(t, "127.0.0.2:0")
	if !strings.HasPrefix(f.srv.URL(), "http://127.0.0.2:") {
		t.Fatalf("URL = %s", f.srv.URL())
	}
	if resp, _, err := fetch(t, f.url()); err != nil || resp.StatusCode != 200 {
		t.Fatal(err)
	}
}

func TestServerAPI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "127.0.0.1:0")
	bin := fmt.Sprintf("%s/concourse", t.TempDir())
	os.WriteFile(bin, []byte("x"), 0o755)
	arm, err := Build(t.TempDir(), "7.14.3", "arm64", bin, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	newer, err := Build(t.TempDir(), "8.2.5", "amd64", bin, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Add(arm)
	f.srv.Add(newer)

	if resp, _, _ := fetch(t, f.srv.APIURL()+"/latest"); resp.StatusCode != 404 {
		t.Errorf("latest before SetLatest = %d; want 404", resp.StatusCode)
	}
	f.srv.SetLatest("v8.2.5")
	var rel apiRelease
	resp, body, err := fetch(t, f.srv.APIURL()+"/latest")
	if err != nil || resp.StatusCode != 200 || json.Unmarshal(body, &rel) != nil {
		t.Fatalf("latest: %v %s", err, body)
	}
	if rel.TagName != "v8.2.5" || len(rel.Assets) != 2 || rel.Assets[0].Name != newer.Name || *rel.Assets[0].Digest != "sha256:"+newer.SHA256 || rel.Assets[1].Name != newer.Name+".sha1" {
		t.Errorf("latest = %+v", rel)
	}
	// browser_download_url really downloads the asset.
	if _, body, err := fetch(t, rel.Assets[0].BrowserDownloadURL); err != nil || int64(len(body)) != newer.Size {
		t.Errorf("browser_download_url: %d bytes, %v", len(body), err)
	}

	resp, body, _ = fetch(t, f.srv.APIURL()+"/tags/v7.14.3")
	json.Unmarshal(body, &rel)
	if resp.StatusCode != 200 || rel.TagName != "v7.14.3" || len(rel.Assets) != 4 {
		t.Errorf("tags/v7.14.3 = %d %+v; want both arches with their .sha1", resp.StatusCode, rel)
	}
	if resp, _, _ := fetch(t, f.srv.APIURL()+"/tags/v9.9.9"); resp.StatusCode != 404 {
		t.Errorf("unknown tag = %d; want 404", resp.StatusCode)
	}
	var list []apiRelease
	_, body, _ = fetch(t, f.srv.APIURL())
	if json.Unmarshal(body, &list) != nil || len(list) != 2 || list[0].TagName != "v8.2.5" {
		t.Errorf("list = %s; want newest first", body)
	}

	f.srv.SetFault(newer.Name, Fault{WrongDigest: true})
	_, body, _ = fetch(t, f.srv.APIURL()+"/tags/v8.2.5")
	json.Unmarshal(body, &rel)
	if *rel.Assets[0].Digest == "sha256:"+newer.SHA256 {
		t.Errorf("WrongDigest did not change the digest")
	}
	f.srv.SetFault(APIName, Fault{Status500: 1})
	if resp, _, _ := fetch(t, f.srv.APIURL()+"/latest"); resp.StatusCode != 500 {
		t.Errorf("API with Status500 = %d; want 500", resp.StatusCode)
	}
	if got := f.srv.Requests(APIName); got != 7 {
		t.Errorf("API requests = %d; want 7", got)
	}
}

func TestServerCloseInterruptsSlowDownloads(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "127.0.0.1:0")
	f.srv.SetFault(f.asset.Name, Fault{BytesPerSecond: 1024})
	errc := make(chan error, 1)
	go func() {
		_, _, err := fetch(t, f.url())
		errc <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); f.srv.Requests(f.asset.Name) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("download never reached the server")
		}
	}
	done := make(chan struct{})
	go func() { f.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a slow download")
	}
	if err := <-errc; err == nil {
		t.Error("slow download completed after Close")
	}
}
