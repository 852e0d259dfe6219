package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/promtext"
	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// BenchmarkLiveLag writes at both sites at once (BENCH_LAG_RATE row
// changes/s per site, default 5000, for BENCH_LAG_SECONDS, default 30) and
// reports the replication lag per direction measured from heartbeats:
// p50/p99/p999 from the receiving replicator's lag histogram, counting only
// the observations made during the load.
func BenchmarkLiveLag(b *testing.B) {
	rate := envInt("BENCH_LAG_RATE", 5000)
	secs := envInt("BENCH_LAG_SECONDS", 30)
	for range b.N {
		liveLag(b, rate, time.Duration(secs)*time.Second)
	}
}

func liveLag(b *testing.B, rate int, dur time.Duration) {
	c := newCluster(b, testenv.SharedBroker(b), testenv.SharedMariaDB(b, 1), testenv.SharedMariaDB(b, 2))
	c.createTables()
	// Heartbeats every 20 ms rather than 100 ms: p999 needs more than a
	// thousand samples per direction.
	c.writeConfigs("heartbeat: {interval: 20ms}\n")
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
	before := []promtext.Metrics{scrape(0), scrape(1)}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	stats := make([]workload.Stats, 2)
	errs := make([]error, 2)
	start := time.Now()
	b.ResetTimer()
	// Several connections per site: one connection doing one statement
	// per row change tops out near 1–2k changes/s.
	const writers = 8
	var mu sync.Mutex
	for i := range 2 {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := workload.Run(ctx, c.dbAt(i), workload.Options{
					DB: c.db, Seed: uint64(100*i + w), Changes: math.MaxInt32, Keys: 50000, TxnRows: 20, Rate: rate / writers,
					Tables: []string{"items", "pairs"},
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
	wg.Wait()
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
		b.Logf("%s: %s wrote %.0f row changes/s; lag from %0.f heartbeats p50 %.1f ms, p99 %.1f ms, p999 %.1f ms",
			dir, peer.name, wrote, n, q(0.5), q(0.99), q(0.999))
	}
	for i, s := range c.sites {
		log, _ := os.ReadFile(filepath.Join(s.dir, "replicator.log"))
		retries := strings.Count(string(log), "apply failed; retrying")
		b.ReportMetric(float64(retries), s.name+"-apply-retries")
		if retries > 0 {
			i := strings.Index(string(log), "apply failed; retrying")
			b.Logf("%s: %d apply retries, first: %s", s.name, retries, tail(string(log)[i:min(len(log), i+600)], 600))
		}
		_ = i
	}
	c.waitConverged(0, 1, 3*time.Minute)
}
