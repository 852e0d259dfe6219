package sink

import (
	"fmt"
	"testing"
	"time"

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
//
//	go test ./pkg/sink -run '^$' -bench BenchmarkApply -benchtime 200x
func BenchmarkApply(b *testing.B) {
	for _, mode := range []string{"insert", "update"} {
		b.Run(mode, func(b *testing.B) {
			f := newFixture(b, Config{}, benchTable)
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
			if mode == "update" {
				for i := range min(b.N, 10) {
					f.apply(b, batch(int64(i)*rowsPerBatch))
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
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				f.apply(b, batches[i])
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N*rowsPerBatch)/elapsed.Seconds(), "rows/s")
			for k, v := range Timing {
				fmt.Printf("%q %v\n", k, v)
			}
			clear(Timing)
		})
	}
}
