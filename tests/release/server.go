package release

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DownloadPrefix is GitHub's download path for concourse releases; the server mirrors it so a
// charm's URL template only swaps the host (§1.1).
const DownloadPrefix = "/concourse/concourse/releases/download"

// APIPrefix is where the GitHub REST API stub answers (§1.6).
const APIPrefix = "/repos/concourse/concourse/releases"

// APIName is the Fault/Stats key for the API stub's endpoints.
const APIName = "api"

// Fault describes misbehaviour for one served name (an asset, "<asset>.sha1", or APIName). The zero
// value is a healthy server. Counters (Status500, CutRequests) start from the SetFault call.
type Fault struct {
	Status500      int           // the first N requests get 500
	CutAfter       int64         // close the connection after this many body bytes …
	CutRequests    int           // … for the first M requests; 0 means every request
	Delay          time.Duration // wait this long before answering
	BytesPerSecond int64         // throttle the body to about this rate
	Corrupt        bool          // flip the byte at CorruptByte in every body served
	CorruptByte    int64
	WrongChecksum  bool // <asset>.sha1 carries a wrong (well-formed) digest
	WrongDigest    bool // the API reports a wrong sha256 digest for the asset
	NoRange        bool // ignore Range requests: always a full 200
	Down           bool // answer 503
}

// Stats counts requests per served name.
type Stats struct {
	Requests int // every request, whatever happened
	Full     int // 200 responses whose whole body was sent
	Partial  int // 206 responses sent in full
	Failed   int // 500/503, cut connections, and bodies the client abandoned
}

type served struct {
	asset Asset
	// counters, updated atomically by concurrent handlers
	requests, full, partial, failed atomic.Int64
}

type faultState struct {
	f          Fault
	served500  int
	servedCuts int
}

// Server serves release assets the way github.com does, on a listener it owns, so it can bind a
// container bridge address as well as loopback.
type Server struct {
	addr string
	srv  *http.Server

	mu       sync.Mutex
	ln       net.Listener // nil while down
	assets   map[string]*served
	order    []string // asset names in Add order
	latest   string
	faults   map[string]*faultState
	counters map[string]*served // per served name: assets, their .sha1, and APIName
	conns    map[net.Conn]struct{}
	closed   bool
	handlers sync.WaitGroup
}

// Listen starts a server on addr ("127.0.0.1:0", or "<bridge-ip>:0").
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("release server: %w", err)
	}
	s := &Server{
		addr: ln.Addr().String(), ln: ln, assets: map[string]*served{}, faults: map[string]*faultState{},
		counters: map[string]*served{APIName: {}}, conns: map[net.Conn]struct{}{},
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ConnState: s.trackConn}
	go s.srv.Serve(ln)
	return s, nil
}

// NewServer is Listen that panics on error, for tests (like httptest.NewServer).
func NewServer(addr string) *Server {
	s, err := Listen(addr)
	if err != nil {
		panic(err)
	}
	return s
}

// URL is the server's base URL, e.g. http://127.0.0.1:41234 (no trailing slash).
func (s *Server) URL() string { return "http://" + s.addr }

// DownloadURL is the GitHub-shaped URL of a served file (asset or .sha1) of version v.
func (s *Server) DownloadURL(version, name string) string {
	return fmt.Sprintf("%s%s/v%s/%s", s.URL(), DownloadPrefix, strings.TrimPrefix(version, "v"), name)
}

// APIURL is the base of the releases API stub (…/repos/concourse/concourse/releases).
func (s *Server) APIURL() string { return s.URL() + APIPrefix }

// Add serves asset and its .sha1 under v<asset.Version>.
func (s *Server) Add(a Asset) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.Version == "" {
		a.Version = versionFromName(a.Name)
	}
	if _, ok := s.assets[a.Name]; !ok {
		s.order = append(s.order, a.Name)
	}
	sv := &served{asset: a}
	s.assets[a.Name] = sv
	s.counters[a.Name] = sv
	s.counters[a.Name+".sha1"] = &served{asset: a}
}

// versionFromName parses concourse-<V>-linux-<arch>.tgz.
func versionFromName(name string) string {
	v := strings.TrimPrefix(name, "concourse-")
	if i := strings.Index(v, "-linux-"); i >= 0 {
		return v[:i]
	}
	return ""
}

// SetLatest makes /releases/latest answer with version v ("" → 404, as for a repo without releases).
func (s *Server) SetLatest(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = strings.TrimPrefix(v, "v")
}

// SetFault replaces the fault of a served name and restarts its counters; Fault{} clears it.
func (s *Server) SetFault(name string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[name] = &faultState{f: f}
}

// SetDown(true) makes the whole server refuse connections (listener closed, open connections
// dropped); SetDown(false) listens again on the same address.
func (s *Server) SetDown(down bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("release server: closed")
	}
	if down {
		if s.ln != nil {
			s.ln.Close()
			s.ln = nil
		}
		for c := range s.conns {
			c.Close()
		}
		return nil
	}
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("release server: listening again on %s: %w", s.addr, err)
	}
	s.ln = ln
	go s.srv.Serve(ln)
	return nil
}

// Close stops the server, drops open connections and waits for handlers to return.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.srv.Close()
	s.handlers.Wait()
}

// Stats returns the counters of a served name (asset, "<asset>.sha1" or APIName).
func (s *Server) Stats(name string) Stats {
	s.mu.Lock()
	c := s.counters[name]
	s.mu.Unlock()
	if c == nil {
		return Stats{}
	}
	return Stats{Requests: int(c.requests.Load()), Full: int(c.full.Load()), Partial: int(c.partial.Load()), Failed: int(c.failed.Load())}
}

// Downloads is the number of complete 200 bodies sent for name.
func (s *Server) Downloads(name string) int { return s.Stats(name).Full }

// Requests is the number of requests for name, whatever their outcome.
func (s *Server) Requests(name string) int { return s.Stats(name).Requests }

func (s *Server) trackConn(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch state {
	case http.StateNew:
		s.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	}
}

// decide takes one request's share of the fault's counters.
func (s *Server) decide(name string) (f Fault, fail500, cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.faults[name]
	if st == nil {
		return Fault{}, false, false
	}
	f = st.f
	if st.served500 < f.Status500 {
		st.served500++
		return f, true, false
	}
	if f.CutAfter > 0 && (f.CutRequests == 0 || st.servedCuts < f.CutRequests) {
		st.servedCuts++
		cut = true
	}
	return f, false, cut
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	switch {
	case strings.HasPrefix(r.URL.Path, DownloadPrefix+"/"):
		s.serveDownload(w, r)
	case strings.HasPrefix(r.URL.Path, APIPrefix):
		s.serveAPI(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveDownload(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, DownloadPrefix+"/")
	tag, name, ok := strings.Cut(rest, "/")
	s.mu.Lock()
	c := s.counters[name]
	s.mu.Unlock()
	if !ok || c == nil || "v"+c.asset.Version != tag {
		http.NotFound(w, r)
		return
	}
	c.requests.Add(1)
	f, fail500, cut := s.decide(name)
	if !s.preamble(w, r, c, f, fail500) {
		return
	}

	var content io.ReadSeeker
	size := c.asset.Size
	etag := `"` + c.asset.SHA256 + `"`
	if strings.HasSuffix(name, ".sha1") {
		line := c.asset.SHA1Line()
		if assetFault, _, _ := s.peek(c.asset.Name); assetFault.WrongChecksum || f.WrongChecksum {
			// Well-formed but wrong: the digest of something else.
			sum := sha1.Sum([]byte("not " + c.asset.Name))
			line = hex.EncodeToString(sum[:]) + "  " + c.asset.Name + "\n"
		}
		content, size, etag = strings.NewReader(line), int64(len(line)), ""
	} else {
		file, err := os.Open(c.asset.Path)
		if err != nil {
			c.failed.Add(1)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer file.Close()
		var ra io.ReaderAt = file
		if f.Corrupt {
			ra = corruptAt{ra, f.CorruptByte}
		}
		content = io.NewSectionReader(ra, 0, size)
	}
	if f.NoRange {
		r.Header.Del("Range")
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &faultWriter{ResponseWriter: w, ctx: r, bps: f.BytesPerSecond, limit: -1}
	if cut {
		cw.limit = f.CutAfter
	}
	defer func() {
		// A cut is an http.ErrAbortHandler panic from inside ServeContent: count it, then let
		// net/http close the connection.
		if p := recover(); p != nil {
			c.failed.Add(1)
			panic(p)
		}
		switch {
		case cw.err != nil:
			c.failed.Add(1)
		case cw.status == http.StatusOK && cw.written == size:
			c.full.Add(1)
		case cw.status == http.StatusPartialContent:
			c.partial.Add(1)
		case cw.status >= 400:
			c.failed.Add(1)
		}
	}()
	http.ServeContent(cw, r, name, mtime, content)
}

// peek reads a name's fault without consuming its counters.
func (s *Server) peek(name string) (Fault, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.faults[name]; st != nil {
		return st.f, false, false
	}
	return Fault{}, false, false
}

// preamble applies Down, Status500 and Delay; false means the response is already written.
func (s *Server) preamble(w http.ResponseWriter, r *http.Request, c *served, f Fault, fail500 bool) bool {
	switch {
	case f.Down:
		c.failed.Add(1)
		http.Error(w, "service unavailable (injected)", http.StatusServiceUnavailable)
		return false
	case fail500:
		c.failed.Add(1)
		http.Error(w, "internal server error (injected)", http.StatusInternalServerError)
		return false
	}
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			c.failed.Add(1)
			return false
		}
	}
	return true
}

type corruptAt struct {
	io.ReaderAt
	off int64
}

func (c corruptAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.ReaderAt.ReadAt(p, off)
	if c.off >= off && c.off < off+int64(n) {
		p[c.off-off] ^= 0xff
	}
	return n, err
}

// faultWriter counts body bytes, throttles, and cuts the connection after limit bytes.
type faultWriter struct {
	http.ResponseWriter
	ctx     *http.Request
	bps     int64
	limit   int64 // -1: no cut
	status  int
	written int64
	err     error
}

func (w *faultWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	total := 0
	for len(p) > 0 {
		chunk := p
		if w.bps > 0 {
			// Tenth-of-a-second slices keep the rate smooth.
			chunk = p[:min(int64(len(p)), max(w.bps/10, 1))]
		}
		if w.limit >= 0 && w.written+int64(len(chunk)) >= w.limit {
			chunk = chunk[:w.limit-w.written]
			n, _ := w.ResponseWriter.Write(chunk)
			w.written += int64(n)
			if fl, ok := w.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
			panic(http.ErrAbortHandler)
		}
		n, err := w.ResponseWriter.Write(chunk)
		w.written += int64(n)
		total += n
		if err != nil {
			w.err = err
			return total, err
		}
		p = p[len(chunk):]
		if w.bps > 0 {
			select {
			case <-time.After(time.Duration(int64(len(chunk)) * int64(time.Second) / w.bps)):
			case <-w.ctx.Context().Done():
				w.err = w.ctx.Context().Err()
				return total, w.err
			}
		}
	}
	return total, nil
}

type apiAsset struct {
	Name               string  `json:"name"`
	Size               int64   `json:"size"`
	BrowserDownloadURL string  `json:"browser_download_url"`
	Digest             *string `json:"digest"`
	ContentType        string  `json:"content_type"`
	State              string  `json:"state"`
}

type apiRelease struct {
	TagName    string     `json:"tag_name"`
	Name       string     `json:"name"`
	Draft      bool       `json:"draft"`
	Prerelease bool       `json:"prerelease"`
	HTMLURL    string     `json:"html_url"`
	Assets     []apiAsset `json:"assets"`
}

// release assembles the API view of version v; ok is false when no asset has that version.
func (s *Server) release(v string) (apiRelease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := apiRelease{TagName: "v" + v, Name: "v" + v, HTMLURL: s.URL() + "/concourse/concourse/releases/tag/v" + v, Assets: []apiAsset{}}
	for _, name := range s.order {
		a := s.assets[name].asset
		if a.Version != v {
			continue
		}
		digest := "sha256:" + a.SHA256
		if st := s.faults[name]; st != nil && st.f.WrongDigest {
			digest = "sha256:" + strings.Repeat("0", 64)
		}
		line := a.SHA1Line()
		rel.Assets = append(rel.Assets,
			apiAsset{Name: a.Name, Size: a.Size, BrowserDownloadURL: s.DownloadURL(v, a.Name), Digest: &digest, ContentType: "application/gzip", State: "uploaded"},
			apiAsset{Name: a.Name + ".sha1", Size: int64(len(line)), BrowserDownloadURL: s.DownloadURL(v, a.Name+".sha1"), Digest: nil, ContentType: "application/octet-stream", State: "uploaded"},
		)
	}
	return rel, len(rel.Assets) > 0
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	c := s.counters[APIName]
	latest := s.latest
	var versions []string
	seen := map[string]bool{}
	for i := len(s.order) - 1; i >= 0; i-- {
		if v := s.assets[s.order[i]].asset.Version; !seen[v] {
			seen[v] = true
			versions = append(versions, v)
		}
	}
	s.mu.Unlock()
	c.requests.Add(1)
	f, fail500, _ := s.decide(APIName)
	if !s.preamble(w, r, c, f, fail500) {
		return
	}
	notFound := func() {
		c.failed.Add(1)
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found", "documentation_url": "https://docs.github.com/rest/releases/releases"})
	}
	path := strings.TrimPrefix(r.URL.Path, APIPrefix)
	switch {
	case path == "" || path == "/":
		// Newest added first, like GitHub's list.
		list := []apiRelease{}
		for _, v := range versions {
			if rel, ok := s.release(v); ok {
				list = append(list, rel)
			}
		}
		c.full.Add(1)
		writeJSON(w, http.StatusOK, list)
	case path == "/latest":
		rel, ok := s.release(latest)
		if latest == "" || !ok {
			notFound()
			return
		}
		c.full.Add(1)
		writeJSON(w, http.StatusOK, rel)
	case strings.HasPrefix(path, "/tags/v"):
		rel, ok := s.release(strings.TrimPrefix(path, "/tags/v"))
		if !ok {
			notFound()
			return
		}
		c.full.Add(1)
		writeJSON(w, http.StatusOK, rel)
	default:
		notFound()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
