package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const token = "s3cret-admin-token-0123456789"

func testRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_test_total", Help: "test"})
	c.Add(3)
	reg.MustRegister(c)
	return reg
}

// get performs a request and returns status, headers and body.
func get(t *testing.T, client *http.Client, method, url, auth string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func newTestServer(t *testing.T, opts Options, log *zap.Logger) (*Server, string, *http.Client) {
	t.Helper()
	s := New(opts, log)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	client := hs.Client()
	t.Cleanup(client.CloseIdleConnections)
	return s, hs.URL, client
}

func TestEndpoints(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	var notReady atomic.Bool
	notReady.Store(true)
	s, url, client := newTestServer(t, Options{
		Token:    token,
		Registry: testRegistry(),
		Ready: func() error {
			if notReady.Load() {
				return errors.New("binlog reader not connected yet")
			}
			return nil
		},
	}, zap.New(core))
	s.Handle("GET /tenants/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tenant %s\n", r.PathValue("id"))
	}))

	const missing = `{"error":"missing bearer token","allowed":"Authorization: Bearer <token>"}` + "\n"
	tests := []struct {
		name, method, path, auth string
		code                     int
		body                     string // exact body, or a substring when prefixed by ~
	}{
		{"healthz", "GET", "/healthz", "", 200, "ok\n"},
		{"healthz head", "HEAD", "/healthz", "", 200, ""},
		{"healthz post", "POST", "/healthz", "", 405, "~allowed GET, HEAD"},
		{"readyz not ready", "GET", "/readyz", "", 503, "not ready: binlog reader not connected yet\n"},
		{"metrics without token", "GET", "/metrics", "", 401, missing},
		{"metrics empty bearer", "GET", "/metrics", "Bearer ", 401, missing},
		{"metrics basic auth", "GET", "/metrics", "Basic dXNlcjpwYXNz", 401, `~"error":"authorization header is not a bearer token"`},
		{"metrics wrong token", "GET", "/metrics", "Bearer wrong", 401, `~"error":"invalid bearer token"`},
		{"metrics token prefix", "GET", "/metrics", "Bearer " + token[:10], 401, `~invalid bearer token`},
		{"metrics token longer", "GET", "/metrics", "Bearer " + token + "x", 401, `~invalid bearer token`},
		{"metrics", "GET", "/metrics", "Bearer " + token, 200, "~tandem_test_total 3"},
		{"metrics lower-case scheme", "GET", "/metrics", "bearer " + token, 200, "~tandem_test_total 3"},
		{"handled without token", "GET", "/tenants/acme", "", 401, missing},
		{"handled", "GET", "/tenants/acme", "Bearer " + token, 200, "tenant acme\n"},
		{"unknown path without token", "GET", "/nope", "", 401, missing},
		{"unknown path", "GET", "/nope", "Bearer " + token, 404, "~404 page not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, h, body := get(t, client, tt.method, url+tt.path, tt.auth)
			if code != tt.code {
				t.Errorf("status %d, want %d (body %q)", code, tt.code, body)
			}
			if b, ok := strings.CutPrefix(tt.body, "~"); ok {
				if !strings.Contains(body, b) {
					t.Errorf("body %q does not contain %q", body, b)
				}
			} else if body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if code == 401 {
				if h.Get("Content-Type") != "application/json" || h.Get("WWW-Authenticate") != `Bearer realm="tandem"` {
					t.Errorf("401 headers: %v", h)
				}
			}
			if h.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", h.Get("Cache-Control"))
			}
		})
	}

	notReady.Store(false)
	if code, _, body := get(t, client, "GET", url+"/readyz", ""); code != 200 || body != "ready\n" {
		t.Errorf("ready: %d %q", code, body)
	}

	// Refusals are logged with a reason, never with the token.
	if logs.FilterMessage("admin request refused").Len() == 0 {
		t.Error("refused requests were not logged")
	}
	for _, e := range logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		if strings.Contains(line, token[:10]) || strings.Contains(line, "wrong") {
			t.Errorf("log entry leaks a token: %s", line)
		}
	}
}

func TestReadyReasonIsOneShortLine(t *testing.T) {
	long := strings.Repeat("é", 300)
	_, url, client := newTestServer(t, Options{Token: token, Ready: func() error {
		return fmt.Errorf("sink site-b: %s\x1b[31m\ngoroutine 1 [running]:\nsecret stack", long)
	}}, nil)
	code, _, body := get(t, client, "GET", url+"/readyz", "")
	if code != 503 {
		t.Fatalf("status %d", code)
	}
	if strings.Count(body, "\n") != 1 || strings.Contains(body, "secret") || strings.Contains(body, "\x1b") {
		t.Errorf("body is not one clean line: %q", body)
	}
	if len(body) > len("not ready: ")+maxReasonLen+len("...\n") || !strings.HasSuffix(body, "...\n") {
		t.Errorf("reason not shortened: %d bytes", len(body))
	}
	if !strings.HasPrefix(body, "not ready: sink site-b: é") {
		t.Errorf("body %q", body)
	}
}

func TestNoTokenOnLoopback(t *testing.T) {
	_, url, client := newTestServer(t, Options{AllowNoToken: true, Registry: testRegistry()}, nil)
	if code, _, body := get(t, client, "GET", url+"/metrics", ""); code != 200 || !strings.Contains(body, "tandem_test_total") {
		t.Errorf("metrics without auth: %d %q", code, body)
	}
}

// runServer runs s in the background and waits until it listens. It
// returns the base URL and stop, which cancels Run and returns its result;
// stop is also called when the test ends.
func runServer(t *testing.T, s *Server) (url string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	testenv.WaitFor(t, 10*time.Second, "admin server listening", func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned before listening: %v", err)
		default:
		}
		return s.Addr() != ""
	})
	return "http://" + s.Addr(), stop
}

func TestRunServesAndShutsDown(t *testing.T) {
	s := New(Options{Listen: "127.0.0.1:0", Token: token, Registry: testRegistry()}, nil)
	if s.Addr() != "" {
		t.Fatalf("Addr before Run = %q", s.Addr())
	}
	entered, release := make(chan struct{}), make(chan struct{})
	s.Handle("/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		fmt.Fprintln(w, "done")
	}))
	url, stop := runServer(t, s)
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	host, _, _ := net.SplitHostPort(s.Addr())
	if host != "127.0.0.1" {
		t.Errorf("bound to %s", s.Addr())
	}
	if code, _, _ := get(t, client, "GET", url+"/healthz", ""); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, _, _ := get(t, client, "GET", url+"/metrics", ""); code != 401 {
		t.Errorf("metrics without token %d", code)
	}
	if code, _, _ := get(t, client, "GET", url+"/metrics", "Bearer "+token); code != 200 {
		t.Errorf("metrics %d", code)
	}

	// A request in flight when the context ends still completes.
	slow := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", url+"/slow", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			slow <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The listener closes at once: new connections are refused while the
	// slow request drains.
	testenv.WaitFor(t, 10*time.Second, "listener closed", func() bool {
		c, err := net.Dial("tcp", s.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	if got := <-slow; got != "200 done\n" {
		t.Errorf("in-flight request: %q", got)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run returned %v after cancel, want nil", err)
	}
}

func TestRunRefuses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no token", Options{Listen: "127.0.0.1:0"}, "no token configured"},
		{"no token on all interfaces", Options{Listen: ":0", AllowNoToken: true}, "refusing to serve without a token on a non-loopback address"},
		{"no token on a public IP", Options{Listen: "0.0.0.0:0", AllowNoToken: true}, "listen 0.0.0.0:0: refusing"},
		{"address in use", Options{Listen: busy.Addr().String(), Token: token}, "admin: listen on " + busy.Addr().String()},
		{"bad address", Options{Listen: "nonsense", Token: token}, "admin: listen on nonsense"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New(tt.opts, nil).Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRunNoTokenOnLocalhostName(t *testing.T) {
	s := New(Options{Listen: "localhost:0", AllowNoToken: true}, nil)
	url, _ := runServer(t, s)
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	if code, _, _ := get(t, client, "GET", url+"/nope", ""); code != 404 {
		t.Errorf("unauthenticated loopback server: %d", code)
	}
}

func TestRunTwice(t *testing.T) {
	s := New(Options{Listen: "127.0.0.1:0", Token: token}, nil)
	runServer(t, s)
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run = %v", err)
	}
}

func TestDefaultListenIsLoopback(t *testing.T) {
	if s := New(Options{Token: token}, nil); s.listen != DefaultListen || !strings.HasPrefix(DefaultListen, "127.0.0.1:") {
		t.Errorf("default listen %q", s.listen)
	}
}

// TestPprof: profiles are served only when enabled, and only with the token.
func TestPprof(t *testing.T) {
	_, off, offClient := newTestServer(t, Options{Token: token}, nil)
	if code, _, _ := get(t, offClient, "GET", off+"/debug/pprof/", "Bearer "+token); code != http.StatusNotFound {
		t.Errorf("pprof disabled: GET /debug/pprof/ = %d, want 404", code)
	}
	_, on, client := newTestServer(t, Options{Token: token, Pprof: true}, nil)
	if code, _, _ := get(t, client, "GET", on+"/debug/pprof/", ""); code != http.StatusUnauthorized {
		t.Errorf("pprof without token = %d, want 401", code)
	}
	code, _, body := get(t, client, "GET", on+"/debug/pprof/goroutine?debug=1", "Bearer "+token)
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("pprof goroutine profile = %d %.80q", code, body)
	}
}
