package checkpoint

import (
	"sync"

	"github.com/tandemdb/tandem/pkg/event"
)

// Tracker turns acknowledgements that may arrive out of order into the
// highest position below which everything is acknowledged.
//
// The reader calls Add for every transaction (or fragment) in binlog order;
// Add returns a sequence number. The publisher calls Ack(seq) once Kafka has
// acknowledged it. Only entries with a position (complete transactions, i.e.
// the last fragment or an empty transaction) can become the safe position;
// non-final fragments must be acknowledged but never become resume points,
// so a checkpoint never lands inside a transaction.
type Tracker struct {
	mu      sync.Mutex
	base    uint64 // sequence number of pending[0]
	pending []entry
	safe    event.Position
	hasSafe bool
	changed chan struct{}
}

type entry struct {
	pos    event.Position
	hasPos bool
	acked  bool
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{changed: make(chan struct{}, 1)}
}

// Add registers the next transaction in binlog order. hasPos says whether
// pos is a transaction boundary that may become the safe position.
func (t *Tracker) Add(pos event.Position, hasPos bool) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	seq := t.base + uint64(len(t.pending))
	t.pending = append(t.pending, entry{pos: pos, hasPos: hasPos})
	return seq
}

// Ack marks seq as acknowledged and advances the safe position over the
// contiguous acknowledged prefix.
func (t *Tracker) Ack(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq < t.base || seq >= t.base+uint64(len(t.pending)) {
		return // already folded in, or unknown: nothing to do
	}
	t.pending[seq-t.base].acked = true
	n := 0
	for n < len(t.pending) && t.pending[n].acked {
		if t.pending[n].hasPos {
			t.safe, t.hasSafe = t.pending[n].pos, true
		}
		n++
	}
	if n == 0 {
		return
	}
	// Drop the folded prefix; copy down occasionally so the backing array
	// does not grow without bound.
	t.pending = t.pending[n:]
	t.base += uint64(n)
	if cap(t.pending) > 1024 && len(t.pending) < cap(t.pending)/4 {
		t.pending = append([]entry(nil), t.pending...)
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// Safe returns the highest position below which everything was
// acknowledged; ok is false until the first complete transaction is.
func (t *Tracker) Safe() (pos event.Position, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.safe, t.hasSafe
}

// Pending is the number of registered but not yet folded entries.
func (t *Tracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// Changed is signalled (coalesced) whenever the safe position advances.
func (t *Tracker) Changed() <-chan struct{} { return t.changed }
