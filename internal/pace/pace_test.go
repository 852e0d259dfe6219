package pace

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	ctx := context.Background()
	// Behind schedule or no limit: no wait at all.
	if err := Wait(ctx, time.Now().Add(-time.Hour), 10, 1); err != nil {
		t.Fatal(err)
	}
	if err := Wait(ctx, time.Now(), 1_000_000, 0); err != nil {
		t.Fatal(err)
	}
	// Ahead of schedule: waits until ctx ends, and says so.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Wait(cctx, time.Now(), 1000, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait ahead of schedule with a cancelled context = %v, want context.Canceled", err)
	}
}
