// Package admin serves the replicator's HTTP admin endpoints: liveness and
// readiness probes, Prometheus metrics, and whatever other packages register
// with Handle (tenants, parked messages).
//
// Only /healthz and /readyz are public, because orchestrators probe them
// without credentials and they reveal nothing but "ok" or a one-line
// reason. Every other path, including unknown ones (so that 401 versus 404
// does not reveal which endpoints exist), needs "Authorization: Bearer
// <token>". The server binds to loopback by default and refuses to serve
// without a token on any other address.
package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// DefaultListen is the address used when Options.Listen is empty.
const DefaultListen = "127.0.0.1:9180"

// Timeouts of the HTTP server. The header timeout is what protects against
// slow-loris clients; the others bound a stuck client or handler.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	shutdownTimeout   = 5 * time.Second
	// maxReasonLen bounds the /readyz reason.
	maxReasonLen = 200
)

// Options configure a Server.
type Options struct {
	// Listen is host:port; empty means DefaultListen. Port 0 picks a free
	// port (see Addr).
	Listen string
	// Token authenticates every endpoint but /healthz and /readyz.
	Token string
	// AllowNoToken serves without authentication when Token is empty; it
	// is honoured only on a loopback address.
	AllowNoToken bool
	// Registry is served on /metrics; nil serves no /metrics.
	Registry *prometheus.Registry
	// Pprof serves Go's profiles under /debug/pprof/ (authenticated like
	// every private endpoint). Off by default: a CPU profile costs CPU.
	Pprof bool
	// Ready reports why the replicator is not ready, or nil. Its error is
	// served without authentication, so it must not hold secrets (which
	// is why only its first line, shortened, is shown); it should be fast,
	// e.g. read state the components keep, not query the database.
	Ready func() error
}

// Server is the admin HTTP server. It implements http.Handler, so tests and
// embedders can serve it themselves; Run serves it on Options.Listen.
type Server struct {
	listen       string
	allowNoToken bool
	noAuth       bool
	tokenHash    [sha256.Size]byte
	ready        func() error
	log          *zap.Logger
	public       *http.ServeMux
	private      *http.ServeMux

	mu      sync.Mutex
	addr    string
	started bool
}

// New builds a server; nothing listens before Run. A nil log discards.
func New(opts Options, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	s := &Server{
		listen:       opts.Listen,
		allowNoToken: opts.AllowNoToken,
		noAuth:       opts.Token == "",
		// Only the hash is kept: comparing equal-length hashes in constant
		// time reveals neither the token nor its length.
		tokenHash: sha256.Sum256([]byte(opts.Token)),
		ready:     opts.Ready,
		log:       log,
		public:    http.NewServeMux(),
		private:   http.NewServeMux(),
	}
	s.public.HandleFunc("/healthz", s.healthz)
	s.public.HandleFunc("/readyz", s.readyz)
	if opts.Registry != nil {
		s.private.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
			ErrorLog:            zap.NewStdLog(log),
			ErrorHandling:       promhttp.ContinueOnError,
			MaxRequestsInFlight: 4,
			Timeout:             10 * time.Second,
		}))
	}
	if opts.Pprof {
		s.private.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.private.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		s.private.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.private.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		s.private.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return s
}

// Handle registers an authenticated endpoint (http.ServeMux pattern syntax,
// e.g. "GET /tenants/{id}"). It may be called before or while Run serves.
// /healthz and /readyz are taken by the public probes.
func (s *Server) Handle(pattern string, h http.Handler) { s.private.Handle(pattern, h) }

// Addr is the address the server listens on, "" before Run has bound it.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// ServeHTTP serves the public probes, and every other path after
// authentication.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if _, pattern := s.public.Handler(r); pattern != "" {
		s.public.ServeHTTP(w, r)
		return
	}
	if !s.authorized(w, r) {
		return
	}
	s.private.ServeHTTP(w, r)
}

// authError is the JSON body of a 401.
type authError struct {
	Error   string `json:"error"`
	Allowed string `json:"allowed"`
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.noAuth {
		return true
	}
	auth := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(auth, " ")
	token = strings.TrimSpace(token)
	var reason string
	switch {
	case auth == "" || strings.EqualFold(scheme, "Bearer") && token == "":
		reason = "missing bearer token"
	case !strings.EqualFold(scheme, "Bearer"):
		reason = "authorization header is not a bearer token"
	default:
		sum := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(sum[:], s.tokenHash[:]) == 1 {
			return true
		}
		reason = "invalid bearer token"
	}
	// The token (or whatever was sent instead) is never logged.
	s.log.Warn("admin request refused",
		zap.String("reason", reason), zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
	w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
	writeJSON(w, http.StatusUnauthorized, authError{Error: reason, Allowed: "Authorization: Bearer <token>"})
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	// Keep "<token>" readable: the body is JSON, never HTML.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body.Bytes())
}

func probeMethod(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed; allowed GET, HEAD", http.StatusMethodNotAllowed)
	return false
}

// healthz is liveness: the process serves HTTP. It says nothing else.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if !probeMethod(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz is readiness: 503 with a one-line reason while Ready fails.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !probeMethod(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.ready != nil {
		if err := s.ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + oneLine(err.Error()) + "\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
}

// oneLine keeps the first line of s, without control characters, at most
// maxReasonLen bytes: a probe reason, not a stack of wrapped errors.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > maxReasonLen {
		cut := maxReasonLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// errNoToken and errNotLoopback explain a refusal to start.
var (
	errNoToken     = errors.New("no token configured; allowed: a token (admin.token, TANDEM_ADMIN_TOKEN or TANDEM_ADMIN_TOKEN_FILE), or admin.allow_no_token: true on a loopback address")
	errNotLoopback = errors.New("refusing to serve without a token on a non-loopback address; allowed: set a token (TANDEM_ADMIN_TOKEN), or listen on 127.0.0.1, ::1 or localhost")
)

// mayBeLoopback rules out, before binding, the addresses that are certainly
// not loopback: all interfaces (empty host) and non-loopback IP literals.
// A host name is checked on the bound address instead.
func mayBeLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return true
}

// Run listens and serves until ctx is cancelled, then shuts down
// gracefully (in-flight requests get up to 5 s) and returns nil. It fails
// at once when it cannot listen or would serve without a token off
// loopback.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("admin: Run called twice; allowed: once per Server")
	}
	s.started = true
	s.mu.Unlock()

	if s.noAuth && !s.allowNoToken {
		return fmt.Errorf("admin: %w", errNoToken)
	}
	if s.noAuth && !mayBeLoopback(s.listen) {
		return fmt.Errorf("admin: listen %s: %w", s.listen, errNotLoopback)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.listen)
	if err != nil {
		return fmt.Errorf("admin: listen on %s: %w", s.listen, err)
	}
	tcp, _ := ln.Addr().(*net.TCPAddr)
	loopback := tcp != nil && tcp.IP.IsLoopback()
	if s.noAuth && !loopback {
		ln.Close()
		return fmt.Errorf("admin: listen %s (bound %s): %w", s.listen, ln.Addr(), errNotLoopback)
	}
	addr := ln.Addr().String()
	s.mu.Lock()
	s.addr = addr
	s.mu.Unlock()

	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.log.Info("admin server listening", zap.String("addr", addr), zap.Bool("authenticated", !s.noAuth))
	if !loopback {
		s.log.Warn("admin server listens beyond loopback over plain HTTP; the bearer token crosses the network in clear text, so put it behind TLS or a private network",
			zap.String("addr", addr))
	}

	select {
	case err := <-served:
		return fmt.Errorf("admin: serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Requests still running after the grace period are cut off;
		// stopping is what the caller asked for, so this is no error.
		s.log.Warn("admin server shutdown timed out; closing open connections", zap.Error(err))
		srv.Close()
	}
	<-served // http.ErrServerClosed
	return nil
}
