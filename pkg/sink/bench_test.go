package sink

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

const benchTable = `CREATE TABLE orders (
	id BIGINT NOT NULL PRIMARY KEY,
	customer INT NOT NULL,
	status VARCHAR(20) NOT NULL,
	amount DECIMAL(12,2) NOT NULL,
	note VARCHAR(200),
	created DATETIME(6) NOT NULL
) ENGINE=InnoDB`

var benchCols = []string{"id", "customer", "status", "amount", "note", "created", "_tandem_hlc"}

// BenchmarkApply measures the hot path on a real MariaDB: batches of 1000
// rows (50 source transactions of 20 rows), written as 200-row upserts.
// "insert" creates new rows (lookup, upsert, tombstone check per
// statement); "update" rewrites existing rows (lookup, upsert).
// Each iteration also writes the same rows into a copy of the table with
// nothing but the 200-row upserts in one transaction (no lookups, offsets,
// watermark or checks): baseline_rows/s is that floor measured under the
// same machine load, and of_baseline the ratio.
//
//	go test ./pkg/sink -run '^$' -bench BenchmarkApply -benchtime 200x
func BenchmarkApply(b *testing.B) {
	for _, mode := range []string{"insert", "update"} {
		b.Run(mode, func(b *testing.B) {
			f := newFixture(b, Config{}, benchTable, strings.Replace(benchTable, "orders", "orders_base", 1))
			wall := uint64(time.Now().Add(-time.Hour).UnixMilli())
			const rowsPerBatch, rowsPerTxn = 1000, 20
			batch := func(first int64) Batch {
				txns := make([]event.Txn, 0, rowsPerBatch/rowsPerTxn)
				for t := 0; t < rowsPerBatch/rowsPerTxn; t++ {
					tx := event.Txn{Origin: 2, GTID: "2-102-1", Last: true}
					for r := 0; r < rowsPerTxn; r++ {
						wall++
						v := hlc.New(wall, 0, 2)
						id := first + int64(t*rowsPerTxn+r)
						tx.Changes = append(tx.Changes, event.Change{Schema: f.data, Table: "orders", Op: event.OpInsert,
							Columns: benchCols, PK: []int{0}, Version: v, Row: []event.Value{
								vInt(id), vInt(id % 977), vStr("shipped"), vKind(event.KindDecimal, "1234.50"),
								vStr(fmt.Sprintf("note for order %d", id)), vKind(event.KindDateTime, "2024-05-01 12:00:00.123456"),
								vUint(uint64(v)),
							}})
					}
					tx.Stamp = tx.Changes[0].Version
					txns = append(txns, tx)
				}
				return f.batch(txns...)
			}
			base := baseline(b, f)
			if mode == "update" {
				for i := range min(b.N, 10) {
					prep := batch(int64(i) * rowsPerBatch)
					f.apply(b, prep)
					base(prep)
				}
			}
			batches := make([]Batch, b.N)
			for i := range batches {
				first := int64(i) * rowsPerBatch
				if mode == "update" {
					first = int64(i%10) * rowsPerBatch
				}
				batches[i] = batch(first)
			}
			var elapsed, baseElapsed time.Duration
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				f.apply(b, batches[i])
				elapsed += time.Since(start)
				start = time.Now()
				base(batches[i])
				baseElapsed += time.Since(start)
			}
			rate := float64(b.N*rowsPerBatch) / elapsed.Seconds()
			baseRate := float64(b.N*rowsPerBatch) / baseElapsed.Seconds()
			b.ReportMetric(rate, "rows/s")
			b.ReportMetric(baseRate, "baseline_rows/s")
			b.ReportMetric(rate/baseRate, "of_baseline")

		})
	}
}

// baseline returns a function writing a batch's rows into orders_base with
// nothing but 200-row upserts in one transaction, on a sink-configured
// connection.
func baseline(b *testing.B, f *fixture) func(batch Batch) {
	ctx := context.Background()
	conn, _, err := f.sink.acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.sink.release(conn, true) })
	m, _, err := f.sink.meta.get(ctx, f.data, "orders_base")
	if err != nil {
		b.Fatal(err)
	}
	lay, err := m.layoutFor(benchCols, f.sink.cfg.VersionColumn)
	if err != nil {
		b.Fatal(err)
	}
	a := &applier{s: f.sink}
	tuple := a.tupleFunc(m)
	return func(batch Batch) {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		var items []*item
		for i := range batch.Txns {
			for j := range batch.Txns[i].Changes {
				items = append(items, &item{ch: &batch.Txns[i].Changes[j], lay: lay})
			}
		}
		a.tx = tx
		if err := a.multiRow(ctx, m, items, []byte(lay.insertHead), lay.odku, ",", tuple, nil); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconcilePass measures one pass of the late-insert reconciler
// (Reconcile) over a window holding every tombstone of the table and no
// late insert, the common case it runs every tombstones.reconcile_interval:
// 50k keys, 25k tombstones, half of their keys inserted again.
//
//	go test ./pkg/sink -run '^$' -bench ReconcilePass -benchtime 20x
func BenchmarkReconcilePass(b *testing.B) {
	f := newFixture(b, Config{}, kvTable)
	f.exec(b, "INSERT INTO kv (id, val) SELECT seq, 'v' FROM seq_1_to_50000")
	f.exec(b, "DELETE FROM kv WHERE id % 2 = 0")
	f.exec(b, "INSERT INTO kv (id, val) SELECT seq, 'again' FROM seq_1_to_50000 WHERE seq % 4 = 0")
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, hlc.Timestamp(^uint64(0)), HomeRows{}); err != nil || n != 0 {
			b.Fatalf("Reconcile: removed %d, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/pass")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/25000, "ns/tombstone")
}

// BenchmarkRoundTrips measures what sending a batch's writes together
// (MySQL.multi, applier.queue) saves when the database is a network hop
// away: batches shaped like the live-lag bench's (100 row changes of one
// table in 10-row source transactions: 60 inserts, 30 updates, 10 deletes;
// plus one row of a second table, as a heartbeat), applied through
// testenv.LatencyProxy adding BENCH_RTT per round trip (default 1ms; 0
// for none), on connections that take several statements per query
// ("merged", as the replicator opens them) and one ("one-per-query").
//
//	go test ./pkg/sink -run '^$' -bench RoundTrips -benchtime 200x
func BenchmarkRoundTrips(b *testing.B) {
	rtt := time.Millisecond
	if s := os.Getenv("BENCH_RTT"); s != "" {
		var err error
		if rtt, err = time.ParseDuration(s); err != nil || rtt < 0 {
			b.Fatalf("BENCH_RTT=%q: want a duration such as 500us or 2ms", s)
		}
	}
	for _, multi := range []bool{true, false} {
		name := "merged"
		if !multi {
			name = "one-per-query"
		}
		b.Run(fmt.Sprintf("rtt=%s/%s", rtt, name), func(b *testing.B) {
			f := newFixture(b, Config{}, benchTable, kvTable)
			cfg := f.m.Config("")
			cfg.MultiStatements = multi
			if rtt > 0 {
				cfg.Addr = testenv.LatencyProxy(b, f.m.Addr(), rtt/2)
			}
			db := f.m.Open(b, cfg)
			s, err := NewMySQL(db, f.sink.cfg, f.sink.log, f.clock)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			wall := uint64(time.Now().Add(-time.Hour).UnixMilli())
			order := func(op event.Op, id int64) event.Change {
				wall++
				v := hlc.New(wall, 0, 2)
				return event.Change{Schema: f.data, Table: "orders", Op: op, Columns: benchCols, PK: []int{0}, Version: v, Row: []event.Value{
					vInt(id), vInt(id % 977), vStr("shipped"), vKind(event.KindDecimal, "1234.50"),
					vStr(fmt.Sprintf("note for order %d", id)), vKind(event.KindDateTime, "2024-05-01 12:00:00.123456"), vUint(uint64(v)),
				}}
			}
			batch := func(i int64) Batch {
				var changes []event.Change
				for j := range int64(60) {
					changes = append(changes, order(event.OpInsert, 100*i+j))
				}
				if i > 0 {
					for j := range int64(40) {
						op := event.OpUpdate
						if j >= 30 {
							op = event.OpDelete
						}
						changes = append(changes, order(op, 100*(i-1)+j))
					}
				}
				var txns []event.Txn
				for len(changes) > 0 {
					n := min(len(changes), 10)
					txns = append(txns, txn(changes[:n]...))
					changes = changes[n:]
				}
				wall++
				return f.batch(append(txns, txn(f.kv(event.OpUpdate, 1, "heartbeat", hlc.New(wall, 0, 2))))...)
			}
			ctx := context.Background()
			if _, err := s.Apply(ctx, batch(0)); err != nil {
				b.Fatal(err)
			}
			// The round trip as measured (the proxy's timers add to BENCH_RTT).
			start := time.Now()
			for range 20 {
				if _, err := db.ExecContext(ctx, "DO 1"); err != nil {
					b.Fatal(err)
				}
			}
			roundTrip := float64(time.Since(start).Microseconds()) / 1000 / 20
			batches := make([]Batch, b.N)
			for i := range batches {
				batches[i] = batch(int64(i) + 1)
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.Apply(ctx, batches[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/batch")
			b.ReportMetric(roundTrip, "ms/round-trip")
			want := multiOn
			if !multi {
				want = multiOff
			}
			if got := s.multi.Load(); got != want {
				b.Fatalf("sink's multi-statement state %d, want %d", got, want)
			}
		})
	}
}
