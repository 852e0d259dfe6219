package pipeline

import (
	"context"
	"testing"
	"time"
)

// TestNext: filling a batch takes what is there; with a linger it waits
// for more until the linger ends; a closed channel or an ended context
// stops it.
func TestNext(t *testing.T) {
	ctx := context.Background()
	ch := make(chan int, 2)

	none := lingerTimer(0)
	if _, ok, err := next(ctx, ch, none); ok || err != nil {
		t.Fatalf("without linger on an empty channel: ok %t, err %v; want neither", ok, err)
	}
	ch <- 1
	if v, ok, _ := next(ctx, ch, none); !ok || v != 1 {
		t.Fatalf("without linger: %d, %t; want 1, true", v, ok)
	}

	// A value arriving while the linger runs is taken.
	long := lingerTimer(time.Hour)
	defer long.Stop()
	go func() { ch <- 2 }()
	if v, ok, err := next(ctx, ch, long); !ok || v != 2 || err != nil {
		t.Fatalf("with linger: %d, %t, %v; want 2, true, nil", v, ok, err)
	}
	// The linger ending stops the wait.
	short := lingerTimer(time.Millisecond)
	if _, ok, err := next(ctx, ch, short); ok || err != nil {
		t.Fatalf("after the linger: ok %t, err %v; want neither", ok, err)
	}
	// So does the context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, ok, err := next(cctx, ch, long); ok || err == nil {
		t.Fatalf("with an ended context: ok %t, err %v; want its error", ok, err)
	}
	close(ch)
	if _, ok, err := next(ctx, ch, long); ok || err != nil {
		t.Fatalf("closed channel: ok %t, err %v; want neither", ok, err)
	}
}
