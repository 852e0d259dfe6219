package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tandemdb/tandem/pkg/schema"
)

// Prober is `verifier probe`: it writes probe rows at every site at a
// fixed rate through ordinary sessions (the triggers version them and the
// readers publish _tandem_probe like data), watches for every acknowledged
// probe at every other site, and records both to the run directory, from
// which Analyze derives lag, fault windows, RPO and RTO. Live metrics are
// exported as they go.
type Prober struct {
	cfg   *Config
	log   *zap.Logger
	now   func() time.Time
	dir   string
	sites []*dbSite
	rec   *recorder
	m     *probeMetrics
	info  RunInfo
	ready atomic.Bool

	mu sync.Mutex
	// pend[o][t] holds the probes acknowledged at site o not yet seen at
	// site t: seq → (tenant, ack).
	pend [][]map[uint64]pendingProbe
	live map[Direction]*liveDir
}

type pendingProbe struct {
	tenant string
	ack    time.Time
}

// liveDir is one direction's recent samples, for live fault metrics.
type liveDir struct {
	samples   []Sample
	index     map[uint64]int
	lastFault time.Time // start of the last closed fault already exported
}

// NewProber connects to every configured site and prepares the run
// directory dir. reg receives the live metrics (nil: none); now is the
// clock (nil: time.Now).
func NewProber(cfg *Config, dir string, log *zap.Logger, reg prometheus.Registerer, now func() time.Time) (_ *Prober, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	p := &Prober{cfg: cfg, log: log, now: now, dir: dir, live: map[Direction]*liveDir{}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for _, s := range cfg.Sites {
		ds, err := openSite(s)
		if err != nil {
			return nil, err
		}
		p.sites = append(p.sites, ds)
	}
	if p.rec, err = newRecorder(dir); err != nil {
		return nil, err
	}
	p.m = newProbeMetrics(reg)
	p.pend = make([][]map[uint64]pendingProbe, len(p.sites))
	for i := range p.pend {
		p.pend[i] = make([]map[uint64]pendingProbe, len(p.sites))
		for j := range p.pend[i] {
			p.pend[i][j] = map[uint64]pendingProbe{}
		}
	}
	p.info = RunInfo{Format: RunFormat, Tenants: cfg.Tenants, SLOs: cfg.SLOs, Rate: cfg.Probe.Rate}
	for _, s := range cfg.Sites {
		p.info.Sites = append(p.info.Sites, SiteRef{Name: s.Name, ID: s.ID})
	}
	return p, nil
}

// Close releases connections and files.
func (p *Prober) Close() error {
	var errs []error
	for _, s := range p.sites {
		errs = append(errs, s.db.Close())
	}
	if p.rec != nil {
		errs = append(errs, p.rec.Close())
	}
	return errors.Join(errs...)
}

// Ready is nil once probing started.
func (p *Prober) Ready() error {
	if !p.ready.Load() {
		return errors.New("probe not started")
	}
	return nil
}

// Run probes until ctx is cancelled, then stops writing, waits up to
// probe.drain for the probes still in flight, and finishes the run
// directory. It returns nil on cancellation; only a failure to record
// (the run directory) is an error — database failures are what it
// measures.
func (p *Prober) Run(ctx context.Context) error {
	p.info.Started = p.now().UTC()
	if err := WriteRunInfo(p.dir, p.info); err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	watchers, wctx := errgroup.WithContext(watchCtx)
	for o := range p.sites {
		for t := range p.sites {
			if o != t {
				watchers.Go(func() error { return p.watch(wctx, o, t) })
			}
		}
	}
	watchers.Go(func() error { return p.flushLoop(wctx) })
	writers, gctx := errgroup.WithContext(ctx)
	for o := range p.sites {
		writers.Go(func() error { return p.write(gctx, o) })
	}
	if p.cfg.Probe.HeartbeatInterval > 0 {
		for t := range p.sites {
			writers.Go(func() error { return p.heartbeats(gctx, t) })
		}
	}
	writers.Go(func() error { return p.analyseLoop(gctx) })
	p.ready.Store(true)
	p.log.Info("probe started", zap.String("run", p.dir), zap.Float64("rate", p.cfg.Probe.Rate), zap.Int("sites", len(p.sites)))
	werr := writers.Wait()

	// Drain: the writers stopped; give what is in flight time to arrive.
	drained := p.cfg.Probe.Drain > 0
	if drained && werr == nil {
		deadline := p.now().Add(p.cfg.Probe.Drain.Duration())
		tick := time.NewTicker(p.cfg.Probe.PollInterval.Duration())
		for p.outstanding() > 0 && p.now().Before(deadline) && wctx.Err() == nil {
			<-tick.C
		}
		tick.Stop()
	}
	stopWatch()
	if err := watchers.Wait(); err != nil && werr == nil {
		werr = err
	}
	left := p.outstanding()
	p.info.Ended = p.now().UTC()
	p.info.Drained = drained
	p.log.Info("probe stopped", zap.Int("unseen", left), zap.Bool("drained", drained))
	if err := p.rec.Flush(); err != nil && werr == nil {
		werr = err
	}
	if err := WriteRunInfo(p.dir, p.info); err != nil && werr == nil {
		werr = err
	}
	return werr
}

func (p *Prober) outstanding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for o := range p.pend {
		for t := range p.pend[o] {
			n += len(p.pend[o][t])
		}
	}
	return n
}

// write inserts probe rows at site o: one per tenant per tick. Each
// probe gets a new sequence number, taken from the microsecond clock so
// that a later run never reuses one, and a write that fails or times out
// is recorded as failed (its row may still appear; it is then ignored).
func (p *Prober) write(ctx context.Context, o int) error {
	s := p.sites[o]
	interval := time.Duration(float64(time.Second) / p.cfg.Probe.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	tenants := p.cfg.ProbeTenants()
	probe := qualified(p.cfg.MetaSchema, schema.Probe)
	var last uint64
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for _, tn := range tenants {
			at := p.now()
			seq := max(last+1, uint64(at.UnixMicro()))
			last = seq
			q := fmt.Sprintf("INSERT INTO %s (site, seq, tenant, written_at) VALUES (%d, %d, %s, UTC_TIMESTAMP(6))",
				probe, s.ID, seq, binaryLiteral(tn))
			wctx, cancel := context.WithTimeout(ctx, p.cfg.Probe.WriteTimeout.Duration())
			_, err := s.db.ExecContext(wctx, q)
			cancel()
			if ctx.Err() != nil {
				return nil // stopping; this write's fate is unknown and unrecorded
			}
			ack := p.now()
			rec := Record{Kind: KindWrite, Origin: s.Name, Seq: seq, Tenant: tn, At: micros(at)}
			if err != nil {
				rec.Err = oneLine(err.Error())
				p.m.writes.WithLabelValues(s.Name, tenantMetric(tn), "error").Inc()
				if !failing {
					p.log.Warn("probe write failed; counting failures until it succeeds", zap.String("site", s.Name), zap.Error(err))
					failing = true
				}
			} else {
				rec.Ack = micros(ack)
				p.m.writes.WithLabelValues(s.Name, tenantMetric(tn), "ok").Inc()
				if failing {
					p.log.Info("probe writes succeed again", zap.String("site", s.Name))
					failing = false
				}
			}
			if err := p.rec.append(ProbesFile, rec); err != nil {
				return err
			}
			p.addWrite(o, seq, tn, at, ack, err == nil)
		}
	}
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// addWrite registers a write as pending at every other site and as a
// sample of every direction from o.
func (p *Prober) addWrite(o int, seq uint64, tenant string, at, ack time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for t := range p.sites {
		if t == o {
			continue
		}
		s := Sample{Seq: seq, Tenant: tenant, At: at}
		if ok {
			s.Ack = ack
			p.pend[o][t][seq] = pendingProbe{tenant: tenant, ack: ack}
		}
		d := Direction{From: p.sites[o].Name, To: p.sites[t].Name, Tenant: tenant}
		ld := p.live[d]
		if ld == nil {
			ld = &liveDir{index: map[uint64]int{}}
			p.live[d] = ld
		}
		ld.index[seq] = len(ld.samples)
		ld.samples = append(ld.samples, s)
	}
}

// pendingRange is the smallest and largest pending sequence number from o
// at t.
func (p *Prober) pendingRange(o, t int) (lo, hi uint64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for seq := range p.pend[o][t] {
		if !ok || seq < lo {
			lo = seq
		}
		if !ok || seq > hi {
			hi = seq
		}
		ok = true
	}
	return lo, hi, ok
}

// watch polls site t for the probes of site o. One range query on the
// primary key per poll returns every pending probe that arrived; the
// poll's start is the probe's seen time (the row was applied before the
// query's snapshot), so lag is over-estimated by at most one poll
// interval.
func (p *Prober) watch(ctx context.Context, o, t int) error {
	tick := time.NewTicker(p.cfg.Probe.PollInterval.Duration())
	defer tick.Stop()
	probe := qualified(p.cfg.MetaSchema, schema.Probe)
	timeout := max(time.Second, 4*p.cfg.Probe.PollInterval.Duration())
	from, to := p.sites[o], p.sites[t]
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		lo, hi, ok := p.pendingRange(o, t)
		if !ok {
			continue
		}
		start := p.now()
		q := fmt.Sprintf("SELECT seq FROM %s WHERE site = %d AND seq BETWEEN %d AND %d LIMIT 100000", probe, from.ID, lo, hi)
		qctx, cancel := context.WithTimeout(ctx, timeout)
		rows, err := to.db.QueryContext(qctx, q)
		if err != nil {
			cancel()
			continue // the target is unreachable: its probes age, which is the measurement
		}
		var seen []uint64
		for rows.Next() {
			var seq uint64
			if rows.Scan(&seq) == nil {
				seen = append(seen, seq)
			}
		}
		rows.Close()
		cancel()
		if err := p.markSeen(o, t, seen, start); err != nil {
			return err
		}
	}
}

func (p *Prober) markSeen(o, t int, seqs []uint64, at time.Time) error {
	from, to := p.sites[o].Name, p.sites[t].Name
	p.mu.Lock()
	var recs []Record
	for _, seq := range seqs {
		pp, ok := p.pend[o][t][seq]
		if !ok {
			continue // seen before, or a write recorded as failed
		}
		delete(p.pend[o][t], seq)
		recs = append(recs, Record{Kind: KindSeen, Origin: from, Target: to, Seq: seq, Tenant: pp.tenant, At: micros(at)})
		d := Direction{From: from, To: to, Tenant: pp.tenant}
		if ld := p.live[d]; ld != nil {
			if i, ok := ld.index[seq]; ok {
				ld.samples[i].Seen = at
			}
		}
		p.m.lag.WithLabelValues(from, to, tenantMetric(pp.tenant)).Observe(at.Sub(pp.ack).Seconds())
	}
	p.mu.Unlock()
	for _, r := range recs {
		if err := p.rec.append(ProbesFile, r); err != nil {
			return err
		}
	}
	return nil
}

// heartbeats reads the replicators' heartbeat rows at site t: lag = now −
// the origin's heartbeat wall time. It shows lag also when no probe runs
// through a direction, but it includes the sites' clock offsets and up to
// one heartbeat interval of staleness.
func (p *Prober) heartbeats(ctx context.Context, t int) error {
	tick := time.NewTicker(p.cfg.Probe.HeartbeatInterval.Duration())
	defer tick.Stop()
	q := "SELECT site, DATE_FORMAT(wall, '%Y-%m-%d %H:%i:%s.%f') FROM " + qualified(p.cfg.MetaSchema, schema.Heartbeat)
	to := p.sites[t]
	names := map[uint8]string{}
	for _, s := range p.sites {
		names[s.ID] = s.Name
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		rows, err := to.db.QueryContext(qctx, q)
		if err != nil {
			cancel()
			continue
		}
		now := p.now()
		var recs []Record
		for rows.Next() {
			var site uint8
			var wall string
			if rows.Scan(&site, &wall) != nil {
				continue
			}
			from, ok := names[site]
			if !ok || site == to.ID {
				continue
			}
			w, err := time.Parse("2006-01-02 15:04:05.000000", wall)
			if err != nil {
				continue
			}
			lag := now.Sub(w)
			p.m.heartbeat.WithLabelValues(from, to.Name).Set(lag.Seconds())
			recs = append(recs, Record{Kind: KindHeartbeat, Origin: from, Target: to.Name, At: micros(now), Lag: lag.Microseconds()})
		}
		rows.Close()
		cancel()
		for _, r := range recs {
			if err := p.rec.append(HeartbeatsFile, r); err != nil {
				return err
			}
		}
	}
}

// flushLoop makes the run directory readable while the probe runs.
func (p *Prober) flushLoop(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := p.rec.Flush(); err != nil {
				return err
			}
		}
	}
}

// liveKeep is how much resolved history the live analysis keeps outside
// fault windows.
const liveKeep = 5 * time.Minute

// analyseLoop runs Analyze over recent samples once a second and exports
// fault state, RTO and RPO as metrics (the run directory holds the
// authoritative record; this is for dashboards and alerts).
func (p *Prober) analyseLoop(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := p.now()
		p.mu.Lock()
		type job struct {
			d       Direction
			samples []Sample
			ld      *liveDir
		}
		jobs := make([]job, 0, len(p.live))
		for d, ld := range p.live {
			jobs = append(jobs, job{d, append([]Sample(nil), ld.samples...), ld})
		}
		pending := map[Direction][2]float64{}
		for o := range p.pend {
			for t := range p.pend[o] {
				for _, pp := range p.pend[o][t] {
					d := Direction{From: p.sites[o].Name, To: p.sites[t].Name, Tenant: pp.tenant}
					v := pending[d]
					v[0]++
					v[1] = max(v[1], now.Sub(pp.ack).Seconds())
					pending[d] = v
				}
			}
		}
		p.mu.Unlock()
		for _, j := range jobs {
			l := []string{j.d.From, j.d.To, tenantMetric(j.d.Tenant)}
			p.m.pending.WithLabelValues(l...).Set(pending[j.d][0])
			p.m.oldest.WithLabelValues(l...).Set(pending[j.d][1])
			a := Analyze(j.samples, p.cfg.SLOFor(j.d.Tenant), now, false)
			open := 0.0
			keepFrom := now.Add(-liveKeep)
			for _, f := range a.Faults {
				if !f.Recovered {
					open = 1
					if st := f.Start.Add(-time.Second); st.Before(keepFrom) {
						keepFrom = st
					}
					continue
				}
				if f.Start.After(j.ld.lastFault) {
					j.ld.lastFault = f.Start
					p.m.faults.WithLabelValues(l...).Inc()
					p.m.rto.WithLabelValues(l...).Set(f.RTO.D().Seconds())
					p.m.rpoWrites.WithLabelValues(l...).Set(float64(f.RPOWrites))
					p.m.rpoWindow.WithLabelValues(l...).Set(f.RPOWindow.D().Seconds())
					p.log.Warn("fault window closed", zap.String("from", j.d.From), zap.String("to", j.d.To),
						zap.String("tenant", j.d.Tenant), zap.Time("start", f.Start), zap.Duration("rto", f.RTO.D()),
						zap.Int("rpo_writes", f.RPOWrites), zap.Duration("rpo_window", f.RPOWindow.D()))
				}
			}
			p.m.faultOpen.WithLabelValues(l...).Set(open)
			p.trim(j.d, keepFrom)
		}
	}
}

// trim drops resolved samples older than keep from the live window.
func (p *Prober) trim(d Direction, keep time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ld := p.live[d]
	cut := 0
	for cut < len(ld.samples) {
		s := &ld.samples[cut]
		if !s.At.Before(keep) || (!s.Failed() && s.Seen.IsZero()) {
			break
		}
		delete(ld.index, s.Seq)
		cut++
	}
	if cut == 0 {
		return
	}
	ld.samples = append([]Sample(nil), ld.samples[cut:]...)
	for i, s := range ld.samples {
		ld.index[s.Seq] = i
	}
}

// probeMetrics are the verifier's Prometheus metrics.
type probeMetrics struct {
	writes                                                           *prometheus.CounterVec
	lag                                                              *prometheus.HistogramVec
	pending, oldest, heartbeat, faultOpen, rto, rpoWrites, rpoWindow *prometheus.GaugeVec
	faults                                                           *prometheus.CounterVec
}

func tenantMetric(t string) string {
	if t == "" {
		return "_global"
	}
	return t
}

func newProbeMetrics(reg prometheus.Registerer) *probeMetrics {
	dir := []string{"from", "to", "tenant"}
	m := &probeMetrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_verifier_probe_writes_total",
			Help: "Probe writes by site, tenant and result (ok, error)."}, []string{"site", "tenant", "result"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_verifier_probe_lag_seconds",
			Help:    "Probe lag: acknowledgement at the origin to first sighting at the target.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, dir),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_verifier_probe_pending",
			Help: "Acknowledged probes not yet seen at the target."}, dir),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_verifier_probe_oldest_pending_seconds",
			Help: "Age of the oldest acknowledged probe not yet seen at the target."}, dir),
		heartbeat: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_verifier_heartbeat_lag_seconds",
			Help: "Now minus the origin's last heartbeat wall time, read at the target."}, []string{"from", "to"}),
		faultOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_verifier_fault_open",
			Help: "1 while a fault window is open (probe writes failing or lag above fault_lag)."}, dir),
		rto: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_verifier_last_rto_seconds",
			Help: "RTO of the last closed fault window."}, dir),
		rpoWrites: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_verifier_last_rpo_writes",
			Help: "RPO (acknowledged writes not applied) of the last closed fault window."}, dir),
		rpoWindow: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem_verifier_last_rpo_window_seconds",
			Help: "RPO window (age of the oldest unapplied acknowledged write) of the last closed fault window."}, dir),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_verifier_faults_total",
			Help: "Closed fault windows."}, dir),
	}
	if reg != nil {
		reg.MustRegister(m.writes, m.lag, m.pending, m.oldest, m.heartbeat, m.faultOpen, m.rto, m.rpoWrites, m.rpoWindow, m.faults)
	}
	return m
}
