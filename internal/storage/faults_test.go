package storage

import (
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestNetworkFaults(t *testing.T) {
	t.Parallel()
	tgz := buildTarball(t, releaseEntries("7.14.3", 512<<10), gzip.BestSpeed)
	cases := []struct {
		name               string
		setup              func(rs *releaseServer)
		wantGets, wantFull int64
		wantRanges         int64
		wantLog            string
	}{
		{"500s-then-ok", func(rs *releaseServer) { rs.fail500.Store(2) }, 3, 1, 0, "download attempt 2/4"},
		{"cut-mid-body-resumed", func(rs *releaseServer) { rs.cutAfter.Store(int64(len(tgz) / 3)) }, 2, 1, 1, "resuming with a Range request"},
		{"range-ignored-restarts", func(rs *releaseServer) {
			rs.cutAfter.Store(int64(len(tgz) / 3))
			rs.ignoreRange.Store(true)
		}, 3, 3, 1, "server ignored the Range request"}, // cut, ignored Range (discarded), clean restart
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			rs := newReleaseServer(t, "7.14.3", tgz)
			c.setup(rs)
			s, lg := newTestStore(t, root)
			res, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
			if err != nil {
				t.Fatalf("Install: %v\n%s", err, lg)
			}
			if !res.Downloaded {
				t.Error("not downloaded")
			}
			if g, f, r := rs.tarballGets.Load(), rs.fullBodies.Load(), rs.ranges.Load(); g != c.wantGets || f != c.wantFull || r != c.wantRanges {
				t.Errorf("requests = %d, full bodies = %d, ranges = %d; want %d, %d, %d\n%s", g, f, r, c.wantGets, c.wantFull, c.wantRanges, lg)
			}
			if !strings.Contains(lg.String(), c.wantLog) {
				t.Errorf("log lacks %q:\n%s", c.wantLog, lg)
			}
			if v := checkConsistent(t, root); v != "7.14.3" {
				t.Errorf("installed %q", v)
			}
			if countDirs(t, root+"/"+StagingDir) != 0 || countDirs(t, root+"/"+VersionsDir) != 1 {
				t.Error("leftovers in .staging or versions")
			}
		})
	}
}

func TestDownloadGivesUp(t *testing.T) {
	t.Parallel()
	tgz := buildTarball(t, releaseEntries("7.14.3", 0), gzip.BestSpeed)
	t.Run("always-500", func(t *testing.T) {
		t.Parallel()
		rs := newReleaseServer(t, "7.14.3", tgz)
		rs.fail500.Store(1000)
		s, _ := newTestStore(t, t.TempDir())
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		var de *DownloadError
		var he *HTTPStatusError
		if !errors.As(err, &de) || de.Attempts != 4 || !errors.As(err, &he) || he.Code != http.StatusInternalServerError {
			t.Fatalf("err = %v; want *DownloadError{Attempts: 4} wrapping a 500", err)
		}
		if !strings.Contains(err.Error(), rs.URL()) {
			t.Errorf("error does not name the URL: %v", err)
		}
	})
	t.Run("total-time-bounded", func(t *testing.T) {
		t.Parallel()
		rs := newReleaseServer(t, "7.14.3", tgz)
		rs.trickle.Store(20000) // 4 KiB every 20 ms: far too slow
		s, _ := newTestStore(t, t.TempDir(), func(o *Options) { o.Retry.Total = 300 * time.Millisecond })
		start := time.Now()
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v; want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("gave up after %s", d)
		}
	})
	t.Run("stall-resumed", func(t *testing.T) {
		t.Parallel()
		rs := newReleaseServer(t, "7.14.3", tgz)
		rs.trickle.Store(100000) // 4 KiB every 100 ms: looks stalled to a 30 ms watchdog
		s, lg := newTestStore(t, t.TempDir(), func(o *Options) {
			o.StallTimeout = 30 * time.Millisecond
			o.Retry.Total = 400 * time.Millisecond
		})
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: rs.URL()})
		if err == nil {
			t.Fatal("install succeeded against a stalled server")
		}
		if rs.ranges.Load() == 0 || !strings.Contains(lg.String(), "resuming") {
			t.Errorf("a stalled body was not resumed (ranges %d):\n%s", rs.ranges.Load(), lg)
		}
	})
	t.Run("unknown-host-port", func(t *testing.T) {
		t.Parallel()
		s, _ := newTestStore(t, t.TempDir())
		_, err := s.Install(context.Background(), "7.14.3", Source{URL: "http://127.0.0.1:1/concourse.tgz", SHA256: strings.Repeat("a", 64)})
		var de *DownloadError
		if !errors.As(err, &de) || de.Attempts != 4 {
			t.Fatalf("err = %v; want *DownloadError after 4 attempts", err)
		}
	})
}
