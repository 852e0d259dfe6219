package schema

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/internal/testenv"
)

// BenchmarkTriggers measures what the triggers cost a writing application:
// the live-lag workload's statements (multi-row upserts of 20 random keys
// out of 50k, one in ten a 20-key delete) on a plain table and on the same
// table after `schema prepare`; and a bulk load's statements (20-row
// INSERTs of new keys). ns/row is per row change.
//
//	go test -run '^$' -bench Triggers -benchtime 3000x ./pkg/schema/
func BenchmarkTriggers(b *testing.B) {
	for _, c := range []struct {
		name           string
		prepared, bulk bool
	}{{"plain", false, false}, {"prepared", true, false}, {"plain-insert", false, true}, {"prepared-insert", true, true}} {
		prepared := c.prepared
		b.Run(c.name, func(b *testing.B) {
			m := testenv.SharedMariaDB(b, 1)
			data := testenv.NewDatabase(b, m)
			meta := testenv.NewDatabase(b, m)
			m.Exec(b, "DROP DATABASE "+QuoteIdent(meta))
			db := m.DB(b, data)
			ctx := context.Background()
			if _, err := db.Exec("CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, " +
				"qty INT NOT NULL, note TEXT NULL) ENGINE=InnoDB"); err != nil {
				b.Fatal(err)
			}
			if prepared {
				p, err := Inspect(ctx, db, Options{Site: 1, MetaSchema: meta, Tables: []TableRef{{data, "t"}}})
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Apply(ctx, db); err != nil {
					b.Fatal(err)
				}
			}
			const n, keys = 20, 50000
			upsert := "INSERT INTO t (id, name, qty, note) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", n), ",") +
				" ON DUPLICATE KEY UPDATE name = VALUES(name), qty = VALUES(qty), note = VALUES(note)"
			del := "DELETE FROM t WHERE id IN (?" + strings.Repeat(", ?", n-1) + ")"
			insert := "INSERT INTO t (id, name, qty, note) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", n), ",")
			r := rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			for i := range b.N {
				var err error
				if c.bulk {
					args := make([]any, 0, 4*n)
					for j := range n {
						args = append(args, i*n+j, fmt.Sprintf("name-%d", r.IntN(1000)), r.IntN(1000), "a note")
					}
					_, err = db.ExecContext(ctx, insert, args...)
				} else if i%10 == 9 {
					args := make([]any, n)
					for j := range args {
						args[j] = r.IntN(keys)
					}
					_, err = db.ExecContext(ctx, del, args...)
				} else {
					args := make([]any, 0, 4*n)
					for range n {
						args = append(args, r.IntN(keys), fmt.Sprintf("name-%d", r.IntN(1000)), r.IntN(1000), "a note")
					}
					_, err = db.ExecContext(ctx, upsert, args...)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}
}
