package concourse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const (
	// resolveTimeout bounds one ResolveVersion call over every page: Concourse has a few
	// hundred releases, two or three pages of 100.
	resolveTimeout = 30 * time.Second
	// maxReleasePages bounds the walk of the paginated list (1,000 releases), so a server that
	// links page after page cannot hold a hook for ever.
	maxReleasePages = 10
)

// lineRE is a release line: a major ("8") or a major.minor ("8.2"), without leading zeros.
var lineRE = regexp.MustCompile(`^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?$`)

// nextLinkRE finds the rel="next" URL of a GitHub Link header.
var nextLinkRE = regexp.MustCompile(`<([^>]+)>\s*;\s*rel="next"`)

// ResolveVersion turns the operator's `version` option into an exact release:
//
//	""        the release GitHub flags latest (as LatestVersion)
//	"8"       the newest published 8.x.y
//	"8.2"     the newest published 8.2.y
//	"8.2.5"   8.2.5 as given ("v8.2.5" too): no API call, so a pinned version works offline
//	          and against a mirror without an API; a release that does not exist fails at
//	          its download, as a pin always did
//
// A release line is looked up in the paginated list GET <apiURL>/repos/concourse/concourse/
// releases?per_page=100, skipping drafts, prereleases and tags that are not X.Y.Z; every page
// is fetched until the line's newest release is known (the list is newest first, but a patch
// of an old line can be published after a newer line, so the whole list is read). The walk is
// bounded (30 s, 10 pages) and follows only "next" links on apiURL's own host, so the token
// never leaves it. The leader resolves once and publishes the result as target-version; the
// other units never call this.
func ResolveVersion(ctx context.Context, c *http.Client, apiURL, token, spec string) (string, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return LatestVersion(ctx, c, apiURL, token)
	}
	if v, err := ParseVersion(spec); err == nil {
		return v, nil
	}
	line := strings.TrimPrefix(spec, "v")
	if !lineRE.MatchString(line) {
		return "", fmt.Errorf("version %q is neither a release (X.Y.Z, e.g. 8.2.5) nor a release line (X or X.Y, e.g. 8 or 8.2); leave it empty for the latest release", spec)
	}
	versions, err := ReleaseVersions(ctx, c, apiURL, token)
	if err != nil {
		return "", fmt.Errorf("resolving release line %s: %w", line, err)
	}
	best := ""
	for _, v := range versions {
		if inLine(v, line) && (best == "" || CompareVersions(v, best) > 0) {
			best = v
		}
	}
	if best == "" {
		return "", fmt.Errorf("no published Concourse release in line %s (of %d releases listed); set version to an existing line or release", line, len(versions))
	}
	return best, nil
}

// inLine says whether the exact version v belongs to line ("8" or "8.2").
func inLine(v, line string) bool { return strings.HasPrefix(v, line+".") }

// MajorJump says whether moving from one release to another crosses a major version upwards
// (7.x → 8.x), the upgrade whose migration can take minutes and which the charm holds until
// the operator confirms it. A fresh install (from "") or an unparsable version is not a jump:
// there is nothing to protect, or the version check elsewhere refuses it.
func MajorJump(from, to string) bool {
	f, errF := ParseVersion(from)
	t, errT := ParseVersion(to)
	if errF != nil || errT != nil {
		return false
	}
	fm, _ := strconv.Atoi(strings.SplitN(f, ".", 2)[0])
	tm, _ := strconv.Atoi(strings.SplitN(t, ".", 2)[0])
	return tm > fm
}

// ReleaseVersions lists every published (not draft, not prerelease) X.Y.Z release, in the
// API's order (newest first). Bounded as ResolveVersion.
func ReleaseVersions(ctx context.Context, c *http.Client, apiURL, token string) ([]string, error) {
	if apiURL == "" {
		apiURL = DefaultGitHubAPI
	}
	if c == nil {
		c = http.DefaultClient
	}
	first := strings.TrimRight(apiURL, "/") + "/repos/concourse/concourse/releases?per_page=100"
	base, err := url.Parse(first)
	if err != nil {
		return nil, fmt.Errorf("GitHub API URL %q: %w", apiURL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	var out []string
	seen := map[string]bool{}
	next := first
	for page := 1; next != ""; page++ {
		if page > maxReleasePages {
			return nil, fmt.Errorf("the release list at %s has more than %d pages; pin an exact version", first, maxReleasePages)
		}
		rels, link, err := releasePage(ctx, c, next, token)
		if err != nil {
			return nil, err
		}
		for _, r := range rels {
			if r.Draft || r.Prerelease {
				continue
			}
			v, err := ParseVersion(r.TagName)
			if err != nil || seen[v] {
				continue // e.g. an old tag of another shape: not a release the charm can install
			}
			seen[v] = true
			out = append(out, v)
		}
		next = ""
		if m := nextLinkRE.FindStringSubmatch(link); m != nil {
			u, err := base.Parse(m[1])
			if err != nil || u.Scheme != base.Scheme || u.Host != base.Host {
				return nil, fmt.Errorf("the release list at %s links its next page to %q, not on the same host; refusing to follow it", first, m[1])
			}
			next = u.String()
		}
	}
	return out, nil
}

type releaseEntry struct {
	TagName    string `json:"tag_name"`
	Draft      bool   `json:"draft"`
	Prerelease bool   `json:"prerelease"`
}

// releasePage GETs one page of the list and returns its entries and Link header.
func releasePage(ctx context.Context, c *http.Client, u, token string) ([]releaseEntry, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", fmt.Errorf("asking %s for the Concourse releases: %w", u, err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	if t := strings.TrimSpace(token); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	resp, err := c.Do(req)
	if err != nil {
		// *url.Error names the method and URL, never the headers.
		return nil, "", fmt.Errorf("asking GitHub for the Concourse releases: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIBody))
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", gitHubError(u, resp, body)
	}
	var rels []releaseEntry
	if err := json.Unmarshal(body, &rels); err != nil {
		return nil, "", fmt.Errorf("decoding the answer of %s: %w", u, err)
	}
	return rels, resp.Header.Get("Link"), nil
}

// gitHubError builds the *GitHubError of a non-200 answer, marking rate limiting as
// LatestVersion does (403 + X-RateLimit-Remaining: 0 or Retry-After, or 429).
func gitHubError(u string, resp *http.Response, body []byte) *GitHubError {
	ge := &GitHubError{URL: u, StatusCode: resp.StatusCode}
	var payload struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &payload) == nil {
		ge.Message = payload.Message
	}
	if resp.StatusCode == http.StatusTooManyRequests ||
		(resp.StatusCode == http.StatusForbidden &&
			(resp.Header.Get("X-RateLimit-Remaining") == "0" || resp.Header.Get("Retry-After") != "" ||
				strings.Contains(strings.ToLower(ge.Message), "rate limit"))) {
		ge.RateLimited = true
		if s, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			ge.Reset = time.Unix(s, 0)
		}
	}
	return ge
}
