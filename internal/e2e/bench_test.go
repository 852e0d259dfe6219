package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/schema"
)

const benchDDL = "CREATE TABLE `%s`.`%s` (id BIGINT NOT NULL PRIMARY KEY, a INT NOT NULL, b VARCHAR(64) NOT NULL, " +
	"c DOUBLE NOT NULL, d DATETIME(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

// BenchmarkCatchUp measures how fast B catches up on a backlog of row
// changes committed at A while no replicator ran (binlog → Kafka → B), and
// beside it the raw ceiling: the same rows loaded straight into B through
// one connection with 200-row compare-and-set upserts. Run it with
// `make bench` (scripts/bench.sh); BENCH_ROWS overrides the 1M default.
func BenchmarkCatchUp(b *testing.B) {
	rows := envInt("BENCH_ROWS", 1_000_000)
	for range b.N {
		catchUp(b, rows)
	}
}

func catchUp(b *testing.B, rows int) {
	c := newCluster(b, testenv.SharedBroker(b), testenv.SharedMariaDB(b, 1), testenv.SharedMariaDB(b, 2))
	c.peers[0] = []int{}
	c.peers[1] = []int{0}
	for _, s := range c.sites {
		s.srv.Exec(b, fmt.Sprintf(benchDDL, c.db, "bench"))
	}
	c.sites[1].srv.Exec(b, fmt.Sprintf(benchDDL, c.db, "ceiling"))
	c.writeConfigs("")
	c.prepare()
	// Establish A's checkpoint, then build the backlog with no replicator.
	c.start(0)
	c.stop(0)
	a := c.dbAt(0)
	ctx := context.Background()
	const txnRows = 1000
	load := time.Now()
	for lo := 0; lo < rows; lo += txnRows {
		hi := min(lo+txnRows, rows)
		q := fmt.Sprintf("INSERT INTO `%s`.bench (id, a, b, c, d) SELECT seq, seq %% 1000, CONCAT('row-', seq), seq / 7, "+
			"'2026-11-21 12:00:00.000001' FROM `%s`.seq_%d_to_%d", c.db, c.db, lo+1, hi)
		if _, err := a.ExecContext(ctx, q); err != nil {
			b.Fatalf("build backlog: %v", err)
		}
	}
	benchf(b, "backlog of %d rows committed at A in %s", rows, time.Since(load).Round(time.Millisecond))

	bdb := c.dbAt(1)
	target := c.db + ".bench"
	b.ResetTimer()
	start := time.Now()
	c.start(0)
	c.start(1)
	// Caught up once B's replicator has applied as many rows (heartbeats
	// count too, so the last moments may count a few times), confirmed by
	// counting them at B. The count alone, polled every 20 ms, would scan
	// up to a million rows of the database being measured again and again.
	// The metrics are read at most every 100 ms: gathering them costs the
	// replicator being measured too.
	var scraped time.Time
	testenv.WaitFor(b, 30*time.Minute, "B caught up", func() bool {
		if time.Since(scraped) < 100*time.Millisecond {
			return false
		}
		scraped = time.Now()
		if c.metric(1, "tandem_rows_applied_total", "") < float64(rows) {
			return false
		}
		var n int
		bdb.QueryRow("SELECT COUNT(*) FROM " + target).Scan(&n)
		return n == rows
	})
	elapsed := time.Since(start)
	b.StopTimer()
	c.stop(0)
	c.stop(1)

	ceil := ceiling(b, a, bdb, c.db, rows)
	rate := float64(rows) / elapsed.Seconds()
	ceilRate := float64(rows) / ceil.Seconds()
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(ceilRate, "ceiling-rows/s")
	b.ReportMetric(100*rate/ceilRate, "%-of-ceiling")
	benchf(b, "catch-up: %d rows in %s = %.0f rows/s; ceiling (200-row CAS upserts, one connection): %s = %.0f rows/s; ratio %.0f%%",
		rows, elapsed.Round(time.Millisecond), rate, ceil.Round(time.Millisecond), ceilRate, 100*rate/ceilRate)
}

// ceiling loads the rows of A's bench table into B's ceiling table with
// 200-row INSERT … ON DUPLICATE KEY UPDATE statements carrying the same
// compare-and-set guard the sink uses, 1000 rows per transaction.
func ceiling(b *testing.B, a, bdb *sql.DB, db string, rows int) time.Duration {
	ctx := context.Background()
	src, err := a.QueryContext(ctx, fmt.Sprintf("SELECT id, a, b, c, d, %s FROM `%s`.bench ORDER BY id", schema.DefaultVersionColumn, db))
	if err != nil {
		b.Fatal(err)
	}
	type row struct {
		id, a int64
		b     string
		c     float64
		d     string
		v     uint64
	}
	all := make([]row, 0, rows)
	for src.Next() {
		var r row
		if err := src.Scan(&r.id, &r.a, &r.b, &r.c, &r.d, &r.v); err != nil {
			b.Fatal(err)
		}
		all = append(all, r)
	}
	src.Close()
	const stmtRows = 200
	v := schema.DefaultVersionColumn
	upd := []string{}
	for _, col := range []string{"a", "b", "c", "d"} {
		upd = append(upd, fmt.Sprintf("%s = IF(VALUES(%s) > %s, VALUES(%s), %s)", col, v, v, col, col))
	}
	upd = append(upd, fmt.Sprintf("%s = IF(VALUES(%s) > %s, VALUES(%s), %s)", v, v, v, v, v))
	q := fmt.Sprintf("INSERT INTO `%s`.ceiling (id, a, b, c, d, %s) VALUES %s ON DUPLICATE KEY UPDATE %s",
		db, v, strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", stmtRows), ","), strings.Join(upd, ", "))
	conn, err := bdb.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET @tandem_apply = 1"); err != nil {
		b.Fatal(err)
	}
	stmt, err := conn.PrepareContext(ctx, q)
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	start := time.Now()
	args := make([]any, 0, 6*stmtRows)
	for lo := 0; lo+stmtRows <= len(all); lo += 1000 {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		txs := tx.StmtContext(ctx, stmt)
		for s := lo; s < min(lo+1000, len(all)); s += stmtRows {
			args = args[:0]
			for _, r := range all[s : s+stmtRows] {
				args = append(args, r.id, r.a, r.b, r.c, r.d, r.v)
			}
			if _, err := txs.ExecContext(ctx, args...); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// benchf prints one line of a benchmark's report on standard output, at
// once. b.Logf would do, but testing keeps only the first ten lines a
// benchmark logs and drops the rest ("... [output truncated]"), and these
// reports are longer: the noisy-neighbour bench lost its summary that way.
func benchf(b *testing.B, format string, args ...any) {
	fmt.Printf("    %s: %s\n", b.Name(), fmt.Sprintf(format, args...))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
