package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// BuildBinary builds the main package pkg of this module (a path relative
// to the module root such as "./cmd/devbroker", or an import path) once per
// test binary and returns the executable's path. The binary is built with
// -race when the test binary is.
//
// Executables live in a directory of the system's temporary directory keyed
// by the module root and are rebuilt by `go build` only when stale, so test
// binaries running one after another (or in parallel, serialised by a lock
// file) do not link them again.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	skipShort(t, "a built binary")
	path, err := builds.build(pkg)
	if err != nil {
		failStart(t, err)
		return ""
	}
	return path
}

type buildCache struct {
	mu   sync.Mutex
	bins map[string]*lazy[string]
}

var builds buildCache

func (c *buildCache) build(pkg string) (string, error) {
	c.mu.Lock()
	if c.bins == nil {
		c.bins = make(map[string]*lazy[string])
	}
	l, ok := c.bins[pkg]
	if !ok {
		l = new(lazy[string])
		c.bins[pkg] = l
	}
	c.mu.Unlock()
	return l.get(func() (string, error) { return compile(pkg) })
}

func compile(pkg string) (string, error) {
	goBin, err := lookPath("go")
	if err != nil {
		return "", err
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), "tandem-testenv-bin-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	name := strings.NewReplacer("/", "_", ".", "_").Replace(strings.TrimPrefix(pkg, "./"))
	args := []string{"build"}
	if raceEnabled {
		name += "-race"
		args = append(args, "-race")
	}
	out := filepath.Join(dir, name)
	args = append(args, "-o", out, pkg)

	// go build replaces the target by rename, so processes still running an
	// older build are unaffected; the lock keeps two builds of one target
	// from racing.
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("testenv: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	cmd := exec.Command(goBin, args...)
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go %s: %v\n%s", strings.Join(args, " "), err, output)
	}
	return out, nil
}

// moduleRoot finds the directory holding go.mod, walking up from the
// working directory (a test runs in its package's directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}
