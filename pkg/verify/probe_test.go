package verify

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/schema"
)

// pipe stands in for replication of the probe table from one site to
// another: it copies new probe rows every 10 ms unless paused.
type pipe struct {
	from, to *sql.DB
	fromID   int
	table    string
	paused   atomic.Bool
}

func (p *pipe) run(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.paused.Load() {
			continue
		}
		rows, err := p.from.QueryContext(ctx, fmt.Sprintf("SELECT seq FROM %s WHERE site = %d AND seq > %d AND seq < %d", p.table, p.fromID, last, fenceBase))
		if err != nil {
			continue
		}
		var seqs []string
		for rows.Next() {
			var s uint64
			if rows.Scan(&s) == nil {
				seqs = append(seqs, fmt.Sprintf("(%d, %d)", p.fromID, s))
				last = max(last, s)
			}
		}
		rows.Close()
		if len(seqs) > 0 {
			p.to.ExecContext(ctx, fmt.Sprintf("INSERT IGNORE INTO %s (site, seq) VALUES %s", p.table, strings.Join(seqs, ", ")))
		}
	}
}

// TestProber runs the prober against two sites whose "replication" the
// test controls: a 2 s pause of a→b is one fault of about 2 s with about
// 20 probes at risk; b→a stays healthy; nothing is lost.
func TestProber(t *testing.T) {
	srv := []*testenv.MariaDB{testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2)}
	meta := testenv.NewDatabaseOn(t, "vp", srv...)
	cfg := DefaultConfig()
	cfg.MetaSchema = meta
	var dbs []*sql.DB
	for i, s := range srv {
		db := s.DB(t, "")
		dbs = append(dbs, db)
		plan, err := schema.Inspect(context.Background(), db, schema.Options{Site: uint8(i + 1), MetaSchema: meta})
		if err != nil {
			t.Fatal(err)
		}
		if err := plan.Apply(context.Background(), db); err != nil {
			t.Fatal(err)
		}
		cfg.Sites = append(cfg.Sites, Site{Name: fmt.Sprintf("s%d", i+1), ID: uint8(i + 1), Host: s.Host, Port: s.Port, User: s.User})
	}
	cfg.Probe.Rate = 20
	cfg.Probe.Drain = Duration(5 * time.Second)
	cfg.SLOs.Default.LagP99 = Duration(500 * time.Millisecond)
	cfg.SLOs.Default.RecoverySamples = 5
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	table := qualified(meta, schema.Probe)
	ab := &pipe{from: dbs[0], to: dbs[1], fromID: 1, table: table}
	ba := &pipe{from: dbs[1], to: dbs[0], fromID: 2, table: table}

	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	p, err := NewProber(cfg, dir, nil, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	pctx, stopPipes := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, pp := range []*pipe{ab, ba} {
		wg.Add(1)
		go func() { defer wg.Done(); pp.run(pctx) }()
	}
	defer func() { stopPipes(); wg.Wait() }()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()

	testenv.WaitFor(t, 20*time.Second, "probes flowing", func() bool {
		return p.Ready() == nil && testutil.ToFloat64(p.m.writes.WithLabelValues("s1", "_global", "ok")) > 20 &&
			testutil.CollectAndCount(reg, "tandem_verifier_probe_lag_seconds") == 2
	})
	t0 := time.Now()
	ab.paused.Store(true)
	<-time.After(2 * time.Second) // the fault's duration
	ab.paused.Store(false)
	t1 := time.Now()
	testenv.WaitFor(t, 20*time.Second, "the live analysis to close the fault", func() bool {
		return testutil.ToFloat64(p.m.faults.WithLabelValues("s1", "s2", "_global")) == 1
	})
	if open := testutil.ToFloat64(p.m.faultOpen.WithLabelValues("s1", "s2", "_global")); open != 0 {
		t.Errorf("fault_open %v after recovery", open)
	}
	rto := testutil.ToFloat64(p.m.rto.WithLabelValues("s1", "s2", "_global"))
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	run, err := ReadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := BuildReport(run, nil, time.Now())
	if !r.Final {
		t.Fatal("not drained")
	}
	var f *Fault
	for i := range r.Directions {
		d := &r.Directions[i]
		if d.Lost != 0 || d.Seen != d.Probes {
			t.Errorf("%s: %d probes, %d seen, %d lost", d.Direction, d.Probes, d.Seen, d.Lost)
		}
		if d.From == "s1" && len(d.Faults) > 0 {
			f = &d.Faults[len(d.Faults)-1]
		}
	}
	if f == nil {
		t.Fatalf("no fault s1→s2: %+v", r.Directions)
	}
	injected := t1.Sub(t0)
	t.Logf("injected %s, RTO %s (live metric %.3fs), RPO %d writes / %s", injected, f.RTO.D(), rto, f.RPOWrites, f.RPOWindow.D())
	if d := f.RTO.D() - injected; d < -300*time.Millisecond || d > 500*time.Millisecond {
		t.Errorf("RTO %s, injected %s", f.RTO.D(), injected)
	}
	if want := int(injected.Seconds() * 20); f.RPOWrites < want-5 || f.RPOWrites > want+5 {
		t.Errorf("RPO %d writes, want about %d", f.RPOWrites, want)
	}
	if got := time.Duration(rto * float64(time.Second)); got != f.RTO.D().Truncate(time.Microsecond) && (got-f.RTO.D()).Abs() > time.Millisecond {
		t.Errorf("live RTO %s, report %s", got, f.RTO.D())
	}
}
