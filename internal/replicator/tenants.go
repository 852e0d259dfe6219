package replicator

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tandemdb/tandem/pkg/checkpoint"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/metrics"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// tenants is the replicator's tenant machinery: the Redis client and
// registry, the shared resolver, and the store the appliers' queues live
// in.
type tenants struct {
	client   *redis.Client
	registry *tenant.Registry
	resolver *tenant.Resolver
	store    *checkpoint.Store
	// shared, under site-level HA, holds the queues in the site's
	// database instead of store.
	shared  tenant.KV
	metrics *tenantMetrics
	// reassert answers the home_only_violations logged at this site
	// (reassert.go).
	reassert *reasserter
}

func newTenants(cfg *config.Config, store *checkpoint.Store, resolver *tenant.Resolver, log *zap.Logger) *tenants {
	tc := cfg.Tenants
	client := redisClient(tc.Redis)
	reg := tenant.NewRegistry(tenant.RegistryConfig{
		Client: client, Prefix: tc.Redis.KeyPrefix, ReloadInterval: tc.ReloadInterval.Duration(),
		Cache: tenant.PebbleCache{DB: store.DB()},
	}, log)
	if reg.Snapshot().Loaded.IsZero() {
		// No snapshot of an earlier run (a new state_dir: a first start,
		// or under HA a standby taking over): read the registry before
		// anything is applied, or a paused tenant would be applied until
		// the first reload.
		ctx, cancel := context.WithTimeout(context.Background(), registryFirstLoad)
		err := reg.Reload(ctx)
		cancel()
		if err != nil {
			log.Warn("tenant registry unreachable at start and no cached snapshot: every tenant is active-active without limits until Redis answers",
				zap.Error(err))
		}
	}
	return &tenants{client: client, registry: reg, resolver: resolver, store: store}
}

// registryFirstLoad bounds the registry read at a start without a cached
// snapshot.
const registryFirstLoad = 5 * time.Second

func (t *tenants) forApplier(topic string, sinkFor func(conflict.Policy) (pipeline.Sink, error)) (*pipeline.Tenants, error) {
	var kv tenant.KV = tenant.PebbleKV{DB: t.store.DB()}
	if t.shared != nil {
		kv = t.shared // site-level HA: where every replicator of the site finds them
	}
	q, err := tenant.OpenQueuesIn(kv, topic)
	if err != nil {
		return nil, err
	}
	var res *tenant.Resolver
	if t.resolver.Mapped() {
		res = t.resolver
	}
	return &pipeline.Tenants{Registry: t.registry, Resolver: res, Queues: q, SinkFor: sinkFor}, nil
}

func (t *tenants) close() { t.client.Close() }

// conflicted wakes the re-assert loop: an applied batch logged conflicts,
// maybe home_only_violations.
func (t *tenants) conflicted() {
	if t.reassert != nil {
		t.reassert.wake()
	}
}

// run keeps the registry current and the tenant gauges fresh.
func (t *tenants) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return t.registry.Run(gctx) })
	if t.reassert != nil {
		g.Go(func() error { return t.reassert.run(gctx) })
	}
	g.Go(func() error {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			t.metrics.sync()
			select {
			case <-gctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
	return g.Wait()
}

func metricsOptions(cfg *config.Config) []metrics.Option {
	return []metrics.Option{metrics.MaxTenants(cfg.Tenants.MetricsMaxTenants), metrics.PinTenants(cfg.Tenants.MetricsTenants...)}
}
