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
// INSERTs of new keys). ns/row is per row change. The upserts run on a
// table that already holds nine in ten of the keys, as the live-lag
// workload's tables do in its steady state (its deletes and inserts
// balance there), so that most upserts update, as they do there.
//
// server-ns/row is the server's own CPU time per row change.
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
			if !c.bulk {
				// Loaded in a sink session (the triggers stand aside) so
				// that the load is quick and leaves no tombstones.
				conn, err := db.Conn(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := conn.ExecContext(ctx, "SET "+ApplySessionVar+" = 1"); err != nil {
					b.Fatal(err)
				}
				load := rand.New(rand.NewPCG(3, 4))
				for from := 0; from < keys; from += 1000 {
					var sb strings.Builder
					for k := from; k < from+1000; k++ {
						if load.IntN(10) > 0 {
							fmt.Fprintf(&sb, ",(%d, 'loaded', 1, NULL)", k)
						}
					}
					if _, err := conn.ExecContext(ctx, "INSERT INTO t (id, name, qty, note) VALUES "+sb.String()[1:]); err != nil {
						b.Fatal(err)
					}
				}
				conn.Close()
			}
			upsert := "INSERT INTO t (id, name, qty, note) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", n), ",") +
				" ON DUPLICATE KEY UPDATE name = VALUES(name), qty = VALUES(qty), note = VALUES(note)"
			del := "DELETE FROM t WHERE id IN (?" + strings.Repeat(", ?", n-1) + ")"
			insert := "INSERT INTO t (id, name, qty, note) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", n), ",")
			r := rand.New(rand.NewPCG(1, 2))
			cpu0, err := m.ServerCPU()
			if err != nil {
				b.Fatal(err)
			}
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
			b.StopTimer()
			cpu1, err := m.ServerCPU()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
			// The server's own CPU per row change (all its threads; nothing
			// else uses the test server meanwhile): steadier than the wall
			// clock, which includes the client and the scheduling of both
			// on a shared machine, and what the triggers add to a site's
			// load.
			b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N*n), "server-ns/row")
		})
	}
}
