package metrics

// The reader keeps cumulative atomic counters on its hot path (no metric
// calls per row); the replicator folds their deltas in once a second with
// these.

// AddRead counts txns local source transactions with rows row changes.
func (m *Metrics) AddRead(txns, rows uint64) {
	if m == nil {
		return
	}
	m.txnsRead.Add(float64(txns))
	m.rowsRead.Add(float64(rows))
}

// AddDroppedLoop counts n transactions dropped as written by a sink.
func (m *Metrics) AddDroppedLoop(n uint64) {
	if m != nil {
		m.txnsDroppedLoop.Add(float64(n))
	}
}

// AddReconnects counts n reconnects of the binlog reader.
func (m *Metrics) AddReconnects(n uint64) {
	if m != nil {
		m.readerReconnects.Add(float64(n))
	}
}

// AddDeletesWithoutTombstone counts n local deletes the reader versioned
// without a tombstone (see binlog.Stats.DeletesWithoutTombstone).
func (m *Metrics) AddDeletesWithoutTombstone(n uint64) {
	if m != nil {
		m.untombedDeletes.Add(float64(n))
	}
}
