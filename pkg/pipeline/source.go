package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tandemdb/tandem/pkg/checkpoint"
	"github.com/tandemdb/tandem/pkg/event"
)

// CheckpointStore persists the reader's resume position: a
// checkpoint.Store, or under site-level HA a store shared by the site's
// replicators through the lease.
type CheckpointStore interface {
	Position() (pos event.Position, ok bool, err error)
	SavePosition(pos event.Position) error
}

// BinlogReader is what a Source needs from pkg/binlog.
type BinlogReader interface {
	CurrentPosition(ctx context.Context) (event.Position, error)
	Run(ctx context.Context, from event.Position, emit func(context.Context, event.Txn) error) error
}

// SourceConfig tunes the publishing side.
type SourceConfig struct {
	// Topic is this site's topic; one per origin site.
	Topic string
	// MaxBatchMessages and MaxBatchBytes bound one produce round of one
	// partition (each partition has one round in flight). Defaults 1000
	// and 1 MiB: a round is what a later transaction of the same
	// partition waits behind, so a small tenant sharing a partition with
	// a bulk load waits for at most one such round, not for megabytes.
	MaxBatchMessages int
	MaxBatchBytes    int
	// Linger is how long a partition's round waits for more messages
	// once it has one, to fill the batch. Default 0: a round goes as soon
	// as the previous one is acknowledged, which batches under load by
	// itself and adds no delay to a quiet-period transaction.
	Linger time.Duration
	// MaxInFlight bounds the produce rounds awaiting acknowledgement
	// across all partitions (each partition has at most one). Default:
	// no bound beyond that.
	MaxInFlight int
	// QueueSize bounds transactions read but not yet published, which is
	// the reader's back-pressure. Default 4096.
	QueueSize int
	// CheckpointInterval is how often the safe position is persisted at
	// most. Default 100 ms.
	CheckpointInterval time.Duration
	// RetryMin and RetryMax bound the backoff between restarts of the
	// read→publish loop after an error (broker down, source down).
	RetryMin, RetryMax time.Duration
	// Fatal reports errors that retrying cannot fix (a purged checkpoint,
	// bad credentials); Run returns them instead of retrying.
	Fatal func(error) bool
	// Split cuts a source transaction into one transaction per tenant
	// (tenant.Split with the configured resolver), each published as its
	// own message keyed by its tenant, so each tenant's history stays
	// ordered in one partition. Nil publishes transactions whole.
	Split func(event.Txn) []event.Txn
	// Stage, when set, receives how long after its source commit each
	// published transaction was read ("read") and acknowledged by Kafka
	// ("acked"); see StageFunc.
	Stage StageFunc
}

func (c *SourceConfig) defaults() {
	if c.MaxBatchMessages <= 0 {
		c.MaxBatchMessages = 1000
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 1 << 20
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 4096
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 100 * time.Millisecond
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 10 * time.Second
	}
}

// SourceStats are cumulative counters, safe to read concurrently.
type SourceStats struct {
	TxnsPublished     atomic.Uint64
	MessagesPublished atomic.Uint64
	RowsPublished     atomic.Uint64
	BytesPublished    atomic.Uint64
	PublishErrors     atomic.Uint64
	Restarts          atomic.Uint64
	Checkpoints       atomic.Uint64

	mu         sync.Mutex
	checkpoint event.Position
}

// Checkpoint returns the last persisted position.
func (s *SourceStats) Checkpoint() event.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkpoint
}

// Source streams the local binlog into the site's Kafka topic and persists
// the resume position.
type Source struct {
	cfg      SourceConfig
	reader   BinlogReader
	producer *Producer
	store    CheckpointStore
	log      *zap.Logger
	stats    SourceStats
	ready    atomic.Bool
}

// NewSource assembles a Source.
func NewSource(cfg SourceConfig, reader BinlogReader, producer *Producer, store CheckpointStore, log *zap.Logger) *Source {
	cfg.defaults()
	return &Source{cfg: cfg, reader: reader, producer: producer, store: store, log: log}
}

// Stats exposes the counters.
func (s *Source) Stats() *SourceStats { return &s.stats }

// Ready reports whether the loop is currently streaming.
func (s *Source) Ready() bool { return s.ready.Load() }

// Run reads and publishes until ctx is cancelled (returns nil) or a fatal
// error. Transient errors restart the loop from the persisted checkpoint
// with exponential backoff, so a broker or source outage never becomes a
// crash loop.
func (s *Source) Run(ctx context.Context) error {
	backoff := s.cfg.RetryMin
	for {
		started := time.Now()
		err := s.runOnce(ctx)
		s.ready.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("reader stopped unexpectedly")
		}
		if s.cfg.Fatal != nil && s.cfg.Fatal(err) {
			return err
		}
		if time.Since(started) > 30*time.Second {
			backoff = s.cfg.RetryMin // it ran fine for a while: start over
		}
		s.stats.Restarts.Add(1)
		s.log.Warn("source restarting from checkpoint after error",
			zap.Error(err), zap.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, s.cfg.RetryMax)
	}
}

type item struct {
	seq       uint64
	msg       *Message // nil: nothing to publish, only a position to pass
	rows      int
	committed time.Time // source commit (zero: unknown), for Stage
}

func (s *Source) runOnce(ctx context.Context) error {
	pos, ok, err := s.store.Position()
	if err != nil {
		return err
	}
	if !ok {
		// First start: begin at the source's current end and persist that
		// at once, so that a crash before the first checkpoint cannot
		// silently skip the writes made in between.
		if pos, err = s.reader.CurrentPosition(ctx); err != nil {
			return err
		}
		if err := s.store.SavePosition(pos); err != nil {
			return err
		}
		s.log.Info("no checkpoint: starting at the source's current position", zap.Stringer("position", pos))
	}
	s.setCheckpoint(pos)
	tracker := checkpoint.NewTracker()
	ch := make(chan item, s.cfg.QueueSize)
	g, gctx := errgroup.WithContext(ctx)

	g.Go(func() error {
		defer close(ch)
		var buf []byte
		return s.reader.Run(gctx, pos, func(ctx context.Context, t event.Txn) error {
			parts := []event.Txn{t}
			if s.cfg.Split != nil {
				parts = s.cfg.Split(t)
			}
			for i := range parts {
				p := &parts[i]
				it := item{}
				if len(p.Changes) > 0 {
					var err error
					buf, err = event.Encode(buf[:0], p)
					if err != nil {
						return fmt.Errorf("encode transaction %s (tenant %q): %w", p.GTID, p.Tenant, err)
					}
					v := make([]byte, len(buf))
					copy(v, buf)
					it.msg = &Message{Key: p.Key(), Value: v}
					it.rows = len(p.Changes)
					if s.cfg.Stage != nil {
						if it.committed = CommitTime(p); !it.committed.IsZero() {
							s.cfg.Stage("read", it.rows, time.Since(it.committed))
						}
					}
				}
				// Only the last fragment of a transaction is a resume
				// point, and of its tenant parts only the last: the
				// position is safe once every part was acknowledged.
				end := (t.Last || len(t.Changes) == 0) && i == len(parts)-1
				it.seq = tracker.Add(p.Position, end)
				select {
				case ch <- it:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	})

	g.Go(func() error { return s.publish(gctx, ch, tracker) })

	cpDone := make(chan struct{})
	g.Go(func() error {
		defer close(cpDone)
		tick := time.NewTicker(s.cfg.CheckpointInterval)
		defer tick.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-tick.C:
				if err := s.saveSafe(tracker); err != nil {
					return err
				}
			}
		}
	})
	s.ready.Store(true)
	err = g.Wait()
	// Persist whatever was acknowledged before the stop.
	if serr := s.saveSafe(tracker); serr != nil && err == nil {
		err = serr
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// publish hands each message to its partition's lane. Each lane has one
// produce round in flight, so a partition's order is the binlog order,
// while a slow or large round of one partition (a tenant's bulk load)
// never holds up the others. Lanes acknowledge out of order across
// partitions; the tracker only advances the checkpoint over a contiguous
// acknowledged prefix, so it still never passes an unacknowledged message.
func (s *Source) publish(ctx context.Context, ch <-chan item, tracker *checkpoint.Tracker) error {
	parts := max(s.producer.Partitions(), 1)
	g, gctx := errgroup.WithContext(ctx)
	var inFlight chan struct{}
	if s.cfg.MaxInFlight > 0 && s.cfg.MaxInFlight < parts {
		inFlight = make(chan struct{}, s.cfg.MaxInFlight)
	}
	lanes := make([]chan item, parts)
	for p := range lanes {
		// A small buffer: a lane that cannot keep up fills it and then
		// stalls the dispatcher (and so the other lanes) like the
		// reader's queue would, but a lane keeping up never does, and
		// the memory held beside the reader's queue stays bounded
		// (messages can be large fragments).
		lanes[p] = make(chan item, laneBuffer)
		g.Go(func() error { return s.lane(gctx, p, lanes[p], tracker, inFlight) })
	}
	g.Go(func() error {
		defer func() {
			for _, l := range lanes {
				close(l)
			}
		}()
		for {
			var it item
			var ok bool
			select {
			case it, ok = <-ch:
				if !ok {
					return nil
				}
			case <-gctx.Done():
				return nil
			}
			if it.msg == nil {
				// Only a position: acknowledged once everything before
				// it is (the tracker's contiguous prefix).
				tracker.Ack(it.seq)
				s.stats.TxnsPublished.Add(1)
				continue
			}
			select {
			case lanes[PartitionFor(it.msg.Key, parts)] <- it:
			case <-gctx.Done():
				return nil
			}
		}
	})
	return g.Wait()
}

// lingerTimer returns a timer for a batch's linger; with d <= 0 a stopped
// one whose channel is nil, so that filling never waits.
func lingerTimer(d time.Duration) *stopTimer {
	if d <= 0 {
		return &stopTimer{}
	}
	t := time.NewTimer(d)
	return &stopTimer{t: t, C: t.C}
}

// next takes the next value from ch for a batch being filled: at once if
// one is there; else, while linger runs, the first to come; else none
// (ok false, also when ch is closed). err is ctx's error when it ended
// while waiting.
func next[T any](ctx context.Context, ch <-chan T, linger *stopTimer) (v T, ok bool, err error) {
	select {
	case v, ok = <-ch:
		return v, ok, nil
	default:
	}
	if linger.C == nil {
		return v, false, nil
	}
	select {
	case v, ok = <-ch:
		return v, ok, nil
	case <-linger.C:
		return v, false, nil
	case <-ctx.Done():
		return v, false, ctx.Err()
	}
}

// stopTimer is a *time.Timer that may be absent.
type stopTimer struct {
	t *time.Timer
	C <-chan time.Time
}

func (t *stopTimer) Stop() {
	if t.t != nil {
		t.t.Stop()
	}
}

// laneBuffer is how many messages wait for each partition's lane.
const laneBuffer = 256

// lane produces one partition's messages in order, one round in flight.
func (s *Source) lane(ctx context.Context, part int, ch <-chan item, tracker *checkpoint.Tracker, inFlight chan struct{}) error {
	batch := make([]item, 0, s.cfg.MaxBatchMessages)
	msgs := make([]Message, 0, s.cfg.MaxBatchMessages)
	for {
		batch, msgs = batch[:0], msgs[:0]
		var first item
		var ok bool
		select {
		case first, ok = <-ch:
			if !ok {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
		batch = append(batch, first)
		bytes := len(first.msg.Value)
		linger := lingerTimer(s.cfg.Linger)
		for len(batch) < s.cfg.MaxBatchMessages && bytes < s.cfg.MaxBatchBytes {
			it, ok, err := next(ctx, ch, linger)
			if err != nil {
				linger.Stop()
				return nil // ctx ended
			}
			if !ok {
				break
			}
			batch = append(batch, it)
			bytes += len(it.msg.Value)
		}
		linger.Stop()
		rows := 0
		for _, it := range batch {
			msgs = append(msgs, *it.msg)
			rows += it.rows
		}
		if inFlight != nil {
			select {
			case inFlight <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
		}
		err := s.producer.ProducePartition(ctx, part, msgs)
		if inFlight != nil {
			<-inFlight
		}
		if err != nil {
			s.stats.PublishErrors.Add(1)
			return err
		}
		s.stats.MessagesPublished.Add(uint64(len(msgs)))
		s.stats.RowsPublished.Add(uint64(rows))
		s.stats.BytesPublished.Add(uint64(bytes))
		now := time.Now()
		for _, it := range batch {
			tracker.Ack(it.seq)
			if s.cfg.Stage != nil && !it.committed.IsZero() {
				s.cfg.Stage("acked", it.rows, now.Sub(it.committed))
			}
		}
		s.stats.TxnsPublished.Add(uint64(len(batch)))
	}
}

func (s *Source) saveSafe(tracker *checkpoint.Tracker) error {
	pos, ok := tracker.Safe()
	if !ok || pos == s.stats.Checkpoint() {
		return nil
	}
	if err := s.store.SavePosition(pos); err != nil {
		return err
	}
	s.stats.Checkpoints.Add(1)
	s.setCheckpoint(pos)
	return nil
}

func (s *Source) setCheckpoint(p event.Position) {
	s.stats.mu.Lock()
	s.stats.checkpoint = p
	s.stats.mu.Unlock()
}
