package hooks

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

// The blocked status of a failed install names the problem and the fix, and never carries the
// credentials of release-url (issue 11, items 2, 5 and 6). The errors are the ones storage returns.
func TestInstallFailureStatus(t *testing.T) {
	const password = "pa55-for-the-mirror"
	tarball := "http://ci:" + password + "@10.0.0.9/mirror/v8.2.5/concourse-8.2.5-linux-amd64.tgz"
	src := storage.Source{URL: tarball, SHA1URL: tarball + ".sha1"}
	cases := []struct {
		name string
		err  error
		want []string
	}{
		{"binary-reports-another-version", fmt.Errorf("installing 8.2.5: %w", &storage.ProbeError{URL: src.String(), Version: "8.2.5",
			Err: errors.New(`concourse/bin/concourse --version says "7.0.0", want "8.2.5"`)}),
			[]string{"Concourse v8.2.5 rejected, its binary does not work", `says "7.0.0"`, "current release keeps running"}},
		{"refused-earlier", &storage.RefusedError{Version: "8.2.5", Source: src.String(), Reason: "the tarball has no concourse/bin/concourse",
			Since: time.Unix(1700000000, 0), Record: "/var/lib/concourse/.refused_release"},
			[]string{"was refused", "no concourse/bin/concourse", "remove /var/lib/concourse/.refused_release"}},
		{"disk-full", fmt.Errorf("installing 8.2.5: %w", &storage.DiskFullError{Path: "/var/lib/concourse/.staging/install-1/bin/gdn", Avail: 1 << 20, Err: syscall.ENOSPC}),
			[]string{"disk holding /var/lib/concourse/.staging/install-1/bin/gdn is full", "free space"}},
		{"expands-too-far", fmt.Errorf("installing 8.2.5: %w", &storage.TooLargeError{URL: tarball, Limit: 4 << 30, Entry: "concourse/bin/zeros"}),
			[]string{"rejected", "more than 4.0 GiB", "not one"}},
		{"mirror-stalls", &storage.DownloadError{URL: tarball, Attempts: 5, Err: &storage.StallError{URL: tarball, Window: time.Minute, Got: 12, Min: 65536}},
			[]string{"the download stalled", "12 bytes in the last 1m0s"}},
		{"net/http error quoting the URL", &storage.DownloadError{URL: tarball, Attempts: 5,
			Err: &url.Error{Op: "Get", URL: tarball, Err: errors.New("connection refused")}},
			[]string{"Cannot download Concourse v8.2.5", "connection refused", "http://***@10.0.0.9/mirror"}},
		{"anything else", errors.New("fetching " + tarball + ": odd"),
			[]string{"Installing Concourse v8.2.5 from http://***@10.0.0.9/mirror"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := installFailure("8.2.5", src, c.err)
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("status %q lacks %q", got, w)
				}
			}
			if strings.Contains(got, password) || strings.Contains(got, "ci:") {
				t.Errorf("status carries the credentials: %q", got)
			}
			if strings.Contains(got, "migrat") || strings.Contains(got, "broken as published") {
				t.Errorf("status blames something else: %q", got)
			}
		})
	}
}
