package storage

import "regexp"

// redacted replaces the userinfo of a URL. It hides the user name too: on a
// private mirror the name alone can be a token.
const redacted = "***"

// RedactURL returns u without the credentials of its userinfo
// ("http://user:pw@mirror/x" -> "http://***@mirror/x"), for every place a URL
// is printed or recorded: statuses, logs, errors, the manifest on the share.
// Text that is not a URL with userinfo is returned as is.
func RedactURL(u string) string {
	// Textual, not url.Parse+String: that would re-escape the rest of the URL
	// and fails on the malformed URLs an operator may type.
	return RedactText(u)
}

// userinfoRE matches "scheme://<userinfo>@" up to the last '@' before the path,
// the way net/url splits an authority ("u:p@ss@host" has userinfo "u:p@ss").
var userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#"']*@`)

// RedactText scrubs the userinfo of every URL inside a free text, such as an
// error message that quotes a URL (net/http's own errors keep the user name).
func RedactText(s string) string {
	return userinfoRE.ReplaceAllString(s, "${1}"+redacted+"@")
}
