package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawClient sends requests over one connection exactly as given, pipelined,
// and hands each response to a callback in order.
//
// Replay does not use kgo.Client.Request: kgo rewrites every request to the
// highest version both sides support, and versions are not interchangeable
// for the journal (DeleteTopics v0-5 name topics in TopicNames, v6+ in
// Topics, so a v5 request re-encoded as v6 deletes nothing). It also issues
// one request at a time, while replay wants a deep pipeline: kfake handles
// one connection's requests in the order it reads them, which is the
// journal's order.
type rawClient struct {
	conn      net.Conn
	format    *kmsg.RequestFormatter
	buf       []byte
	corr      int32
	pending   chan pendingReq // requests awaiting a response, in order
	closeOnce sync.Once

	mu   sync.Mutex
	err  error         // first read or decode error
	done chan struct{} // closed when the reader exits
}

type pendingReq struct {
	corr int32
	req  kmsg.Request
	// onResp runs in the reader goroutine; nil for requests whose response
	// does not matter.
	onResp func(kmsg.Response)
}

// replayWindow bounds the requests in flight: deep enough to keep kfake
// busy, small enough that requests buffered in kfake stay few.
const replayWindow = 64

func newRawClient(conn net.Conn) *rawClient {
	c := &rawClient{
		conn:    conn,
		format:  kmsg.NewRequestFormatter(kmsg.FormatterClientID("devbroker-replay")),
		pending: make(chan pendingReq, replayWindow),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	return c
}

// send writes req and returns without waiting for its response.
func (c *rawClient) send(req kmsg.Request, onResp func(kmsg.Response)) error {
	if err := c.readErr(); err != nil {
		return err
	}
	c.corr++
	p := pendingReq{corr: c.corr, req: req, onResp: onResp}
	select {
	case c.pending <- p:
	case <-c.done:
		if err := c.readErr(); err != nil {
			return err
		}
		return net.ErrClosed
	}
	c.buf = c.format.AppendRequest(c.buf[:0], req, p.corr)
	if _, err := c.conn.Write(c.buf); err != nil {
		if rerr := c.readErr(); rerr != nil {
			return rerr
		}
		return fmt.Errorf("send %s: %w", kmsg.NameForKey(req.Key()), err)
	}
	return nil
}

// do sends req and waits for its response (and all earlier ones).
func (c *rawClient) do(req kmsg.Request) (kmsg.Response, error) {
	var resp kmsg.Response
	if err := c.send(req, func(r kmsg.Response) { resp = r }); err != nil {
		return nil, err
	}
	if err := c.drain(); err != nil {
		return nil, err
	}
	return resp, nil
}

// drain waits until every request sent has its response.
func (c *rawClient) drain() error {
	// A sentinel behind every request sent: the reader reaches it only
	// after their responses.
	barrier := make(chan struct{})
	select {
	case c.pending <- pendingReq{onResp: func(kmsg.Response) { close(barrier) }}:
	case <-c.done:
		return c.readErr()
	}
	select {
	case <-barrier:
		return nil
	case <-c.done:
		return c.readErr()
	}
}

// Close closes the connection and waits for the reader. Only the first
// call does anything.
func (c *rawClient) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.conn.Close()
		close(c.pending)
		<-c.done
	})
	return err
}

func (c *rawClient) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *rawClient) readLoop() {
	defer close(c.done)
	var (
		size [4]byte
		body []byte
	)
	for p := range c.pending {
		if p.req == nil { // drain's barrier
			p.onResp(nil)
			continue
		}
		err := func() error {
			if _, err := io.ReadFull(c.conn, size[:]); err != nil {
				return fmt.Errorf("read %s response: %w", kmsg.NameForKey(p.req.Key()), err)
			}
			n := binary.BigEndian.Uint32(size[:])
			if cap(body) < int(n) {
				body = make([]byte, n)
			}
			body = body[:n]
			if _, err := io.ReadFull(c.conn, body); err != nil {
				return fmt.Errorf("read %s response: %w", kmsg.NameForKey(p.req.Key()), err)
			}
			resp, err := decodeResponse(p, body)
			if err != nil {
				return fmt.Errorf("decode %s v%d response: %w", kmsg.NameForKey(p.req.Key()), p.req.GetVersion(), err)
			}
			if p.onResp != nil {
				p.onResp(resp)
			}
			return nil
		}()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.conn.Close()
			return
		}
	}
}

func decodeResponse(p pendingReq, body []byte) (kmsg.Response, error) {
	if len(body) < 4 {
		return nil, errors.New("response shorter than its header")
	}
	if corr := int32(binary.BigEndian.Uint32(body)); corr != p.corr {
		return nil, fmt.Errorf("correlation ID %d, want %d", corr, p.corr)
	}
	body = body[4:]
	resp := p.req.ResponseKind()
	resp.SetVersion(p.req.GetVersion())
	// ApiVersions responses keep the old header even when flexible.
	if resp.IsFlexible() && p.req.Key() != 18 {
		var err error
		if body, err = skipTags(body); err != nil {
			return nil, err
		}
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, err
	}
	return resp, nil
}

// skipTags skips a tagged-field section: a count, then per field a tag, a
// size and size bytes, all but the bytes unsigned varints.
func skipTags(b []byte) ([]byte, error) {
	uvarint := func() (uint64, error) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, errors.New("bad tagged fields in the response header")
		}
		b = b[n:]
		return v, nil
	}
	num, err := uvarint()
	if err != nil {
		return nil, err
	}
	for ; num > 0; num-- {
		if _, err := uvarint(); err != nil {
			return nil, err
		}
		size, err := uvarint()
		if err != nil {
			return nil, err
		}
		if uint64(len(b)) < size {
			return nil, errors.New("tagged field longer than the response header")
		}
		b = b[size:]
	}
	return b, nil
}

// replayStats counts what a replay did, for the log line.
type replayStats struct {
	requests int
	produces int
	batches  int // partition batches kfake appended
	rejected int // partition batches kfake rejected, as it did first time
}

// replayFrame decodes one journal frame and sends it through c.
func replayFrame(c *rawClient, key, version int16, body []byte, stats *replayStats) error {
	req := kmsg.RequestForKey(key)
	if req == nil {
		return fmt.Errorf("unknown request key %d", key)
	}
	req.SetVersion(version)
	// req may alias body; send encodes it before returning, so body can be
	// reused for the next frame.
	if err := req.ReadFrom(body); err != nil {
		return fmt.Errorf("decode %s v%d: %w", kmsg.NameForKey(key), version, err)
	}
	stats.requests++
	var onResp func(kmsg.Response)
	if key == 0 {
		stats.produces++
		onResp = func(r kmsg.Response) {
			for _, t := range r.(*kmsg.ProduceResponse).Topics {
				for _, p := range t.Partitions {
					if p.ErrorCode == 0 {
						stats.batches++
					} else {
						stats.rejected++
					}
				}
			}
		}
	}
	return c.send(req, onResp)
}
