package tenant

import (
	"context"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandemdb/tandem/internal/testenv"
)

// runRegistry starts r.Run until the end of the test.
func runRegistry(t *testing.T, r *Registry) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestRegistryNoticeTakesEffectWithin1s: a mode change written by one
// replicator's registry reaches another's snapshot through the pub/sub
// notice in under a second (the periodic reload is an hour away).
func TestRegistryNoticeTakesEffectWithin1s(t *testing.T) {
	srv := testenv.SharedRedis(t)
	prefix := testenv.KeyPrefix(t)
	reader := NewRegistry(RegistryConfig{Client: srv.Client(t), Prefix: prefix, ReloadInterval: time.Hour}, zaptest.NewLogger(t))
	writer := NewRegistry(RegistryConfig{Client: srv.Client(t), Prefix: prefix, ReloadInterval: time.Hour}, zaptest.NewLogger(t))
	runRegistry(t, reader)
	testenv.WaitFor(t, 5*time.Second, "first load", func() bool { return reader.Status().Reloads > 0 })

	for i, mode := range []Mode{ModePaused, ModeExcluded, ModeActiveActive, ModePaused} {
		changed := reader.Changed()
		start := time.Now()
		v, err := writer.Put(context.Background(), Tenant{ID: "t1", Mode: mode, RateLimit: float64(i)})
		if err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, time.Second, "mode "+string(mode)+" in the reader's snapshot", func() bool {
			s := reader.Snapshot()
			return s.Version == v && s.Get("t1").Mode == mode
		})
		// The swap stores the snapshot, then closes the channel: a reader
		// may see the one an instant before the other.
		select {
		case <-changed:
		case <-time.After(time.Second):
			t.Fatal("Changed() channel not closed on swap")
		}
		t.Logf("mode %s took effect after %s (version %d)", mode, time.Since(start).Round(time.Microsecond), v)
	}
	if st := reader.Status(); st.Notices == 0 || !st.Healthy {
		t.Fatalf("status %+v: want notices and healthy", st)
	}
}

// TestRegistryMissedNoticeHealsAtReload: a change written to Redis without
// a notice (pub/sub blocked or the message lost) takes effect at the next
// periodic reload.
func TestRegistryMissedNoticeHealsAtReload(t *testing.T) {
	srv := testenv.SharedRedis(t)
	prefix := testenv.KeyPrefix(t)
	c := srv.Client(t)
	const interval = 300 * time.Millisecond
	r := NewRegistry(RegistryConfig{Client: c, Prefix: prefix, ReloadInterval: interval}, zaptest.NewLogger(t))
	runRegistry(t, r)
	testenv.WaitFor(t, 5*time.Second, "first load", func() bool { return r.Status().Reloads > 0 })

	ctx := context.Background()
	// What Put does, minus the PUBLISH.
	if err := c.HSet(ctx, prefix+"tenant:t2", "mode", "excluded", "rate_limit", "50").Err(); err != nil {
		t.Fatal(err)
	}
	c.SAdd(ctx, prefix+"tenants", "t2")
	c.Incr(ctx, prefix+"version")
	start := time.Now()
	testenv.WaitFor(t, 3*interval, "silent change picked up by the periodic reload", func() bool {
		got := r.Snapshot().Get("t2")
		return got.Mode == ModeExcluded && got.RateLimit == 50
	})
	t.Logf("picked up after %s with reload_interval %s", time.Since(start).Round(time.Millisecond), interval)
	if n := r.Status().Notices; n != 0 {
		t.Fatalf("%d notices seen; the change was not published", n)
	}

	// An invalid entry keeps the tenant's previous setting and is reported.
	c.HSet(ctx, prefix+"tenant:t2", "mode", "sometimes")
	c.Incr(ctx, prefix+"version")
	testenv.WaitFor(t, 3*interval, "invalid entry reported", func() bool { return len(r.Status().Problems) == 1 })
	if got := r.Snapshot().Get("t2"); got.Mode != ModeExcluded {
		t.Fatalf("invalid entry replaced the previous setting: %+v", got)
	}
	t.Logf("problem reported: %s", r.Status().Problems[0])
}

// TestRegistryRedisKilled: with Redis gone, the last snapshot stays in
// force (also for a registry started meanwhile, from the local cache) and
// the status says so; when Redis returns (empty: no persistence) the
// older-than-ours registry is refused, a write re-seeds it from the
// snapshot, and reloads resume.
func TestRegistryRedisKilled(t *testing.T) {
	srv := testenv.NewRedis(t)
	db := openPebble(t, t.TempDir())
	defer db.Close()
	cache := PebbleCache{DB: db}
	const interval = 200 * time.Millisecond
	cfg := RegistryConfig{Client: srv.Client(t), Prefix: "k:", ReloadInterval: interval, Cache: cache}
	r := NewRegistry(cfg, zaptest.NewLogger(t))
	runRegistry(t, r)
	ctx := context.Background()
	if _, err := r.Put(ctx, Tenant{ID: "t", Mode: ModePaused}); err != nil {
		t.Fatal(err)
	}
	v, err := r.Put(ctx, Tenant{ID: "u", Mode: ModeHomeOnly, HomeSite: 2})
	if err != nil {
		t.Fatal(err)
	}

	srv.Kill(t)
	testenv.WaitFor(t, 5*time.Second, "status unhealthy", func() bool { return !r.Status().Healthy })
	st := r.Status()
	if got := r.Snapshot(); got.Version != v || got.Get("t").Mode != ModePaused || got.Get("u").HomeSite != 2 {
		t.Fatalf("snapshot changed while Redis was down: version %d, %+v", got.Version, got.List())
	}
	t.Logf("status while down: healthy=%v error=%q", st.Healthy, st.LastError)
	if _, err := r.Put(ctx, Tenant{ID: "t", Mode: ModeActiveActive}); err == nil {
		t.Fatal("Put succeeded with Redis down")
	}
	// A replicator (re)started while Redis is down starts from the cache.
	restarted := NewRegistry(cfg, zaptest.NewLogger(t))
	if got := restarted.Snapshot(); got.Version != v || got.Get("t").Mode != ModePaused {
		t.Fatalf("restarted registry: version %d %+v; want the cached snapshot", got.Version, got.List())
	}

	srv.Start(t)
	testenv.WaitFor(t, 5*time.Second, "healthy again", func() bool { return r.Status().Healthy })
	if !r.Status().Stale || r.Snapshot().Get("t").Mode != ModePaused {
		t.Fatalf("empty Redis replaced the snapshot: %+v, status %+v", r.Snapshot().List(), r.Status())
	}
	v2, err := r.Put(ctx, Tenant{ID: "w", Mode: ModeExcluded})
	if err != nil {
		t.Fatal(err)
	}
	if v2 <= v {
		t.Fatalf("version after Redis loss %d, want above %d", v2, v)
	}
	testenv.WaitFor(t, 2*time.Second, "re-seeded registry in force", func() bool {
		s := r.Snapshot()
		return !r.Status().Stale && s.Get("t").Mode == ModePaused && s.Get("u").HomeSite == 2 && s.Get("w").Mode == ModeExcluded
	})
	n, _ := srv.Client(t).SCard(ctx, "k:tenants").Result()
	if n != 3 {
		t.Fatalf("Redis holds %d tenants after the re-seed, want 3", n)
	}
	t.Logf("recovered at version %s", strconv.FormatUint(v2, 10))
}
