// Package metrics defines the replicator's Prometheus metrics. Every name
// starts with tandem_ and is stable: dashboards and alerts depend on it
// (docs/configuration.md links the list).
//
// Metrics are registered on a registry the caller passes in, never on the
// global default registry, so that tests and several replicators in one
// process do not collide. Every series carries a constant site label (the
// local site's name), so one Prometheus can scrape every site.
//
// Labels whose values come from data (tenant, table) are bounded: the first
// N distinct values get their own series and the rest share OtherLabel, so
// a schema-per-tenant database with a million tenants cannot explode the
// time-series database. Methods are safe for concurrent use and are no-ops
// on a nil *Metrics, so components can be built without metrics in tests.
package metrics

import (
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values with a special meaning.
const (
	// OtherLabel collects the tenants or tables beyond the limit.
	OtherLabel = "_other"
	// GlobalTenantLabel is the label of the global tenant (event.Txn's
	// empty Tenant); an empty label value would read as "no label" in
	// PromQL.
	GlobalTenantLabel = "_global"
)

// Defaults of the label limits.
const (
	DefaultMaxTenants = 100
	DefaultMaxTables  = 500
	// maxLabelLen bounds a data-derived label value; longer ones are
	// OtherLabel.
	maxLabelLen = 128
)

// LagBuckets are the replication lag histogram's upper bounds in seconds,
// from 1 ms (same-host sites) to 60 s (an outage being caught up).
// Fine steps between 10 ms and 500 ms, where lag SLOs live, so that
// histogram_quantile can tell a p99 of 150 ms from one of 200 ms.
var LagBuckets = []float64{.001, .0025, .005, .01, .02, .03, .05, .075, .1, .125, .15, .175, .2, .25, .3, .4, .5, .75, 1, 2.5, 5, 10, 30, 60}

// Option configures New.
type Option func(*options)

type options struct {
	maxTenants, maxTables int
	pinned                []string
}

// MaxTenants sets how many distinct tenants get their own tenant label
// (default DefaultMaxTenants); later ones are counted as OtherLabel.
func MaxTenants(n int) Option { return func(o *options) { o.maxTenants = n } }

// PinTenants gives these tenants their own label whatever the limit (the
// tenants an operator watches), in addition to MaxTenants others.
func PinTenants(names ...string) Option {
	return func(o *options) { o.pinned = append(o.pinned, names...) }
}

// MaxTables sets how many distinct tables get their own table label
// (default DefaultMaxTables).
func MaxTables(n int) Option { return func(o *options) { o.maxTables = n } }

// Metrics holds the replicator's collectors.
type Metrics struct {
	tenants *boundedLabel
	tables  *boundedLabel

	rowsRead         prometheus.Counter
	txnsRead         prometheus.Counter
	txnsDroppedLoop  prometheus.Counter
	readerReconnects prometheus.Counter
	untombedDeletes  prometheus.Counter
	rowsPublished    *prometheus.CounterVec
	publishErrors    prometheus.Counter
	rowsApplied      *prometheus.CounterVec
	txnsApplied      *prometheus.CounterVec
	conflicts        *prometheus.CounterVec
	duplicates       *prometheus.CounterVec
	parked           *prometheus.CounterVec
	applyErrors      *prometheus.CounterVec
	clockSkew        *prometheus.CounterVec
	lag              *prometheus.HistogramVec
	lagLast          *prometheus.GaugeVec
	checkpointSeq    *prometheus.GaugeVec
	checkpointTime   prometheus.Gauge
}

// New creates the metrics of the replicator of site and registers them on
// reg; a nil reg leaves them unregistered. It panics if reg already holds
// them (a programming error, like registering twice).
func New(reg *prometheus.Registry, site string, opts ...Option) *Metrics {
	o := options{maxTenants: DefaultMaxTenants, maxTables: DefaultMaxTables}
	for _, opt := range opts {
		opt(&o)
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		tenants: newBoundedLabel(o.maxTenants, o.pinned),
		tables:  newBoundedLabel(o.maxTables, nil),

		rowsRead:         counter("tandem_rows_read_total", "Row changes of local transactions read from the binlog."),
		txnsRead:         counter("tandem_txns_read_total", "Local source transactions read from the binlog."),
		txnsDroppedLoop:  counter("tandem_txns_dropped_loop_total", "Transactions the reader dropped because a sink wrote them (loop prevention)."),
		readerReconnects: counter("tandem_reader_reconnects_total", "Times the binlog reader reconnected to the local database."),
		untombedDeletes: counter("tandem_deletes_without_tombstone_total",
			"Local row deletes the reader found without a tombstone in their transaction and versioned one tick after the deleted row "+
				"(a missing BEFORE DELETE trigger: run `replicator schema prepare`; docs/known-issues.md)."),
		rowsPublished: counterVec("tandem_rows_published_total", "Row changes acknowledged by Kafka, by topic.", "topic"),
		publishErrors: counter("tandem_publish_errors_total", "Failed Kafka produce attempts."),
		rowsApplied:   counterVec("tandem_rows_applied_total", "Row changes applied to the local database, by origin site and tenant.", "origin", "tenant"),
		txnsApplied:   counterVec("tandem_txns_applied_total", "Source transactions (or fragments) applied, by origin site.", "origin"),
		conflicts:     counterVec("tandem_conflicts_total", "Conflicts by origin site, table and kind (e.g. an incoming version that lost the compare).", "origin", "table", "kind"),
		duplicates:    counterVec("tandem_duplicates_total", "Messages skipped because they were already applied (redelivery after a restart).", "origin"),
		parked:        counterVec("tandem_parked_total", "Messages parked instead of applied, by origin site and reason.", "origin", "reason"),
		applyErrors:   counterVec("tandem_apply_errors_total", "Failed apply attempts, by origin site and kind of error.", "origin", "kind"),
		clockSkew:     counterVec("tandem_clock_skew_total", "Remote versions refused by the clock for being too far ahead (clock.max_offset).", "origin"),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_replication_lag_seconds",
			Help:    "Time from the origin's commit (heartbeat or transaction stamp) to its apply here, by origin site.",
			Buckets: LagBuckets,
		}, []string{"origin"}),
		lagLast: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_replication_lag_last_seconds",
			Help: "The latest replication lag observed, by origin site; negative when the origin's clock is ahead.",
		}, []string{"origin"}),
		checkpointSeq: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_checkpoint_gtid_seq",
			Help: "Sequence number of the reader's durable checkpoint, by GTID domain (MariaDB) or source UUID (MySQL).",
		}, []string{"domain"}),
		checkpointTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_checkpoint_timestamp_seconds",
			Help: "Unix time at which the reader last made its checkpoint durable.",
		}),
	}
	if reg != nil {
		wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"site": clean(site)}, reg)
		wrapped.MustRegister(
			m.rowsRead, m.txnsRead, m.txnsDroppedLoop, m.readerReconnects, m.untombedDeletes,
			m.rowsPublished, m.publishErrors,
			m.rowsApplied, m.txnsApplied, m.conflicts, m.duplicates, m.parked, m.applyErrors,
			m.clockSkew, m.lag, m.lagLast, m.checkpointSeq, m.checkpointTime,
		)
	}
	return m
}

// TxnRead counts one local source transaction of rows row changes read
// from the binlog.
func (m *Metrics) TxnRead(rows int) {
	if m == nil {
		return
	}
	m.txnsRead.Inc()
	m.rowsRead.Add(float64(rows))
}

// TxnDroppedLoop counts a transaction the reader dropped because a sink
// wrote it.
func (m *Metrics) TxnDroppedLoop() {
	if m != nil {
		m.txnsDroppedLoop.Inc()
	}
}

// ReaderReconnect counts a reconnect of the binlog reader.
func (m *Metrics) ReaderReconnect() {
	if m != nil {
		m.readerReconnects.Inc()
	}
}

// Published counts rows row changes acknowledged by Kafka on topic.
func (m *Metrics) Published(topic string, rows int) {
	if m != nil {
		m.rowsPublished.WithLabelValues(clean(topic)).Add(float64(rows))
	}
}

// PublishError counts a failed produce attempt.
func (m *Metrics) PublishError() {
	if m != nil {
		m.publishErrors.Inc()
	}
}

// TxnApplied counts one applied source transaction (or fragment) of tenant
// from origin with rows row changes.
func (m *Metrics) TxnApplied(origin, tenant string, rows int) {
	if m == nil {
		return
	}
	origin = clean(origin)
	m.txnsApplied.WithLabelValues(origin).Inc()
	m.rowsApplied.WithLabelValues(origin, m.TenantLabel(tenant)).Add(float64(rows))
}

// Conflict counts a conflict on table ("schema.table") of the given kind.
func (m *Metrics) Conflict(origin, table, kind string) {
	if m != nil {
		m.conflicts.WithLabelValues(clean(origin), m.tables.label(table), clean(kind)).Inc()
	}
}

// Duplicates counts n messages from origin skipped as already applied.
func (m *Metrics) Duplicates(origin string, n int) {
	if m != nil {
		m.duplicates.WithLabelValues(clean(origin)).Add(float64(n))
	}
}

// Parked counts a message from origin parked for reason.
func (m *Metrics) Parked(origin, reason string) {
	if m != nil {
		m.parked.WithLabelValues(clean(origin), clean(reason)).Inc()
	}
}

// ApplyError counts a failed apply attempt of the given kind.
func (m *Metrics) ApplyError(origin, kind string) {
	if m != nil {
		m.applyErrors.WithLabelValues(clean(origin), clean(kind)).Inc()
	}
}

// ClockSkew counts a remote version from origin refused by the clock.
func (m *Metrics) ClockSkew(origin string) {
	if m != nil {
		m.clockSkew.WithLabelValues(clean(origin)).Inc()
	}
}

// ObserveLag records the replication lag of a change from origin. The
// histogram clamps a negative lag (origin clock ahead) to zero, since a
// negative observation would corrupt its sum; the last-lag gauge keeps the
// sign, which is how skew shows on a dashboard.
func (m *Metrics) ObserveLag(origin string, lag time.Duration) {
	if m == nil {
		return
	}
	origin = clean(origin)
	m.lag.WithLabelValues(origin).Observe(max(lag, 0).Seconds())
	m.lagLast.WithLabelValues(origin).Set(lag.Seconds())
}

// Checkpoint records that the reader made the position gtidSet durable at
// time at. gtidSet is MariaDB's "domain-server-seq,..." or a MySQL GTID set
// "uuid:1-42:50-60,..."; each domain (or UUID) gets its sequence number.
//
// The position is exported as numbers rather than as an info metric with
// the GTID set as a label value: that label would change on every
// checkpoint and create a new time series each scrape.
func (m *Metrics) Checkpoint(gtidSet string, at time.Time) {
	if m == nil {
		return
	}
	for domain, seq := range parseGTIDSet(gtidSet) {
		m.checkpointSeq.WithLabelValues(domain).Set(float64(seq))
	}
	m.checkpointTime.Set(float64(at.UnixNano()) / 1e9)
}

// TenantLabel returns the tenant label value of tenant: GlobalTenantLabel
// for the global tenant, the tenant itself for pinned tenants and the first
// MaxTenants distinct others, OtherLabel after that.
func (m *Metrics) TenantLabel(tenant string) string {
	if m == nil {
		return OtherLabel
	}
	if tenant == "" {
		return GlobalTenantLabel
	}
	return m.tenants.label(tenant)
}

// parseGTIDSet maps each GTID domain (MariaDB) or source UUID (MySQL) of a
// GTID set to its highest sequence number. Malformed parts are skipped:
// metrics must never fail the reader.
func parseGTIDSet(set string) map[string]uint64 {
	out := map[string]uint64{}
	for part := range strings.SplitSeq(set, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if uuid, intervals, ok := strings.Cut(part, ":"); ok {
			// MySQL: uuid:1-42:50-60 (an interval may be one number).
			var hi uint64
			for iv := range strings.SplitSeq(intervals, ":") {
				_, end, found := strings.Cut(iv, "-")
				if !found {
					end = iv
				}
				if n, err := strconv.ParseUint(end, 10, 64); err == nil {
					hi = max(hi, n)
				}
			}
			if hi > 0 {
				out[clean(strings.ToLower(uuid))] = hi
			}
			continue
		}
		// MariaDB: domain-server-seq.
		f := strings.Split(part, "-")
		if len(f) != 3 {
			continue
		}
		if _, err := strconv.ParseUint(f[0], 10, 32); err != nil {
			continue
		}
		if n, err := strconv.ParseUint(f[2], 10, 64); err == nil {
			out[f[0]] = n
		}
	}
	return out
}

// clean makes s a valid label value: Prometheus panics on invalid UTF-8.
func clean(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// boundedLabel hands out at most max distinct label values plus the pinned
// ones; the rest map to OtherLabel. Values once handed out stay, so a
// tenant's series never moves between its own label and OtherLabel.
type boundedLabel struct {
	max    int
	pinned map[string]bool
	mu     sync.RWMutex
	seen   map[string]bool
}

func newBoundedLabel(max int, pinned []string) *boundedLabel {
	b := &boundedLabel{max: max, pinned: map[string]bool{}, seen: map[string]bool{}}
	for _, p := range pinned {
		if ok(p) {
			b.pinned[p] = true
		}
	}
	return b
}

// ok reports whether v may be a label value of its own.
func ok(v string) bool { return v != OtherLabel && len(v) <= maxLabelLen && utf8.ValidString(v) }

func (b *boundedLabel) label(v string) string {
	if !ok(v) {
		return OtherLabel
	}
	if b.pinned[v] {
		return v
	}
	b.mu.RLock()
	seen, full := b.seen[v], len(b.seen) >= b.max
	b.mu.RUnlock()
	if seen {
		return v
	}
	if full {
		return OtherLabel
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[v] {
		return v
	}
	if len(b.seen) >= b.max {
		return OtherLabel
	}
	b.seen[v] = true
	return v
}
