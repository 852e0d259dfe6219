package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ownerFile holds the pid of the test binary that made a server directory,
// so a later binary can tell a live directory from one left behind by a
// binary that was killed (for example by `go test -timeout`) before it could
// clean up.
const ownerFile = "owner.pid"

// staleLogAge is how long logs of dead test binaries are kept for reading.
const staleLogAge = 24 * time.Hour

var sweepOnce sync.Once

// makeRoot creates a temporary directory for one server (or the built
// binaries), owned by this process.
func makeRoot(prefix string) (string, error) {
	sweepOnce.Do(sweepStale)
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// sweepStale removes what dead test binaries left in the temporary
// directory: everything but the logs at once, the logs after staleLogAge.
// Directories of live processes and the shared template are not touched.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "tandem-*"))
	for _, dir := range dirs {
		owner := filepath.Join(dir, ownerFile)
		data, err := os.ReadFile(owner)
		if err != nil {
			continue // not a server directory, or still being made
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 || alive(pid) {
			continue
		}
		fi, err := os.Stat(owner)
		if err != nil {
			continue
		}
		if time.Since(fi.ModTime()) > staleLogAge {
			os.RemoveAll(dir)
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		logs := 0
		for _, e := range entries {
			switch {
			case e.Name() == ownerFile:
			case strings.HasSuffix(e.Name(), ".log"):
				logs++
			default:
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
		if logs == 0 {
			os.RemoveAll(dir)
		}
	}
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
