package juju

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// ProxyFunc returns a proxy selector for http.Transport.Proxy built from the JUJU_CHARM_*
// proxies of this hook (contract §1.3, §9.2). Juju does not apply them to the charm process and
// the hook environment may differ from the process environment, so http.ProxyFromEnvironment
// (which reads and caches the process environment) is not used.
//
// The rules follow golang.org/x/net/http/httpproxy, which is not a dependency of this module:
// https requests use HTTPSProxy and http requests HTTPProxy; a proxy without a scheme is taken
// as http://; localhost and loopback addresses never go through a proxy; NoProxy is a comma
// list of "*", IP addresses, CIDR blocks and domain names, each optionally with ":port", where
// "example.com" matches the domain and its subdomains and ".example.com" only subdomains.
func (e Env) ProxyFunc() func(*http.Request) (*url.URL, error) {
	httpProxy, httpErr := parseProxy(e.HTTPProxy)
	httpsProxy, httpsErr := parseProxy(e.HTTPSProxy)
	noProxy := parseNoProxy(e.NoProxy)
	return func(req *http.Request) (*url.URL, error) {
		var proxy *url.URL
		var err error
		switch req.URL.Scheme {
		case "https":
			proxy, err = httpsProxy, httpsErr
		case "http":
			proxy, err = httpProxy, httpErr
		}
		if err != nil {
			return nil, err
		}
		if proxy == nil || !noProxy.useProxy(req.URL) {
			return nil, nil
		}
		return proxy, nil
	}
}

func parseProxy(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		// "proxy.internal:3128" parses with scheme "proxy.internal"; retry as http:// the way
		// httpproxy does.
		if u2, err2 := url.Parse("http://" + s); err2 == nil && u2.Host != "" {
			return u2, nil
		}
		if err == nil {
			err = fmt.Errorf("no host")
		}
		return nil, fmt.Errorf("invalid proxy address %q: %w", s, err)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
		return u, nil
	}
	return nil, fmt.Errorf("invalid proxy address %q: unsupported scheme %q", s, u.Scheme)
}

type noProxyRules struct {
	all     bool
	nets    []*net.IPNet
	ips     []ipRule
	domains []domainRule
}

type ipRule struct {
	ip   net.IP
	port string
}

type domainRule struct {
	suffix    string // always starts with "."
	matchApex bool   // "example.com" also matches "example.com" itself
	port      string
}

func parseNoProxy(s string) noProxyRules {
	var r noProxyRules
	for _, entry := range strings.Split(s, ",") {
		entry = strings.ToLower(strings.TrimSpace(entry))
		if entry == "" {
			continue
		}
		if entry == "*" {
			r.all = true
			return r
		}
		if _, n, err := net.ParseCIDR(entry); err == nil {
			r.nets = append(r.nets, n)
			continue
		}
		host, port := entry, ""
		if h, p, err := net.SplitHostPort(entry); err == nil {
			host, port = h, p
		}
		if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
			r.ips = append(r.ips, ipRule{ip: ip, port: port})
			continue
		}
		host = strings.TrimPrefix(host, "*")
		d := domainRule{suffix: host, port: port}
		if !strings.HasPrefix(host, ".") {
			d.suffix, d.matchApex = "."+host, true
		}
		r.domains = append(r.domains, d)
	}
	return r
}

func (r noProxyRules) useProxy(u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	if ip != nil && ip.IsLoopback() {
		return false
	}
	if r.all {
		return false
	}
	if ip != nil {
		for _, n := range r.nets {
			if n.Contains(ip) {
				return false
			}
		}
		for _, rule := range r.ips {
			if rule.ip.Equal(ip) && (rule.port == "" || rule.port == port) {
				return false
			}
		}
		return true
	}
	for _, d := range r.domains {
		if d.port != "" && d.port != port {
			continue
		}
		if strings.HasSuffix(host, d.suffix) || (d.matchApex && host == d.suffix[1:]) {
			return false
		}
	}
	return true
}
