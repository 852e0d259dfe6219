package metrics

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestCountersAndGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "site-a")

	m.TxnRead(3)
	m.TxnRead(2)
	m.TxnDroppedLoop()
	m.ReaderReconnect()
	m.AddDeletesWithoutTombstone(2)
	m.Published("tandem.site-a", 5)
	m.PublishError()
	m.TxnApplied("site-b", "acme", 4)
	m.TxnApplied("site-b", "", 1)
	m.Conflict("site-b", "shop.orders", "lost")
	m.Duplicates("site-b", 7)
	m.Parked("site-b", "decode")
	m.ApplyError("site-b", "deadlock")
	m.ClockSkew("site-b")
	m.ObserveLag("site-b", 30*time.Millisecond)
	m.ObserveLag("site-b", -2*time.Millisecond)
	m.Checkpoint("1-101-42,2-102-7", time.Unix(1700000000, 500_000_000))

	want := `
# HELP tandem_rows_read_total Row changes of local transactions read from the binlog.
# TYPE tandem_rows_read_total counter
tandem_rows_read_total{site="site-a"} 5
# HELP tandem_txns_read_total Local source transactions read from the binlog.
# TYPE tandem_txns_read_total counter
tandem_txns_read_total{site="site-a"} 2
# HELP tandem_txns_dropped_loop_total Transactions the reader dropped because a sink wrote them (loop prevention).
# TYPE tandem_txns_dropped_loop_total counter
tandem_txns_dropped_loop_total{site="site-a"} 1
# HELP tandem_reader_reconnects_total Times the binlog reader reconnected to the local database.
# TYPE tandem_reader_reconnects_total counter
tandem_reader_reconnects_total{site="site-a"} 1
# HELP tandem_deletes_without_tombstone_total Local row deletes the reader found without a tombstone in their transaction and versioned one tick after the deleted row (a missing BEFORE DELETE trigger: run ` + "`replicator schema prepare`" + `; docs/known-issues.md).
# TYPE tandem_deletes_without_tombstone_total counter
tandem_deletes_without_tombstone_total{site="site-a"} 2
# HELP tandem_rows_published_total Row changes acknowledged by Kafka, by topic.
# TYPE tandem_rows_published_total counter
tandem_rows_published_total{site="site-a",topic="tandem.site-a"} 5
# HELP tandem_publish_errors_total Failed Kafka produce attempts.
# TYPE tandem_publish_errors_total counter
tandem_publish_errors_total{site="site-a"} 1
# HELP tandem_rows_applied_total Row changes applied to the local database, by origin site and tenant.
# TYPE tandem_rows_applied_total counter
tandem_rows_applied_total{origin="site-b",site="site-a",tenant="_global"} 1
tandem_rows_applied_total{origin="site-b",site="site-a",tenant="acme"} 4
# HELP tandem_txns_applied_total Source transactions (or fragments) applied, by origin site.
# TYPE tandem_txns_applied_total counter
tandem_txns_applied_total{origin="site-b",site="site-a"} 2
# HELP tandem_conflicts_total Conflicts by origin site, table and kind (e.g. an incoming version that lost the compare).
# TYPE tandem_conflicts_total counter
tandem_conflicts_total{kind="lost",origin="site-b",site="site-a",table="shop.orders"} 1
# HELP tandem_duplicates_total Messages skipped because they were already applied (redelivery after a restart).
# TYPE tandem_duplicates_total counter
tandem_duplicates_total{origin="site-b",site="site-a"} 7
# HELP tandem_parked_total Messages parked instead of applied, by origin site and reason.
# TYPE tandem_parked_total counter
tandem_parked_total{origin="site-b",reason="decode",site="site-a"} 1
# HELP tandem_apply_errors_total Failed apply attempts, by origin site and kind of error.
# TYPE tandem_apply_errors_total counter
tandem_apply_errors_total{kind="deadlock",origin="site-b",site="site-a"} 1
# HELP tandem_clock_skew_total Remote versions refused by the clock for being too far ahead (clock.max_offset).
# TYPE tandem_clock_skew_total counter
tandem_clock_skew_total{origin="site-b",site="site-a"} 1
# HELP tandem_replication_lag_last_seconds The latest replication lag observed, by origin site; negative when the origin's clock is ahead.
# TYPE tandem_replication_lag_last_seconds gauge
tandem_replication_lag_last_seconds{origin="site-b",site="site-a"} -0.002
# HELP tandem_checkpoint_gtid_seq Sequence number of the reader's durable checkpoint, by GTID domain (MariaDB) or source UUID (MySQL).
# TYPE tandem_checkpoint_gtid_seq gauge
tandem_checkpoint_gtid_seq{domain="1",site="site-a"} 42
tandem_checkpoint_gtid_seq{domain="2",site="site-a"} 7
# HELP tandem_checkpoint_timestamp_seconds Unix time at which the reader last made its checkpoint durable.
# TYPE tandem_checkpoint_timestamp_seconds gauge
tandem_checkpoint_timestamp_seconds{site="site-a"} 1.7000000005e+09
`
	names := []string{
		"tandem_rows_read_total", "tandem_txns_read_total", "tandem_txns_dropped_loop_total",
		"tandem_reader_reconnects_total", "tandem_deletes_without_tombstone_total", "tandem_rows_published_total", "tandem_publish_errors_total",
		"tandem_rows_applied_total", "tandem_txns_applied_total", "tandem_conflicts_total",
		"tandem_duplicates_total", "tandem_parked_total", "tandem_apply_errors_total",
		"tandem_clock_skew_total", "tandem_replication_lag_last_seconds",
		"tandem_checkpoint_gtid_seq", "tandem_checkpoint_timestamp_seconds",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestLagHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "a")
	m.ObserveLag("b", 700*time.Microsecond)
	m.ObserveLag("b", 40*time.Second)
	m.ObserveLag("b", -time.Second) // clamped to 0 in the histogram
	want := `
# HELP tandem_replication_lag_seconds Time from the origin's commit (heartbeat or transaction stamp) to its apply here, by origin site.
# TYPE tandem_replication_lag_seconds histogram
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.001"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.0025"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.005"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.01"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.02"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.03"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.05"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.075"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.1"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.125"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.15"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.175"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.2"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.25"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.3"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.4"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.5"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="0.75"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="1"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="2.5"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="5"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="10"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="30"} 2
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="60"} 3
tandem_replication_lag_seconds_bucket{origin="b",site="a",le="+Inf"} 3
tandem_replication_lag_seconds_sum{origin="b",site="a"} 40.0007
tandem_replication_lag_seconds_count{origin="b",site="a"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tandem_replication_lag_seconds"); err != nil {
		t.Error(err)
	}
}

func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "a")
	// Touch every vector so that it is gathered.
	m.Published("t", 1)
	m.TxnApplied("b", "x", 1)
	m.Conflict("b", "s.t", "k")
	m.Duplicates("b", 1)
	m.Parked("b", "r")
	m.ApplyError("b", "k")
	m.ClockSkew("b")
	m.ObserveLag("b", time.Millisecond)
	m.Checkpoint("0-1-1", time.Now())
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, mf := range mustGather(t, reg) {
		if !strings.HasPrefix(mf, "tandem_") {
			t.Errorf("metric %s is not prefixed tandem_", mf)
		}
	}
}

func mustGather(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}

func TestTenantLabelIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "a", MaxTenants(3), PinTenants("vip"))
	for i := range 10 {
		m.TxnApplied("b", fmt.Sprintf("t%d", i), 1)
	}
	m.TxnApplied("b", "vip", 1)
	m.TxnApplied("b", "t1", 1) // an early tenant keeps its own label
	m.TxnApplied("b", "", 1)
	if got := testutil.CollectAndCount(m.rowsApplied); got != 3+1+1+1 {
		t.Errorf("%d tenant series, want 3 own + vip + _global + _other", got)
	}
	for tenant, want := range map[string]float64{"t0": 1, "t1": 2, "t2": 1, "vip": 1, GlobalTenantLabel: 1, OtherLabel: 7} {
		if got := testutil.ToFloat64(m.rowsApplied.WithLabelValues("b", tenant)); got != want {
			t.Errorf("rows for tenant label %q = %v, want %v", tenant, got, want)
		}
	}
	for tenant, want := range map[string]string{
		"t0": "t0", "t9": OtherLabel, "vip": "vip", "": GlobalTenantLabel,
		OtherLabel: OtherLabel, "bad\xff": OtherLabel, strings.Repeat("x", 200): OtherLabel,
	} {
		if got := m.TenantLabel(tenant); got != want {
			t.Errorf("TenantLabel(%q) = %q, want %q", tenant, got, want)
		}
	}
}

func TestTableLabelIsBounded(t *testing.T) {
	m := New(nil, "a", MaxTables(2))
	for i := range 5 {
		m.Conflict("b", fmt.Sprintf("tenant_%d.orders", i), "lost")
	}
	if got := testutil.CollectAndCount(m.conflicts); got != 3 {
		t.Errorf("%d table series, want 2 own + _other", got)
	}
}

func TestInvalidUTF8NeverPanics(t *testing.T) {
	m := New(prometheus.NewRegistry(), "site\xff")
	bad := "x\xff\xfe"
	m.Published(bad, 1)
	m.TxnApplied(bad, bad, 1)
	m.Conflict(bad, bad, bad)
	m.Duplicates(bad, 1)
	m.Parked(bad, bad)
	m.ApplyError(bad, bad)
	m.ClockSkew(bad)
	m.ObserveLag(bad, time.Second)
	m.Checkpoint("\xff:1-5,1-1-\xff", time.Now())
}

func TestNilMetricsAreNoOps(t *testing.T) {
	var m *Metrics
	m.TxnRead(1)
	m.TxnDroppedLoop()
	m.ReaderReconnect()
	m.Published("t", 1)
	m.PublishError()
	m.TxnApplied("b", "x", 1)
	m.Conflict("b", "s.t", "k")
	m.Duplicates("b", 1)
	m.Parked("b", "r")
	m.ApplyError("b", "k")
	m.ClockSkew("b")
	m.ObserveLag("b", time.Second)
	m.Checkpoint("1-1-1", time.Now())
	if m.TenantLabel("x") != OtherLabel {
		t.Error("nil TenantLabel")
	}
}

func TestTwoSitesShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := New(reg, "a"), New(reg, "b")
	a.TxnRead(1)
	b.TxnRead(2)
	if n, err := testutil.GatherAndCount(reg, "tandem_rows_read_total"); err != nil || n != 2 {
		t.Errorf("GatherAndCount = %d, %v; want one series per site", n, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering the same site twice did not panic")
		}
	}()
	New(reg, "a")
}

func TestParseGTIDSet(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want map[string]uint64
	}{
		{"", map[string]uint64{}},
		{"0-1-100", map[string]uint64{"0": 100}},
		{"1-101-42, 2-102-7", map[string]uint64{"1": 42, "2": 7}},
		{"3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:11-18,abc:7", map[string]uint64{"3e11fa47-71ca-11e1-9e33-c80aa9429562": 18, "abc": 7}},
		{"garbage,1-2,x-1-2,1-1-y,uuid:", map[string]uint64{}},
	} {
		got := parseGTIDSet(tt.in)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("parseGTIDSet(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	m := New(prometheus.NewRegistry(), "a", MaxTenants(50))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				m.TxnApplied("b", fmt.Sprintf("t%d", (g*200+i)%120), 1)
			}
		})
	}
	wg.Wait()
	if got := testutil.CollectAndCount(m.rowsApplied); got != 51 {
		t.Errorf("%d tenant series, want 50 + _other", got)
	}
	var total float64
	for _, l := range append(seenLabels(m), OtherLabel) {
		total += testutil.ToFloat64(m.rowsApplied.WithLabelValues("b", l))
	}
	if total != 8*200 {
		t.Errorf("rows counted %v, want %d", total, 8*200)
	}
}

func seenLabels(m *Metrics) []string {
	m.tenants.mu.RLock()
	defer m.tenants.mu.RUnlock()
	var out []string
	for l := range m.tenants.seen {
		out = append(out, l)
	}
	return out
}
