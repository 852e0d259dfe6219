package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// seed returns the seed of a randomized test: $SINK_SEED when set, to
// replay a failure, else a fresh one. It is logged on failure.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if env := os.Getenv("SINK_SEED"); env != "" {
		var err error
		if s, err = strconv.ParseUint(env, 10, 64); err != nil {
			t.Fatalf("SINK_SEED=%q: %v", env, err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with SINK_SEED=%d", s)
		}
	})
	return s
}

// TestDifferential applies thousands of random (stored row version,
// stored tombstone version, incoming operation, incoming version) cases in
// a few transactions and checks that the outcome and the stored state are
// exactly what conflict.Policy.Resolve predicts for current = max(row,
// tombstone). The sink sends each batch's writes in one round trip; the
// one_statement_per_query case runs it on connections that take one
// statement per query, as the sink falls back to without
// multiStatements=true.
func TestDifferential(t *testing.T) {
	t.Parallel()
	for _, pol := range []conflict.Policy{{}, {HomeSite: 3}} {
		t.Run(fmt.Sprintf("home_site_%d", pol.HomeSite), func(t *testing.T) {
			t.Parallel()
			differential(t, pol, 3000, true)
		})
	}
	t.Run("one_statement_per_query", func(t *testing.T) {
		t.Parallel()
		differential(t, conflict.Policy{}, 3000, false)
	})
}

func differential(t *testing.T, pol conflict.Policy, n int, multi bool) {
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, 0))
	f := newFixture(t, Config{Policy: pol}, kvTable)
	wantMulti := multiOn
	if !multi {
		f.sink.Close()
		var err error
		if f.sink, err = NewMySQL(f.m.DB(t, ""), f.sink.cfg, f.sink.log, f.clock); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.sink.Close() })
		wantMulti = multiOff
	}
	t.Cleanup(func() {
		if got := f.sink.multi.Load(); got != wantMulti {
			t.Errorf("sink's multi-statement state %d, want %d", got, wantMulti)
		}
	})
	base := uint64(time.Now().Add(-time.Hour).UnixMilli())
	// Few distinct versions, so that equal versions and ties between
	// sites are common.
	version := func() hlc.Timestamp {
		return hlc.New(base+uint64(rng.IntN(6)), 0, uint8(1+rng.IntN(3)))
	}
	type kase struct {
		row, tomb hlc.Timestamp
		op        event.Op
		in        hlc.Timestamp
	}
	cases := make([]kase, n)
	var rows, tombs []string
	for i := range cases {
		c := &cases[i]
		if rng.IntN(3) > 0 {
			c.row = version()
		}
		if rng.IntN(2) == 0 {
			c.tomb = version()
		}
		if pol.HomeSite == 0 && c.row != 0 && c.tomb != 0 && pol.Compare(c.row, c.tomb) <= 0 {
			// Active-active keeps "an existing row beats its tombstone":
			// every writer recreates a row only with a winning version.
			// (The home-only sink reads both and needs no such state.)
			c.row, c.tomb = c.tomb, c.row
			if c.row == c.tomb {
				c.tomb = 0
			}
		}
		c.op = []event.Op{ins, upd, del}[rng.IntN(3)]
		c.in = version()
		if c.row != 0 {
			rows = append(rows, fmt.Sprintf("(%d,'old',%d)", i, c.row))
		}
		if c.tomb != 0 {
			tombs = append(tombs, fmt.Sprintf("(%d,%d)", i, c.tomb))
		}
	}
	var setup []string
	for len(rows) > 0 {
		k := min(len(rows), 500)
		setup = append(setup, "INSERT INTO kv (id, val, _tandem_hlc) VALUES "+strings.Join(rows[:k], ","))
		rows = rows[k:]
	}
	for len(tombs) > 0 {
		k := min(len(tombs), 500)
		setup = append(setup, "INSERT INTO "+schema.TombTable("kv")+" (id, _tandem_hlc) VALUES "+strings.Join(tombs[:k], ","))
		tombs = tombs[k:]
	}
	f.execAsSink(t, setup...)

	var total Result
	for start := 0; start < n; start += 1000 {
		var txns []event.Txn
		for i := start; i < min(start+1000, n); i += 10 {
			var tx event.Txn
			for j := i; j < min(i+10, n); j++ {
				tx.Changes = append(tx.Changes, f.kv(cases[j].op, int64(j), "new", cases[j].in))
			}
			tx.Origin, tx.Stamp = 2, tx.Changes[0].Version
			txns = append(txns, tx)
		}
		res := f.apply(t, f.batch(txns...))
		total.Applied += res.Applied
		total.Duplicates += res.Duplicates
		total.Conflicts += res.Conflicts
	}

	got := map[int]state{}
	for _, r := range f.query(t, "SELECT id, _tandem_hlc, val FROM kv") {
		var id int
		var v uint64
		var val string
		fmt.Sscanf(strings.ReplaceAll(r, "|", " "), "%d %d %s", &id, &v, &val)
		got[id] = state{row: hlc.Timestamp(v)}
	}
	for _, r := range f.query(t, "SELECT id, _tandem_hlc FROM "+schema.TombTable("kv")) {
		var id int
		var v uint64
		fmt.Sscanf(strings.ReplaceAll(r, "|", " "), "%d %d", &id, &v)
		st := got[id]
		st.tomb = hlc.Timestamp(v)
		got[id] = st
	}
	var want Result
	bad := 0
	for i, c := range cases {
		current := pol.Max(c.row, c.tomb)
		exp := state{row: c.row, tomb: c.tomb}
		switch pol.Resolve(current, c.in) {
		case conflict.Apply:
			want.Applied++
			if c.op == del {
				exp = state{tomb: c.in}
			} else {
				exp.row = c.in
			}
		case conflict.Duplicate:
			if c.op == del && c.row != 0 && pol.Compare(c.in, c.row) > 0 {
				// The delete is the stored tombstone's, and it beats the
				// stored row (home-only: a non-home write recreated the
				// row over the home site's delete): the row goes.
				want.Applied++
				exp = state{tomb: c.in}
				break
			}
			want.Duplicates++
		default:
			want.Conflicts++
		}
		if got[i] != exp && bad < 10 {
			bad++
			t.Errorf("case %d: stored row %v tombstone %v, %v %v: got row %v tombstone %v, want row %v tombstone %v",
				i, c.row, c.tomb, c.op, c.in, got[i].row, got[i].tomb, exp.row, exp.tomb)
		}
	}
	if total != want {
		t.Errorf("outcomes %+v, want %+v", total, want)
	}
	var conflicts int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM " + quoteIdent(f.meta) + "._tandem_conflicts").Scan(&conflicts); err != nil {
		t.Fatal(err)
	}
	if conflicts != want.Conflicts {
		t.Errorf("%d conflict rows, want %d", conflicts, want.Conflicts)
	}
}

// TestConcurrentInsertDelete races two sinks (two origins) on the same
// keys, one inserting and one deleting, in many small transactions. READ
// COMMITTED takes no gap locks, so the lookup of a missing row does not
// stop the other sink; the write-then-check protocol (checkFresh and the
// locking DELETE) must still let the newer version win every time.
func TestConcurrentInsertDelete(t *testing.T) {
	t.Parallel()
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, 1))
	f := newFixture(t, Config{}, kvTable)
	other, err := NewMySQL(f.m.SinkDB(t, ""), f.sink.cfg, f.sink.log, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	vs := newVersions()
	const keys, perTxn = 1200, 4
	ins := make([]hlc.Timestamp, keys)
	dels := make([]hlc.Timestamp, keys)
	for k := range keys {
		a, b := vs.next(2), vs.next(3)
		if rng.IntN(2) == 0 {
			a, b = b, a
		}
		ins[k], dels[k] = hlc.FromTick(a.Tick(), 2), hlc.FromTick(b.Tick(), 3)
	}
	// Keys 0..keys-1 race an insert against a delete; keys keys..2*keys-1
	// race two inserts.
	var conflicts [2]int
	// Both sinks start each batch together, so that their transactions
	// overlap as much as possible.
	bar := newBarrier(2)
	run := func(s *MySQL, topic string, origin uint8, op event.Op, vers []hlc.Timestamp, first int64, res *int) (failed error) {
		next := int64(0)
		for k := 0; k < keys; k += perTxn {
			bar.wait()
			if failed != nil {
				continue // keep meeting the other goroutine at the barrier
			}
			var tx event.Txn
			for j := k; j < k+perTxn; j++ {
				tx.Changes = append(tx.Changes, f.kv(op, first+int64(j), "x", vers[j]))
			}
			b := Batch{Topic: topic, FirstOffset: next, NextOffset: next + 1, Origin: origin, Txns: []event.Txn{tx}}
			next++
			for attempt := 0; ; attempt++ {
				r, err := s.Apply(context.Background(), b)
				if err == nil {
					*res += r.Conflicts
					break
				}
				if !IsRetryable(err) || attempt == 100 {
					failed = err
					break
				}
			}
		}
		return failed
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[0] = run(f.sink, "ins", 2, event.OpInsert, ins, 0, &conflicts[0])
		errs[2] = run(f.sink, "ins1", 2, event.OpInsert, ins, keys, &conflicts[0])
	}()
	go func() {
		defer wg.Done()
		errs[1] = run(other, "del", 3, event.OpDelete, dels, 0, &conflicts[1])
		errs[3] = run(other, "ins2", 3, event.OpInsert, dels, keys, &conflicts[1])
	}()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for k := range keys {
		st := f.state(t, "kv", int64(keys+k))
		if st.row != max(ins[k], dels[k]) || st.tomb != 0 {
			t.Errorf("key %d: inserts %v and %v raced, got row %v tombstone %v", keys+k, ins[k], dels[k], st.row, st.tomb)
		}
	}
	var logged int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM " + quoteIdent(f.meta) + "._tandem_conflicts").Scan(&logged); err != nil {
		t.Fatal(err)
	}
	if logged != conflicts[0]+conflicts[1] {
		t.Errorf("%d conflict rows, Results counted %d", logged, conflicts[0]+conflicts[1])
	}
	for k := range keys {
		st := f.state(t, "kv", int64(k))
		if ins[k] > dels[k] {
			if st.row != ins[k] || (st.tomb != 0 && st.tomb != dels[k]) {
				t.Errorf("key %d: insert %v beats delete %v, got row %v tombstone %v", k, ins[k], dels[k], st.row, st.tomb)
			}
		} else if st.row != 0 || st.tomb != dels[k] {
			t.Errorf("key %d: delete %v beats insert %v, got row %v tombstone %v (resurrection)", k, dels[k], ins[k], st.row, st.tomb)
		}
	}
}

// barrier lets n goroutines wait for each other, any number of times.
type barrier struct {
	mu    sync.Mutex
	n     int
	count int
	ch    chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, ch: make(chan struct{})} }

func (b *barrier) wait() {
	b.mu.Lock()
	b.count++
	if b.count == b.n {
		close(b.ch)
		b.ch, b.count = make(chan struct{}), 0
		b.mu.Unlock()
		return
	}
	ch := b.ch
	b.mu.Unlock()
	<-ch
}
