package testenv

import (
	"net"
	"sync"
	"testing"
	"time"
)

// LatencyProxy listens on a loopback port and forwards every connection to
// upstream, delaying each direction by oneWay, so that a round trip through
// it takes about 2×oneWay longer: a network between a client and a server
// on one machine (a replicator in another zone than its database, say),
// which loopback has no way to add without netem. Ordering and throughput
// are kept; the delay is measured from when the proxy read the bytes. It
// stops when the test ends. It returns the address to dial.
func LatencyProxy(t testing.TB, upstream string, oneWay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: latency proxy: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(u, c, oneWay, done) }()
			go func() { defer wg.Done(); delayCopy(c, u, oneWay, done) }()
		}
	}()
	return ln.Addr().String()
}

// delayCopy copies src to dst, writing each chunk oneWay after it was
// read, and closes both ends when either side ends.
func delayCopy(dst, src net.Conn, oneWay time.Duration, done <-chan struct{}) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now().Add(oneWay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		dst.Close()
		src.Close() // ends the reader, which closes q
		for range q {
		}
	}()
	for c := range q {
		if d := time.Until(c.at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return
			}
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}
