// Package replicator assembles one site's replicator daemon from the
// packages that do the work: the binlog Source for the local site, one
// Applier per peer, heartbeats, metrics and the admin server.
package replicator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tandemdb/tandem/pkg/binlog"
	"github.com/tandemdb/tandem/pkg/checkpoint"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/sink"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// Replicator is one site's daemon.
type Replicator struct {
	cfg     *config.Config
	log     *zap.Logger
	reg     *prometheus.Registry
	store   *checkpoint.Store
	db      *sql.DB
	sinkDB  *sql.DB // the sinks' pool: several statements per query
	clock   *hlc.Clock
	source  *pipeline.Source
	reader  *binlog.Reader
	applier []*pipeline.Applier
	prod    *pipeline.Producer
	obs     *observer
	tables  []schema.TableRef // replicated tables (schema.tables)
	tenants *tenants          // nil unless tenants.redis.addr is set
	// reconciler removes late inserts (tombstones.go); nil without peers.
	reconciler *sink.MySQL
	// parkedMu lets one parked-message retry or skip run at a time
	// (parkedapi.go): ReplayParked needs a topic's ids in increasing order.
	parkedMu sync.Mutex
}

// New opens local state and connections and checks the source, refusing to
// start on a misconfigured server (the error says how to fix it).
func New(ctx context.Context, cfg *config.Config, log *zap.Logger, reg *prometheus.Registry) (*Replicator, error) {
	return newReplicator(ctx, cfg, log, reg, nil)
}

// newReplicator is New for the leader of a site with several replicators
// when ha is set: the reader's checkpoint and the HLC bound are shared
// through the lease, and every apply carries the lease's fencing epoch.
func newReplicator(ctx context.Context, cfg *config.Config, log *zap.Logger, reg *prometheus.Registry, ha *leader) (_ *Replicator, err error) {
	r := &Replicator{cfg: cfg, log: log, reg: reg}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.store, err = checkpoint.Open(cfg.StateDir); err != nil {
		return nil, err
	}
	var cps interface {
		pipeline.CheckpointStore
		hlc.UpperBoundStore
	} = r.store
	epoch := func() uint64 { return 0 }
	if ha != nil {
		cps = &sharedStore{local: r.store, leader: ha, log: log.Named("ha")}
		epoch = ha.lease.Epoch
	}
	r.clock, err = hlc.NewClock(cfg.Site.ID, hlc.SystemClock{Offset: cfg.Clock.WallOffset.Duration()},
		hlc.Options{MaxOffset: cfg.Clock.MaxOffset.Duration(), Store: cps})
	if err != nil {
		return nil, err
	}
	if r.db, err = sql.Open("mysql", cfg.Database.DSN()); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	// Housekeeping, start checks and, under HA, the tenant queues (one
	// partition at a time per peer) use this pool.
	peerParts := len(cfg.Peers) * max(cfg.Kafka.Partitions, 1)
	r.db.SetMaxOpenConns(4 + peerParts)
	r.db.SetMaxIdleConns(4)
	r.db.SetConnMaxLifetime(30 * time.Minute)
	// The sinks have a pool of their own that allows several statements
	// per query (config.Database.SinkDSN). They keep the connections they
	// take, one per partition applying (two while a home-only tenant's
	// sink applies beside the peer's), so its idle ones serve only their
	// metadata reads.
	if r.sinkDB, err = sql.Open("mysql", cfg.Database.SinkDSN()); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	r.sinkDB.SetMaxOpenConns(4 + 2*peerParts)
	r.sinkDB.SetMaxIdleConns(2)
	r.sinkDB.SetConnMaxLifetime(30 * time.Minute)

	r.reader, err = binlog.New(binlog.Config{
		Host: cfg.Database.Host, Port: cfg.Database.Port,
		User: cfg.Database.User, Password: cfg.Database.Password.Reveal(),
		Flavor: cfg.Database.Flavor, ServerID: cfg.Reader.ServerID, Site: cfg.Site.ID,
		VersionColumn: cfg.Schema.VersionColumn, MetaSchema: cfg.Schema.MetaSchema,
		Include: cfg.Reader.Include, Exclude: cfg.Reader.Exclude,
		MaxFragmentChanges: cfg.Reader.MaxFragmentChanges, MaxFragmentBytes: cfg.Reader.MaxFragmentBytes,
		ReconnectMin: cfg.Reader.ReconnectMin.Duration(), ReconnectMax: cfg.Reader.ReconnectMax.Duration(),
	}, log.Named("binlog"), r.clock)
	if err != nil {
		return nil, err
	}
	if err := r.reader.Preflight(ctx); err != nil {
		return nil, err
	}
	if err := checkMeta(ctx, r.db, cfg, schema.Offsets, schema.Heartbeat, schema.Parked); err != nil {
		return nil, err
	}
	if r.tables, err = resolveTables(ctx, r.db, cfg.Schema.Tables); err != nil {
		return nil, err
	}

	kc, err := kafkaConfig(cfg)
	if err != nil {
		return nil, err
	}
	if err := pipeline.Probe(ctx, kc); err != nil {
		return nil, kafkaHint(cfg, err)
	}
	parts, err := pipeline.EnsureTopic(ctx, kc, cfg.LocalTopic())
	if err != nil {
		return nil, err
	}
	r.obs = newObserver(reg, cfg.Site.Name, r.peerNames(), metricsOptions(cfg)...)
	resolver, err := tenant.NewResolver(cfg.Tenants.Rules)
	if err != nil {
		return nil, err
	}
	var split func(event.Txn) []event.Txn
	if resolver.Mapped() {
		split = func(t event.Txn) []event.Txn { return tenant.Split(t, resolver) }
	}
	var obs pipeline.Observer = r.obs
	if cfg.Tenants.Enabled() {
		r.tenants = newTenants(cfg, r.store, resolver, log.Named("tenants"))
		if ha != nil {
			r.tenants.shared = newSQLKV(r.db, cfg.Schema.MetaSchema, ha.lease.Epoch)
		}
		r.tenants.metrics = newTenantMetrics(reg, cfg.Site.Name, r.obs.m, r.obs.name)
		r.tenants.metrics.registry = r.tenants.registry
		obs = tenantObserver{observer: r.obs, t: r.tenants.metrics, conflicted: r.tenants.conflicted}
	}
	stages := newStageMetrics(reg)
	r.prod = pipeline.NewProducer(kc, cfg.LocalTopic(), parts)
	if r.tenants != nil {
		r.tenants.reassert = newReasserter(r, r.tenants.metrics.label)
	}
	r.source = pipeline.NewSource(sourceConfig(cfg, split, stages.forOrigin(cfg.Site.Name)), r.reader, r.prod, cps, log.Named("source"))
	r.obs.watchSource(r.source, r.reader, r.clock, cfg.LocalTopic())

	for _, p := range cfg.Peers {
		slog := log.Named("sink").With(zap.String("origin", p.Name))
		newSink := func(pol conflict.Policy) (*sink.MySQL, error) {
			return sink.NewMySQL(r.sinkDB, sink.Config{
				Site: cfg.Site.ID, MetaSchema: cfg.Schema.MetaSchema, VersionColumn: cfg.Schema.VersionColumn,
				MaxRowsPerStatement: cfg.Sink.RowsPerStatement, Policy: pol,
			}, slog, r.clock)
		}
		s, err := newSink(conflict.Policy{})
		if err != nil {
			return nil, err
		}
		if r.reconciler == nil {
			r.reconciler = s // any sink: Reconcile needs only the session setup
		}
		var ten *pipeline.Tenants
		if r.tenants != nil {
			// Home-only tenants apply through a sink holding their home
			// site's rule (one per home site, made on first use).
			ten, err = r.tenants.forApplier(cfg.Topic(p.Name), func(pol conflict.Policy) (pipeline.Sink, error) { return newSink(pol) })
			if err != nil {
				return nil, err
			}
		}
		ac := applierConfig(cfg, kc, p)
		ac.Tenants, ac.Stage, ac.Epoch = ten, stages.forOrigin(p.Name), epoch
		r.applier = append(r.applier, pipeline.NewApplier(ac, s, obs, log.Named("apply").With(zap.String("origin", p.Name))))
	}
	if r.tenants != nil {
		r.tenants.metrics.appliers = r.applier
	}
	return r, nil
}

func (r *Replicator) peerNames() map[uint8]string {
	m := map[uint8]string{r.cfg.Site.ID: r.cfg.Site.Name}
	for _, p := range r.cfg.Peers {
		m[p.ID] = p.Name
	}
	return m
}

// sourceConfig is the publishing side's configuration: the kafka section's
// batching, linger and in-flight bound.
func sourceConfig(cfg *config.Config, split func(event.Txn) []event.Txn, stage pipeline.StageFunc) pipeline.SourceConfig {
	return pipeline.SourceConfig{
		Topic:         cfg.LocalTopic(),
		MaxBatchBytes: cfg.Kafka.BatchBytes,
		Linger:        cfg.Kafka.Linger.Duration(),
		MaxInFlight:   cfg.Kafka.MaxInFlight,
		Fatal:         isFatal,
		Split:         split,
		Stage:         stage,
	}
}

// applierConfig is the apply side's configuration for peer p: the sink
// section's batching, linger, workers and retries.
func applierConfig(cfg *config.Config, kc pipeline.KafkaConfig, p config.Peer) pipeline.ApplierConfig {
	return pipeline.ApplierConfig{
		Kafka: kc, Topic: cfg.Topic(p.Name), Origin: p.ID,
		MaxBatchRows: cfg.Sink.MaxBatchRows, MaxBatchTxns: cfg.Sink.MaxBatchTxns, MaxBatchBytes: cfg.Sink.MaxBatchBytes,
		Linger: cfg.Sink.Linger.Duration(), Workers: cfg.Sink.Workers,
		MaxRetries: cfg.Sink.MaxRetries,
	}
}

// isFatal says which source errors no retry can fix.
func isFatal(err error) bool {
	return errors.Is(err, binlog.ErrPositionPurged) || errors.Is(err, errSharedCheckpointLost)
}

// checkMeta refuses to start when `schema prepare` has not been run, with
// the command that fixes it.
func checkMeta(ctx context.Context, db *sql.DB, cfg *config.Config, tables ...string) error {
	args := []any{cfg.Schema.MetaSchema}
	for _, t := range tables {
		args = append(args, t)
	}
	var n int
	err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?"+
		strings.Repeat(", ?", len(tables)-1)+")", args...).Scan(&n)
	if err != nil {
		return fmt.Errorf("database %s: %w", cfg.Database.Addr(), err)
	}
	if n != len(tables) {
		return fmt.Errorf("database %s: Tandem's bookkeeping tables (%s) are not all in schema %q; run `replicator schema prepare --config FILE` first (it also adds those a newer version needs)",
			cfg.Database.Addr(), strings.Join(tables, ", "), cfg.Schema.MetaSchema)
	}
	return nil
}

// Ready is nil when the source and every applier are streaming.
func (r *Replicator) Ready() error {
	if r.source == nil || !r.source.Ready() {
		return errors.New("source not streaming")
	}
	for i, a := range r.applier {
		if !a.Ready() {
			return fmt.Errorf("applier for %s not streaming", r.cfg.Peers[i].Name)
		}
	}
	return nil
}

// Run replicates until ctx is cancelled (returns nil) or a fatal error.
func (r *Replicator) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.source.Run(gctx) })
	for _, a := range r.applier {
		g.Go(func() error { return a.Run(gctx) })
	}
	g.Go(func() error { return r.obs.run(gctx) })
	if r.tenants != nil {
		g.Go(func() error { return r.tenants.run(gctx) })
	}
	late := newLateInsertMetrics(r.reg, r.cfg.Site.Name)
	if r.cfg.Tombstones.GCInterval > 0 {
		g.Go(func() error { return r.tombstoneGC(gctx, late) })
	}
	if r.cfg.Tombstones.ReconcileInterval > 0 && r.reconciler != nil {
		g.Go(func() error { return r.reconcileLoop(gctx, late) })
	}
	if r.cfg.Heartbeat.Enabled {
		g.Go(func() error { return r.heartbeat(gctx) })
	}
	return g.Wait()
}

// heartbeat writes this site's row in _tandem_heartbeat every interval.
// The row replicates like data, so every receiver can measure lag from it
// even when no user writes flow.
func (r *Replicator) heartbeat(ctx context.Context) error {
	q := fmt.Sprintf("INSERT INTO `%s`.`%s` (site, hlc, wall, watermarks) VALUES (?, ?, UTC_TIMESTAMP(6), ?) "+
		"ON DUPLICATE KEY UPDATE hlc = VALUES(hlc), wall = VALUES(wall), watermarks = VALUES(watermarks)",
		r.cfg.Schema.MetaSchema, schema.Heartbeat)
	t := time.NewTicker(r.cfg.Heartbeat.Interval.Duration())
	defer t.Stop()
	failing := false
	wm, wmAt := "", time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// The heartbeat carries this site's applied watermarks to the
		// others (tombstone collection); refreshed once a second.
		if time.Since(wmAt) >= time.Second {
			if own, err := r.ownWatermarks(ctx); err == nil {
				wm, wmAt = watermarkText(own), time.Now()
			}
		}
		ts, err := r.clock.Now()
		if err == nil {
			_, err = r.db.ExecContext(ctx, q, r.cfg.Site.ID, uint64(ts), wm)
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			r.log.Warn("heartbeat write failed; retrying each interval", zap.Error(err))
			failing = true
		case err == nil && failing:
			r.log.Info("heartbeat write recovered")
			failing = false
		}
	}
}

// Close releases everything New opened.
func (r *Replicator) Close() {
	if r.tenants != nil {
		r.tenants.close()
	}
	if r.prod != nil {
		r.prod.Close()
	}
	if r.db != nil {
		r.db.Close()
	}
	if r.sinkDB != nil {
		r.sinkDB.Close()
	}
	if r.store != nil {
		r.store.Close()
	}
}
