package replicator

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/metrics"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/sink"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// tenantMetrics are the per-tenant series (docs/tenants.md). The tenant
// label goes through metrics.TenantLabel, so it is bounded like every
// other tenant label (tenants.metrics_max_tenants, tenants.metrics_tenants).
type tenantMetrics struct {
	m        *metrics.Metrics
	lag      *prometheus.HistogramVec
	conflict *prometheus.CounterVec
	skipped  *prometheus.CounterVec
	queued   *prometheus.CounterVec
	dead     *prometheus.CounterVec
	depth    *prometheus.GaugeVec
	dlq      *prometheus.GaugeVec
	regOK    prometheus.Gauge
	regVer   prometheus.Gauge
	regAge   prometheus.Gauge

	mu       sync.Mutex
	registry *tenant.Registry
	appliers []*pipeline.Applier
	names    func(uint8) string
	shown    map[[2]string]bool // depth series set last time, to zero them
}

func newTenantMetrics(reg prometheus.Registerer, site string, m *metrics.Metrics, names func(uint8) string) *tenantMetrics {
	labels := []string{"origin", "tenant"}
	t := &tenantMetrics{
		m: m, names: names, shown: map[[2]string]bool{},
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_tenant_lag_seconds", Help: "Time from the origin reader's stamp of a transaction to its apply here, by origin and tenant (replays of queued tenants included).",
			Buckets: metrics.LagBuckets,
		}, labels),
		conflict: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_tenant_conflicts_total",
			Help: "Conflicts by origin and tenant; a batch of several tenants counts as tenant _other (exact per-row records: _tandem_conflicts.tenant)."}, labels),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_tenant_skipped_rows_total",
			Help: "Rows of excluded tenants skipped, by origin and tenant."}, labels),
		queued: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_tenant_parked_total",
			Help: "Messages parked in a tenant's durable queue, by origin, tenant and cause (paused, throttled, behind)."}, append(labels, "cause")),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_tenant_dead_lettered_total",
			Help: "Messages dead-lettered for a tenant, by origin, tenant and reason (apply, decode, isolation, wrong_origin)."}, append(labels, "reason")),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_tenant_queue_depth",
			Help: "Messages waiting in a tenant's durable queue (dead-lettered included), by origin and tenant."}, labels),
		dlq: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_tenant_dlq_depth",
			Help: "Dead-lettered messages at the head of a tenant's queue, by origin and tenant."}, labels),
		regOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_tenant_registry_healthy",
			Help: "1 when the last tenant registry reload from Redis succeeded."}),
		regVer: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_tenant_registry_version",
			Help: "Version of the tenant registry snapshot in force."}),
		regAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_tenant_registry_loaded_timestamp_seconds",
			Help: "Unix time the snapshot in force was read from Redis."}),
	}
	if reg != nil {
		prometheus.WrapRegistererWith(prometheus.Labels{"site": site}, reg).MustRegister(
			t.lag, t.conflict, t.skipped, t.queued, t.dead, t.depth, t.dlq, t.regOK, t.regVer, t.regAge)
	}
	return t
}

func (t *tenantMetrics) label(id string) string { return t.m.TenantLabel(id) }

func (t *tenantMetrics) applied(origin string, res sink.Result, txns []event.Txn, now time.Time) {
	var only string
	mixed := false
	for i := range txns {
		tx := &txns[i]
		if i == 0 {
			only = tx.Tenant
		} else if tx.Tenant != only {
			mixed = true
		}
		if tx.Stamp != 0 {
			t.lag.WithLabelValues(origin, t.label(tx.Tenant)).Observe(max(now.Sub(tx.Stamp.Time()), 0).Seconds())
		}
	}
	if res.Conflicts > 0 {
		l := metrics.OtherLabel
		if !mixed {
			l = t.label(only)
		}
		t.conflict.WithLabelValues(origin, l).Add(float64(res.Conflicts))
	}
}

// sync refreshes the gauges (called once a second by the observer loop).
func (t *tenantMetrics) sync() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.registry != nil {
		st := t.registry.Status()
		ok := 0.0
		if st.Healthy {
			ok = 1
		}
		t.regOK.Set(ok)
		t.regVer.Set(float64(st.Version))
		if !st.Loaded.IsZero() {
			t.regAge.Set(float64(st.Loaded.UnixNano()) / 1e9)
		}
	}
	now := map[[2]string]bool{}
	depth := map[[2]string]float64{}
	dead := map[[2]string]float64{}
	for _, a := range t.appliers {
		q := a.Queues()
		if q == nil {
			continue
		}
		on := t.names(a.Origin())
		for id, s := range q.Stats() {
			k := [2]string{on, t.label(id)}
			depth[k] += float64(s.Depth)
			dead[k] += float64(s.Dead)
			now[k] = true
		}
	}
	for k := range t.shown {
		if !now[k] {
			t.depth.WithLabelValues(k[0], k[1]).Set(0)
			t.dlq.WithLabelValues(k[0], k[1]).Set(0)
		}
	}
	for k := range now {
		t.depth.WithLabelValues(k[0], k[1]).Set(depth[k])
		t.dlq.WithLabelValues(k[0], k[1]).Set(dead[k])
	}
	t.shown = now
}

// tenantObserver is the Observer appliers get: the replicator's observer
// plus the per-tenant metrics.
type tenantObserver struct {
	*observer
	t *tenantMetrics
	// conflicted, when set, is called after a batch that logged conflicts.
	conflicted func()
}

var _ pipeline.TenantObserver = tenantObserver{}

func (o tenantObserver) Applied(origin uint8, part int, res sink.Result, txns []event.Txn, now time.Time) {
	o.observer.Applied(origin, part, res, txns, now)
	o.t.applied(o.name(origin), res, txns, now)
	if res.Conflicts > 0 && o.conflicted != nil {
		o.conflicted()
	}
}

func (o tenantObserver) TenantSkipped(origin uint8, id string, rows int) {
	o.t.skipped.WithLabelValues(o.name(origin), o.t.label(id)).Add(float64(rows))
}

func (o tenantObserver) TenantQueued(origin uint8, id, cause string, n int) {
	o.t.queued.WithLabelValues(o.name(origin), o.t.label(id), cause).Add(float64(n))
}

func (o tenantObserver) TenantDeadLettered(origin uint8, id, reason string) {
	o.t.dead.WithLabelValues(o.name(origin), o.t.label(id), reason).Inc()
}
