package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// stopTimeout bounds a graceful shutdown before it turns into SIGKILL.
const stopTimeout = 60 * time.Second

// process is one run of a server program. Its stdout and stderr are
// appended to logPath. It dies with the test binary: Pdeathsig delivers
// SIGKILL when the thread that started it exits, and the Go runtime does not
// end threads that fork (it only ends threads locked by an exiting
// goroutine, which testenv never does). Setpgid keeps a terminal's ^C away
// from the child so the test binary decides how it stops.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // Wait's result, set before done is closed
}

// startProcess starts path with args in dir, with environment env (nil
// means the test binary's own).
func startProcess(path string, args, env []string, dir, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The child holds its own descriptor; ours is not needed after Start.
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group and waits until it is reaped.
func (p *process) kill() {
	if !p.exited() {
		// The group is the process and anything it forked.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits for the exit; after stopTimeout it kills.
// It returns an error when the process had to be killed.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		p.kill()
		return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", p.cmd.Process.Pid, stopTimeout)
	}
}

// exitError describes how the process ended, for start-up failures.
func (p *process) exitError() error {
	<-p.done
	if p.err == nil {
		return errors.New("exited with status 0")
	}
	return p.err
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. A
// server started on it can still lose a race with another process, which
// the start functions detect and retry with a new port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// errPortInUse marks a start that failed because another process took the
// port between freePort and the server's bind.
var errPortInUse = errors.New("port already in use")
