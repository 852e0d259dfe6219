package main

import (
	"net"
	"sync"
)

// gateListener is the listener kfake serves on when the broker is durable.
// It binds the public address at once, so kfake advertises the right port
// and the port stays ours, but accepts only in-process connections (for
// replaying the journal) until open is called. Clients that connect earlier
// wait in the kernel's accept queue and never see a half-replayed log.
type gateListener struct {
	net.Listener // the public TCP listener

	j        *journal // set by open, read after opened is closed
	internal chan net.Conn
	opened   chan struct{}
	openOnce sync.Once

	closed    chan struct{}
	closeOnce sync.Once
}

func newGateListener(ln net.Listener) *gateListener {
	return &gateListener{
		Listener: ln,
		internal: make(chan net.Conn),
		opened:   make(chan struct{}),
		closed:   make(chan struct{}),
	}
}

// Accept returns in-process connections until open, then client ones.
// kfake calls it from one goroutine.
func (l *gateListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.internal:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.opened:
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &durableConn{Conn: c, j: l.j}, nil
}

// dialInternal returns a connection to kfake that bypasses the public
// listener. It works only before open.
func (l *gateListener) dialInternal() (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.internal <- server:
		return client, nil
	case <-l.closed:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	case <-l.opened:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	}
}

// open starts accepting client connections, whose responses wait for j.
func (l *gateListener) open(j *journal) {
	l.openOnce.Do(func() {
		l.j = j
		close(l.opened)
	})
}

func (l *gateListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// durableConn holds every response kfake writes to a client until all
// journal frames appended so far are on disk. A response is written after
// kfake handled its request, and a request is journaled before kfake
// handles it, so a produce is acknowledged only once it is durable, and no
// client ever reads a record (or a topic, or an offset) that a crash could
// take back. Waiting on everything appended, not just this connection's
// frames, is what lets one fsync release many responses.
type durableConn struct {
	net.Conn
	j *journal
}

func (c *durableConn) Write(p []byte) (int, error) {
	if err := c.j.waitAppended(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
