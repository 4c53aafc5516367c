package concourse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const (
	// DefaultReleaseBase is where GitHub serves release assets; a mirror must
	// use the same layout (<base>/v<V>/<asset>).
	DefaultReleaseBase = "https://github.com/concourse/concourse/releases/download"
	// DefaultGitHubAPI is the GitHub REST API root used by LatestVersion.
	DefaultGitHubAPI = "https://api.github.com"
	// latestTimeout bounds one LatestVersion call: a hook must not hang on a
	// slow API (reference weakness #30: urlretrieve without a timeout).
	latestTimeout = 10 * time.Second
	// maxAPIBody caps how much of an API answer we read; a release object
	// with its asset list is a few tens of KiB.
	maxAPIBody = 4 << 20
)

// versionRE is strict X.Y.Z without leading zeros, so that versions compare
// by number and "7.14.03" cannot name the same release as "7.14.3".
var versionRE = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

// ParseVersion normalises an operator- or API-supplied version: it trims
// space and one leading "v" (GitHub tags are "v7.14.3", asset names use the
// bare form) and insists on X.Y.Z. Release candidates are refused because
// they are never published as GitHub release assets (contract §1.1).
func ParseVersion(s string) (string, error) {
	v := strings.TrimSpace(s)
	v = strings.TrimPrefix(v, "v")
	if !versionRE.MatchString(v) {
		return "", fmt.Errorf("version %q is not of the form X.Y.Z (e.g. 7.14.3)", s)
	}
	return v, nil
}

// CompareVersions compares two versions as ParseVersion accepts them and
// returns -1, 0 or +1. A string ParseVersion rejects sorts before every valid
// version, and two invalid strings compare as strings, so the result is a
// total order and never panics.
func CompareVersions(a, b string) int {
	va, errA := ParseVersion(a)
	vb, errB := ParseVersion(b)
	switch {
	case errA != nil && errB != nil:
		return strings.Compare(a, b)
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	}
	pa, pb := strings.Split(va, "."), strings.Split(vb, ".")
	for i := range 3 {
		// No leading zeros, so a longer number is a bigger one; comparing
		// lengths first avoids overflow on absurdly long components.
		if c := len(pa[i]) - len(pb[i]); c != 0 {
			return sign(c)
		}
		if c := strings.Compare(pa[i], pb[i]); c != 0 {
			return c
		}
	}
	return 0
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// Arch maps a Go architecture (runtime.GOARCH) to the string Concourse uses
// in Linux asset names. Concourse publishes Linux tarballs for amd64 and,
// from 7.14.0, arm64 only (contract §1.1).
func Arch(goarch string) (string, error) {
	switch goarch {
	case "amd64", "arm64":
		return goarch, nil
	}
	return "", fmt.Errorf("architecture %q is not supported: Concourse publishes Linux releases for amd64 and arm64 only", goarch)
}

// AssetName is the Linux tarball name for a bare version and arch, e.g.
// concourse-7.14.3-linux-amd64.tgz.
func AssetName(version, arch string) string {
	return "concourse-" + version + "-linux-" + arch + ".tgz"
}

// DownloadURL is <base>/v<version>/<asset>: the tag keeps its "v", the file
// name does not (contract §1.1). A trailing slash on base is tolerated.
func DownloadURL(base, version, arch string) string {
	return strings.TrimRight(base, "/") + "/v" + version + "/" + AssetName(version, arch)
}

// ChecksumURL is the URL of the SHA-1 sidecar published next to every asset
// (contract §1.2: "<asset>.sha1", the only checksum file there is).
func ChecksumURL(base, version, arch string) string {
	return DownloadURL(base, version, arch) + ".sha1"
}

// GitHubError reports a GitHub API answer other than 200. RateLimited is set
// for 403/429 answers that GitHub marks as rate limiting, so a caller can tell
// the operator to pin a version or provide a token instead of retrying.
type GitHubError struct {
	URL         string
	StatusCode  int
	RateLimited bool
	Reset       time.Time // when the rate limit resets; zero if unknown
	Message     string    // GitHub's "message" field, if any
}

func (e *GitHubError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "GitHub API %s answered HTTP %d", e.URL, e.StatusCode)
	if e.Message != "" {
		fmt.Fprintf(&b, " (%s)", e.Message)
	}
	if e.RateLimited {
		b.WriteString(": rate limit exceeded")
		if !e.Reset.IsZero() {
			fmt.Fprintf(&b, " until %s", e.Reset.UTC().Format(time.RFC3339))
		}
		b.WriteString("; pin a version or use a GitHub token (unauthenticated calls are limited to 60 an hour)")
	}
	return b.String()
}

// LatestVersion asks the GitHub API (apiURL, "" for DefaultGitHubAPI) for the
// release flagged "latest" and returns its bare version. token, when set, is
// sent as a bearer token and never appears in errors. The call is bounded by
// 10 s on top of ctx.
func LatestVersion(ctx context.Context, c *http.Client, apiURL, token string) (string, error) {
	if apiURL == "" {
		apiURL = DefaultGitHubAPI
	}
	url := strings.TrimRight(apiURL, "/") + "/repos/concourse/concourse/releases/latest"
	ctx, cancel := context.WithTimeout(ctx, latestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("asking %s for the latest Concourse release: %w", url, err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	if t := strings.TrimSpace(token); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		// *url.Error names the method and URL, never the headers.
		return "", fmt.Errorf("asking GitHub for the latest Concourse release: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIBody))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", url, err)
	}
	var payload struct {
		TagName string `json:"tag_name"`
		Message string `json:"message"`
	}
	jsonErr := json.Unmarshal(body, &payload)
	if resp.StatusCode != http.StatusOK {
		ge := &GitHubError{URL: url, StatusCode: resp.StatusCode}
		if jsonErr == nil {
			ge.Message = payload.Message
		}
		// GitHub signals its primary limit with 403 + X-RateLimit-Remaining: 0
		// and secondary limits with 403/429 (+ Retry-After).
		if resp.StatusCode == http.StatusTooManyRequests ||
			(resp.StatusCode == http.StatusForbidden &&
				(resp.Header.Get("X-RateLimit-Remaining") == "0" || resp.Header.Get("Retry-After") != "" ||
					strings.Contains(strings.ToLower(payload.Message), "rate limit"))) {
			ge.RateLimited = true
			if s, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
				ge.Reset = time.Unix(s, 0)
			}
		}
		return "", ge
	}
	if jsonErr != nil {
		return "", fmt.Errorf("decoding the answer of %s: %w", url, jsonErr)
	}
	if payload.TagName == "" {
		return "", errors.New("the answer of " + url + " has no tag_name")
	}
	v, err := ParseVersion(payload.TagName)
	if err != nil {
		return "", fmt.Errorf("latest release at %s: %w", url, err)
	}
	return v, nil
}

// DefaultProbeTimeout bounds `concourse --version`, which answers in
// milliseconds; a binary that hangs is a broken release, not a slow one.
const DefaultProbeTimeout = 10 * time.Second

// ProbeVersion runs `<binary> --version`, which every Concourse subcommand
// answers with the bare version and exit 0 (concourse-contract §1.5), bounded
// by timeout (DefaultProbeTimeout when <= 0).
func ProbeVersion(ctx context.Context, binary string, timeout time.Duration) (string, error) {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "--version")
	// A child that keeps the output pipe open must not hold us past the timeout.
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", fmt.Errorf("running %s --version: no answer within %s", binary, timeout)
		}
		return "", fmt.Errorf("running %s --version: %w", binary, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ProbeRelease checks an extracted release before it may become current:
// dir/bin/concourse exists, is an executable regular file, and reports
// version. Its errors say which of these failed.
func ProbeRelease(ctx context.Context, version, dir string, timeout time.Duration) error {
	bin := filepath.Join(dir, "bin", "concourse")
	fi, err := os.Stat(bin)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the tarball has no concourse/bin/concourse")
	case err != nil:
		return fmt.Errorf("checking bin/concourse: %w", err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("concourse/bin/concourse is not a regular file (%s)", fi.Mode().Type())
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("concourse/bin/concourse is not executable (mode %04o)", fi.Mode().Perm())
	}
	got, err := ProbeVersion(ctx, bin, timeout)
	if err != nil {
		return err
	}
	if got != version {
		return fmt.Errorf("concourse/bin/concourse --version says %q, want %q", truncate(got, 80), version)
	}
	return nil
}
