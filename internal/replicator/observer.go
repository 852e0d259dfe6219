package replicator

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemdb/tandem/pkg/binlog"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/metrics"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/sink"
)

// observer turns what the pipeline stages report into Prometheus metrics.
type observer struct {
	m     *metrics.Metrics
	names map[uint8]string

	mu       sync.Mutex
	source   *pipeline.Source
	reader   *binlog.Reader
	clock    *hlc.Clock
	lastRead binlog.Stats
	lastPub  struct{ rows, errs uint64 }
	lastCP   event.Position
	topic    string
}

func newObserver(reg *prometheus.Registry, site string, names map[uint8]string, opts ...metrics.Option) *observer {
	return &observer{m: metrics.New(reg, site, opts...), names: names}
}

func (o *observer) name(id uint8) string {
	if n, ok := o.names[id]; ok {
		return n
	}
	return strconv.Itoa(int(id))
}

func (o *observer) watchSource(s *pipeline.Source, r *binlog.Reader, c *hlc.Clock, topic string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.source, o.reader, o.clock, o.topic = s, r, c, topic
}

// run folds the stages' cumulative counters into the metrics once a second.
func (o *observer) run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.sync()
			return nil
		case <-t.C:
			o.sync()
		}
	}
}

func (o *observer) sync() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.reader != nil {
		st := o.reader.Stats()
		o.m.AddRead(st.TxnsRead-o.lastRead.TxnsRead, st.RowsRead-o.lastRead.RowsRead)
		o.m.AddDroppedLoop(st.TxnsDroppedLoop - o.lastRead.TxnsDroppedLoop)
		o.m.AddReconnects(st.Reconnects - o.lastRead.Reconnects)
		o.m.AddDeletesWithoutTombstone(st.DeletesWithoutTombstone - o.lastRead.DeletesWithoutTombstone)
		o.lastRead = st
	}
	if o.source != nil {
		ss := o.source.Stats()
		rows, errs := ss.RowsPublished.Load(), ss.PublishErrors.Load()
		o.m.Published(o.topic, int(rows-o.lastPub.rows))
		for range errs - o.lastPub.errs {
			o.m.PublishError()
		}
		o.lastPub.rows, o.lastPub.errs = rows, errs
		if cp := ss.Checkpoint(); cp != o.lastCP {
			o.m.Checkpoint(cp.GTIDSet, time.Now())
			o.lastCP = cp
		}
	}
}

// Applied implements pipeline.Observer.
func (o *observer) Applied(origin uint8, _ int, res sink.Result, txns []event.Txn, now time.Time) {
	on := o.name(origin)
	for i := range txns {
		o.m.TxnApplied(on, txns[i].Tenant, len(txns[i].Changes))
		// Lag is measured from heartbeats (DESIGN.md §7): the origin's
		// clock when it wrote the row, to now, when the row is applied
		// here. They flow every 100 ms whether or not users write.
		for _, ch := range txns[i].Changes {
			if ch.Table != schema.Heartbeat || ch.Op == event.OpDelete {
				continue
			}
			for j, col := range ch.Columns {
				if col == "hlc" && j < len(ch.Row) && ch.Row[j].Kind == event.KindUint {
					o.m.ObserveLag(on, now.Sub(hlc.Timestamp(ch.Row[j].Uint).Time()))
				}
			}
		}
	}
	for range res.Conflicts {
		o.m.Conflict(on, "", "lost")
	}
	if res.Duplicates > 0 {
		o.m.Duplicates(on, res.Duplicates)
	}
	for range res.Skewed {
		o.m.ClockSkew(on)
	}
}

// Parked implements pipeline.Observer.
func (o *observer) Parked(origin uint8, reason string) { o.m.Parked(o.name(origin), reason) }

// ApplyError implements pipeline.Observer.
func (o *observer) ApplyError(origin uint8, err error) {
	kind := "other"
	var pe *sink.PermanentError
	switch {
	case errors.As(err, &pe):
		kind = "permanent"
	case sink.IsRetryable(err):
		kind = "retryable"
	}
	o.m.ApplyError(o.name(origin), kind)
}
