package concourse

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want, err string }{
		{"7.14.3", "7.14.3", ""},
		{"v8.2.5", "8.2.5", ""},
		{"  v7.14.0\n", "7.14.0", ""},
		{"0.0.0", "0.0.0", ""},
		{"10.200.3000", "10.200.3000", ""},
		{"7.14", "", `version "7.14" is not of the form X.Y.Z (e.g. 7.14.3)`},
		{"vv7.14.3", "", "not of the form X.Y.Z"},
		{"7.14.3-rc.1", "", "not of the form X.Y.Z"},
		{"7.14.03", "", "not of the form X.Y.Z"},
		{"7.14.x", "", "not of the form X.Y.Z"},
		{"latest", "", "not of the form X.Y.Z"},
		{"", "", "not of the form X.Y.Z"},
		{"7.14.3 ", "7.14.3", ""},
	} {
		got, err := ParseVersion(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseVersion(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseVersion(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"7.14.3", "7.14.3", 0},
		{"v7.14.3", "7.14.3", 0},
		{"7.14.3", "8.0.0", -1},
		{"8.0.0", "7.14.3", 1},
		{"7.9.0", "7.14.0", -1}, // numeric, not lexical
		{"7.14.10", "7.14.9", 1},
		{"99999999999999999999.0.0", "99999999999999999998.0.0", 1}, // no overflow
		{"junk", "0.0.0", -1},
		{"0.0.0", "junk", 1},
		{"a", "b", -1},
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d; want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestArchAndURLs(t *testing.T) {
	t.Parallel()
	for _, a := range []string{"amd64", "arm64"} {
		if got, err := Arch(a); err != nil || got != a {
			t.Errorf("Arch(%q) = %q, %v", a, got, err)
		}
	}
	for _, a := range []string{"386", "riscv64", "s390x", "x86_64", ""} {
		_, err := Arch(a)
		if err == nil || !strings.Contains(err.Error(), "amd64 and arm64") {
			t.Errorf("Arch(%q) error = %v; want one naming amd64 and arm64", a, err)
		}
	}
	if got, want := AssetName("7.14.3", "amd64"), "concourse-7.14.3-linux-amd64.tgz"; got != want {
		t.Errorf("AssetName = %q; want %q", got, want)
	}
	want := "https://github.com/concourse/concourse/releases/download/v8.2.5/concourse-8.2.5-linux-arm64.tgz"
	if got := DownloadURL(DefaultReleaseBase, "8.2.5", "arm64"); got != want {
		t.Errorf("DownloadURL = %q; want %q", got, want)
	}
	if got := DownloadURL("http://127.0.0.1:8000/mirror/", "8.2.5", "arm64"); got != "http://127.0.0.1:8000/mirror/v8.2.5/concourse-8.2.5-linux-arm64.tgz" {
		t.Errorf("DownloadURL with a trailing slash = %q", got)
	}
	if got := ChecksumURL(DefaultReleaseBase, "8.2.5", "arm64"); got != want+".sha1" {
		t.Errorf("ChecksumURL = %q", got)
	}
}

func TestLatestVersion(t *testing.T) {
	t.Parallel()
	const token = "ghp_supersecrettoken123"
	type answer struct {
		status  int
		headers map[string]string
		body    string
	}
	for _, tc := range []struct {
		name        string
		token       string
		answer      answer
		want        string
		errContains []string
		rateLimited bool
	}{
		{name: "ok", answer: answer{200, nil, `{"tag_name":"v8.2.5","name":"v8.2.5"}`}, want: "8.2.5"},
		{name: "ok-with-token", token: token, answer: answer{200, nil, `{"tag_name":"v7.14.3"}`}, want: "7.14.3"},
		{name: "bad-tag", answer: answer{200, nil, `{"tag_name":"nightly"}`}, errContains: []string{`"nightly" is not of the form X.Y.Z`, "/repos/concourse/concourse/releases/latest"}},
		{name: "no-tag", answer: answer{200, nil, `{}`}, errContains: []string{"no tag_name"}},
		{name: "not-json", answer: answer{200, nil, `<html>`}, errContains: []string{"decoding"}},
		{name: "rate-limited-403", token: token,
			answer:      answer{403, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225600"}, `{"message":"API rate limit exceeded for 10.0.0.1."}`},
			errContains: []string{"HTTP 403", "rate limit exceeded until 2026-01-01T00:00:00Z", "token"}, rateLimited: true},
		{name: "rate-limited-429", answer: answer{429, map[string]string{"Retry-After": "60"}, ``},
			errContains: []string{"HTTP 429", "rate limit"}, rateLimited: true},
		{name: "forbidden-not-rate", answer: answer{403, nil, `{"message":"Forbidden"}`}, errContains: []string{"HTTP 403", "Forbidden"}},
		{name: "not-found", answer: answer{404, nil, `{"message":"Not Found"}`}, errContains: []string{"HTTP 404"}},
		{name: "server-error", token: token, answer: answer{502, nil, `bad gateway`}, errContains: []string{"HTTP 502"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if r.URL.Path != "/repos/concourse/concourse/releases/latest" {
					t.Errorf("path = %q", r.URL.Path)
				}
				if got := r.Header.Get("Accept"); got != "application/vnd.github+json" {
					t.Errorf("Accept = %q", got)
				}
				wantAuth := ""
				if tc.token != "" {
					wantAuth = "Bearer " + tc.token
				}
				if got := r.Header.Get("Authorization"); got != wantAuth {
					t.Errorf("Authorization = %q; want %q", got, wantAuth)
				}
				for k, v := range tc.answer.headers {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.answer.status)
				w.Write([]byte(tc.answer.body))
			}))
			defer srv.Close()
			got, err := LatestVersion(context.Background(), srv.Client(), srv.URL+"/", tc.token)
			if calls.Load() != 1 {
				t.Errorf("server saw %d requests; want 1", calls.Load())
			}
			if tc.errContains == nil {
				if err != nil || got != tc.want {
					t.Fatalf("LatestVersion = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("LatestVersion = %q; want an error", got)
			}
			for _, s := range tc.errContains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if !strings.Contains(err.Error(), srv.URL) {
				t.Errorf("error %q does not name the URL", err)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error %q leaks the token", err)
			}
			var ge *GitHubError
			if errors.As(err, &ge) && ge.RateLimited != tc.rateLimited {
				t.Errorf("RateLimited = %v; want %v", ge.RateLimited, tc.rateLimited)
			}
			if tc.rateLimited && ge == nil {
				t.Errorf("error %T is not a *GitHubError", err)
			}
		})
	}
}

func TestLatestVersionHonoursContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := LatestVersion(ctx, srv.Client(), srv.URL, "tok-abcdef")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LatestVersion with an expired context = %v; want DeadlineExceeded", err)
	}
	if strings.Contains(err.Error(), "tok-abcdef") {
		t.Errorf("error %q leaks the token", err)
	}
}
