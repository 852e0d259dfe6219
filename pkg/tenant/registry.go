package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Redis layout of the registry, under a key prefix:
//
//	<prefix>tenant:<id>       hash: mode, home_site, rate_limit, priority, conflict_policy, updated_at
//	<prefix>tenants           set of ids
//	<prefix>version           counter, raised by every write
//	<prefix>tenants:changed   pub/sub channel; the message is the new version
const (
	keyTenant   = "tenant:"
	keyTenants  = "tenants"
	keyVersion  = "version"
	channelName = "tenants:changed"
)

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	Client redis.UniversalClient
	// Prefix is prepended to every key and the channel.
	Prefix string
	// ReloadInterval is the period of the full reload that heals missed
	// notices; default 10 s.
	ReloadInterval time.Duration
	// Cache, when set, keeps the last good snapshot across restarts, so a
	// replicator started while Redis is down still honours the operator's
	// last settings (a paused tenant stays paused).
	Cache SnapshotCache
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// SnapshotCache stores the encoded last snapshot locally.
type SnapshotCache interface {
	LoadSnapshot() ([]byte, error)
	SaveSnapshot([]byte) error
}

// Registry is the tenant registry: Redis is the source of truth, and every
// reader works from an immutable Snapshot swapped atomically. It is
// refreshed on a pub/sub notice and by a periodic full reload; a snapshot
// whose version is below the current one (Redis restored from an older
// state, or restarted empty) is refused and reported, never installed.
// While Redis is unreachable the last snapshot stays in force and
// replication goes on; Status reports it.
type Registry struct {
	cfg  RegistryConfig
	log  *zap.Logger
	snap atomic.Pointer[Snapshot]

	mu      sync.Mutex
	changed chan struct{}
	status  Status
}

// Status is the registry's health, for /v1/tenants and metrics.
type Status struct {
	Version     uint64    `json:"version"`
	Loaded      time.Time `json:"loaded"`
	Tenants     int       `json:"tenants"`
	Healthy     bool      `json:"healthy"`
	LastAttempt time.Time `json:"last_attempt"`
	LastError   string    `json:"last_error,omitempty"`
	// Stale is set while Redis holds an older version than the snapshot
	// in force (see Registry).
	Stale bool `json:"stale,omitempty"`
	// Problems are entries in Redis that do not validate; the previous
	// setting of those tenants stays in force.
	Problems []string `json:"problems,omitempty"`
	Reloads  uint64   `json:"reloads"`
	Notices  uint64   `json:"notices"`
}

// NewRegistry returns a registry holding the cached snapshot (or an empty
// one); Run keeps it current.
func NewRegistry(cfg RegistryConfig, log *zap.Logger) *Registry {
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Registry{cfg: cfg, log: log, changed: make(chan struct{})}
	snap := NewSnapshot(0, time.Time{}, nil)
	if cfg.Cache != nil {
		if b, err := cfg.Cache.LoadSnapshot(); err != nil {
			log.Warn("cannot read the cached tenant snapshot; starting from defaults until Redis answers", zap.Error(err))
		} else if b != nil {
			if s, err := decodeSnapshot(b); err != nil {
				log.Warn("cached tenant snapshot is corrupt; starting from defaults until Redis answers", zap.Error(err))
			} else {
				snap = s
				log.Info("tenant registry: using the cached snapshot until Redis answers", zap.Uint64("version", s.Version), zap.Int("tenants", s.Len()))
			}
		}
	}
	r.snap.Store(snap)
	r.status.Version, r.status.Loaded, r.status.Tenants = snap.Version, snap.Loaded, snap.Len()
	return r
}

// Snapshot returns the snapshot in force.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// Changed returns a channel closed at the next snapshot swap.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Status returns the registry's health.
func (r *Registry) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Problems = append([]string(nil), st.Problems...)
	return st
}

func (r *Registry) key(id string) string { return r.cfg.Prefix + keyTenant + id }
func (r *Registry) setKey() string       { return r.cfg.Prefix + keyTenants }
func (r *Registry) versionKey() string   { return r.cfg.Prefix + keyVersion }

// Channel is the pub/sub channel of change notices.
func (r *Registry) Channel() string { return r.cfg.Prefix + channelName }

// Run keeps the snapshot current until ctx ends (returns nil).
func (r *Registry) Run(ctx context.Context) error {
	ps := r.cfg.Client.Subscribe(ctx, r.Channel())
	defer ps.Close()
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelSize(16))
	tick := time.NewTicker(r.cfg.ReloadInterval)
	defer tick.Stop()
	r.reloadLogged(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			// A (re)subscription also reloads: notices sent while the
			// connection was down are lost.
			if _, isMsg := m.(*redis.Message); isMsg {
				r.mu.Lock()
				r.status.Notices++
				r.mu.Unlock()
			}
			r.reloadLogged(ctx)
		case <-tick.C:
			r.reloadLogged(ctx)
		}
	}
}

// reloadLogged reloads; Reload itself logs the transitions between
// reachable and unreachable, and Status reports the error.
func (r *Registry) reloadLogged(ctx context.Context) { _ = r.Reload(ctx) }

// Reload reads the whole registry and installs it, unless it is older
// than the snapshot in force.
func (r *Registry) Reload(ctx context.Context) error {
	snap, problems, err := r.load(ctx)
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.LastAttempt = now
	r.status.Reloads++
	if err != nil {
		if r.status.Healthy || r.status.LastError == "" {
			r.log.Warn("tenant registry unreachable; keeping the last snapshot and replicating on",
				zap.Uint64("version", r.snap.Load().Version), zap.Error(err))
		}
		r.status.Healthy, r.status.LastError = false, err.Error()
		return err
	}
	if !r.status.Healthy && r.status.LastError != "" {
		r.log.Info("tenant registry reachable again", zap.Uint64("version", snap.Version))
	}
	r.status.Healthy, r.status.LastError, r.status.Problems = true, "", problems
	cur := r.snap.Load()
	if snap.Version < cur.Version {
		if !r.status.Stale {
			r.log.Error("tenant registry in Redis is older than the snapshot in force; keeping the snapshot (write any tenant to raise the version past it, or restore Redis)",
				zap.Uint64("redis_version", snap.Version), zap.Uint64("snapshot_version", cur.Version))
		}
		r.status.Stale = true
		return nil
	}
	r.status.Stale = false
	r.snap.Store(snap)
	r.status.Version, r.status.Loaded, r.status.Tenants = snap.Version, snap.Loaded, snap.Len()
	close(r.changed)
	r.changed = make(chan struct{})
	if r.cfg.Cache != nil && snap.Version != cur.Version {
		if b, err := encodeSnapshot(snap); err == nil {
			if err := r.cfg.Cache.SaveSnapshot(b); err != nil {
				r.log.Warn("cannot cache the tenant snapshot locally", zap.Error(err))
			}
		}
	}
	return nil
}

// load reads a consistent registry: the version and the set are read in
// one MULTI, the hashes after it, and the version again; a write in between
// makes it try again.
func (r *Registry) load(ctx context.Context) (*Snapshot, []string, error) {
	c := r.cfg.Client
	for attempt := 0; ; attempt++ {
		var vcmd *redis.StringCmd
		var scmd *redis.StringSliceCmd
		_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			vcmd = p.Get(ctx, r.versionKey())
			scmd = p.SMembers(ctx, r.setKey())
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, nil, fmt.Errorf("tenant registry: read %s and %s: %w", r.versionKey(), r.setKey(), err)
		}
		v1, err := versionOf(vcmd)
		if err != nil {
			return nil, nil, err
		}
		ids := scmd.Val()
		hashes := make([]*redis.MapStringStringCmd, len(ids))
		var v2cmd *redis.StringCmd
		_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				hashes[i] = p.HGetAll(ctx, r.key(id))
			}
			v2cmd = p.Get(ctx, r.versionKey())
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, nil, fmt.Errorf("tenant registry: read %d tenant hashes: %w", len(ids), err)
		}
		v2, err := versionOf(v2cmd)
		if err != nil {
			return nil, nil, err
		}
		if v1 != v2 {
			if attempt < 10 {
				continue
			}
			return nil, nil, errors.New("tenant registry: the version kept changing during 10 reads; retrying at the next reload")
		}
		cur := r.snap.Load()
		var problems []string
		entries := make([]Tenant, 0, len(ids))
		for i, id := range ids {
			h := hashes[i].Val()
			if len(h) == 0 {
				continue // listed but deleted: default
			}
			t, err := parseHash(id, h)
			if err != nil {
				problems = append(problems, err.Error())
				if cur.Has(id) {
					entries = append(entries, cur.Get(id))
				}
				continue
			}
			entries = append(entries, t)
		}
		return NewSnapshot(v1, r.cfg.Now(), entries), problems, nil
	}
}

func versionOf(cmd *redis.StringCmd) (uint64, error) {
	s, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("tenant registry: read version: %w", err)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("tenant registry: version %q is not a counter: %w", s, err)
	}
	return v, nil
}

// Hash fields of a tenant.
const (
	fieldMode     = "mode"
	fieldHome     = "home_site"
	fieldRate     = "rate_limit"
	fieldPriority = "priority"
	fieldPolicy   = "conflict_policy"
	fieldUpdated  = "updated_at"
)

func parseHash(id string, h map[string]string) (Tenant, error) {
	t := Tenant{ID: id, Mode: Mode(h[fieldMode]), ConflictPolicy: h[fieldPolicy]}
	var errs []error
	if v := h[fieldHome]; v != "" {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: allowed a site id 1..255", fieldHome, v))
		}
		t.HomeSite = uint8(n)
	}
	if v := h[fieldRate]; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: allowed rows per second (0 = unlimited)", fieldRate, v))
		}
		t.RateLimit = f
	}
	if v := h[fieldPriority]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: allowed an integer", fieldPriority, v))
		}
		t.Priority = n
	}
	if v := h[fieldUpdated]; v != "" {
		t.UpdatedAt, _ = time.Parse(time.RFC3339Nano, v)
	}
	if len(errs) == 0 {
		if err := t.normalized().Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Tenant{}, fmt.Errorf("tenant %q in Redis is invalid, previous setting kept: %w", id, errors.Join(errs...))
	}
	return t.normalized(), nil
}

// Put writes t to Redis (validated), raises the version past both Redis's
// and the snapshot in force, notifies every replicator, and reloads.
func (r *Registry) Put(ctx context.Context, t Tenant) (uint64, error) {
	t = t.normalized()
	if err := t.Validate(); err != nil {
		return 0, err
	}
	t.UpdatedAt = r.cfg.Now().UTC()
	return r.write(ctx, func(p redis.Pipeliner) {
		p.HSet(ctx, r.key(t.ID), hashOf(t))
		p.SAdd(ctx, r.setKey(), t.ID)
	})
}

func hashOf(t Tenant) map[string]any {
	return map[string]any{
		fieldMode:     string(t.Mode),
		fieldHome:     strconv.Itoa(int(t.HomeSite)),
		fieldRate:     strconv.FormatFloat(t.RateLimit, 'g', -1, 64),
		fieldPriority: strconv.Itoa(t.Priority),
		fieldPolicy:   t.ConflictPolicy,
		fieldUpdated:  t.UpdatedAt.Format(time.RFC3339Nano),
	}
}

// Delete removes id's entry: it falls back to the defaults.
func (r *Registry) Delete(ctx context.Context, id string) (uint64, error) {
	return r.write(ctx, func(p redis.Pipeliner) {
		p.Del(ctx, r.key(id))
		p.SRem(ctx, r.setKey(), id)
	})
}

func (r *Registry) write(ctx context.Context, ops func(redis.Pipeliner)) (uint64, error) {
	var next uint64
	txf := func(tx *redis.Tx) error {
		cur, err := versionOf(tx.Get(ctx, r.versionKey()))
		if err != nil {
			return err
		}
		snap := r.Snapshot()
		next = max(cur, snap.Version) + 1
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if cur < snap.Version {
				// Redis lost the registry (restarted without
				// persistence, or restored from an older state):
				// re-seed it from the snapshot in force, so this
				// write does not silently reset every other tenant.
				for _, t := range snap.List() {
					p.HSet(ctx, r.key(t.ID), hashOf(t))
					p.SAdd(ctx, r.setKey(), t.ID)
				}
			}
			ops(p)
			p.Set(ctx, r.versionKey(), next, 0)
			p.Publish(ctx, r.Channel(), next)
			return nil
		})
		return err
	}
	var err error
	for range 10 {
		err = r.cfg.Client.Watch(ctx, txf, r.versionKey())
		if !errors.Is(err, redis.TxFailedErr) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("tenant registry: write to Redis: %w", err)
	}
	// Reload now so that the writer reads its own write; the notice makes
	// the other replicators follow.
	if err := r.Reload(ctx); err != nil {
		return next, err
	}
	return next, nil
}

type snapshotJSON struct {
	Version uint64    `json:"version"`
	Loaded  time.Time `json:"loaded"`
	Tenants []Tenant  `json:"tenants"`
}

func encodeSnapshot(s *Snapshot) ([]byte, error) {
	return json.Marshal(snapshotJSON{Version: s.Version, Loaded: s.Loaded, Tenants: s.List()})
}

func decodeSnapshot(b []byte) (*Snapshot, error) {
	var j snapshotJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, err
	}
	return NewSnapshot(j.Version, j.Loaded, j.Tenants), nil
}
