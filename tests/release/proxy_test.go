package release

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestProxyServesGitHubFromTheReleaseServer: a client that trusts the proxy's CA and goes through
// it reaches "api.github.com" and "github.com" as the release server, and nothing else.
func TestProxyServesGitHubFromTheReleaseServer(t *testing.T) {
	srv := NewServer("127.0.0.1:0")
	defer srv.Close()
	a, err := Build(t.TempDir(), "7.14.3", "amd64", BuildFakeConcourse(t, "7.14.3"), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(a)
	srv.SetLatest("7.14.3")
	p, err := ListenProxy("127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.CAPEM) {
		t.Fatal("CAPEM is not a certificate")
	}
	proxyURL, _ := url.Parse(p.URL())
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	get := func(u string) (int, string, error) {
		resp, err := client.Get(u)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	code, body, err := get("https://api.github.com" + APIPrefix + "/latest")
	if err != nil || code != 200 || !strings.Contains(body, `"tag_name":"v7.14.3"`) {
		t.Errorf("latest through the proxy = %d %.200q %v", code, body, err)
	}
	code, body, err = get("https://github.com" + DownloadPrefix + "/v7.14.3/" + a.Name + ".sha1")
	if err != nil || code != 200 || body != a.SHA1Line() {
		t.Errorf(".sha1 through the proxy = %d %q %v; want %q", code, body, err, a.SHA1Line())
	}
	if _, _, err := get("https://example.com/"); err == nil {
		t.Error("the proxy tunnelled to example.com")
	}
	if got := p.Refused(); len(got) != 1 || !strings.Contains(got[0], "example.com") {
		t.Errorf("Refused() = %q; want the example.com CONNECT", got)
	}
	// Without the CA the interception is visible: TLS verification fails.
	plain := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	if resp, err := plain.Get("https://api.github.com" + APIPrefix + "/latest"); err == nil {
		resp.Body.Close()
		t.Error("a client that does not trust the proxy CA accepted its certificate")
	}
}
