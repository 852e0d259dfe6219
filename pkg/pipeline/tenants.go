package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/sink"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// Tenants is what an Applier needs to honour tenants (docs/tenants.md).
type Tenants struct {
	// Registry gives the snapshot in force; nil means every tenant has
	// the defaults (active-active, unlimited).
	Registry TenantRegistry
	// Resolver is the tenant mapping every site shares; the applier
	// refuses a transaction holding a change that belongs to another
	// tenant (isolation). Nil skips the check.
	Resolver *tenant.Resolver
	// Queues are this applier's durable per-tenant queues (required).
	Queues *tenant.Queues
	// SinkFor returns the sink applying under a conflict policy (home-only
	// tenants); nil applies every tenant with the Applier's sink.
	SinkFor func(conflict.Policy) (Sink, error)
	// Now is the clock of the rate limits; default time.Now.
	Now func() time.Time
}

// TenantRegistry is what the applier needs from tenant.Registry.
type TenantRegistry interface {
	Snapshot() *tenant.Snapshot
	Changed() <-chan struct{}
}

// TenantObserver is the optional part of an Observer that counts what
// tenants did besides applying.
type TenantObserver interface {
	// Skipped counts rows of an excluded tenant skipped.
	TenantSkipped(origin uint8, tenant string, rows int)
	// Queued counts messages queued for a tenant, by cause.
	TenantQueued(origin uint8, tenant, cause string, n int)
	// DeadLettered counts a message dead-lettered for a tenant.
	TenantDeadLettered(origin uint8, tenant, reason string)
}

type tenantState struct {
	cfg  *Tenants
	kick chan struct{} // wakes the replay loop

	mu      sync.Mutex
	buckets map[string]*tenant.Bucket
	sinks   map[conflict.Policy]Sink
}

func newTenantState(cfg *Tenants) *tenantState {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &tenantState{cfg: cfg, kick: make(chan struct{}, 1), buckets: map[string]*tenant.Bucket{}, sinks: map[conflict.Policy]Sink{}}
}

func (ts *tenantState) snapshot() *tenant.Snapshot {
	if ts.cfg.Registry == nil {
		return nil
	}
	return ts.cfg.Registry.Snapshot()
}

func (ts *tenantState) wake() {
	select {
	case ts.kick <- struct{}{}:
	default:
	}
}

// bucket returns t's token bucket at t's current rate.
func (ts *tenantState) bucket(t tenant.Tenant, now time.Time) *tenant.Bucket {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	b, ok := ts.buckets[t.ID]
	if !ok {
		b = tenant.NewBucket(t.RateLimit, now)
		ts.buckets[t.ID] = b
		return b
	}
	b.SetRate(t.RateLimit, now)
	return b
}

func keyMismatch(key, payload string) error {
	return fmt.Errorf("message key names tenant %q but its transaction is tenant %q's", key, payload)
}

// deferDecode reports whether a message of tenant id (its Kafka key) can
// be queued without decoding it: the tenant is paused or already has a
// queue, so the message joins that queue whatever it holds, and the
// replay decodes and checks it (undecodable, wrong origin, isolation,
// a key that is not the payload's tenant) when its turn comes. A
// throttled bulk load is queued this way at the cost of one Pebble write
// per message, without decoding it twice.
func (ts *tenantState) deferDecode(id string) bool {
	snap := ts.snapshot()
	if snap == nil {
		return false
	}
	switch snap.Get(id).Mode {
	case tenant.ModePaused:
		return true
	case tenant.ModeExcluded:
		return false // skipped with its rows counted: decoded
	}
	return ts.cfg.Queues.Depth(id) > 0
}

// Queues returns the applier's tenant queues (nil when tenants are off).
func (a *Applier) Queues() *tenant.Queues {
	if a.ten == nil {
		return nil
	}
	return a.ten.cfg.Queues
}

// Kick makes the replay loop look at the queues now (after an operator's
// retry or skip).
func (a *Applier) Kick() {
	if a.ten != nil {
		a.ten.wake()
	}
}

// Origin is the peer site id whose topic the applier reads.
func (a *Applier) Origin() uint8 { return a.cfg.Origin }

func (a *Applier) sinkFor(p conflict.Policy) (Sink, error) {
	if a.ten.cfg.SinkFor == nil || p == (conflict.Policy{}) {
		return a.sink, nil
	}
	a.ten.mu.Lock()
	defer a.ten.mu.Unlock()
	if s, ok := a.ten.sinks[p]; ok {
		return s, nil
	}
	s, err := a.ten.cfg.SinkFor(p)
	if err != nil {
		return nil, err
	}
	a.ten.sinks[p] = s
	return s, nil
}

func (a *Applier) tobs() TenantObserver {
	if o, ok := a.obs.(TenantObserver); ok {
		return o
	}
	return nil
}

// entryTenant is the tenant whose queue an entry goes to: its Kafka key
// (the producer keys each message by its tenant), or the payload's tenant
// for a message without a key. A key that is not the payload's tenant is
// an isolation breach (applyRouted, replayTenant).
func entryTenant(e entry) string {
	if e.key == nil && e.txn != nil {
		return e.txn.Tenant
	}
	return string(e.key)
}

// applyRouted applies a partition batch tenant by tenant's wishes: each
// message is applied now, queued durably for its tenant (paused, over its
// rate, or behind a queued or dead message of the tenant), dead-lettered
// (undecodable, isolation breach), or skipped (excluded). Whatever is not
// applied now still moves the partition's offset, in the same target
// transaction as the rest, after the queue write is durable: so other
// tenants of the partition never wait for it.
func (a *Applier) applyRouted(ctx context.Context, part int, es []entry) error {
	ts := a.ten
	q := ts.cfg.Queues
	snap := ts.snapshot()
	now := ts.cfg.Now()
	var queue []tenant.Entry
	queuedHere := map[string]bool{}
	skipped := map[string]int{}
	for i := range es {
		e := es[i]
		id := entryTenant(e)
		seen, err := q.Seen(part, e.offset)
		if err != nil {
			return err
		}
		if seen {
			// Queued before a crash that came before the offset
			// was stored: do not queue it twice.
			es[i] = entry{offset: e.offset, skip: true}
			continue
		}
		t := snap.Get(id)
		if e.undecoded && !queuedHere[id] && !ts.deferDecode(id) {
			// The tenant's queue drained (or its mode changed) since
			// the fetch: the message may apply now.
			e = a.decode(kafka.Message{Offset: e.offset, Key: e.key, Value: e.raw}, part)
			es[i] = e
		}
		qe := tenant.Entry{Tenant: id, Partition: part, Offset: e.offset, Payload: e.raw}
		switch {
		case e.undecoded:
			// Checked when the replay decodes it.
		case e.parked != nil:
			qe.Dead, qe.Cause, qe.Reason, qe.Err = true, tenant.CauseDead, e.parked.Reason, e.parked.Err
		case e.txn.Tenant != id:
			qe.Dead, qe.Cause, qe.Reason = true, tenant.CauseDead, "isolation"
			qe.Err = keyMismatch(id, e.txn.Tenant).Error()
		case ts.cfg.Resolver != nil:
			if j, owner := tenant.Foreign(e.txn, ts.cfg.Resolver); j >= 0 {
				ch := e.txn.Changes[j]
				qe.Dead, qe.Cause, qe.Reason = true, tenant.CauseDead, "isolation"
				qe.Err = fmt.Sprintf("change %d touches %s.%s, which belongs to tenant %q, not %q", j, ch.Schema, ch.Table, owner, id)
			}
		}
		rows := entryRows(e)
		switch {
		case qe.Dead:
		case t.Mode == tenant.ModeExcluded:
			skipped[id] += rows
			es[i] = entry{offset: e.offset, skip: true}
			continue
		case t.Mode == tenant.ModePaused:
			qe.Cause = tenant.CausePaused
		case e.undecoded || queuedHere[id] || q.Depth(id) > 0:
			// (An undecoded message stays behind its queue even if the
			// replay drained it since the check above: it is appended
			// after whatever the replay has left, so order holds.)
			qe.Cause = tenant.CauseBehind
		case !ts.bucket(t, now).Take(rows, now):
			qe.Cause = tenant.CauseThrottled
		default:
			continue // apply now
		}
		if qe.Dead {
			a.log.Error("dead-lettering a message for its tenant; the tenant's later changes wait behind it, other tenants go on",
				zap.Int("partition", part), zap.Int64("offset", e.offset), zap.String("tenant", id),
				zap.String("reason", qe.Reason), zap.String("error", qe.Err))
			if o := a.tobs(); o != nil {
				o.TenantDeadLettered(a.cfg.Origin, id, qe.Reason)
			}
		}
		queuedHere[id] = true
		queue = append(queue, qe)
		es[i] = entry{offset: e.offset, skip: true}
	}
	if err := q.Append(queue); err != nil {
		return err
	}
	if len(queue) > 0 {
		if o := a.tobs(); o != nil {
			for _, qe := range queue {
				if !qe.Dead {
					o.TenantQueued(a.cfg.Origin, qe.Tenant, qe.Cause, 1)
				}
			}
		}
		ts.wake()
	}
	if o := a.tobs(); o != nil {
		for id, n := range skipped {
			o.TenantSkipped(a.cfg.Origin, id, n)
		}
	}
	// Apply in runs of one conflict policy: home-only tenants go through
	// a sink holding their home site's rule. Skipped entries ride along
	// with whichever run they fall in, so the offsets stay contiguous.
	for len(es) > 0 {
		pol, n := conflict.Policy{}, 0
		first := true
		for n < len(es) {
			if es[n].txn != nil {
				p := snap.Get(es[n].txn.Tenant).Policy()
				if first {
					pol, first = p, false
				} else if p != pol {
					break
				}
			}
			n++
		}
		s, err := a.sinkFor(pol)
		if err != nil {
			return err
		}
		if err := a.applyEntries(ctx, part, s, es[:n]); err != nil {
			return err
		}
		es = es[n:]
	}
	return nil
}

// deadLetterApply takes es[0], a transaction the target refused for good,
// into its tenant's dead-letter queue, queues the tenant's later messages
// of es behind it, and turns them all into skips.
func (a *Applier) deadLetterApply(part int, es []entry, cause error) error {
	if es[0].txn == nil {
		// Only the offset write failed, for good: nothing to
		// dead-letter; the partition loop restarts and tries again.
		return cause
	}
	id := entryTenant(es[0])
	reason := "apply"
	a.log.Error("dead-lettering a transaction the target refuses; the tenant's later changes wait behind it, other tenants go on",
		zap.Int("partition", part), zap.Int64("offset", es[0].offset), zap.String("tenant", id),
		zap.String("gtid", es[0].txn.GTID), zap.Error(cause))
	queue := []tenant.Entry{{Tenant: id, Partition: part, Offset: es[0].offset, Payload: es[0].raw,
		Dead: true, Cause: tenant.CauseDead, Reason: reason, Err: cause.Error(), Attempts: 1}}
	es[0] = entry{offset: es[0].offset, skip: true}
	for i := 1; i < len(es); i++ {
		if !es[i].skip && entryTenant(es[i]) == id {
			queue = append(queue, tenant.Entry{Tenant: id, Partition: part, Offset: es[i].offset, Payload: es[i].raw, Cause: tenant.CauseBehind})
			es[i] = entry{offset: es[i].offset, skip: true}
		}
	}
	if err := a.ten.cfg.Queues.Append(queue); err != nil {
		return err
	}
	if o := a.tobs(); o != nil {
		o.TenantDeadLettered(a.cfg.Origin, id, reason)
		if len(queue) > 1 {
			o.TenantQueued(a.cfg.Origin, id, tenant.CauseBehind, len(queue)-1)
		}
	}
	return nil
}

// ReplayTopic is the pseudo topic under which the replay of tenant's queue
// stores its progress in _tandem_offsets (partition 0, offsets = queue
// sequence numbers): a replay that committed but crashed before deleting
// its entries is recognised as applied, exactly like a Kafka batch.
func ReplayTopic(topic, tenantID string) string {
	const sep = "~t~"
	if len(topic)+len(sep)+len(tenantID) <= 249 && utf8.ValidString(tenantID) && tenant.CheckID(tenantID) == nil {
		return topic + sep + tenantID
	}
	h := sha256.Sum256([]byte(tenantID))
	return topic + "~h~" + hex.EncodeToString(h[:16])
}

// replayLoop drains the tenant queues that may flow: not paused, no dead
// head, within their rate. It wakes on a registry change, on a queue
// append, on an operator's retry or skip, and when a rate limit allows
// the next batch.
func (a *Applier) replayLoop(ctx context.Context) error {
	ts := a.ten
	var changed <-chan struct{}
	for {
		if ts.cfg.Registry != nil {
			changed = ts.cfg.Registry.Changed()
		}
		wait, err := a.replayRound(ctx)
		if err != nil {
			if errors.Is(err, sink.ErrFenced) {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			a.log.Warn("tenant queue replay failed; retrying", zap.Error(err))
			wait = a.cfg.RetryMin
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
		case <-ts.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// replayIdle is how long the replay loop sleeps with nothing to do; the
// registry's change channel and queue appends wake it earlier.
const replayIdle = time.Second

// replayRound replays one batch of every tenant that may flow and returns
// how long to wait before the next round (0: go on at once).
func (a *Applier) replayRound(ctx context.Context) (time.Duration, error) {
	ts := a.ten
	q := ts.cfg.Queues
	snap := ts.snapshot()
	a.gate.wait(ctx)
	wait := replayIdle
	for _, id := range q.Ready(func(id string) int { return snap.Get(id).Priority }) {
		if ctx.Err() != nil {
			return 0, nil
		}
		t := snap.Get(id)
		if t.Mode == tenant.ModePaused {
			continue
		}
		now := ts.cfg.Now()
		b := ts.bucket(t, now)
		if t.Mode != tenant.ModeExcluded {
			if w := b.Wait(now); w > 0 {
				wait = min(wait, w)
				continue
			}
		}
		more, err := a.replayTenant(ctx, t, b)
		if err != nil {
			return 0, err
		}
		if more {
			wait = 0
		}
	}
	return wait, nil
}

// replayTenant replays one batch from the head of t's queue. It reports
// whether more may be replayed at once.
func (a *Applier) replayTenant(ctx context.Context, t tenant.Tenant, b *tenant.Bucket) (bool, error) {
	ts := a.ten
	q := ts.cfg.Queues
	var (
		es    []tenant.Entry
		txns  []event.Txn
		rows  int
		bytes int
		dead  *tenant.Entry // a head entry that can never apply
		why   string
		cause error
	)
	// Entries are decoded only as far as this batch reaches: a throttled
	// bulk load may have queued megabytes behind it.
	rate := b.Rate()
	if t.Mode == tenant.ModeExcluded {
		rate = 0 // removed, not applied: no neighbour waits for it
	}
	maxRows := replayRows(a.cfg.MaxBatchRows, rate)
	err := q.Scan(t.ID, func(e tenant.Entry) bool {
		if e.Dead || rows >= maxRows || len(es) == a.cfg.MaxBatchTxns || len(es) > 0 && bytes >= 8<<20 {
			return false
		}
		txn, err := event.Decode(e.Payload)
		reason := ""
		switch {
		case err != nil:
			reason = "decode"
		case txn.Origin != a.cfg.Origin:
			reason, err = "wrong_origin", fmt.Errorf("message claims origin site %d but topic %s carries site %d", txn.Origin, a.cfg.Topic, a.cfg.Origin)
		case txn.Tenant != t.ID:
			// Queued by its Kafka key, maybe without decoding
			// (deferDecode): the key must name the payload's tenant.
			reason, err = "isolation", keyMismatch(t.ID, txn.Tenant)
		case ts.cfg.Resolver != nil:
			if j, owner := tenant.Foreign(&txn, ts.cfg.Resolver); j >= 0 {
				ch := txn.Changes[j]
				reason, err = "isolation", fmt.Errorf("change %d touches %s.%s, which belongs to tenant %q, not %q", j, ch.Schema, ch.Table, owner, t.ID)
			}
		}
		if reason != "" {
			if len(es) == 0 {
				dead, why, cause = &e, reason, err
			}
			return false // replay what precedes it first
		}
		es = append(es, e)
		txns = append(txns, txn)
		rows += len(txn.Changes)
		bytes += len(e.Payload)
		return true
	})
	if err != nil {
		return false, err
	}
	if dead != nil {
		return false, a.markDead(*dead, why, cause)
	}
	if len(es) == 0 {
		return false, nil
	}
	if t.Mode == tenant.ModeExcluded {
		if err := q.Remove(es); err != nil {
			return false, err
		}
		if o := a.tobs(); o != nil {
			o.TenantSkipped(a.cfg.Origin, t.ID, rows)
		}
		return true, nil
	}
	s, err := a.sinkFor(t.Policy())
	if err != nil {
		return false, err
	}
	return a.replayBatch(ctx, s, t, b, es, txns)
}

// replayRows bounds the rows of one replay batch of a tenant limited to
// rate rows/s (<= 0: unlimited) to a tenth of a second of its rate: the
// target then applies a throttled bulk load in short slices spread over
// each second, not in bursts of maxRows that its neighbours' transactions
// wait behind (noisy-neighbour bench). A batch always takes at least one
// transaction, however large.
func replayRows(maxRows int, rate float64) int {
	if rate <= 0 {
		return maxRows
	}
	return max(1, min(maxRows, int(rate/10)))
}

func (a *Applier) replayBatch(ctx context.Context, s Sink, t tenant.Tenant, b *tenant.Bucket, es []tenant.Entry, txns []event.Txn) (bool, error) {
	batch := sink.Batch{
		Topic:       ReplayTopic(a.cfg.Topic, t.ID),
		Partition:   0,
		FirstOffset: int64(es[0].Seq),
		NextOffset:  int64(es[len(es)-1].Seq) + 1,
		Origin:      a.cfg.Origin,
		Epoch:       a.cfg.Epoch(),
		Txns:        txns,
	}
	res, err := a.applyRetrying(ctx, s, batch)
	if ctx.Err() != nil {
		return false, nil
	}
	if err == nil {
		rows := 0
		for i := range txns {
			rows += len(txns[i].Changes)
		}
		b.Take(rows, a.ten.cfg.Now())
		if err := a.ten.cfg.Queues.Remove(es); err != nil {
			return false, err
		}
		if !res.AlreadyApplied {
			a.observeApplied(txns)
		}
		if a.obs != nil && !res.AlreadyApplied {
			a.obs.Applied(a.cfg.Origin, -1, res, txns, time.Now())
		}
		return true, nil
	}
	if errors.Is(err, sink.ErrFenced) {
		return false, err
	}
	bad := -1
	var pe *sink.PermanentError
	if errors.As(err, &pe) && pe.TxnIndex >= 0 && pe.TxnIndex < len(es) {
		bad = pe.TxnIndex
	} else if len(es) == 1 {
		bad = 0
	} else {
		half := len(es) / 2
		if _, err := a.replayBatch(ctx, s, t, b, es[:half], txns[:half]); err != nil {
			return false, err
		}
		return true, nil // the next round goes on from the new head
	}
	if bad > 0 {
		if _, err := a.replayBatch(ctx, s, t, b, es[:bad], txns[:bad]); err != nil {
			return false, err
		}
	}
	return false, a.markDead(es[bad], "apply", err)
}

func (a *Applier) markDead(e tenant.Entry, reason string, cause error) error {
	a.log.Error("dead-lettering a queued message for its tenant; the tenant waits for `retry` or `skip`",
		zap.String("tenant", e.Tenant), zap.Int("partition", e.Partition), zap.Int64("offset", e.Offset),
		zap.String("reason", reason), zap.Error(cause))
	if o := a.tobs(); o != nil {
		o.TenantDeadLettered(a.cfg.Origin, e.Tenant, reason)
	}
	return a.ten.cfg.Queues.MarkDead(e, reason, cause.Error())
}
