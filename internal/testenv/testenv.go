// Package testenv starts real servers for integration tests: MariaDB with
// binary logs, Redis, and a broker that speaks the Kafka protocol
// (cmd/devbroker). Every server runs as a child process of the test binary on
// a free loopback port, with its own data in a temporary directory; none of
// them touches a default instance on the standard ports.
//
// A package that uses testenv wires it into its TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Main stops the shared servers after the tests and then checks for leaked
// goroutines. Shared servers (SharedMariaDB, SharedRedis, SharedBroker) are
// started lazily, once per test binary, and reused by every test of the
// package; tests must not stop or kill them. A test that kills, restarts or
// skews the clock of a server asks for a dedicated one (NewMariaDB, NewRedis,
// NewBroker), which is removed at the end of that test.
//
// When a server binary is missing, tests skip locally and fail when CI=true
// (see Required), so CI cannot pass by skipping. `make setup`
// (scripts/setup.sh) installs everything. With -short (`make test-short`)
// every test that asks for a server or a built binary skips.
//
// Helpers that take a testing.TB call t.Fatal and so, like t.Fatal itself,
// must be called from the test's goroutine.
package testenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
)

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 60 * time.Second

// pollInterval is how often WaitFor and the start-up probes look again.
const pollInterval = 20 * time.Millisecond

// Main runs the tests of a package, stops the shared servers and then fails
// the run if goroutines leaked. Call it from TestMain; it does not return.
// When a test failed, the logs of the shared servers are kept and their
// paths printed.
func Main(m *testing.M) {
	code := m.Run()
	failed := code != 0
	if err := shared.stopAll(failed); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop shared servers: %v\n", err)
		code = 1
	}
	if code == 0 {
		// Writers without an explicit Transport pool their connections in
		// kafka-go's DefaultTransport; those are not leaks of the code under
		// test.
		if tr, ok := kafka.DefaultTransport.(*kafka.Transport); ok {
			tr.CloseIdleConnections()
		}
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutines leaked after all tests passed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Required reports whether integration tests must run rather than skip: it
// is true when the environment variable CI is true (CI=true, CI=1).
func Required() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// SkipOrFail skips the test, or fails it when Required: use it when
// something an integration test needs is not installed.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (CI=true: integration tests must not skip)", msg)
		return
	}
	t.Skip(msg)
}

// LookPath returns the path of the program name, searching PATH and then
// the sbin directories where Debian puts servers; when it is missing the
// test skips, or fails under CI.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	path, err := lookPath(name)
	if err != nil {
		failStart(t, err)
		return ""
	}
	return path
}

// missingError says that something a test needs is not installed.
type missingError struct{ what string }

func (e *missingError) Error() string {
	return fmt.Sprintf("testenv: %s not found; run `make setup`", e.what)
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &missingError{what: name}
}

// skipShort skips integration tests under -short.
func skipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("testenv: -short: skipping a test that needs %s", what)
	}
}

// failStart reports an error from starting a server: a missing program
// skips (or fails under CI), anything else fails.
func failStart(t testing.TB, err error) {
	t.Helper()
	var missing *missingError
	if errors.As(err, &missing) {
		SkipOrFail(t, "%v", err)
		return
	}
	t.Fatal(err)
}

// WaitFor calls cond every 20ms until it returns true, and fails the test
// with msg when timeout passes first. It is the way tests wait for something
// to happen; a bare sleep is not.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	if err := poll(timeout, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("testenv: timed out after %v waiting for %s", timeout, msg)
	}
}

// errPollTimeout is returned by poll when the deadline passes.
var errPollTimeout = errors.New("timed out")

// poll calls fn every pollInterval until it returns true or an error, or
// until timeout passes.
func poll(timeout time.Duration, fn func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		ok, err := fn()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errPollTimeout
		}
		<-tick.C
	}
}

// nameSeq makes generated names unique within the test binary.
var nameSeq atomic.Uint64

// uniqueName returns prefix + the sanitized test name + a sequence number,
// at most limit bytes, using only [a-z0-9_] from the test name.
func uniqueName(t testing.TB, prefix string, limit int) string {
	suffix := "_" + strconv.FormatUint(nameSeq.Add(1), 10)
	var b strings.Builder
	lastUnderscore := true
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			lastUnderscore = false
		case !lastUnderscore:
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	name := strings.TrimSuffix(b.String(), "_")
	if room := limit - len(prefix) - len(suffix); len(name) > room {
		name = strings.TrimSuffix(name[:max(room, 0)], "_")
	}
	return prefix + name + suffix
}

// tailFile returns the last n lines of the file at path, for error messages.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const maxTail = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > maxTail {
		if _, err := f.Seek(-maxTail, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot read %s: %v)", path, err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return lastLines(string(data), n)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sharedServers holds the servers started once per test binary.
type sharedServers struct {
	mu      sync.Mutex
	mariadb map[int]*lazy[*MariaDB]
	redis   lazy[*Redis]
	broker  lazy[*Broker]
	// stops run in reverse start order in Main; failed tells a stop to keep
	// its logs and print where they are.
	stops []func(failed bool) error
}

var shared sharedServers

// lazy starts a value once and remembers the value or the error, so a
// server that failed to start fails every later test quickly. Callers that
// arrive while it starts wait for the outcome.
type lazy[T any] struct {
	mu   sync.Mutex
	done bool
	v    T
	err  error
}

func (l *lazy[T]) get(start func() (T, error)) (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.v, l.err = start()
		l.done = true
	}
	return l.v, l.err
}

// peek returns the value if it was started successfully, without starting it.
func (l *lazy[T]) peek() (T, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v, l.done && l.err == nil
}

func (s *sharedServers) mariadbSlot(site int) *lazy[*MariaDB] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mariadb == nil {
		s.mariadb = make(map[int]*lazy[*MariaDB])
	}
	l, ok := s.mariadb[site]
	if !ok {
		l = new(lazy[*MariaDB])
		s.mariadb[site] = l
	}
	return l
}

func (s *sharedServers) onStop(stop func(failed bool) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stops = append(s.stops, stop)
}

func (s *sharedServers) stopAll(failed bool) error {
	s.mu.Lock()
	stops := s.stops
	s.stops = nil
	s.mu.Unlock()
	var errs []error
	for i := len(stops) - 1; i >= 0; i-- {
		errs = append(errs, stops[i](failed))
	}
	return errors.Join(errs...)
}

// stderrf reports on the test binary's stderr, for shared servers, which
// outlive any one test.
func stderrf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
