package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// The journal is the append-only file under -data-dir that makes the broker
// durable: every state-changing request kfake is about to apply, in the order
// it applies them. Replaying it through a fresh kfake cluster rebuilds the
// same topics with the same records at the same offsets.
//
// Layout: the 16-byte journalMagic, then frames
//
//	uint32 big-endian payload length | uint32 big-endian CRC-32C of payload | payload
//	payload = int16 request key | int16 request version | request body (kmsg AppendTo)
const (
	journalMagic    = "tandem-devbrk-j1"
	journalName     = "journal"
	lockName        = "LOCK"
	frameHeaderSize = 8
	// maxFrame bounds the length a reader trusts: a larger one can only be
	// a torn or garbled header. Kafka itself caps requests at 100 MiB.
	maxFrame = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readResult says how much of a journal file is intact.
type readResult struct {
	frames   int
	validEnd int64 // offset just past the last intact frame
	size     int64 // file size; size > validEnd means a torn tail
}

// readJournal calls fn with every intact frame of the journal at path, in
// order, and reports where the intact part ends. A missing file is an empty
// journal. Reading stops at the first frame that is cut short or fails its
// CRC: a crash while the broker was writing leaves exactly such a tail, and
// nothing after it was ever acknowledged. fn must not keep body.
func readJournal(path string, fn func(key, version int16, body []byte) error) (readResult, error) {
	var res readResult
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return res, err
	}
	res.size = st.Size()
	r := bufio.NewReaderSize(f, 1<<20)
	magic := make([]byte, len(journalMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		// A crash between creating the file and syncing its header.
		return res, nil
	}
	if string(magic) != journalMagic {
		return res, fmt.Errorf("%s is not a devbroker journal: it starts with %q, want %q", path, magic, journalMagic)
	}
	res.validEnd = int64(len(journalMagic))
	var (
		hdr  [frameHeaderSize]byte
		body []byte
	)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return res, nil // clean end, or a torn frame header
		}
		n := binary.BigEndian.Uint32(hdr[0:4])
		if n < 4 || n > maxFrame || int64(n) > res.size-res.validEnd-frameHeaderSize {
			return res, nil
		}
		if cap(body) < int(n) {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return res, nil
		}
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
			return res, nil
		}
		key := int16(binary.BigEndian.Uint16(body[0:2]))
		version := int16(binary.BigEndian.Uint16(body[2:4]))
		if err := fn(key, version, body[4:]); err != nil {
			return res, fmt.Errorf("%s: frame %d at offset %d: %w", path, res.frames, res.validEnd, err)
		}
		res.frames++
		res.validEnd += frameHeaderSize + int64(n)
	}
}

// journal appends frames to the journal file. Appending only copies into
// memory; one syncer goroutine writes whatever has accumulated and fsyncs it,
// so concurrent and pipelined produce requests share an fsync (group commit).
// Nothing a client sees may run ahead of the fsync: see durableConn.
type journal struct {
	path string
	f    *os.File
	sync func() error // f.Sync; tests slow it down to catch early acks (guarded by mu)

	appended atomic.Uint64 // frames appended since open
	durable  atomic.Uint64 // frames written and fsynced

	mu       sync.Mutex
	work     *sync.Cond // the syncer waits here for frames or closing
	progress *sync.Cond // waitDurable waits here for durable to move
	pending  []byte     // frames not yet written
	spare    []byte     // the syncer's previous buffer, reused
	closing  bool
	stopped  bool  // the syncer has exited
	err      error // first failure; sticky, because frames after a lost one would replay wrongly

	failed chan struct{} // closed when err is set
	done   chan struct{} // closed when the syncer exits
}

// openJournal opens the journal at path for appending after its first
// validEnd bytes (as reported by readJournal), cutting off any torn tail,
// and creates it if it does not exist.
func openJournal(path string, validEnd int64) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	j := &journal{
		path:   path,
		f:      f,
		sync:   f.Sync,
		failed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if err := j.prepare(validEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	j.work = sync.NewCond(&j.mu)
	j.progress = sync.NewCond(&j.mu)
	go j.syncLoop()
	return j, nil
}

func (j *journal) prepare(validEnd int64) error {
	if validEnd < int64(len(journalMagic)) {
		// New, or its header never made it to disk: start over.
		if err := j.f.Truncate(0); err != nil {
			return err
		}
		if _, err := j.f.WriteAt([]byte(journalMagic), 0); err != nil {
			return err
		}
		validEnd = int64(len(journalMagic))
	} else if err := j.f.Truncate(validEnd); err != nil {
		return err
	}
	if _, err := j.f.Seek(validEnd, io.SeekStart); err != nil {
		return err
	}
	if err := j.f.Sync(); err != nil {
		return err
	}
	// The file may be new: its directory entry must be durable too.
	return syncDir(filepath.Dir(j.path))
}

// append adds one frame whose body enc appends to its argument, and returns
// the frame's sequence number for waitDurable. enc runs under the journal's
// lock and must not block.
func (j *journal) append(key, version int16, enc func([]byte) []byte) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return 0, j.err
	}
	if j.closing {
		return 0, fmt.Errorf("journal %s: closed", j.path)
	}
	start := len(j.pending)
	j.pending = append(j.pending, 0, 0, 0, 0, 0, 0, 0, 0)
	j.pending = binary.BigEndian.AppendUint16(j.pending, uint16(key))
	j.pending = binary.BigEndian.AppendUint16(j.pending, uint16(version))
	j.pending = enc(j.pending)
	payload := j.pending[start+frameHeaderSize:]
	if len(payload) > maxFrame {
		j.pending = j.pending[:start]
		return 0, fmt.Errorf("journal %s: request key %d of %d bytes exceeds the %d-byte frame limit", j.path, key, len(payload), maxFrame)
	}
	binary.BigEndian.PutUint32(j.pending[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(j.pending[start+4:], crc32.Checksum(payload, castagnoli))
	seq := j.appended.Add(1)
	j.work.Signal()
	return seq, nil
}

// waitDurable blocks until frame seq (and every frame before it) is fsynced.
func (j *journal) waitDurable(seq uint64) error {
	if j.durable.Load() >= seq {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.durable.Load() < seq {
		if j.err != nil {
			return j.err
		}
		if j.stopped {
			return fmt.Errorf("journal %s: closed before frame %d was synced", j.path, seq)
		}
		j.progress.Wait()
	}
	return nil
}

// waitAppended blocks until every frame appended so far is fsynced.
func (j *journal) waitAppended() error { return j.waitDurable(j.appended.Load()) }

func (j *journal) syncLoop() {
	defer close(j.done)
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		for len(j.pending) == 0 && !j.closing {
			j.work.Wait()
		}
		if len(j.pending) == 0 {
			j.stopped = true
			j.progress.Broadcast() // closing: release waiters
			return
		}
		buf, target, syncFile := j.pending, j.appended.Load(), j.sync
		j.pending = j.spare[:0]
		j.mu.Unlock()
		_, err := j.f.Write(buf)
		if err == nil {
			err = syncFile()
		}
		j.mu.Lock()
		j.spare = buf[:0]
		if err != nil {
			j.err = fmt.Errorf("journal %s: write or fsync: %w", j.path, err)
			j.stopped = true
			close(j.failed)
			j.progress.Broadcast()
			return
		}
		j.durable.Store(target)
		j.progress.Broadcast()
	}
}

// noFsync makes the journal acknowledge frames once written to the OS
// (-fsync=false): they survive the process, not the machine.
func (j *journal) noFsync() {
	j.mu.Lock()
	j.sync = func() error { return nil }
	j.mu.Unlock()
}

// failure returns the error that stopped the journal, once failed is closed.
func (j *journal) failure() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// Close syncs what has been appended and closes the file.
func (j *journal) Close() error {
	j.mu.Lock()
	j.closing = true
	j.work.Signal()
	j.mu.Unlock()
	<-j.done
	err := j.f.Close()
	if j.err != nil {
		return j.err
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// lockDataDir takes an exclusive lock on dir, so that two brokers never
// append to one journal. The kernel drops it when the process dies, even by
// SIGKILL, so a crashed broker never leaves a stale lock behind.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another devbroker", dir)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	return f, nil
}
