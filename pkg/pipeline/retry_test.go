package pipeline

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"go.uber.org/zap/zaptest"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/sink"
)

// failingSink fails its first len(errs) applies with errs in order.
type failingSink struct {
	errs  []error
	calls int
}

func (s *failingSink) Apply(context.Context, sink.Batch) (sink.Result, error) {
	s.calls++
	if s.calls <= len(s.errs) {
		return sink.Result{}, s.errs[s.calls-1]
	}
	return sink.Result{Applied: 1}, nil
}

func (s *failingSink) Offsets(context.Context, string) (map[int]int64, error) { return nil, nil }

// TestApplyRetriesLockConflictsAtOnce: deadlocks and lock wait timeouts
// are retried after a short pause, not the growing backoff other
// retryable errors get. With a backoff of an hour, only the quick path
// can finish before the context's deadline.
func TestApplyRetriesLockConflictsAtOnce(t *testing.T) {
	deadlock := &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock; try restarting transaction"}
	timeout := &mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded; try restarting transaction"}
	s := &failingSink{errs: []error{deadlock, timeout, deadlock}}
	a := NewApplier(ApplierConfig{Topic: "t", RetryMin: time.Hour, RetryMax: time.Hour}, s, nil, zaptest.NewLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := a.applyRetrying(ctx, s, sink.Batch{Topic: "t"})
	if err != nil || res.Applied != 1 || s.calls != 4 {
		t.Fatalf("after 3 lock conflicts: res %+v, err %v, %d applies; want applied on the 4th", res, err, s.calls)
	}

	// Past the quick retries the backoff applies again: the context
	// ends the wait.
	errs := make([]error, lockConflictQuickRetries+1)
	for i := range errs {
		errs[i] = deadlock
	}
	s = &failingSink{errs: errs}
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := a.applyRetrying(short, s, sink.Batch{Topic: "t"}); !errors.Is(err, context.DeadlineExceeded) || s.calls != lockConflictQuickRetries+1 {
		t.Fatalf("after %d lock conflicts: err %v, %d applies; want the backoff (cut short by the context) after %d", len(errs), err, s.calls, lockConflictQuickRetries+1)
	}
}

// groupSink fails with a deadlock every batch of more than max
// transactions and records the transactions of each batch it applies.
type groupSink struct {
	max     int
	applied [][]string // GTIDs per applied batch
	failed  int
}

func (s *groupSink) Apply(_ context.Context, b sink.Batch) (sink.Result, error) {
	if len(b.Txns) > s.max {
		s.failed++
		return sink.Result{}, &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock; try restarting transaction"}
	}
	var ids []string
	for _, t := range b.Txns {
		ids = append(ids, t.GTID)
	}
	s.applied = append(s.applied, ids)
	return sink.Result{Applied: len(b.Txns)}, nil
}

func (s *groupSink) Offsets(context.Context, string) (map[int]int64, error) { return nil, nil }

// TestApplyHalvesOnLockConflict: a group of transactions that hits a lock
// conflict is applied in halves, in order, each transaction once.
func TestApplyHalvesOnLockConflict(t *testing.T) {
	s := &groupSink{max: 2}
	a := NewApplier(ApplierConfig{Topic: "t", RetryMin: time.Hour, RetryMax: time.Hour}, s, nil, zaptest.NewLogger(t))
	var es []entry
	for i := range 8 {
		es = append(es, entry{offset: int64(i), txn: &event.Txn{GTID: fmt.Sprintf("0-1-%d", i)}})
	}
	es = append(es, entry{offset: 8, skip: true})
	if err := a.applyEntries(context.Background(), 0, s, es); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"0-1-0", "0-1-1"}, {"0-1-2", "0-1-3"}, {"0-1-4", "0-1-5"}, {"0-1-6", "0-1-7"}}
	if !reflect.DeepEqual(s.applied, want) || s.failed != 3 {
		t.Fatalf("applied %v after %d failures; want %v after 3 (9 entries, then 4+5, then 2+2 and 2+3)", s.applied, s.failed, want)
	}
}

// TestReplayRows: a throttled tenant replays in slices of a tenth of a
// second of its rate, within the batch bound, at least one row (that is,
// one transaction, however large).
func TestReplayRows(t *testing.T) {
	for _, c := range []struct {
		max  int
		rate float64
		want int
	}{
		{2000, 0, 2000}, {2000, -1, 2000}, {2000, 3000, 300}, {2000, 1e6, 2000}, {2000, 5, 1}, {2000, 0.5, 1},
	} {
		if got := replayRows(c.max, c.rate); got != c.want {
			t.Errorf("replayRows(%d, %v) = %d; want %d", c.max, c.rate, got, c.want)
		}
	}
}
