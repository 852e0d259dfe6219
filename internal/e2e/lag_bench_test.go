package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/internal/promtext"
	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// BenchmarkLiveLag writes at both sites at once (BENCH_LAG_RATE row
// changes/s per site, default 5000, through BENCH_LAG_WRITERS connections
// per site, default 8) and reports the replication lag per direction
// measured from heartbeats: p50/p99/p999 from the receiving replicator's
// lag histogram over BENCH_LAG_SECONDS (default 30) of steady load, after
// BENCH_LAG_WARMUP seconds (default 10) of load that are not counted. The
// first seconds of load on the freshly created tables show lag spikes of
// 1–2 s (single applies of a few hundred rows taking up to ~1 s while the
// writers start; not pinned down further); they are reported separately in
// the log ("including the ramp"), not hidden. After a failure (sites not
// converged), or always with BENCH_KEEP=1, the logs, rows, tombstones and
// conflict logs of both sites are kept in /tmp/tandem-livelag-evidence-*.
// BENCH_LAG_PARTITIONS (default 4) sets the partitions of each site's
// topic; the bench has no tenants, so every transaction carries the
// global tenant's key and one partition per direction carries them all,
// in commit order (DESIGN.md §5), whatever the count. The log shows the
// cores each process used in the steady state and each server's row lock
// waits (the load's writers wait for the rows a sink batch has locked);
// BENCH_PPROF=1 also takes CPU profiles of both replicators.
func BenchmarkLiveLag(b *testing.B) {
	rate := envInt("BENCH_LAG_RATE", 5000)
	secs := envInt("BENCH_LAG_SECONDS", 30)
	warm := envInt("BENCH_LAG_WARMUP", 10)
	writers := envInt("BENCH_LAG_WRITERS", 8)
	for range b.N {
		liveLag(b, rate, writers, time.Duration(warm)*time.Second, time.Duration(secs)*time.Second)
	}
}

func liveLag(b *testing.B, rate, writers int, warm, dur time.Duration) {
	c := newCluster(b, testenv.SharedBroker(b), testenv.SharedMariaDB(b, 1), testenv.SharedMariaDB(b, 2))
	c.createTables()
	sizeServers(b, c)
	// Heartbeats every 20 ms rather than 100 ms: p999 needs more than a
	// thousand samples per direction.
	b.Cleanup(func() { keepEvidence(b, c) })
	c.pprof = os.Getenv("BENCH_PPROF") != ""
	c.partitions = envInt("BENCH_LAG_PARTITIONS", 4)
	// BENCH_LAG_CONFIG adds replicator YAML, e.g. "tombstones:
	// {reconcile_interval: 0s}" to measure a setting's cost.
	c.writeConfigs("heartbeat: {interval: 20ms}\n" + os.Getenv("BENCH_LAG_CONFIG") + "\n")
	c.prepare()
	c.start(0)
	c.start(1)
	scrape := func(i int) promtext.Metrics { return promtext.Parse(c.admin(i, "GET", "/metrics")) }
	// Warm up: the heartbeats written while the other replicator started
	// are applied late once; measure only after both directions flow.
	testenv.WaitFor(b, time.Minute, "both directions flowing", func() bool {
		for i := range c.sites {
			m := scrape(i)
			if m.Sum("tandem_replication_lag_seconds_count") < 50 || m.Sum("tandem_replication_lag_last_seconds") > 0.2 {
				return false
			}
		}
		return true
	})
	idle := []promtext.Metrics{scrape(0), scrape(1)}

	ctx, cancel := context.WithTimeout(context.Background(), warm+dur)
	defer cancel()
	var wg sync.WaitGroup
	stats := make([]workload.Stats, 2)
	errs := make([]error, 2)
	start := time.Now()
	b.ResetTimer()
	// Several connections per site: one connection doing one statement
	// per row change tops out near 1–2k changes/s. The statements are
	// sent as text with the values interpolated by the driver, as most
	// applications' drivers do: with server-side prepared statements the
	// driver prepares, executes and closes every statement (three
	// commands), which costs the shared two cores more than the
	// replication being measured.
	gens := [2]*sql.DB{}
	for i := range gens {
		cfg := c.sites[i].srv.Config("")
		cfg.InterpolateParams = true
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			b.Fatal(err)
		}
		gens[i] = sql.OpenDB(conn)
		gens[i].SetMaxIdleConns(writers)
		defer gens[i].Close()
	}
	var mu sync.Mutex
	for i := range 2 {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// BENCH_LAG_MULTIROW=1 (default) writes each transaction as
				// one multi-row statement of BENCH_LAG_TXN_ROWS rows (default
				// 20), as batching applications do; 0 sends one statement
				// per row change (one core then tops out near 2.3k changes/s
				// per site here, the servers' statement overhead).
				multiRow := os.Getenv("BENCH_LAG_MULTIROW") != "0"
				txnRows := envInt("BENCH_LAG_TXN_ROWS", 20)
				st, err := workload.Run(ctx, gens[i], workload.Options{
					DB: c.db, Seed: uint64(100*i + w), Changes: math.MaxInt32, Keys: 50000, TxnRows: txnRows, Rate: rate / writers,
					Tables: []string{"items", "pairs"}, MultiRow: multiRow,
				})
				mu.Lock()
				defer mu.Unlock()
				stats[i].Inserts += st.Inserts
				stats[i].Updates += st.Updates
				stats[i].Deletes += st.Deletes
				if err != nil {
					errs[i] = err
				}
			}()
		}
	}
	// The load's first seconds are not part of the steady state: wait them
	// out (a load phase of fixed length, not a synchronisation).
	select {
	case <-time.After(warm):
	case <-ctx.Done():
	}
	before := []promtext.Metrics{scrape(0), scrape(1)}
	locksBefore := []rowLocks{readRowLocks(b, c.sites[0].srv), readRowLocks(b, c.sites[1].srv)}
	cpuBefore := sampleCPU()
	if c.pprof {
		// BENCH_PPROF=1: CPU profiles of both replicators over most of
		// the measured phase.
		dir := b.TempDir()
		if d, err := os.MkdirTemp("", "tandem-livelag-pprof-"); err == nil {
			dir = d
		}
		for _, f := range profileReplicators(b, c, max(dur-2*time.Second, time.Second), dir) {
			benchf(b, "CPU profile: go tool pprof -top %s", f)
		}
	}
	wg.Wait()
	benchf(b, "steady state, %s", cpuReport(cpuBefore, sampleCPU()))
	for i, s := range c.sites {
		// The sink's lookups lock the rows they find until its COMMIT
		// (pkg/sink/doc.go), so the load's writers wait for them, and
		// the sink sometimes for a writer (docs/measurements.md).
		d := readRowLocks(b, s.srv).sub(locksBefore[i])
		benchf(b, "%s: %d row lock waits in the steady state (%.0f ms each on average), %d deadlocks", s.name, d.waits, d.avgMillis(), d.deadlocks)
		b.ReportMetric(float64(d.waits), s.name+"-row-lock-waits")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	after := []promtext.Metrics{scrape(0), scrape(1)}
	for i, s := range c.sites {
		peer := c.sites[1-i]
		h := promtext.Sub(after[i].Buckets("tandem_replication_lag_seconds"), before[i].Buckets("tandem_replication_lag_seconds"))
		q := func(p float64) float64 { return 1000 * promtext.Quantile(h, p) }
		dir := fmt.Sprintf("%s→%s", peer.name, s.name)
		wrote := float64(stats[1-i].Changes()) / elapsed.Seconds()
		b.ReportMetric(q(0.5), dir+"-p50-ms")
		b.ReportMetric(q(0.99), dir+"-p99-ms")
		b.ReportMetric(q(0.999), dir+"-p999-ms")
		b.ReportMetric(wrote, peer.name+"-writes/s")
		n := h[math.Inf(1)]
		b.ReportMetric(n, dir+"-samples")
		benchf(b, "%s: %s wrote %.0f row changes/s; steady-state lag from %0.f heartbeats p50 %.1f ms, p99 %.1f ms, p999 %.1f ms",
			dir, peer.name, wrote, n, q(0.5), q(0.99), q(0.999))
		hr := promtext.Sub(after[i].Buckets("tandem_replication_lag_seconds"), idle[i].Buckets("tandem_replication_lag_seconds"))
		benchf(b, "%s: including the ramp (the first %s of load): p50 %.1f ms, p99 %.1f ms, p999 %.1f ms", dir, warm,
			1000*promtext.Quantile(hr, 0.5), 1000*promtext.Quantile(hr, 0.99), 1000*promtext.Quantile(hr, 0.999))
		// Where the time goes (tandem_stage_seconds, from the source
		// commit): the origin's stages at the peer, the rest here.
		var sb strings.Builder
		for _, st := range []struct {
			name string
			site int
		}{{"read", 1 - i}, {"acked", 1 - i}, {"fetched", i}, {"applied", i}} {
			match := []string{`origin="` + peer.name + `"`, `stage="` + st.name + `"`, `size="small"`}
			h := promtext.Sub(after[st.site].Buckets("tandem_stage_seconds", match...), before[st.site].Buckets("tandem_stage_seconds", match...))
			fmt.Fprintf(&sb, " %s p50 %.0f ms p99 %.0f ms;", st.name, 1000*promtext.Quantile(h, 0.5), 1000*promtext.Quantile(h, 0.99))
		}
		benchf(b, "%s: stages from the source commit:%s", dir, sb.String())
	}
	for i, s := range c.sites {
		log, _ := os.ReadFile(filepath.Join(s.dir, "replicator.log"))
		retries := strings.Count(string(log), "apply failed; retrying")
		b.ReportMetric(float64(retries), s.name+"-apply-retries")
		if retries > 0 {
			i := strings.Index(string(log), "apply failed; retrying")
			benchf(b, "%s: %d apply retries, first: %s", s.name, retries, tail(string(log)[i:min(len(log), i+600)], 600))
		}
		// Deletes the reader versioned without a tombstone: none are
		// expected with the triggers in place (docs/known-issues.md).
		untombed := after[i].Sum("tandem_deletes_without_tombstone_total")
		b.ReportMetric(untombed, s.name+"-deletes-without-tombstone")
		if untombed > 0 {
			benchf(b, "%s: %.0f deletes without a tombstone (docs/known-issues.md); the reader's warning names the first one's GTID", s.name, untombed)
		}
	}
	c.waitConverged(0, 1, 3*time.Minute)
}

// sizeServers applies BENCH_REDO_BYTES (innodb_log_file_size) and
// BENCH_BUFFER_POOL_BYTES (innodb_buffer_pool_size) to every site's
// server, to compare the test servers' small defaults (16 MiB redo log,
// 256 MiB buffer pool) with production-sized ones. The servers are the
// test run's own, so the settings end with it.
func sizeServers(b *testing.B, c *cluster) {
	for env, v := range map[string]string{"BENCH_REDO_BYTES": "innodb_log_file_size", "BENCH_BUFFER_POOL_BYTES": "innodb_buffer_pool_size"} {
		if n := os.Getenv(env); n != "" {
			if _, err := strconv.ParseUint(n, 10, 64); err != nil {
				b.Fatalf("%s=%q: want a number of bytes", env, n)
			}
			for _, st := range c.sites {
				st.srv.Exec(b, "SET GLOBAL "+v+" = "+n)
			}
		}
	}
}

// keepEvidence copies, when the benchmark failed (a divergence), the
// replicators' logs and every site's rows, tombstones and conflict log to a
// directory that outlives the run, since the temporary directories and
// databases are removed at cleanup.
func keepEvidence(b *testing.B, c *cluster) {
	if !b.Failed() && os.Getenv("BENCH_KEEP") == "" {
		return
	}
	dir, err := os.MkdirTemp("", "tandem-livelag-evidence-")
	if err != nil {
		benchf(b, "keeping evidence: %v", err)
		return
	}
	for _, s := range c.sites {
		if log, err := os.ReadFile(filepath.Join(s.dir, "replicator.log")); err == nil {
			os.WriteFile(filepath.Join(dir, s.name+"-replicator.log"), log, 0o600)
		}
		db := s.srv.DB(b, "")
		for _, q := range []string{
			"SELECT *, _tandem_hlc FROM `" + c.db + "`.pairs", "SELECT * FROM `" + c.db + "`._tandem_tomb_pairs",
			"SELECT *, _tandem_hlc FROM `" + c.db + "`.items", "SELECT * FROM `" + c.db + "`._tandem_tomb_items",
			"SELECT * FROM `" + c.meta + "`._tandem_conflicts", "SELECT * FROM `" + c.meta + "`._tandem_parked",
		} {
			var sb strings.Builder
			rs, err := db.Query(q)
			if err != nil {
				fmt.Fprintf(&sb, "%s: %v\n", q, err)
			} else {
				cols, _ := rs.Columns()
				sb.WriteString(strings.Join(cols, "\t") + "\n")
				vals := make([]sql.RawBytes, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				for rs.Next() {
					rs.Scan(ptrs...)
					for i, v := range vals {
						if i > 0 {
							sb.WriteByte('\t')
						}
						sb.Write(v)
					}
					sb.WriteByte('\n')
				}
				rs.Close()
			}
			name := strings.NewReplacer("`", "", " ", "_", "*", "all", ",", "").Replace(q[strings.LastIndex(q, ".")+1:])
			os.WriteFile(filepath.Join(dir, s.name+"-"+name+".tsv"), []byte(sb.String()), 0o600)
		}
	}
	benchf(b, "evidence of the failed run kept in %s", dir)
}

// rowLocks is a server's count of row lock waits (Innodb_row_lock_waits),
// the milliseconds they took (Innodb_row_lock_time) and its deadlocks.
type rowLocks struct{ waits, millis, deadlocks int64 }

func readRowLocks(b *testing.B, srv *testenv.MariaDB) rowLocks {
	rows, err := srv.DB(b, "").Query("SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS " +
		"WHERE VARIABLE_NAME IN ('INNODB_ROW_LOCK_WAITS', 'INNODB_ROW_LOCK_TIME', 'INNODB_DEADLOCKS')")
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var l rowLocks
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			b.Fatal(err)
		}
		switch name {
		case "INNODB_ROW_LOCK_WAITS":
			l.waits = v
		case "INNODB_ROW_LOCK_TIME":
			l.millis = v
		case "INNODB_DEADLOCKS":
			l.deadlocks = v
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return l
}

func (l rowLocks) sub(o rowLocks) rowLocks {
	return rowLocks{l.waits - o.waits, l.millis - o.millis, l.deadlocks - o.deadlocks}
}

func (l rowLocks) avgMillis() float64 {
	if l.waits == 0 {
		return 0
	}
	return float64(l.millis) / float64(l.waits)
}
