package tenant

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
)

// Queues are the durable per-tenant queues of one applier (one peer's
// topic, the scope), kept in a KV under the "tenant/" prefix: the
// replicator's Pebble store, or under site-level HA the site's database. A tenant's messages go here, in partition order, while
// it is paused, over its rate limit, or behind a dead-lettered message;
// they are replayed in order, and once the queue is empty the tenant's
// messages flow directly again.
//
// The head of a queue may be dead: a message that failed for good (a
// target-side constraint, an undecodable payload, an isolation breach). A
// dead head stops the tenant's replay — later changes of the tenant may
// touch the same rows and must not overtake it — until the operator
// retries or skips it. That is the tenant's dead-letter queue.
//
// Exactly-once: every entry records its (partition, offset), indexed, so
// that a message redelivered after a crash (queued, but the offset not yet
// stored in the target) is recognised and not queued twice. Entries are
// deleted only after their replay committed; a crash in between replays
// them again, which the sink's stored per-tenant replay offset turns into
// a no-op (see Entry.Seq).
type Queues struct {
	kv    KV
	scope string
	qpfx  []byte // queue entries of this scope
	spfx  []byte // seen index of this scope

	mu      sync.Mutex
	depth   map[string]int
	dead    map[string]int
	lastSeq uint64
	now     func() time.Time
}

// Entry is one queued Kafka message.
type Entry struct {
	// Seq orders the scope's entries. It is above every earlier Seq even
	// after the state directory was lost (it starts at the wall clock in
	// microseconds), because the sink stores the last replayed Seq per
	// tenant and treats lower ones as already applied.
	Seq       uint64    `json:"seq"`
	Tenant    string    `json:"tenant"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Payload   []byte    `json:"payload"`
	Queued    time.Time `json:"queued"`
	// Cause is why it was queued: paused, throttled, behind (a dead or
	// queued message of the tenant was ahead), or dead.
	Cause string `json:"cause"`
	// Dead marks a dead-lettered head; Reason ("apply", "decode",
	// "isolation", "wrong_origin") and Err say why.
	Dead     bool   `json:"dead,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Err      string `json:"error,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
}

// Queue causes.
const (
	CausePaused    = "paused"
	CauseThrottled = "throttled"
	CauseBehind    = "behind"
	CauseDead      = "dead"
)

// OpenQueues loads the queues of scope (usually the peer's topic) from the
// replicator's Pebble store.
func OpenQueues(db *pebble.DB, scope string) (*Queues, error) {
	return OpenQueuesIn(PebbleKV{DB: db}, scope)
}

// OpenQueuesIn loads the queues of scope from kv.
func OpenQueuesIn(kv KV, scope string) (*Queues, error) {
	q := &Queues{
		kv: kv, scope: scope,
		qpfx:  appendPart([]byte("tenant/q/"), scope),
		spfx:  appendPart([]byte("tenant/s/"), scope),
		depth: map[string]int{}, dead: map[string]int{},
		now: time.Now,
	}
	var corrupt error
	err := kv.Scan(q.qpfx, prefixEnd(q.qpfx), func(k, v []byte) bool {
		var e Entry
		if err := json.Unmarshal(v, &e); err != nil {
			corrupt = fmt.Errorf("tenant queues %s: entry %x is corrupt: %w", scope, k, err)
			return false
		}
		q.depth[e.Tenant]++
		if e.Dead {
			q.dead[e.Tenant]++
		}
		q.lastSeq = max(q.lastSeq, e.Seq)
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("tenant queues %s: scan: %w", scope, err)
	}
	if corrupt != nil {
		return nil, corrupt
	}
	return q, nil
}

// appendPart appends a length-prefixed string, so that no tenant id (which
// comes from data and may hold any byte) can run into the next key part.
func appendPart(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

func (q *Queues) tenantPrefix(tenant string) []byte { return appendPart(bytes.Clone(q.qpfx), tenant) }

func (q *Queues) entryKey(tenant string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(q.tenantPrefix(tenant), seq)
}

func (q *Queues) seenKey(part int, off int64) []byte {
	k := binary.BigEndian.AppendUint32(bytes.Clone(q.spfx), uint32(part))
	return binary.BigEndian.AppendUint64(k, uint64(off))
}

// Seen reports whether the message at (part, off) is queued.
func (q *Queues) Seen(part int, off int64) (bool, error) {
	ok, err := q.kv.Has(q.seenKey(part, off))
	if err != nil {
		return false, fmt.Errorf("tenant queues %s: read index: %w", q.scope, err)
	}
	return ok, nil
}

// Depth is the number of queued messages of tenant (dead ones included).
func (q *Queues) Depth(tenant string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.depth[tenant]
}

// Blocked reports whether tenant's queue has a dead head.
func (q *Queues) Blocked(tenant string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dead[tenant] > 0
}

// Stat is one tenant's queue state.
type Stat struct {
	Depth int `json:"depth"`
	Dead  int `json:"dead"`
}

// Stats returns every non-empty queue.
func (q *Queues) Stats() map[string]Stat {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]Stat, len(q.depth))
	for t, d := range q.depth {
		out[t] = Stat{Depth: d, Dead: q.dead[t]}
	}
	return out
}

// Append queues es (in order) durably; it fills in Seq and Queued.
func (q *Queues) Append(es []Entry) error {
	if len(es) == 0 {
		return nil
	}
	q.mu.Lock()
	now := q.now()
	sets := make([]KVPair, 0, 2*len(es))
	seq := max(q.lastSeq+1, uint64(now.UnixMicro()))
	for i := range es {
		e := &es[i]
		e.Seq, e.Queued = seq, now
		seq++
		v, err := json.Marshal(e)
		if err != nil {
			q.mu.Unlock()
			return fmt.Errorf("tenant queues %s: encode entry: %w", q.scope, err)
		}
		sets = append(sets, KVPair{q.entryKey(e.Tenant, e.Seq), v}, KVPair{q.seenKey(e.Partition, e.Offset), nil})
	}
	q.lastSeq = seq - 1
	// Counted before the write lands so that a concurrent decision sees
	// the tenant as queued; a failed write is undone below.
	for _, e := range es {
		q.depth[e.Tenant]++
		if e.Dead {
			q.dead[e.Tenant]++
		}
	}
	q.mu.Unlock()
	if err := q.kv.Write(sets, nil); err != nil {
		q.mu.Lock()
		for _, e := range es {
			q.dec(e)
		}
		q.mu.Unlock()
		return fmt.Errorf("tenant queues %s: append %d entries: %w", q.scope, len(es), err)
	}
	return nil
}

func (q *Queues) dec(e Entry) {
	if q.depth[e.Tenant]--; q.depth[e.Tenant] <= 0 {
		delete(q.depth, e.Tenant)
	}
	if e.Dead {
		if q.dead[e.Tenant]--; q.dead[e.Tenant] <= 0 {
			delete(q.dead, e.Tenant)
		}
	}
}

// Head returns up to n entries of tenant from the head of its queue,
// stopping after maxBytes of payload (at least one entry).
func (q *Queues) Head(tenant string, n, maxBytes int) ([]Entry, error) {
	var out []Entry
	bytes := 0
	err := q.Scan(tenant, func(e Entry) bool {
		if len(out) == n || len(out) > 0 && bytes >= maxBytes {
			return false
		}
		bytes += len(e.Payload)
		out = append(out, e)
		return true
	})
	return out, err
}

// Scan calls fn with tenant's queued entries in order until fn returns
// false. Entries are decoded one at a time, so a reader that needs only
// the first few does not pay for the rest (a throttled bulk load can queue
// many megabytes).
func (q *Queues) Scan(tenant string, fn func(Entry) bool) error {
	p := q.tenantPrefix(tenant)
	var corrupt error
	err := q.kv.Scan(p, prefixEnd(p), func(k, v []byte) bool {
		var e Entry
		if err := json.Unmarshal(v, &e); err != nil {
			corrupt = fmt.Errorf("tenant queues %s: entry %x is corrupt: %w", q.scope, k, err)
			return false
		}
		return fn(e)
	})
	if err != nil {
		return fmt.Errorf("tenant queues %s: read %q: %w", q.scope, tenant, err)
	}
	return corrupt
}

// Remove deletes replayed (or skipped) entries.
func (q *Queues) Remove(es []Entry) error {
	if len(es) == 0 {
		return nil
	}
	dels := make([][]byte, 0, 2*len(es))
	for _, e := range es {
		dels = append(dels, q.entryKey(e.Tenant, e.Seq), q.seenKey(e.Partition, e.Offset))
	}
	if err := q.kv.Write(nil, dels); err != nil {
		return fmt.Errorf("tenant queues %s: remove %d entries: %w", q.scope, len(es), err)
	}
	q.mu.Lock()
	for _, e := range es {
		q.dec(e)
	}
	q.mu.Unlock()
	return nil
}

// put rewrites an entry in place.
func (q *Queues) put(e Entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("tenant queues %s: encode entry: %w", q.scope, err)
	}
	if err := q.kv.Write([]KVPair{{q.entryKey(e.Tenant, e.Seq), v}}, nil); err != nil {
		return fmt.Errorf("tenant queues %s: update entry: %w", q.scope, err)
	}
	return nil
}

// MarkDead dead-letters a queued entry (the head whose replay failed).
func (q *Queues) MarkDead(e Entry, reason, msg string) error {
	was := e.Dead
	e.Dead, e.Reason, e.Err, e.Cause = true, reason, msg, CauseDead
	e.Attempts++
	if err := q.put(e); err != nil {
		return err
	}
	if !was {
		q.mu.Lock()
		q.dead[e.Tenant]++
		q.mu.Unlock()
	}
	return nil
}

// Retry clears the dead mark of tenant's head so that the replay tries it
// again (after the operator fixed the target). It returns the entry.
func (q *Queues) Retry(tenant string) (Entry, error) {
	head, err := q.deadHead(tenant)
	if err != nil {
		return Entry{}, err
	}
	head.Dead = false
	if err := q.put(head); err != nil {
		return Entry{}, err
	}
	q.mu.Lock()
	if q.dead[tenant]--; q.dead[tenant] <= 0 {
		delete(q.dead, tenant)
	}
	q.mu.Unlock()
	return head, nil
}

// Skip deletes tenant's dead head for good and returns it, so that the
// caller can keep a record; the rest of the queue replays.
func (q *Queues) Skip(tenant string) (Entry, error) {
	head, err := q.deadHead(tenant)
	if err != nil {
		return Entry{}, err
	}
	return head, q.Remove([]Entry{head})
}

// ErrNoDeadLetter is returned by Retry and Skip when the tenant's queue has
// no dead head.
var ErrNoDeadLetter = errors.New("no dead-lettered message")

func (q *Queues) deadHead(tenant string) (Entry, error) {
	es, err := q.Head(tenant, 1, 0)
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 || !es[0].Dead {
		return Entry{}, fmt.Errorf("tenant %q of %s: %w", tenant, q.scope, ErrNoDeadLetter)
	}
	return es[0], nil
}

// Ready returns the tenants with queued messages and no dead head, in the
// order given by less (priority), then by id.
func (q *Queues) Ready(priority func(string) int) []string {
	q.mu.Lock()
	out := make([]string, 0, len(q.depth))
	for t := range q.depth {
		if q.dead[t] == 0 {
			out = append(out, t)
		}
	}
	q.mu.Unlock()
	slices.SortFunc(out, func(a, b string) int {
		if pa, pb := priority(a), priority(b); pa != pb {
			return pb - pa
		}
		return bytes.Compare([]byte(a), []byte(b))
	})
	return out
}
