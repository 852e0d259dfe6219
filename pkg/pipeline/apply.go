package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/sink"
)

// Sink is what an Applier needs from pkg/sink.
type Sink interface {
	Apply(ctx context.Context, b sink.Batch) (sink.Result, error)
	Offsets(ctx context.Context, topic string) (map[int]int64, error)
}

// Observer receives what an Applier did, for metrics. Implementations must
// be cheap and safe for concurrent use (partitions apply in parallel).
type Observer interface {
	Applied(origin uint8, partition int, res sink.Result, txns []event.Txn, now time.Time)
	Parked(origin uint8, reason string)
	ApplyError(origin uint8, err error)
}

// ApplierConfig tunes one peer's apply loop.
type ApplierConfig struct {
	Kafka  KafkaConfig
	Topic  string // the peer's topic
	Origin uint8  // the peer's site id; messages claiming another origin are parked
	// MaxBatchRows and MaxBatchTxns bound one target transaction (group
	// commit of consecutive source transactions). Defaults 2000 and 500.
	MaxBatchRows int
	MaxBatchTxns int
	// MaxBatchBytes bounds the messages (as fetched) one round of a
	// partition takes, default 1 MiB. A round is what a later message of
	// the partition waits behind: a throttled or paused tenant's messages
	// are stored in its queue undecoded (their rows unknown, so only this
	// bounds them), and a neighbour in the same partition should wait for
	// about one megabyte of them, not for MaxBatchTxns bulk transactions.
	MaxBatchBytes int
	// Linger is how long a partition waits for more messages to fill a
	// batch once it has one. Default 0: a batch is what has arrived while
	// the previous one was applied, which batches under load by itself.
	Linger time.Duration
	// Workers bounds the partitions of the topic applying a batch at the
	// same time. Default 0: every partition.
	Workers int
	// RetryMin/RetryMax bound the backoff after a retryable error.
	RetryMin, RetryMax time.Duration
	// MaxRetries is how often a non-retryable, unclassified error is
	// retried before the batch is split to find and park the culprit.
	MaxRetries int
	// Epoch returns the current fencing epoch (0: no lease).
	Epoch func() uint64
	// Tenants, when set, makes the applier honour the tenant registry:
	// modes, rate limits, per-tenant dead-letter queues and isolation
	// (tenants.go). Nil applies every transaction as it comes.
	Tenants *Tenants
	// Stage, when set, receives how long after its source commit each
	// transaction was fetched from Kafka ("fetched") and committed here
	// ("applied", replays of tenant queues included); see StageFunc.
	Stage StageFunc
}

func (c *ApplierConfig) defaults() {
	if c.MaxBatchRows <= 0 {
		c.MaxBatchRows = 2000
	}
	if c.MaxBatchTxns <= 0 {
		c.MaxBatchTxns = 500
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 1 << 20
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = 5
	}
	if c.Epoch == nil {
		c.Epoch = func() uint64 { return 0 }
	}
}

// Applier applies one peer site's topic to the local database, each
// partition in order, partitions in parallel. It keeps no offsets of its
// own: they live in the target database, written with the data.
type Applier struct {
	cfg   ApplierConfig
	sink  Sink
	obs   Observer
	log   *zap.Logger
	ready atomic.Int32 // partitions streaming
	parts atomic.Int32
	gate  gate
	ten   *tenantState // nil: tenants off
	// workers holds a token per partition applying a batch (Workers);
	// nil without a bound.
	workers chan struct{}
}

// NewApplier assembles an Applier.
func NewApplier(cfg ApplierConfig, s Sink, obs Observer, log *zap.Logger) *Applier {
	cfg.defaults()
	a := &Applier{cfg: cfg, sink: s, obs: obs, log: log.With(zap.String("topic", cfg.Topic))}
	if cfg.Workers > 0 {
		a.workers = make(chan struct{}, cfg.Workers)
	}
	if cfg.Tenants != nil {
		a.ten = newTenantState(cfg.Tenants)
	}
	return a
}

// Ready reports whether every partition is streaming (or paused on
// purpose).
func (a *Applier) Ready() bool { n := a.parts.Load(); return n > 0 && a.ready.Load() == n }

// Pause stops applying after the batches in progress; messages wait in
// Kafka. It is the operator's maintenance switch and how drills cut one
// direction of replication (a partition) without stopping the process.
func (a *Applier) Pause() { a.gate.set(true); a.log.Info("applier paused") }

// Resume undoes Pause.
func (a *Applier) Resume() { a.gate.set(false); a.log.Info("applier resumed") }

// Paused reports whether the applier is paused.
func (a *Applier) Paused() bool { return a.gate.closed() }

// Topic is the topic the applier reads.
func (a *Applier) Topic() string { return a.cfg.Topic }

// gate blocks appliers while closed.
type gate struct {
	mu     sync.Mutex
	shut   bool
	opened chan struct{} // closed when the gate opens
}

func (g *gate) set(shut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if shut == g.shut {
		return
	}
	g.shut = shut
	if shut {
		g.opened = make(chan struct{})
	} else {
		close(g.opened)
	}
}

func (g *gate) closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shut
}

// wait returns once the gate is open or ctx ends.
func (g *gate) wait(ctx context.Context) {
	g.mu.Lock()
	shut, ch := g.shut, g.opened
	g.mu.Unlock()
	if !shut {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// Run applies until ctx is cancelled (nil) or the sink is fenced.
func (a *Applier) Run(ctx context.Context) error {
	var parts int
	err := a.retry(ctx, "discover topic", func() error {
		var err error
		parts, err = EnsureTopic(ctx, a.cfg.Kafka, a.cfg.Topic)
		return err
	})
	if err != nil || ctx.Err() != nil {
		return err
	}
	a.parts.Store(int32(parts))
	g, gctx := errgroup.WithContext(ctx)
	for p := range parts {
		g.Go(func() error { return a.runPartition(gctx, p) })
	}
	if a.ten != nil {
		g.Go(func() error { return a.replayLoop(gctx) })
	}
	return g.Wait()
}

// retry runs fn until it succeeds or ctx ends, backing off between tries.
func (a *Applier) retry(ctx context.Context, what string, fn func() error) error {
	backoff := a.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, sink.ErrFenced) {
			return err
		}
		a.log.Warn("apply loop step failed; retrying", zap.String("step", what),
			zap.Int("attempt", attempt), zap.Duration("backoff", backoff), zap.Error(err))
		if !sleepCtx(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, a.cfg.RetryMax)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// entry is one Kafka message of a batch: a decoded transaction or a parked
// message.
type entry struct {
	offset int64
	txn    *event.Txn
	parked *sink.Parked
	raw    []byte
	key    []byte
	// skip: handled elsewhere (queued for its tenant, excluded, already
	// queued before a crash); the batch only moves the offset past it.
	skip bool
	// undecoded: not decoded yet (txn and parked are nil) because its
	// tenant, the message key, was queued when it was fetched: it will
	// most likely be queued as it is, and the replay decodes and checks
	// it (see deferDecode).
	undecoded bool
}

func (a *Applier) runPartition(ctx context.Context, part int) error {
	for {
		err := a.streamPartition(ctx, part)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, sink.ErrFenced) {
			return err
		}
		a.log.Warn("partition apply loop restarting", zap.Int("partition", part), zap.Error(err))
		if !sleepCtx(ctx, a.cfg.RetryMin) {
			return nil
		}
	}
}

func (a *Applier) streamPartition(ctx context.Context, part int) error {
	var start int64
	err := a.retry(ctx, "read stored offsets", func() error {
		offs, err := a.sink.Offsets(ctx, a.cfg.Topic)
		start = offs[part]
		return err
	})
	if err != nil || ctx.Err() != nil {
		return err
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        a.cfg.Kafka.Brokers,
		Dialer:         a.cfg.Kafka.dialer(),
		Topic:          a.cfg.Topic,
		Partition:      part,
		MinBytes:       1,
		MaxBytes:       16 << 20,
		MaxWait:        250 * time.Millisecond,
		QueueCapacity:  1000,
		ReadBackoffMin: 100 * time.Millisecond,
		ReadBackoffMax: 2 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(f string, args ...any) {
			a.log.Debug("kafka reader: "+fmt.Sprintf(f, args...), zap.Int("partition", part))
		}),
	})
	defer r.Close()
	if err := r.SetOffset(start); err != nil {
		return fmt.Errorf("kafka: seek %s/%d to stored offset %d: %w", a.cfg.Topic, part, start, err)
	}
	a.log.Info("applying partition", zap.Int("partition", part), zap.Int64("from_offset", start))

	g, gctx := errgroup.WithContext(ctx)
	msgs := make(chan kafka.Message, 2*a.cfg.MaxBatchTxns)
	g.Go(func() error {
		defer close(msgs)
		for {
			m, err := r.FetchMessage(gctx)
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("kafka: fetch %s/%d: %w", a.cfg.Topic, part, err)
			}
			select {
			case msgs <- m:
			case <-gctx.Done():
				return nil
			}
		}
	})
	g.Go(func() error {
		a.ready.Add(1)
		defer a.ready.Add(-1)
		batch := make([]entry, 0, a.cfg.MaxBatchTxns)
		for {
			batch = batch[:0]
			m, ok := <-msgs
			if !ok {
				return nil
			}
			rows, bytes := 0, len(m.Value)
			batch = append(batch, a.fetched(m, part))
			rows += entryRows(batch[0])
			linger := lingerTimer(a.cfg.Linger)
			for len(batch) < a.cfg.MaxBatchTxns && rows < a.cfg.MaxBatchRows && bytes < a.cfg.MaxBatchBytes {
				m, ok, err := next(gctx, msgs, linger)
				if err != nil || !ok {
					break
				}
				e := a.fetched(m, part)
				batch = append(batch, e)
				rows += entryRows(e)
				bytes += len(m.Value)
			}
			linger.Stop()
			a.gate.wait(gctx)
			if err := a.applyBatch(gctx, part, batch); err != nil {
				return err
			}
		}
	})
	return g.Wait()
}

// applyBatch applies one partition's batch, holding a worker token while
// it does when Workers bounds them.
func (a *Applier) applyBatch(ctx context.Context, part int, batch []entry) error {
	if a.workers != nil {
		select {
		case a.workers <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		defer func() { <-a.workers }()
	}
	if a.ten != nil {
		return a.applyRouted(ctx, part, batch)
	}
	return a.applyEntries(ctx, part, a.sink, batch)
}

func entryRows(e entry) int {
	if e.skip {
		return 0
	}
	if e.txn == nil {
		return 1
	}
	return len(e.txn.Changes)
}

// fetched turns a fetched message into a batch entry, decoded unless
// deferDecode says its tenant's queue takes it anyway.
func (a *Applier) fetched(m kafka.Message, part int) entry {
	if a.ten != nil && m.Key != nil && a.ten.deferDecode(string(m.Key)) {
		return entry{offset: m.Offset, raw: m.Value, key: m.Key, undecoded: true}
	}
	return a.decode(m, part)
}

func (a *Applier) decode(m kafka.Message, part int) entry {
	e := entry{offset: m.Offset, raw: m.Value, key: m.Key}
	t, err := event.Decode(m.Value)
	reason := ""
	switch {
	case err != nil:
		reason = "decode"
	case t.Origin != a.cfg.Origin:
		reason = "wrong_origin"
		err = fmt.Errorf("message claims origin site %d but topic %s carries site %d", t.Origin, a.cfg.Topic, a.cfg.Origin)
	}
	if reason != "" {
		if a.ten != nil {
			// The tenant's dead-letter queue takes it (applyRouted).
			e.parked = &sink.Parked{Offset: m.Offset, Tenant: string(m.Key), Reason: reason, Err: err.Error(), Payload: m.Value}
			return e
		}
		a.log.Error("parking undecodable message; the pipeline goes on",
			zap.Int("partition", part), zap.Int64("offset", m.Offset), zap.String("reason", reason), zap.Error(err))
		e.parked = &sink.Parked{Offset: m.Offset, Tenant: string(m.Key), Reason: reason, Err: err.Error(), Payload: m.Value}
		return e
	}
	e.txn = &t
	if a.cfg.Stage != nil {
		if c := CommitTime(&t); !c.IsZero() {
			a.cfg.Stage("fetched", len(t.Changes), time.Since(c))
		}
	}
	return e
}

// observeApplied reports the "applied" stage of txns, just committed.
func (a *Applier) observeApplied(txns []event.Txn) {
	if a.cfg.Stage == nil {
		return
	}
	now := time.Now()
	for i := range txns {
		if c := CommitTime(&txns[i]); !c.IsZero() {
			a.cfg.Stage("applied", len(txns[i].Changes), now.Sub(c))
		}
	}
}

// applyEntries applies consecutive entries as one target transaction,
// retrying transient errors and isolating a transaction that can never
// apply (parked, with the error) so that the rest goes on.
func (a *Applier) applyEntries(ctx context.Context, part int, s Sink, es []entry) error {
	for len(es) > 0 {
		b := a.batchOf(part, es)
		res, err := a.applyRetrying(ctx, s, b)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			if !res.AlreadyApplied {
				a.observeApplied(b.Txns)
			}
			if a.obs != nil {
				a.obs.Applied(a.cfg.Origin, part, res, b.Txns, time.Now())
				for _, p := range b.Parked {
					a.obs.Parked(a.cfg.Origin, p.Reason)
				}
			}
			return nil
		}
		if errors.Is(err, sink.ErrFenced) {
			return err
		}
		// Find the culprit: a PermanentError names it; otherwise split
		// (also how a group that hit a lock conflict is applied in halves).
		bad := -1
		var pe *sink.PermanentError
		if errors.As(err, &pe) {
			bad = a.entryIndexOfTxn(es, pe.TxnIndex)
		}
		if bad < 0 {
			if len(es) == 1 {
				bad = 0
			} else {
				half := len(es) / 2
				if err := a.applyEntries(ctx, part, s, es[:half]); err != nil {
					return err
				}
				es = es[half:]
				continue
			}
		}
		if bad > 0 {
			if err := a.applyEntries(ctx, part, s, es[:bad]); err != nil {
				return err
			}
		}
		if a.ten != nil {
			// The tenant's dead-letter queue takes the culprit, and its
			// later changes in this batch wait behind it; the offset
			// moves past them with the rest of the batch.
			es = es[bad:]
			if err := a.deadLetterApply(part, es, err); err != nil {
				return err
			}
			continue
		}
		e := es[bad]
		a.log.Error("parking a transaction that cannot be applied; the pipeline goes on",
			zap.Int("partition", part), zap.Int64("offset", e.offset), zap.String("gtid", e.txn.GTID), zap.Error(err))
		parked := entry{offset: e.offset, parked: &sink.Parked{
			Offset: e.offset, Tenant: e.txn.Tenant, Reason: "apply", Err: err.Error(), Payload: e.raw,
		}}
		if err := a.applyEntries(ctx, part, s, []entry{parked}); err != nil {
			return err
		}
		es = es[bad+1:]
	}
	return nil
}

// applyRetrying applies b, retrying retryable errors with backoff (and
// unclassified ones up to MaxRetries). It returns the last error when it
// gives up: a PermanentError, ErrFenced, a lock conflict of a group of
// transactions (which the caller then applies in halves), or an error
// retries did not fix.
func (a *Applier) applyRetrying(ctx context.Context, s Sink, b sink.Batch) (sink.Result, error) {
	backoff := a.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		res, err := s.Apply(ctx, b)
		if err == nil || ctx.Err() != nil || errors.Is(err, sink.ErrFenced) {
			return res, err
		}
		var pe *sink.PermanentError
		if errors.As(err, &pe) {
			return res, err
		}
		if !sink.IsRetryable(err) && attempt >= a.cfg.MaxRetries {
			return res, err
		}
		if a.obs != nil {
			a.obs.ApplyError(a.cfg.Origin, err)
		}
		lockConflict := sink.IsLockConflict(err)
		if lockConflict && len(b.Txns) > 1 {
			// The server rolled the whole batch back. A group of
			// source transactions holds many row locks, and under a
			// busy local workload the same group tends to deadlock
			// again on every retry (seen six times in a row in the
			// live-lag bench); smaller groups get through.
			a.log.Info("lock conflict applying a group of transactions; applying it in halves",
				zap.String("batch_topic", b.Topic), zap.Int("partition", b.Partition),
				zap.Int64("first_offset", b.FirstOffset), zap.Int("txns", len(b.Txns)), zap.Error(err))
			return res, err
		}
		wait := backoff
		if lockConflict && attempt <= lockConflictQuickRetries {
			// A deadlock victim or a lock wait that timed out: the
			// other transaction is done or nearly so. Waiting out a
			// growing backoff here stalled the partition for seconds
			// under a busy local workload (live-lag bench); a short
			// random pause keeps two retrying writers from meeting
			// again in step.
			wait = time.Duration(rand.Int64N(int64(lockConflictPause)))
		} else {
			backoff = min(backoff*2, a.cfg.RetryMax)
		}
		a.log.Warn("apply failed; retrying", zap.String("batch_topic", b.Topic), zap.Int("partition", b.Partition),
			zap.Int64("first_offset", b.FirstOffset), zap.Int("attempt", attempt), zap.Duration("backoff", wait), zap.Error(err))
		if !sleepCtx(ctx, wait) {
			return res, ctx.Err()
		}
	}
}

// After a lock conflict the apply is retried up to lockConflictQuickRetries
// times after a random pause below lockConflictPause, then with the
// growing backoff.
const (
	lockConflictQuickRetries = 5
	lockConflictPause        = 20 * time.Millisecond
)

func (a *Applier) entryIndexOfTxn(es []entry, txnIndex int) int {
	n := 0
	for i, e := range es {
		if e.txn == nil {
			continue
		}
		if n == txnIndex {
			return i
		}
		n++
	}
	return -1
}

func (a *Applier) batchOf(part int, es []entry) sink.Batch {
	b := sink.Batch{
		Topic:       a.cfg.Topic,
		Partition:   part,
		FirstOffset: es[0].offset,
		NextOffset:  es[len(es)-1].offset + 1,
		Origin:      a.cfg.Origin,
		Epoch:       a.cfg.Epoch(),
	}
	for _, e := range es {
		switch {
		case e.skip:
		case e.txn != nil:
			b.Txns = append(b.Txns, *e.txn)
		default:
			b.Parked = append(b.Parked, *e.parked)
		}
	}
	return b
}

// TopicFor is the topic name of a site.
func TopicFor(prefix, siteName string) string { return prefix + siteName }
