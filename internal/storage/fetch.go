package storage

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errRangeIgnored: the server answered a Range request with the whole body.
// The single-pass stream cannot splice that in, so the attempt restarts.
var errRangeIgnored = errors.New("server ignored the Range request and sent the whole file")

// HTTPStatusError is a non-success HTTP answer.
type HTTPStatusError struct {
	URL    string
	Status string
	Code   int
}

func (e *HTTPStatusError) Error() string {
	return RedactText(fmt.Sprintf("GET %s: %s", e.URL, e.Status))
}

// resumeError: the resume loop gave up after its own bounded, backed-off
// retries. Starting the whole download again would repeat them with the
// install lock still held, so it ends the install.
type resumeError struct{ err error }

func (e *resumeError) Error() string { return e.err.Error() }
func (e *resumeError) Unwrap() error { return e.err }

// retryable says whether another attempt could succeed.
func retryable(err error) bool {
	var u *UnsafePathError
	var c *ChecksumError
	var h *HTTPStatusError
	var l *localError
	switch {
	case errors.As(err, &u), errors.As(err, &l), errors.As(err, new(*ArchiveError)), errors.As(err, new(*resumeError)),
		errors.As(err, new(*TooLargeError)), errors.As(err, new(*DiskFullError)), errors.As(err, new(*ProbeError)):
		return false
	case errors.As(err, &c):
		// Not even a mismatch: TLS and TCP checksums make corruption in transit
		// rare, while a wrong sidecar or a bad mirror file stays wrong, and each
		// retry is a whole release downloaded again with the lock held.
		return false
	case errors.As(err, &h):
		return h.Code >= 500 || h.Code == http.StatusRequestTimeout || h.Code == http.StatusTooManyRequests
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}

func (s *Store) backoff(attempt int) time.Duration {
	d := s.opts.Retry.Initial
	for i := 1; i < attempt && d < s.opts.Retry.Max; i++ {
		d *= 2
	}
	return min(d, s.opts.Retry.Max)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sidecarRE matches "<40 hex>  <name>" (sha1sum/shasum output; "*" marks binary mode).
var sidecarRE = regexp.MustCompile(`^([0-9a-fA-F]{40})[ \t]+\*?(\S+)\s*$`)
var sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

type expected struct {
	algo string // "sha1", "sha256" or "" (none)
	hex  string
}

// fetchSidecar reads and parses a .sha1 sidecar.
func (s *Store) fetchSidecar(ctx context.Context, sidecarURL, assetName string) (string, error) {
	// A sidecar is a line of text: headers and body must arrive within one
	// stall window, or a hung mirror holds the hook (and the lock) until Retry.Total.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got atomic.Int64
	var stalled atomic.Bool
	timer := time.AfterFunc(s.opts.StallTimeout, func() { stalled.Store(true); cancel() })
	defer timer.Stop()
	stallErr := func(err error) error {
		if stalled.Load() {
			return &StallError{URL: sidecarURL, Window: s.opts.StallTimeout, Got: got.Load(), Min: -1}
		}
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sidecarURL, nil)
	if err != nil {
		return "", &ChecksumError{URL: sidecarURL, Algo: "sha1", Reason: "sidecar URL invalid: " + err.Error()}
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching checksum %s: %w", sidecarURL, stallErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return "", &ChecksumError{URL: sidecarURL, Algo: "sha1", Reason: fmt.Sprintf("sidecar %s is missing (%s)", sidecarURL, resp.Status)}
	}
	if resp.StatusCode != http.StatusOK {
		return "", &HTTPStatusError{URL: sidecarURL, Status: resp.Status, Code: resp.StatusCode}
	}
	b, err := io.ReadAll(io.LimitReader(countingReader{resp.Body, &got}, 4096))
	if err != nil {
		return "", fmt.Errorf("reading checksum %s: %w", sidecarURL, stallErr(err))
	}
	line, _, _ := strings.Cut(string(b), "\n")
	m := sidecarRE.FindStringSubmatch(line)
	if m == nil {
		return "", &ChecksumError{URL: sidecarURL, Algo: "sha1", Reason: fmt.Sprintf("sidecar %s is malformed (want \"<40 hex>  <name>\", got %q)", sidecarURL, truncate(line, 80))}
	}
	if assetName != "" && m[2] != assetName {
		s.logf("checksum sidecar %s names %q, the tarball is %q; checking the digest anyway", sidecarURL, m[2], assetName)
	}
	return strings.ToLower(m[1]), nil
}

// countingReader counts the bytes read through it into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// staged is the result of one successful download+extract into staging.
type staged struct {
	dir      string
	manifest *Manifest
	bytes    int64
}

// stage downloads (or reads) the tarball once and extracts it into a fresh
// directory under .staging, with retries for URL sources.
// stage downloads and extracts src into a new staging directory. used, when not nil, receives
// the checksum the body was checked against (the sidecar's, once fetched), also on failure: a
// refusal is recorded against it, so a mirror that republishes a fixed tarball is tried again.
func (s *Store) stage(ctx context.Context, version string, src Source, used *expected) (*staged, error) {
	if err := os.MkdirAll(s.path(StagingDir), 0o755); err != nil {
		return nil, &localError{fmt.Errorf("creating %s: %w", s.path(StagingDir), err)}
	}
	if src.SHA256 != "" && !sha256RE.MatchString(src.SHA256) {
		return nil, &ChecksumError{URL: src.String(), Algo: "sha256", Reason: fmt.Sprintf("%q is not 64 hex digits", src.SHA256)}
	}
	if src.LocalPath != "" {
		return s.stageLocal(ctx, version, src)
	}
	if src.URL == "" {
		return nil, errors.New("source has neither URL nor LocalPath")
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Retry.Total)
	defer cancel()

	var want expected
	if src.SHA256 != "" {
		want = expected{"sha256", strings.ToLower(src.SHA256)}
	}
	if used != nil {
		defer func() { *used = want }()
	}
	sidecar := src.SHA1URL
	if sidecar == "" {
		sidecar = src.URL + ".sha1"
	}
	asset := ""
	if u, err := url.Parse(src.URL); err == nil {
		asset = path.Base(u.Path)
	}
	for attempt := 1; ; attempt++ {
		st, err := func() (*staged, error) {
			if want.algo == "" {
				sum, err := s.fetchSidecar(ctx, sidecar, asset)
				if err != nil {
					return nil, err
				}
				want = expected{"sha1", sum}
			}
			return s.stageURL(ctx, version, src, want)
		}()
		if err == nil {
			return st, nil
		}
		if df := diskFull(s.path(StagingDir), err); df != nil {
			return nil, df // our disk, not the download: no retry, and say so
		}
		if !retryable(err) || attempt >= s.opts.Retry.Attempts || ctx.Err() != nil {
			return nil, &DownloadError{URL: src.URL, Attempts: attempt, Err: err}
		}
		delay := s.backoff(attempt)
		if errors.Is(err, errRangeIgnored) {
			delay = 0 // not a failure of the server, just a full restart
		}
		s.logf("download attempt %d/%d of %s failed: %v; retrying in %s", attempt, s.opts.Retry.Attempts, src.URL, err, delay)
		if serr := sleepCtx(ctx, delay); serr != nil {
			return nil, &DownloadError{URL: src.URL, Attempts: attempt, Err: fmt.Errorf("%w; last failure: %w", serr, err)}
		}
	}
}

func (s *Store) newStagingDir() (string, error) {
	dir, err := os.MkdirTemp(s.path(StagingDir), "install-")
	if err != nil {
		return "", &localError{fmt.Errorf("creating staging directory in %s: %w", s.path(StagingDir), err)}
	}
	// MkdirTemp makes it 0700, and this directory becomes versions/<v>-<id>: the web service runs
	// as an unprivileged user that must traverse it to reach bin/concourse.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", &localError{fmt.Errorf("opening up %s: %w", dir, err)}
	}
	return dir, nil
}

func (s *Store) stageURL(ctx context.Context, version string, src Source, want expected) (*staged, error) {
	// Cancelling ctx also aborts a network read the producer is blocked in.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body := &resumableBody{s: s, ctx: ctx, url: src.URL, total: -1}
	defer body.Close()
	if err := body.start(); err != nil {
		return nil, err
	}
	dir, err := s.newStagingDir()
	if err != nil {
		return nil, err
	}
	st, err := s.extractStream(ctx, cancel, body, body.total, dir, version, src, want)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if body.resumes > 0 {
		s.logf("download of %s resumed %d time(s)", src.URL, body.resumes)
	}
	return st, nil
}

func (s *Store) stageLocal(ctx context.Context, version string, src Source) (*staged, error) {
	var want expected
	switch {
	case src.SHA256 != "":
		want = expected{"sha256", strings.ToLower(src.SHA256)}
	case src.SHA1URL != "":
		sum, err := s.fetchSidecar(ctx, src.SHA1URL, "")
		if err != nil {
			return nil, err
		}
		want = expected{"sha1", sum}
	default:
		s.logf("no checksum given for local tarball %s; installing it as given (a Juju resource is fingerprinted by Juju)", src.LocalPath)
	}
	f, err := os.Open(src.LocalPath)
	if err != nil {
		return nil, fmt.Errorf("opening tarball %s: %w", src.LocalPath, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading tarball %s: %w", src.LocalPath, err)
	}
	dir, err := s.newStagingDir()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := s.extractStream(ctx, cancel, f, fi.Size(), dir, version, src, want)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return st, nil
}

// chunk is one buffer handed from the download goroutine to the extractor.
type chunk struct {
	buf []byte
	n   int
}

// chanReader turns the chunk channel back into an io.Reader.
type chanReader struct {
	ch    <-chan chunk
	pool  *sync.Pool
	cur   chunk
	off   int
	errFn func() error // the producer's final error, valid once ch is closed
}

func (r *chanReader) Read(p []byte) (int, error) {
	for r.off >= r.cur.n {
		if r.cur.buf != nil {
			b := r.cur.buf // a fresh variable: the pool must not alias r.cur
			r.pool.Put(&b)
			r.cur = chunk{}
		}
		c, ok := <-r.ch
		if !ok {
			if err := r.errFn(); err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		r.cur, r.off = c, 0
	}
	n := copy(p, r.cur.buf[r.off:r.cur.n])
	r.off += n
	return n, nil
}

const chunkSize = 1 << 20

// extractStream is the single pass: raw bytes -> sha1+sha256 -> gunzip ->
// untar into dir. Reading and hashing the raw stream runs in its own
// goroutine so it overlaps with decompression (two cores are common).
// cancel must cancel ctx and abort reads of raw.
func (s *Store) extractStream(ctx context.Context, cancel context.CancelFunc, raw io.Reader, total int64, dir, version string, src Source, want expected) (*staged, error) {
	start := s.opts.Now()
	// Before a byte is written: the tarball itself must fit, and it expands to more.
	if total > 0 {
		if err := checkFree(dir, uint64(total)+diskReserve); err != nil {
			return nil, err
		}
	}

	pool := &sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}
	ch := make(chan chunk, 8)
	h1, h256 := sha1.New(), sha256.New()
	var (
		prodErr error
		nbytes  int64
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		prodErr = s.produce(ctx, raw, total, ch, pool, []hash.Hash{h1, h256}, &nbytes)
	}()
	cr := &chanReader{ch: ch, pool: pool, errFn: func() error { return prodErr }}
	br := bufio.NewReaderSize(cr, 256<<10)

	x := newExtractor(dir, s.opts.StripPrefix, src.String(), s.opts.MaxExpandedBytes)
	err := func() error {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("reading gzip header: %w", err)
		}
		if err := x.extract(tar.NewReader(gz)); err != nil {
			return err
		}
		// Read to the end so gzip checks its CRC and the digest covers every byte.
		if _, err := io.Copy(io.Discard, gz); err != nil {
			return fmt.Errorf("reading gzip trailer: %w", err)
		}
		if _, err := io.Copy(io.Discard, br); err != nil {
			return err
		}
		return nil
	}()
	if err != nil {
		if df := diskFull(dir, err); df != nil {
			err = df
		}
		var unsafe *UnsafePathError
		// Only a failure of the tarball's content can be "broken as published": our own disk
		// (full, read-only, EIO) or the size bound say nothing about the checksum.
		local := errors.As(err, new(*localError)) || errors.As(err, new(*DiskFullError)) || errors.As(err, new(*TooLargeError))
		if local {
			cancel()
			for range ch {
			}
			wg.Wait()
			return nil, err
		}
		if want.algo != "" && !errors.As(err, &unsafe) && !errors.Is(err, context.Canceled) {
			// Finish reading the stream through the hashers to tell bytes damaged in transit
			// (the checksum differs: another attempt may work) from a release that is broken as
			// published (the checksum matches: retrying only costs time).
			if _, derr := io.Copy(io.Discard, br); derr == nil {
				wg.Wait()
				if prodErr == nil {
					sum := hex.EncodeToString(h1.Sum(nil))
					if want.algo == "sha256" {
						sum = hex.EncodeToString(h256.Sum(nil))
					}
					if sum == want.hex {
						return nil, &ArchiveError{URL: src.String(), Err: err}
					}
					return nil, fmt.Errorf("extracting %s: %v; %w", src, err, &ChecksumError{URL: src.String(), Algo: want.algo, Want: want.hex, Got: sum})
				}
			}
		}
		cancel()
		for range ch { // let the producer finish
		}
		wg.Wait()
		// A network failure shows up in the extractor as a read error; report the cause.
		if prodErr != nil && !errors.Is(prodErr, context.Canceled) {
			return nil, fmt.Errorf("extracting %s: %w", src, prodErr)
		}
		return nil, fmt.Errorf("extracting %s: %w", src, err)
	}
	wg.Wait()
	sum1, sum256 := hex.EncodeToString(h1.Sum(nil)), hex.EncodeToString(h256.Sum(nil))
	switch want.algo {
	case "sha1":
		if sum1 != want.hex {
			return nil, &ChecksumError{URL: src.String(), Algo: "sha1", Want: want.hex, Got: sum1}
		}
	case "sha256":
		if sum256 != want.hex {
			return nil, &ChecksumError{URL: src.String(), Algo: "sha256", Want: want.hex, Got: sum256}
		}
	}
	streamed := s.opts.Now().Sub(start)
	if err := x.syncAll(); err != nil {
		if df := diskFull(dir, err); df != nil {
			return nil, df
		}
		return nil, err
	}
	files, links := x.manifest()
	m := &Manifest{Version: version, Source: src.String(), SHA1: sum1, SHA256: sum256, Files: files, Symlinks: links}
	if err := writeManifest(dir, m); err != nil {
		if df := diskFull(dir, err); df != nil {
			return nil, df
		}
		return nil, err
	}
	took := s.opts.Now().Sub(start)
	s.logf("downloaded and extracted %s: %d bytes in %s (stream %s, fsync %s; %s verified: %v)", src, nbytes,
		took.Round(time.Millisecond), streamed.Round(time.Millisecond), (took - streamed).Round(time.Millisecond), orNone(want.algo), want.algo != "")
	return &staged{dir: dir, manifest: m, bytes: nbytes}, nil
}

func orNone(s string) string {
	if s == "" {
		return "no checksum"
	}
	return s
}

// produce reads raw in large chunks, hashes them and passes them on.
func (s *Store) produce(ctx context.Context, raw io.Reader, total int64, ch chan<- chunk, pool *sync.Pool, hashes []hash.Hash, nbytes *int64) error {
	step := int64(4 << 20)
	if total > 0 {
		step = max(total/100, 1)
	}
	var done, last int64
	for {
		bp := pool.Get().(*[]byte)
		buf := *bp
		// Fill a good part of the buffer: fewer, larger hand-offs.
		n, err := io.ReadAtLeast(raw, buf, len(buf)/4)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if n > 0 {
			for _, h := range hashes {
				h.Write(buf[:n])
			}
			done += int64(n)
			*nbytes = done
			if s.opts.Progress != nil && (done-last >= step || err == io.EOF) {
				s.opts.Progress(done, total)
				last = done
			}
			select {
			case ch <- chunk{buf: buf, n: n}:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			pool.Put(bp)
		}
		if err == io.EOF {
			if total > 0 && done != total {
				return fmt.Errorf("tarball ended at byte %d of %d: %w", done, total, io.ErrUnexpectedEOF)
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func writeManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}
	p := dir + string(os.PathSeparator) + ManifestName
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return &localError{fmt.Errorf("creating %s: %w", p, err)}
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return &localError{fmt.Errorf("writing %s: %w", p, err)}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return &localError{fmt.Errorf("syncing %s: %w", p, err)}
	}
	if err := f.Close(); err != nil {
		return &localError{err}
	}
	return syncDir(dir)
}

// watchdog cancels a request whose body delivers fewer than min bytes in a
// window; the wait for response headers counts as part of the first window.
// Resetting a timer on every read would let a trickle of a few bytes per
// window hold a request (and the install lock) for ever.
type watchdog struct {
	url    string
	window time.Duration
	min    int64
	cancel context.CancelFunc

	mu      sync.Mutex
	got     int64 // bytes in the current window
	stalled *StallError
	stopped bool
	timer   *time.Timer
}

func startWatchdog(url string, window time.Duration, min int64, cancel context.CancelFunc) *watchdog {
	w := &watchdog{url: url, window: window, min: min, cancel: cancel}
	w.mu.Lock()
	w.timer = time.AfterFunc(window, w.tick)
	w.mu.Unlock()
	return w
}

func (w *watchdog) tick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.got < w.min {
		w.stalled = &StallError{URL: w.url, Window: w.window, Got: w.got, Min: w.min}
		w.cancel()
		return
	}
	w.got = 0
	w.timer.Reset(w.window)
}

func (w *watchdog) add(n int) {
	w.mu.Lock()
	w.got += int64(n)
	w.mu.Unlock()
}

// err is the stall, or nil when the watchdog did not fire.
func (w *watchdog) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stalled == nil {
		return nil
	}
	return w.stalled
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

// resumableBody is the tarball body as one io.Reader: when the connection
// breaks or stalls it re-requests "Range: bytes=N-" and carries on, so the
// single-pass stream continues where it stopped.
type resumableBody struct {
	s     *Store
	ctx   context.Context
	url   string
	total int64
	// validator (ETag or Last-Modified) goes into If-Range so a changed file
	// is sent whole (200) instead of being spliced.
	validator string
	off       int64
	body      io.ReadCloser
	cancel    context.CancelFunc
	wd        *watchdog
	lastErr   error
	resumes   int
	// respBytes counts what the current response delivered; failures counts
	// consecutive responses (or requests) that delivered less than
	// MinProgress. A 206 alone is no success: a mirror that accepts every
	// Range request and breaks it at once must be backed off and given up on.
	respBytes int64
	failures  int
}

// maxResumes bounds the resumed requests of one attempt, however much each
// delivers: a connection that breaks every few hundred KiB is a broken path,
// not something to hammer for the whole Retry.Total.
func (b *resumableBody) maxResumes() int { return 10 * b.s.opts.Retry.Attempts }

func (b *resumableBody) request(rangeFrom int64) (*http.Response, error) {
	rctx, cancel := context.WithCancel(b.ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, b.url, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("building request for %s: %w", RedactURL(b.url), err)
	}
	if rangeFrom > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", rangeFrom))
		if b.validator != "" {
			req.Header.Set("If-Range", b.validator)
		}
	}
	wd := startWatchdog(b.url, b.s.opts.StallTimeout, b.s.opts.MinProgress, cancel)
	resp, err := b.s.opts.HTTPClient.Do(req)
	if err != nil {
		wd.stop()
		cancel()
		if serr := wd.err(); serr != nil {
			return nil, serr
		}
		return nil, err
	}
	b.cancel, b.wd = cancel, wd
	b.respBytes = 0
	return resp, nil
}

func (b *resumableBody) start() error {
	resp, err := b.request(0)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", RedactURL(b.url), err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		b.release()
		return &HTTPStatusError{URL: b.url, Status: resp.Status, Code: resp.StatusCode}
	}
	b.total = resp.ContentLength
	b.validator = resp.Header.Get("ETag")
	if b.validator == "" {
		b.validator = resp.Header.Get("Last-Modified")
	}
	b.body = resp.Body
	return nil
}

func (b *resumableBody) release() {
	if b.wd != nil {
		b.wd.stop()
	}
	if b.cancel != nil {
		b.cancel()
	}
	b.wd, b.cancel = nil, nil
}

func (b *resumableBody) Close() error {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
	b.release()
	return nil
}

// resume re-requests the rest of the body, with backoff after failures.
func (b *resumableBody) resume() error {
	s := b.s
	for {
		if b.failures >= s.opts.Retry.Attempts {
			return &resumeError{fmt.Errorf("resuming %s at byte %d failed %d times in a row: %w", RedactURL(b.url), b.off, b.failures, b.lastErr)}
		}
		if b.resumes >= b.maxResumes() {
			return &resumeError{fmt.Errorf("resuming %s: gave up after %d resumed requests, the connection keeps breaking: %w", RedactURL(b.url), b.resumes, b.lastErr)}
		}
		if b.failures > 0 {
			if err := sleepCtx(b.ctx, s.backoff(b.failures)); err != nil {
				return err
			}
		}
		s.logf("connection to %s broke at byte %d (%v); resuming with a Range request (%d in a row without progress)", b.url, b.off, b.lastErr, b.failures)
		resp, err := b.request(b.off)
		if err != nil {
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
			b.lastErr = err
			b.failures++
			continue
		}
		switch resp.StatusCode {
		case http.StatusPartialContent:
			start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
			if !ok || start != b.off || (b.total >= 0 && total >= 0 && total != b.total) {
				resp.Body.Close()
				b.release()
				return fmt.Errorf("resuming %s: Content-Range %q does not continue at byte %d of %d", RedactURL(b.url), resp.Header.Get("Content-Range"), b.off, b.total)
			}
			b.body = resp.Body
			b.resumes++
			return nil
		case http.StatusOK:
			resp.Body.Close()
			b.release()
			return fmt.Errorf("resuming %s at byte %d: %w", RedactURL(b.url), b.off, errRangeIgnored)
		default:
			resp.Body.Close()
			b.release()
			herr := &HTTPStatusError{URL: b.url, Status: resp.Status, Code: resp.StatusCode}
			if !retryable(herr) {
				return herr
			}
			b.lastErr = herr
			b.failures++
		}
	}
}

func (b *resumableBody) Read(p []byte) (int, error) {
	for {
		if b.body == nil {
			if err := b.resume(); err != nil {
				return 0, err
			}
		}
		n, err := b.body.Read(p)
		if n > 0 {
			b.off += int64(n)
			b.respBytes += int64(n)
			b.wd.add(n)
		}
		if err == nil {
			return n, nil
		}
		if err == io.EOF && (b.total < 0 || b.off == b.total) {
			return n, io.EOF
		}
		if b.total >= 0 && b.off > b.total {
			return n, fmt.Errorf("%s sent more than its Content-Length %d", RedactURL(b.url), b.total)
		}
		// Broken or stalled: drop this response and resume on the next call.
		if serr := b.wd.err(); serr != nil {
			err = serr
		}
		b.body.Close()
		b.body = nil
		b.release()
		if b.ctx.Err() != nil {
			return n, b.ctx.Err()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.lastErr = err
		if b.respBytes < b.s.opts.MinProgress {
			b.failures++
		} else {
			b.failures = 0
		}
		if n > 0 {
			return n, nil
		}
	}
}

// parseContentRange parses "bytes <start>-<end>/<total|*>".
func parseContentRange(v string) (start, total int64, ok bool) {
	v, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}
