package concourse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// releaseAPI is a GitHub-shaped releases API: the list newest first, paginated by per_page and
// page with a Link rel="next" header as GitHub sends it, and /latest.
type releaseAPI struct {
	releases []releaseEntry // newest first, as GitHub lists them
	latest   string
	pages    atomic.Int32 // list pages served
	auth     atomic.Value // last Authorization header
	// nextHost, when set, replaces the host of the next link (a hostile or misconfigured API;
	// the tests use another loopback address, so even a wrong client stays on loopback).
	nextHost string
	// endless makes every page link to another one.
	endless bool
}

func (a *releaseAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.auth.Store(r.Header.Get("Authorization"))
	const prefix = "/repos/concourse/concourse/releases"
	switch r.URL.Path {
	case prefix + "/latest":
		if a.latest == "" {
			http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"tag_name": "v" + a.latest})
	case prefix:
		a.pages.Add(1)
		per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
		if per <= 0 || per > 100 {
			per = 30
		}
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		if page <= 0 {
			page = 1
		}
		lo, hi := min((page-1)*per, len(a.releases)), min(page*per, len(a.releases))
		if hi < len(a.releases) || a.endless {
			host := r.Host
			if a.nextHost != "" {
				host = a.nextHost
			}
			w.Header().Set("Link", fmt.Sprintf(`<http://%s%s?per_page=%d&page=%d>; rel="next", <http://%s%s?page=1>; rel="first"`,
				host, prefix, per, page+1, host, prefix))
		}
		json.NewEncoder(w).Encode(a.releases[lo:hi])
	default:
		http.NotFound(w, r)
	}
}

// concourseReleases is a list shaped like Concourse's: 8.x and 7.x interleaved (7.14.3 was
// published after 8.0.0), a draft and a prerelease newer than everything, an odd old tag, and
// enough old releases to need three pages of 100.
func concourseReleases() []releaseEntry {
	rels := []releaseEntry{
		{TagName: "v9.0.0", Draft: true},
		{TagName: "v8.3.0", Prerelease: true},
		{TagName: "v8.2.5"}, {TagName: "v8.2.4"},
		{TagName: "v7.14.3"},
		{TagName: "v8.1.2"}, {TagName: "v8.0.0"},
		{TagName: "v7.14.2"}, {TagName: "v7.13.2"},
		{TagName: "weekly-2019"},
	}
	for minor := 12; minor >= 0; minor-- {
		for patch := 20; patch >= 0; patch-- {
			rels = append(rels, releaseEntry{TagName: fmt.Sprintf("v6.%d.%d", minor, patch)})
		}
	}
	// The oldest page holds a patch of the 5.8 line and nothing newer in that line.
	return append(rels, releaseEntry{TagName: "v5.8.1"}, releaseEntry{TagName: "v5.8.0"})
}

func TestResolveVersion(t *testing.T) {
	api := &releaseAPI{releases: concourseReleases(), latest: "8.2.5"}
	srv := httptest.NewServer(api)
	defer srv.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name, spec, want string
		pages            int32 // list pages the answer needs (0: no list call)
	}{
		{"empty spec asks for the release GitHub flags latest", "", "8.2.5", 0},
		{"an exact version is used as given, without the API", "8.2.9", "8.2.9", 0},
		{"an exact version may carry the tag's v", "v7.14.3", "7.14.3", 0},
		{"a minor line is its newest patch, not the prerelease", "8.2", "8.2.5", 3},
		{"a major line is its newest minor, not the prerelease or the draft", "8", "8.2.5", 3},
		{"an older major line published after a newer one", "7", "7.14.3", 3},
		{"an older minor line", "7.13", "7.13.2", 3},
		{"a line only on the last page is found", "5", "5.8.1", 3},
		{"a line of many releases", "6.12", "6.12.20", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api.pages.Store(0)
			got, err := ResolveVersion(ctx, srv.Client(), srv.URL, "tok-123", tc.spec)
			if err != nil {
				t.Fatalf("ResolveVersion(%q): %v", tc.spec, err)
			}
			if got != tc.want {
				t.Errorf("ResolveVersion(%q) = %q, want %q", tc.spec, got, tc.want)
			}
			if n := api.pages.Load(); n != tc.pages {
				t.Errorf("ResolveVersion(%q) read %d list pages, want %d", tc.spec, n, tc.pages)
			}
			if tc.pages > 0 {
				if a, _ := api.auth.Load().(string); a != "Bearer tok-123" {
					t.Errorf("Authorization = %q, want the bearer token", a)
				}
			}
		})
	}
}

func TestResolveVersionRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, spec string
		api        *releaseAPI
		status     int    // the API answers every request with this status, when set
		wantErr    string // a fragment of the error
	}{
		{name: "a line with no published release", spec: "9", api: &releaseAPI{releases: concourseReleases()},
			wantErr: "no published Concourse release in line 9"},
		{name: "a line whose only release is a prerelease", spec: "8.3", api: &releaseAPI{releases: concourseReleases()},
			wantErr: "no published Concourse release in line 8.3"},
		{name: "not a version nor a line", spec: "8.x", api: &releaseAPI{},
			wantErr: `version "8.x" is neither a release`},
		{name: "a leading zero", spec: "08.2", api: &releaseAPI{},
			wantErr: "neither a release"},
		{name: "four components", spec: "8.2.5.1", api: &releaseAPI{},
			wantErr: "neither a release"},
		{name: "a next link to another host is not followed (the token would leave)", spec: "8",
			api:     &releaseAPI{releases: concourseReleases(), nextHost: "127.0.0.2:9"},
			wantErr: "not on the same host"},
		{name: "a list that never ends", spec: "8", api: &releaseAPI{releases: concourseReleases()[:3], endless: true},
			wantErr: "more than 10 pages"},
		{name: "rate limited", spec: "8.2", status: http.StatusTooManyRequests,
			wantErr: "rate limit exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h http.Handler = tc.api
			if tc.status != 0 {
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, `{"message":"API rate limit exceeded"}`, tc.status)
				})
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			got, err := ResolveVersion(ctx, srv.Client(), srv.URL, "tok-secret", tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ResolveVersion(%q) = %q, %v; want an error with %q", tc.spec, got, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "tok-secret") {
				t.Errorf("the error carries the token: %v", err)
			}
			if tc.status != 0 {
				var ge *GitHubError
				if !errors.As(err, &ge) || !ge.RateLimited {
					t.Errorf("error %v is not a rate-limited *GitHubError", err)
				}
			}
		})
	}
}

func TestMajorJump(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		want     bool
	}{
		{"7.14.3", "8.2.5", true},
		{"7.14.3", "9.0.0", true},
		{"8.0.0", "8.2.5", false},
		{"7.13.2", "7.14.3", false},
		{"8.2.5", "7.14.3", false}, // a downgrade is not an upgrade to confirm
		{"", "8.2.5", false},       // a fresh install migrates an empty database
		{"v7.14.3", "v8.0.0", true},
		{"7.14", "8.2.5", false}, // a line is resolved before it is compared
		{"9.0.0", "10.0.0", true},
	} {
		if got := MajorJump(tc.from, tc.to); got != tc.want {
			t.Errorf("MajorJump(%q, %q) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}
