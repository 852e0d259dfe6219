package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newLease(t *testing.T, srv *testenv.Redis, prefix, holder string, ttl time.Duration) *Lease {
	t.Helper()
	l, err := New(Config{Client: srv.Client(t), Prefix: prefix, Site: "s1", Holder: holder, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLease: one holder at a time; each acquisition a greater epoch, above
// the floor the caller found in its database; renewals, state writes and
// release only by the holder; an expired lease goes to the next caller and
// its former holder learns it has lost it.
func TestLease(t *testing.T) {
	srv := testenv.SharedRedis(t)
	prefix := testenv.KeyPrefix(t)
	ctx := context.Background()
	a := newLease(t, srv, prefix, "a", time.Minute)
	b := newLease(t, srv, prefix, "b", time.Minute)

	if ok, _, err := a.TryAcquire(ctx, 0); !ok || err != nil || a.Epoch() != 1 {
		t.Fatalf("a: acquire = %t, %v, epoch %d; want true, nil, 1", ok, err, a.Epoch())
	}
	if ok, holder, err := b.TryAcquire(ctx, 0); ok || err != nil || holder != "a/1" {
		t.Fatalf("b while a holds: acquire = %t, %q, %v; want false, a/1, nil", ok, holder, err)
	}
	if h, e, err := Holder(ctx, srv.Client(t), prefix, "s1"); h != "a" || e != 1 || err != nil {
		t.Fatalf("Holder = %q, %d, %v", h, e, err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.SaveState(ctx, "checkpoint", "pos-a"); err != nil {
		t.Fatal(err)
	}
	if err := b.SaveState(ctx, "checkpoint", "pos-b"); !errors.Is(err, ErrLost) {
		t.Fatalf("b.SaveState without the lease: %v, want ErrLost", err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := Holder(ctx, srv.Client(t), prefix, "s1"); h != "a" {
		t.Fatalf("b's release dropped a's lease: holder %q", h)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("renew after release: %v, want ErrLost", err)
	}

	// A database that saw epoch 41 (Redis lost its data, say): the next
	// epoch is above it.
	if ok, _, err := b.TryAcquire(ctx, 41); !ok || err != nil || b.Epoch() != 42 {
		t.Fatalf("b with floor 41: acquire = %t, %v, epoch %d; want true, nil, 42", ok, err, b.Epoch())
	}
	if v, ok, err := b.LoadState(ctx, "checkpoint"); v != "pos-a" || !ok || err != nil {
		t.Fatalf("LoadState = %q, %t, %v; want a's pos-a", v, ok, err)
	}
	b.Release(ctx)

	// Expiry: c holds a short lease and stops renewing.
	c := newLease(t, srv, prefix, "c", 300*time.Millisecond)
	if ok, _, err := c.TryAcquire(ctx, 0); !ok || err != nil || c.Epoch() != 43 {
		t.Fatalf("c: acquire = %t, %v, epoch %d; want 43", ok, err, c.Epoch())
	}
	testenv.WaitFor(t, 10*time.Second, "c's lease to expire", func() bool {
		h, _, err := Holder(ctx, srv.Client(t), prefix, "s1")
		return err == nil && h == ""
	})
	if ok, _, err := a.TryAcquire(ctx, 0); !ok || err != nil || a.Epoch() != 44 {
		t.Fatalf("a after c expired: acquire = %t, %v, epoch %d; want 44", ok, err, a.Epoch())
	}
	if err := c.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("c.Renew after expiry: %v, want ErrLost", err)
	}
	if err := c.SaveState(ctx, "checkpoint", "stale"); !errors.Is(err, ErrLost) {
		t.Fatalf("c.SaveState after expiry: %v, want ErrLost", err)
	}
	if v, _, _ := a.LoadState(ctx, "checkpoint"); v != "pos-a" {
		t.Fatalf("checkpoint %q after a stale write, want pos-a", v)
	}
}

func TestNewChecksConfig(t *testing.T) {
	if _, err := New(Config{Site: "s1", Holder: "a", TTL: time.Second}); err == nil {
		t.Fatal("New without a client accepted")
	}
}
