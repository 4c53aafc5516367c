package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// runWeb follows contract §9.3 step by step, failing at the same points and with the same texts as
// the real `concourse web` (§2.1 "Runtime errors, in the order web hits them").
func runWeb(c cmdEnv, args []string) error {
	o, err := parseOptions(webOptions(c.flavour), args, c.env, c.flavour)
	if err != nil {
		return err
	}
	log := newLogger(c.stdout, "atc", parseLevel(o.str("log-level")))
	if err := validateTLS(o); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log.Info("atc.cmd.start", nil)
	if o.key("session-signing-key") == nil {
		// §2.2: without a signing key the real web generates an RSA-2048 key per process.
		if _, err := rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return fmt.Errorf("failed to generate session signing key: %s", err)
		}
	}

	cfg := pgConfigFrom(o)
	db, err := connectDB(ctx, c, log, cfg, int(o.integer("api-max-conns")+o.integer("backend-max-conns")))
	if err != nil {
		return fmt.Errorf("failed to connect to database: %s", err)
	}
	defer db.Close()
	if err := withMigrationLock(ctx, db, func(conn *sql.Conn) error { return migrateToLatest(ctx, conn, c.flavour) }); err != nil {
		return fmt.Errorf("failed to migrate database: %s", err)
	}
	log.Info("atc.cmd.finish", nil)

	if !hasMainTeamRule(o) {
		return errors.New("default team auth not configured: auth config for the team does not have users and groups configured")
	}
	users, err := localUsers(o)
	if err != nil {
		return err
	}

	heartbeat := o.duration("tsa-heartbeat-interval")
	if heartbeat <= 0 {
		heartbeat = 30 * time.Second
	}
	reg := &registry{db: db, ttl: 2 * heartbeat}
	peer := o.str("tsa-peer-address")
	if peer == "" {
		peer = o.str("peer-address")
	}
	tsaLog := log.withSource("tsa")
	if !o.isSet("tsa-authorized-keys") {
		tsaLog.Info("tsa.starting-tsa-without-authorized-keys", nil)
	}
	tsa, err := newTSAServer(tsaLog, o.key("tsa-host-key"), o.authKeys("tsa-authorized-keys"), reg, peer, heartbeat)
	if err != nil {
		return err
	}

	// Bind everything before serving anything: a port clash must exit 1 (§2.1 "bind").
	tsaAddr := o.hostPort("tsa-bind-ip", "tsa-bind-port")
	tsaLn, err := net.Listen("tcp", tsaAddr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %s", tsaAddr, err)
	}
	defer tsaLn.Close()
	var listeners []net.Listener
	listen := func(name, addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			log.Error("web.atc-runner.logging-runner-exited", err, logData{"runner": name})
			return nil, fmt.Errorf("Exit trace for group:\n%s exited with error: %s\n", name, err)
		}
		listeners = append(listeners, l)
		return l, nil
	}
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	httpLn, err := listen("web", o.hostPort("bind-ip", "bind-port"))
	if err != nil {
		return err
	}
	debugLn, err := listen("debug", o.hostPort("debug-bind-ip", "debug-bind-port"))
	if err != nil {
		return err
	}
	tsaDebugLn, err := listen("tsa-debug", o.hostPort("tsa-debug-bind-ip", "tsa-debug-bind-port"))
	if err != nil {
		return err
	}
	var tlsLn, promLn net.Listener
	if o.isSet("tls-bind-port") && !o.boolean("enable-lets-encrypt") {
		if tlsLn, err = listen("web-tls", o.hostPort("bind-ip", "tls-bind-port")); err != nil {
			return err
		}
	}
	// §2.3: the Prometheus emitter is on only when both halves are given.
	if o.isSet("prometheus-bind-ip") && o.isSet("prometheus-bind-port") {
		if promLn, err = listen("prometheus", net.JoinHostPort(o.str("prometheus-bind-ip"), strconv.FormatInt(o.integer("prometheus-bind-port"), 10))); err != nil {
			return err
		}
	}

	api := &webAPI{
		flavour: c.flavour, opts: o, reg: reg, users: users, db: db,
		externalURL: externalURL(o, httpLn.Addr().(*net.TCPAddr).Port),
		prefix:      assetPrefix(),
		tokenTTL:    o.duration("auth-duration"),
	}
	var servers []*http.Server
	serve := func(l net.Listener, h http.Handler, tlsFiles ...string) {
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() {
			if len(tlsFiles) == 2 {
				s.ServeTLS(l, tlsFiles[0], tlsFiles[1])
				return
			}
			s.Serve(l)
		}()
	}

	go tsa.serve(ctx, tsaLn)
	tsaLog.Info("tsa.listening", logData{"addr": tsaLn.Addr().String()})
	serve(tsaDebugLn, http.NotFoundHandler())
	serve(httpLn, api.handler())
	serve(debugLn, http.NotFoundHandler())
	listening := logData{"http": httpLn.Addr().String(), "debug": debugLn.Addr().String()}
	if tlsLn != nil {
		serve(tlsLn, api.handler(), o.str("tls-cert"), o.str("tls-key"))
		listening["https"] = tlsLn.Addr().String()
	}
	if promLn != nil {
		serve(promLn, http.HandlerFunc(api.metrics))
		listening["prometheus"] = promLn.Addr().String()
	}
	log.Info("atc.listening", listening)

	for {
		select {
		case <-hup:
			// §2.4: SIGHUP re-reads the authorized keys file; a bad file keeps the old keys.
			tsaLog.Info("tsa.reloading-config", nil)
			if path, ok := o.raw["tsa-authorized-keys"]; ok {
				blob, err := os.ReadFile(path)
				if err != nil {
					tsaLog.Error("tsa.failed-to-reload-config", err, nil)
					continue
				}
				tsa.setKeys(parseAuthorizedKeys(blob))
			}
		case <-ctx.Done():
			log.Info("atc.cmd.exiting", nil)
			tsaLn.Close()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			for _, s := range servers {
				s.Shutdown(shutdown)
			}
			cancel()
			return nil
		}
	}
}

// validateTLS reproduces the multierror text of §2.1 ("1 error occurred:\n\t* …\n\n").
func validateTLS(o *parsed) error {
	var errs []string
	tlsPort := o.isSet("tls-bind-port")
	hasCert := o.str("tls-cert") != "" || o.str("tls-key") != ""
	switch {
	case tlsPort && o.boolean("enable-lets-encrypt") && hasCert:
		errs = append(errs, "cannot specify --enable-lets-encrypt if --tls-cert or --tls-key are set")
	case tlsPort && !o.boolean("enable-lets-encrypt") && (o.str("tls-cert") == "" || o.str("tls-key") == ""):
		errs = append(errs, "must specify --tls-cert and --tls-key, or --enable-lets-encrypt to use TLS")
	case tlsPort && !strings.HasPrefix(o.str("external-url"), "https://"):
		errs = append(errs, "must specify HTTPS external-url to use TLS")
	case !tlsPort && hasCert:
		errs = append(errs, "must specify --tls-bind-port to use TLS")
	}
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return fmt.Errorf("1 error occurred:\n\t* %s\n\n", errs[0])
	}
	return fmt.Errorf("%d errors occurred:\n\t* %s\n\n", len(errs), strings.Join(errs, "\n\t* "))
}

// connectDB: 7.14 fails at once; 8.x retries with back-off for ~30 s (§2.1), shortened for tests by
// FAKE_CONCOURSE_DB_RETRY (a Go duration).
func connectDB(ctx context.Context, c cmdEnv, log logger, cfg pgConfig, maxConns int) (*sql.DB, error) {
	if !c.flavour.retriesDBConnect() {
		return openDB(ctx, cfg, maxConns)
	}
	window := 30 * time.Second
	if v, ok := c.env.lookup("FAKE_CONCOURSE_DB_RETRY"); ok {
		if d, err := time.ParseDuration(v); err == nil {
			window = d
		}
	}
	deadline := time.Now().Add(window)
	delay := 500 * time.Millisecond
	for {
		db, err := openDB(ctx, cfg, maxConns)
		if err == nil {
			return db, nil
		}
		if time.Now().Add(delay).After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		log.Error("atc.db.failed-to-open-db-retrying", err, nil)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, err
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func hasMainTeamRule(o *parsed) bool {
	for _, opt := range mainTeamRuleOptions() {
		if opt.kind == kStrings && len(nonEmpty(o.strs(opt.long))) > 0 {
			return true
		}
		if opt.kind == kFile && o.str(opt.long) != "" {
			return true
		}
	}
	return false
}

func nonEmpty(list []string) []string {
	var out []string
	for _, s := range list {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

// localUsers parses CONCOURSE_ADD_LOCAL_USER ("user:pass,…"; pass may be a bcrypt hash). Entries
// without ":" are dropped; if that leaves none, dex has no connector and the real web fails (§2.1).
func localUsers(o *parsed) (map[string]string, error) {
	users := map[string]string{}
	for _, entry := range o.strs("add-local-user") {
		name, pass, ok := strings.Cut(entry, ":")
		if !ok || name == "" {
			continue
		}
		users[name] = pass
	}
	if o.isSet("add-local-user") && len(users) == 0 {
		return nil, errors.New("server: no connectors specified")
	}
	return users, nil
}

// externalURL defaults to http://<bind-ip, 0.0.0.0→127.0.0.1>:<port> (§2.2).
func externalURL(o *parsed, port int) string {
	if u := o.str("external-url"); u != "" {
		return u
	}
	ip := o.ip("bind-ip")
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

// assetPrefix is dirname(dirname(os.Executable())) with symlinks resolved (§1.3 discovery rule).
func assetPrefix() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Dir(filepath.Dir(exe))
}

type webAPI struct {
	flavour     flavour
	opts        *parsed
	reg         *registry
	db          *sql.DB
	users       map[string]string
	externalURL string
	prefix      string
	tokenTTL    time.Duration
}

func (a *webAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/info", a.info)
	mux.HandleFunc("POST /sky/issuer/token", a.token)
	mux.HandleFunc("GET /api/v1/workers", a.authenticated(a.workers))
	mux.HandleFunc("PUT /api/v1/workers/{name}/prune", a.authenticated(a.prune))
	mux.HandleFunc("GET /api/v1/user", a.authenticated(a.user))
	mux.HandleFunc("GET /api/v1/cli", a.cli)
	if a.flavour.hasHealthEndpoint() {
		mux.HandleFunc("GET /api/v1/health", a.health)
	}
	mux.HandleFunc("GET /{$}", a.index)
	return a.headers(mux)
}

// headers sets what every real response carries (§6.1), and what only the ATC API's own routes
// carry (seen on 7.14.3 and 8.2.5): X-Concourse-Version on every API route but not on the
// /sky/issuer login nor on an unknown path; Vary from the API's gzip wrapper, which fly downloads
// skip. A successful login says only "no-store" (token sets it).
func (a *webAPI) headers(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		_, pattern := mux.Handler(r)
		api := pattern != "" && strings.HasPrefix(r.URL.Path, "/api/v1/")
		if api || r.URL.Path == "/" {
			h.Set("X-Concourse-Version", version)
		}
		if api && r.URL.Path != "/api/v1/cli" {
			h.Set("Vary", "Accept-Encoding")
		}
		h.Set("Cache-Control", "no-store, private")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Download-Options", "noopen")
		h.Set("X-XSS-Protection", "1; mode=block")
		if v := a.opts.str("x-frame-options"); v != "" {
			h.Set("X-Frame-Options", v)
		}
		if v := a.opts.str("content-security-policy"); v != "" {
			h.Set("Content-Security-Policy", v)
		}
		if v := a.opts.str("strict-transport-security"); v != "" {
			h.Set("Strict-Transport-Security", v)
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeSkyJSON is writeJSON for the /sky/issuer endpoints, which (unlike the ATC API) end their
// JSON without a newline in the real binaries.
func writeSkyJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func (a *webAPI) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Version       string          `json:"version"`
		WorkerVersion string          `json:"worker_version"`
		FeatureFlags  map[string]bool `json:"feature_flags"`
		ExternalURL   string          `json:"external_url,omitempty"`
		ClusterName   string          `json:"cluster_name,omitempty"`
	}{version, "2.5", a.flavour.featureFlags(a.opts), a.externalURL, a.opts.str("cluster-name")})
}

// token is dex's password grant for the fly client (§6.1): basic auth fly:Zmx5.
func (a *webAPI) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok || id != "fly" || secret != "Zmx5" {
		writeSkyJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "Invalid client credentials."})
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "password" {
		writeSkyJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	name, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	if !a.checkPassword(name, pass) {
		writeSkyJSON(w, http.StatusUnauthorized, map[string]string{"error": "access_denied", "error_description": "Invalid username or password"})
		return
	}
	ttl := a.tokenTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	claims := tokenClaims{Sub: name, Exp: time.Now().Add(ttl).Unix(), IsAdmin: a.inMainTeam(name)}
	tok, err := a.reg.issueToken(r.Context(), claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	idTok, err := a.reg.issueToken(r.Context(), claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeSkyJSON(w, http.StatusOK, map[string]any{
		"access_token": tok, "token_type": "bearer", "expires_in": int(ttl.Seconds()) - 1, "id_token": idTok,
	})
}

func (a *webAPI) checkPassword(name, pass string) bool {
	want, ok := a.users[name]
	if !ok {
		return false
	}
	if strings.HasPrefix(want, "$2") {
		return bcrypt.CompareHashAndPassword([]byte(want), []byte(pass)) == nil
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(pass)) == 1
}

func (a *webAPI) inMainTeam(name string) bool {
	return contains(a.opts.strs("main-team-local-user"), name)
}

type authedHandler func(w http.ResponseWriter, r *http.Request, c tokenClaims)

// authenticated answers 401 "not authorized" (text/plain) without a known bearer token (§6.1).
func (a *webAPI) authenticated(next authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		scheme, tok, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "bearer") || tok == "" {
			notAuthorized(w)
			return
		}
		claims, ok, err := a.reg.lookupToken(r.Context(), strings.TrimSpace(tok))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if !ok {
			notAuthorized(w)
			return
		}
		next(w, r, claims)
	}
}

// notAuthorized is the real 401: "not authorized" with no newline (http.Error would add one).
func notAuthorized(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, "not authorized")
}

func (a *webAPI) workers(w http.ResponseWriter, r *http.Request, _ tokenClaims) {
	list, err := a.reg.list(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// prune is `fly prune-worker`: only workers that are not running may be pruned.
func (a *webAPI) prune(w http.ResponseWriter, r *http.Request, _ tokenClaims) {
	name := r.PathValue("name")
	list, err := a.reg.list(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, wk := range list {
		if wk.Name != name {
			continue
		}
		if wk.State == "running" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"stderr": "cannot prune running worker"})
			return
		}
		if err := a.reg.remove(r.Context(), name); err != nil && !errors.Is(err, errNoWorker) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	http.NotFound(w, r)
}

func (a *webAPI) user(w http.ResponseWriter, r *http.Request, c tokenClaims) {
	teams := map[string][]string{}
	if a.inMainTeam(c.Sub) {
		teams["main"] = []string{"owner"}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"user_id": c.Sub, "user_name": c.Sub, "name": c.Sub, "email": "", "is_admin": c.IsAdmin,
		"is_system": false, "teams": teams, "connector": "local", "display_user_id": c.Sub,
	})
}

// cli serves `fly` for a platform and arch the way the real web does: it opens
// fly-assets/fly-<platform>-<arch>.tgz beside bin/ and streams the `fly` file inside it; a missing
// archive is a 500 naming the path.
func (a *webAPI) cli(w http.ResponseWriter, r *http.Request) {
	platform, arch := r.URL.Query().Get("platform"), r.URL.Query().Get("arch")
	if strings.ContainsAny(platform+arch, "/\\.") {
		http.NotFound(w, r)
		return
	}
	path := filepath.Join(a.prefix, "fly-assets", fmt.Sprintf("fly-%s-%s.tgz", platform, arch))
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, "failed to open tgz archive: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		http.Error(w, "failed to create gzip reader: "+err.Error(), http.StatusInternalServerError)
		return
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			http.Error(w, fmt.Sprintf("failed to find fly in %s: %v", path, err), http.StatusInternalServerError)
			return
		}
		if filepath.Base(h.Name) == "fly" && h.Typeflag == tar.TypeReg {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.FormatInt(h.Size, 10))
			io.Copy(w, tr)
			return
		}
	}
}

func (a *webAPI) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!DOCTYPE html>\n<html><head><title>Concourse</title></head><body><div id=\"elm-app-embed\" data-version=%q></div></body></html>\n", version)
}

// health is the 8.3 endpoint: failing (503) when the DB is down or no worker is running.
func (a *webAPI) health(w http.ResponseWriter, r *http.Request) {
	dbStatus := map[string]string{"status": "healthy"}
	status, code := "ok", http.StatusOK
	workers := map[string]any{"status": "healthy", "total": 0, "running": 0, "unhealthy_workers": []string{}}
	if err := a.db.PingContext(r.Context()); err != nil {
		dbStatus = map[string]string{"status": "unhealthy", "error": err.Error()}
		status, code = "failing", http.StatusServiceUnavailable
	} else if list, err := a.reg.list(r.Context()); err == nil {
		running, unhealthy := 0, []string{}
		for _, wk := range list {
			if wk.State == "running" {
				running++
			} else if wk.State == "stalled" {
				unhealthy = append(unhealthy, wk.Name)
			}
		}
		workers = map[string]any{"status": "healthy", "total": len(list), "running": running, "unhealthy_workers": unhealthy}
		if running == 0 {
			workers["status"] = "unhealthy"
			status, code = "failing", http.StatusServiceUnavailable
		} else if len(unhealthy) > 0 {
			workers["status"] = "degraded"
			status = "degraded"
		}
	}
	writeJSON(w, code, map[string]any{
		"status": status, "timestamp": time.Now().UTC().Format(time.RFC3339), "database": dbStatus,
		"workers": workers, "components": []any{},
	})
}

// metrics serves a small text exposition on every path, as the real Prometheus listener does.
func (a *webAPI) metrics(w http.ResponseWriter, r *http.Request) {
	counts := map[string]int{}
	if list, err := a.reg.list(r.Context()); err == nil {
		for _, wk := range list {
			counts[wk.State]++
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores")
	fmt.Fprintln(w, "# HELP concourse_workers_registered Number of workers per state.")
	fmt.Fprintln(w, "# TYPE concourse_workers_registered gauge")
	for _, s := range []string{"running", "stalled", "landing", "landed", "retiring"} {
		fmt.Fprintf(w, "concourse_workers_registered{state=%q} %d\n", s, counts[s])
	}
}
