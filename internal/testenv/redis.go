package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server child process on a loopback port, without
// persistence: a killed or stopped server comes back empty.
type Redis struct {
	Addr string // "127.0.0.1:port"

	shared  bool
	root    string
	logPath string
	bin     string
	mu      sync.Mutex // guards proc
	proc    *process
}

// SharedRedis returns the server shared by all tests of the test binary,
// starting it on first use. Tests must not stop or kill it; KeyPrefix keeps
// their keys apart.
func SharedRedis(t testing.TB) *Redis {
	t.Helper()
	skipShort(t, "Redis")
	r, err := shared.redis.get(func() (*Redis, error) {
		r, err := startRedis(true)
		if err != nil {
			return nil, err
		}
		shared.onStop(func(failed bool) error { return r.cleanup(failed, stderrf) })
		return r, nil
	})
	if err != nil {
		failStart(t, fmt.Errorf("shared Redis: %w", err))
		return nil
	}
	return r
}

// NewRedis starts a server for this test only, killed at the end of it.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	skipShort(t, "Redis")
	r, err := startRedis(false)
	if err != nil {
		failStart(t, err)
		return nil
	}
	t.Cleanup(func() {
		if err := r.cleanup(t.Failed(), t.Logf); err != nil {
			t.Error(err)
		}
	})
	return r
}

// Stop shuts the server down with SIGTERM and waits for it to exit.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	r.mustBeDedicated(t, "Stop")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return
	}
	if err := r.proc.stop(); err != nil {
		t.Fatalf("testenv: Redis %s: stop: %v", r.Addr, err)
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (r *Redis) Kill(t testing.TB) {
	t.Helper()
	r.mustBeDedicated(t, "Kill")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.kill()
	}
}

// Start starts a stopped or killed server again on the same port (empty:
// there is no persistence) and waits until it answers PING.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	r.mustBeDedicated(t, "Start")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && !r.proc.exited() {
		t.Fatalf("testenv: Redis %s: Start: already running", r.Addr)
	}
	if err := r.startLocked(); err != nil {
		t.Fatal(err)
	}
}

// Client returns a go-redis client for this server, closed at the end of
// the test.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func (r *Redis) mustBeDedicated(t testing.TB, op string) {
	t.Helper()
	if r.shared {
		t.Fatalf("testenv: %s on the shared Redis; use NewRedis for tests that stop or crash servers", op)
	}
}

func startRedis(shared bool) (*Redis, error) {
	bin, err := lookPath("redis-server")
	if err != nil {
		return nil, err
	}
	root, err := makeRoot("tandem-redis-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	r := &Redis{shared: shared, root: root, logPath: filepath.Join(root, "redis.log"), bin: bin}
	for attempt := 0; ; attempt++ {
		var port int
		if port, err = freePort(); err == nil {
			r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			r.mu.Lock()
			err = r.startLocked()
			r.mu.Unlock()
		}
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, errPortInUse) || attempt == 4 {
			_ = r.cleanup(true, nil) // err names the kept log
			return nil, err
		}
		os.Remove(r.logPath) // its bind error would mark the next attempt too
	}
}

func (r *Redis) startLocked() error {
	_, port, _ := net.SplitHostPort(r.Addr)
	args := []string{
		"--port", port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", r.root,
		"--logfile", "", // stdout, which goes to logPath
	}
	proc, err := startProcess(r.bin, args, nil, r.root, r.logPath)
	if err != nil {
		return fmt.Errorf("testenv: Redis: %w", err)
	}
	r.proc = proc
	var lastErr error
	err = poll(startTimeout, func() (bool, error) {
		if proc.exited() {
			return false, proc.exitError()
		}
		lastErr = ping(r.Addr)
		return lastErr == nil, nil
	})
	if err == nil {
		return nil
	}
	proc.kill()
	if errors.Is(err, errPollTimeout) {
		err = fmt.Errorf("no PONG after %v (last error: %v)", startTimeout, lastErr)
	}
	tail := tailFile(r.logPath, 30)
	if strings.Contains(tail, "Address already in use") {
		err = fmt.Errorf("%w (%v)", errPortInUse, err)
	}
	return fmt.Errorf("testenv: Redis on %s: %w; log %s:\n%s", r.Addr, err, r.logPath, tail)
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

func (r *Redis) cleanup(keepLogs bool, logf func(string, ...any)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.kill()
	}
	if keepLogs {
		if logf != nil {
			logf("testenv: Redis (%s) log kept at %s", r.Addr, r.logPath)
		}
		return nil
	}
	return os.RemoveAll(r.root)
}

// KeyPrefix returns a key prefix unique to this test ("tandem-test:<name>:<n>:").
// At the end of the test, keys under it are deleted from the shared Redis if
// it runs.
func KeyPrefix(t testing.TB) string {
	t.Helper()
	prefix := "tandem-test:" + uniqueName(t, "", 100) + ":"
	t.Cleanup(func() {
		r, ok := shared.redis.peek()
		if !ok {
			return
		}
		if err := r.deletePrefix(prefix); err != nil {
			t.Errorf("testenv: Redis %s: delete keys %s*: %v", r.Addr, prefix, err)
		}
	})
	return prefix
}

func (r *Redis) deletePrefix(prefix string) error {
	r.mu.Lock()
	running := r.proc != nil && !r.proc.exited()
	r.mu.Unlock()
	if !running {
		return nil
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The prefix holds only [a-z0-9_:-], so it needs no glob escaping.
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		if err := c.Del(ctx, keys[:n]...).Err(); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}
