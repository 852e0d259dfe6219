package replicator

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/sink"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// Tombstone collection (docs/tombstones.md).
//
// A tombstone (key, v) at this site protects against a write to key with a
// version below v that another site made before it applied the delete and
// that has not arrived here yet. Such a write can only be in flight while
// some site has not applied everything up to v. Each sink records, per
// origin, the highest source stamp it applied (_tandem_watermarks); each
// heartbeat carries its site's watermarks to every other site. The lowest
// of all of them — every site's view of every other site — is the low
// watermark: below it (minus a grace period that covers reordering across
// partitions and clock skew) no write can still arrive, so the tombstones
// there can go. A site that is down or partitioned stops its watermarks
// from moving, which stops collection everywhere, as it must.

// watermarkText renders watermarks as "origin:hlc,…" in origin order.
func watermarkText(wm map[uint8]hlc.Timestamp) string {
	ids := make([]int, 0, len(wm))
	for id := range wm {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d:%d", id, uint64(wm[uint8(id)]))
	}
	return strings.Join(parts, ",")
}

// parseWatermarks parses watermarkText's format; malformed parts are
// skipped (a peer running a newer format must not stop this one).
func parseWatermarks(s string) map[uint8]hlc.Timestamp {
	out := map[uint8]hlc.Timestamp{}
	for part := range strings.SplitSeq(s, ",") {
		id, v, ok := strings.Cut(part, ":")
		if !ok {
			continue
		}
		n, err1 := strconv.ParseUint(id, 10, 8)
		ts, err2 := strconv.ParseUint(v, 10, 64)
		if err1 == nil && err2 == nil {
			out[uint8(n)] = hlc.Timestamp(ts)
		}
	}
	return out
}

// ownWatermarks reads what this site's sinks applied, per origin.
func (r *Replicator) ownWatermarks(ctx context.Context) (map[uint8]hlc.Timestamp, error) {
	rows, err := r.db.QueryContext(ctx, fmt.Sprintf("SELECT origin, applied_hlc FROM `%s`.`%s`", r.cfg.Schema.MetaSchema, schema.Watermarks))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	wm := map[uint8]hlc.Timestamp{}
	for rows.Next() {
		var o uint8
		var v uint64
		if err := rows.Scan(&o, &v); err != nil {
			return nil, err
		}
		wm[o] = hlc.Timestamp(v)
	}
	return wm, rows.Err()
}

// lowWatermark is the lowest applied watermark of every site for every
// other site, as known here. ok is false while some site has not reported
// a watermark for some origin (nothing may be collected then).
func (r *Replicator) lowWatermark(ctx context.Context) (low hlc.Timestamp, why string, err error) {
	views := map[uint8]map[uint8]hlc.Timestamp{}
	own, err := r.ownWatermarks(ctx)
	if err != nil {
		return 0, "", err
	}
	views[r.cfg.Site.ID] = own
	rows, err := r.db.QueryContext(ctx, fmt.Sprintf("SELECT site, watermarks FROM `%s`.`%s` WHERE site <> ?",
		r.cfg.Schema.MetaSchema, schema.Heartbeat), r.cfg.Site.ID)
	if err != nil {
		return 0, "", err
	}
	for rows.Next() {
		var site uint8
		var text string
		if err := rows.Scan(&site, &text); err != nil {
			rows.Close()
			return 0, "", err
		}
		views[site] = parseWatermarks(text)
	}
	rows.Close()
	sites := []uint8{r.cfg.Site.ID}
	for _, p := range r.cfg.Peers {
		sites = append(sites, p.ID)
	}
	low = hlc.Timestamp(^uint64(0))
	for _, x := range sites {
		view, ok := views[x]
		if !ok {
			return 0, fmt.Sprintf("no heartbeat from site %d yet", x), nil
		}
		for _, o := range sites {
			if o == x {
				continue
			}
			v, ok := view[o]
			if !ok {
				return 0, fmt.Sprintf("site %d has not applied anything from site %d yet", x, o), nil
			}
			low = min(low, v)
		}
	}
	return low, "", nil
}

// collectTombstones deletes tombstones below the low watermark minus the
// grace period, in small batches so no lock is held for long.
func (r *Replicator) collectTombstones(ctx context.Context, collected prometheus.Counter, late *prometheus.CounterVec) error {
	low, why, err := r.lowWatermark(ctx)
	if err != nil {
		return err
	}
	if why != "" {
		r.log.Debug("tombstone collection waits", zap.String("why", why))
		return nil
	}
	grace := uint64(r.cfg.Tombstones.GCGrace.Duration().Milliseconds())
	if low.WallMillis() <= grace {
		return nil
	}
	cutoff := hlc.New(low.WallMillis()-grace, 0, 0)
	// The last chance for a late insert whose delete is about to lose its
	// tombstone: after that nothing would say the row lost.
	if err := r.reconcile(ctx, 0, cutoff, late); err != nil {
		return err
	}
	total := int64(0)
	for _, t := range r.tables {
		q := fmt.Sprintf("DELETE FROM `%s`.`%s` WHERE `%s` < ? LIMIT 1000", t.Schema, schema.TombTable(t.Table), r.cfg.Schema.VersionColumn)
		for {
			res, err := r.db.ExecContext(ctx, q, uint64(cutoff))
			if err != nil {
				return fmt.Errorf("collect tombstones of %s: %w", t, err)
			}
			n, _ := res.RowsAffected()
			total += n
			if n < 1000 {
				break
			}
		}
	}
	if total > 0 {
		collected.Add(float64(total))
		r.log.Info("tombstones collected", zap.Int64("count", total), zap.Stringer("below", cutoff), zap.Stringer("low_watermark", low))
	}
	return nil
}

func (r *Replicator) tombstoneGC(ctx context.Context, late *prometheus.CounterVec) error {
	collected := prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "tandem_tombstones_collected_total",
		Help:        "Tombstones deleted below the lowest applied watermark of all sites.",
		ConstLabels: prometheus.Labels{"site": r.cfg.Site.Name},
	})
	runs := prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "tandem_tombstone_gc_runs_total",
		Help:        "Tombstone collection passes completed (whether or not anything was collected).",
		ConstLabels: prometheus.Labels{"site": r.cfg.Site.Name},
	})
	if r.reg != nil {
		r.reg.MustRegister(collected, runs)
	}
	t := time.NewTicker(r.cfg.Tombstones.GCInterval.Duration())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := r.collectTombstones(ctx, collected, late); err != nil {
			if ctx.Err() == nil {
				r.log.Warn("tombstone collection failed; will retry", zap.Error(err))
			}
			continue
		}
		runs.Inc()
	}
}

// Late inserts (docs/tombstones.md): a local insert that raced a delete of
// the same key can commit with a version at or below the delete's
// tombstone. The other sites drop it, as the rule says; this site must
// too. sink.Reconcile explains the race and removes such rows.

func newLateInsertMetrics(reg *prometheus.Registry, site string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_late_inserts_removed_total",
		Help: "Local rows removed because their version was at or below their own key's tombstone " +
			"(an insert that committed after a concurrent delete with a greater version).",
		ConstLabels: prometheus.Labels{"site": site},
	}, []string{"table"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// The reconciler's passes look at the tombstones of the last
// reconcileRecent, and at most every reconcileFullEvery at the whole
// tombstones.reconcile_window (reconcileLoop).
const (
	reconcileRecent    = 10 * time.Second
	reconcileFullEvery = 30 * time.Second
)

// reconcileSpan is how far back a pass at now looks (ms of database
// time), and whether it is a full pass: the whole window when the last
// full pass is reconcileFullEvery old (or there was none), else the
// recent part.
func reconcileSpan(recent, window uint64, lastFull, now time.Time) (uint64, bool) {
	if lastFull.IsZero() || now.Sub(lastFull) >= reconcileFullEvery {
		return window, true
	}
	return recent, false
}

// reconcile removes late inserts whose tombstones have versions in
// [from, to) from every replicated table.
func (r *Replicator) reconcile(ctx context.Context, from, to hlc.Timestamp, late *prometheus.CounterVec) error {
	if r.reconciler == nil {
		return nil
	}
	homes := r.homeRows()
	for _, t := range r.tables {
		n, err := r.reconciler.Reconcile(ctx, t.Schema, t.Table, from, to, homes(t))
		if err != nil {
			return fmt.Errorf("reconcile %s: %w", t, err)
		}
		if n > 0 {
			late.WithLabelValues(t.String()).Add(float64(n))
			r.log.Warn("removed rows that lost to a concurrent delete at this site (late inserts; logged in _tandem_conflicts as late_insert)",
				zap.Stringer("table", t), zap.Int64("rows", n))
		}
	}
	return nil
}

// homeRows returns, for the tables of one pass, the rows the reconciler
// must rank under a home policy: those of tenants whose policy ranks a
// home site's versions first, per the registry snapshot of this pass (a
// rule changed meanwhile takes effect at the next pass, as for the sinks).
func (r *Replicator) homeRows() func(schema.TableRef) sink.HomeRows {
	if r.tenants == nil {
		return func(schema.TableRef) sink.HomeRows { return sink.HomeRows{} }
	}
	return homeRowsOf(r.tenants.registry.Snapshot(), r.tenants.resolver)
}

// homeRowsOf lists snap's home-policy tenants once, by home site, and
// names, per table, the rows they own.
func homeRowsOf(snap *tenant.Snapshot, res *tenant.Resolver) func(schema.TableRef) sink.HomeRows {
	home := func(id string) uint8 { return snap.Get(id).Policy().HomeSite }
	var homes map[uint8][]string
	for _, e := range snap.List() {
		if h := home(e.ID); h != 0 {
			if homes == nil {
				homes = map[uint8][]string{}
			}
			homes[h] = append(homes[h], e.ID)
		}
	}
	return func(t schema.TableRef) sink.HomeRows {
		if id, ok := res.TableTenant(t.Schema, t.Table); ok {
			return sink.HomeRows{Site: home(id)}
		}
		return sink.HomeRows{Column: res.Column(t.Schema, t.Table), Tenants: homes}
	}
}

// reconcileLoop checks, every reconcile_interval, the tombstones of the
// last reconcileRecent of database time, and at most every
// reconcileFullEvery those of the whole reconcile_window. A racing insert
// commits while or shortly after the delete it raced commits, so recent
// tombstones are the ones that matter; the full window catches an insert
// whose transaction stayed open longer, and older tombstones are checked
// once more before collection. (A pass costs about a microsecond per
// tombstone in its window, BenchmarkReconcilePass in pkg/sink: checking
// two minutes of a busy table every second cost MariaDB a few percent of
// a core per site.)
func (r *Replicator) reconcileLoop(ctx context.Context, late *prometheus.CounterVec) error {
	window := uint64(r.cfg.Tombstones.ReconcileWindow.Duration().Milliseconds())
	recent := min(window, uint64(reconcileRecent.Milliseconds()))
	t := time.NewTicker(r.cfg.Tombstones.ReconcileInterval.Duration())
	defer t.Stop()
	failing := false
	var lastFull time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		span, full := reconcileSpan(recent, window, lastFull, time.Now())
		// Tombstones are stamped by the database's clock (the triggers),
		// so the window is measured on it, not on this process's clock.
		var tick uint64
		err := r.db.QueryRowContext(ctx, "SELECT "+hlc.SQLNowTick).Scan(&tick)
		if err == nil {
			from := hlc.Timestamp(0)
			if now := hlc.Timestamp(tick << hlc.SiteBits); now.WallMillis() > span {
				from = hlc.New(now.WallMillis()-span, 0, 0)
			}
			err = r.reconcile(ctx, from, hlc.Timestamp(^uint64(0)), late)
		}
		if err == nil && full {
			lastFull = time.Now()
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			r.log.Warn("late insert reconciliation failed; retrying each interval", zap.Error(err))
			failing = true
		case err == nil && failing:
			r.log.Info("late insert reconciliation recovered")
			failing = false
		}
	}
}
