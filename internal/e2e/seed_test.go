package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// seedPair is two sites with the workload's tables, prepared, each
// applying the other's topic once it runs; nothing is running yet.
func seedPair(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.createTables()
	c.writeConfigs("")
	c.prepare()
	return c
}

// TestSeedNewSite: site A has replicated data (rows, updates, deletes and
// so tombstones, every column type) and keeps being written while
// `replicator seed` copies it into a new, empty site B. B's replicator then
// starts from the offsets the seed stored, B is written too, and the sites
// converge row by row, versions included; no change is published twice
// (the copy is not B's to publish).
func TestSeedNewSite(t *testing.T) {
	c := seedPair(t)
	c.start(0) // A runs alone: B does not exist yet for it to apply
	ctx := context.Background()
	st, err := workload.Run(ctx, c.dbAt(0), workload.Options{DB: c.db, Seed: seed(t), Changes: 20_000, Keys: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if st.Deletes == 0 {
		t.Fatal("the workload deleted nothing: no tombstones to copy")
	}

	// A keeps being written during the seed and after it.
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var during workload.Stats
	var duringErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		during, duringErr = workload.Run(wctx, c.dbAt(0), workload.Options{DB: c.db, Seed: seed(t), Changes: 1_000_000, Keys: 2000, Rate: 2000})
	}()

	// Refused without the source, or from a site that is not a peer.
	if out, err := c.replicatorCmd(1, "seed", "--from", "s9", "--from-addr", "127.0.0.1:1"); err == nil || !strings.Contains(out, `--from "s9" is not one of this site's peers (allowed: s1)`) {
		t.Errorf("seed from an unknown peer: err %v, output:\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", c.sites[0].srv.Port)
	binlogPos := func() string {
		var pos string
		if err := c.dbAt(1).QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
			t.Fatal(err)
		}
		return pos
	}
	before := binlogPos()
	out, err := c.replicatorCmd(1, "seed", "--from", "s1", "--from-addr", addr)
	if err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	t.Logf("seed:\n%s", out)
	// Nothing of the copy is in B's binary log: no reader can publish it,
	// whatever position it resumes from.
	if after := binlogPos(); after != before {
		t.Errorf("the seed wrote to B's binary log: gtid_binlog_pos %q before, %q after", before, after)
	}
	// A second seed finds B no longer empty.
	if out, err := c.replicatorCmd(1, "seed", "--from", "s1", "--from-addr", addr); err == nil || !strings.Contains(out, "seed only a new site") {
		t.Errorf("second seed: err %v, output:\n%s", err, out)
	}

	c.start(1)
	// B is written too, while A still is.
	if _, err := workload.Run(ctx, c.dbAt(1), workload.Options{DB: c.db, Seed: seed(t), Changes: 5000, Keys: 2000, Rate: 2000}); err != nil {
		t.Fatal(err)
	}
	stop()
	wg.Wait()
	if duringErr != nil && wctx.Err() == nil {
		t.Fatal(duringErr)
	}
	t.Logf("A during and after the seed: %+v", during)
	if during.Changes() == 0 {
		t.Fatal("A was not written during the seed")
	}
	res := c.waitConverged(0, 1, 3*time.Minute)
	t.Logf("B equals A: rows %v", res.Rows)
	for _, tb := range workload.Tables {
		if res.Rows[c.db+"."+tb] == 0 {
			t.Errorf("table %s is empty", tb)
		}
	}
	checkNoEcho(t, c)
}

// TestSeedChecksSourceQueues: with three sites, messages of site C that
// the source A holds in a tenant's queue (paused there) are past A's
// offsets and not in its data, so seeding B from A is refused, naming the
// tenant; once the tenant is resumed and A's queue drained, a parked
// message of C at A is refused the same way; once it is skipped, the seed
// goes through and all three sites converge.
func TestSeedChecksSourceQueues(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	redisSrv := testenv.SharedRedis(t)
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2), testenv.SharedMariaDB(t, 3))
	const a, cc, b = 0, 1, 2 // A the source, C another existing site, B the new one
	e := newTenantEnvOn(t, c, redisSrv, "1s")
	c.start(a)
	c.start(cc)
	next := writeInterleaved(t, c.dbAt(cc), c.db, 1, 20, 5, "tenT", "tenU")
	next = writeInterleaved(t, c.dbAt(a), c.db, next, 20, 5, "tenT", "tenU")
	testenv.WaitFor(t, time.Minute, "C's and A's rows at both", func() bool {
		return e.countTenant(a, "tenT") == 200 && e.countTenant(cc, "tenT") == 200
	})

	// Paused at A (and C: the registry is shared), C's new rows of T wait
	// in A's queue.
	e.setMode(a, "tenT", tenant.ModePaused)
	next = writeInterleaved(t, c.dbAt(cc), c.db, next, 10, 5, "tenT", "tenU")
	testenv.WaitFor(t, time.Minute, "C's 10 new transactions of T queued at A", func() bool {
		_, body := c.call(a, "GET", "/v1/tenants/tenT", nil)
		var v struct {
			Queues map[string]tenant.Stat `json:"queues"`
		}
		json.Unmarshal([]byte(body), &v)
		return v.Queues["s2"].Depth == 10
	})
	seedArgs := []string{"seed", "--from", "s1", "--from-addr", fmt.Sprintf("127.0.0.1:%d", c.sites[a].srv.Port),
		"--from-admin", "http://" + c.sites[a].admin}
	run := func() (string, error) {
		return c.replicatorCmdWith(c.sites[b].cfg, []string{"TANDEM_SEED_ADMIN_TOKEN=" + adminToken}, seedArgs...)
	}
	out, err := run()
	if err == nil || !strings.Contains(out, "s1 holds queued messages of other sites (tenant tenT: 10 messages of s2 (0 dead-lettered))") {
		t.Fatalf("seed from a source holding queued messages: err %v, output:\n%s", err, out)
	}
	t.Logf("refused as it should be: %s", strings.TrimSpace(out))

	e.setMode(a, "tenT", tenant.ModeActiveActive)
	testenv.WaitFor(t, time.Minute, "A's queue of T drained", func() bool { return e.countTenant(a, "tenT") == 250 })
	// A message of C parked at A (as one that cannot be decoded would
	// be) is past A's offsets and not in its data either.
	res, err := c.dbAt(a).Exec("INSERT INTO `"+c.meta+"`._tandem_parked (topic, part, msg_offset, reason, error, payload) VALUES (?, 0, 999999, 'decode', 'test', 'x')", c.prefix+"s2")
	if err != nil {
		t.Fatal(err)
	}
	parkedID, _ := res.LastInsertId()
	if out, err = run(); err == nil || !strings.Contains(out, "s1 holds 1 parked messages of other sites") {
		t.Fatalf("seed from a source holding a parked message: err %v, output:\n%s", err, out)
	}
	if code, body := c.call(a, "POST", fmt.Sprintf("/v1/parked/%d/skip", parkedID), nil); code != 200 {
		t.Fatalf("skip the parked message at A: %d %s", code, body)
	}
	if out, err = run(); err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	t.Logf("seed:\n%s", out)
	c.start(b)
	writeInterleaved(t, c.dbAt(b), c.db, next, 10, 5, "tenT", "tenU")
	for _, pair := range [][2]int{{a, b}, {cc, b}} {
		testenv.WaitFor(t, 2*time.Minute, fmt.Sprintf("%s and %s equal", c.sites[pair[0]].name, c.sites[pair[1]].name), func() bool {
			for _, id := range []string{"tenT", "tenU"} {
				if ordersOf(t, c.dbAt(pair[0]), c.db, id, true) != ordersOf(t, c.dbAt(pair[1]), c.db, id, true) {
					return false
				}
			}
			return true
		})
	}
	if n := e.countTenant(b, "tenT"); n != 300 {
		t.Errorf("B holds %d rows of T; want 300", n)
	}
}

// TestSeedLeastPrivilege: the seed runs with the accounts of
// docs/privileges.md ("Seed"), and without BINLOG ADMIN at the new site
// it stops before copying anything, saying which privilege is missing.
func TestSeedLeastPrivilege(t *testing.T) {
	c := seedPair(t)
	if _, err := workload.Run(context.Background(), c.dbAt(0), workload.Options{DB: c.db, Seed: seed(t), Changes: 2000, Keys: 500}); err != nil {
		t.Fatal(err)
	}
	user := "tandem_seed_" + strings.TrimPrefix(c.db, "e2e")
	account := "'" + user + "'@'%'"
	grant := func(i int, grants ...string) {
		srv := c.sites[i].srv
		srv.Exec(t, "CREATE USER "+account+" IDENTIFIED BY 'seed-pw'")
		t.Cleanup(func() { srv.Exec(t, "DROP USER IF EXISTS "+account) })
		for _, g := range grants {
			srv.Exec(t, "GRANT "+g+" TO "+account)
		}
	}
	grant(0, "SELECT ON `"+c.db+"`.*", "SELECT ON `"+c.meta+"`.*")
	grant(1, "SELECT, INSERT, TRIGGER ON `"+c.db+"`.*", "SELECT, INSERT, TRIGGER ON `"+c.meta+"`.*")
	cfgText, err := os.ReadFile(c.sites[1].cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.sites[1].cfg + ".seed.yaml"
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(cfgText), "user: root}", "user: "+user+"}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() (string, error) {
		return c.replicatorCmdWith(cfg, []string{"TANDEM_DATABASE_PASSWORD=seed-pw"},
			"seed", "--from", "s1", "--from-addr", fmt.Sprintf("127.0.0.1:%d", c.sites[0].srv.Port))
	}
	out, err := run()
	if err == nil || !strings.Contains(out, "needs SUPER or BINLOG ADMIN") {
		t.Fatalf("seed without BINLOG ADMIN: err %v, output:\n%s", err, out)
	}
	c.sites[1].srv.Exec(t, "GRANT BINLOG ADMIN ON *.* TO "+account)
	if out, err = run(); err != nil {
		t.Fatalf("seed with the documented grants: %v\n%s", err, out)
	}
	res := c.waitConverged(0, 1, time.Minute)
	t.Logf("B equals A: rows %v", res.Rows)
}

// BenchmarkSeed: `replicator seed` copies BENCH_SEED_ROWS rows (default
// 500k, the noisy-neighbour table: a BIGINT key, a tenant, a DATETIME(6)
// and an 80-byte string, plus the version) from A into an empty B; it
// reports rows/s for the whole command (snapshot, copy, offsets).
//
//	go test -run '^$' -bench Seed -benchtime 1x ./internal/e2e/
func BenchmarkSeed(b *testing.B) {
	rows := envInt("BENCH_SEED_ROWS", 500_000)
	c := newCluster(b, testenv.SharedBroker(b), testenv.SharedMariaDB(b, 1), testenv.SharedMariaDB(b, 2))
	for _, s := range c.sites {
		s.srv.Exec(b, fmt.Sprintf(noisyDDL, c.db))
	}
	c.writeConfigs("")
	c.prepare()
	a := c.dbAt(0)
	for first := 1; first <= rows; first += 10_000 {
		if _, err := a.Exec(fmt.Sprintf("INSERT INTO `%s`.nn (id, tenant_id, created, pad) SELECT seq, CONCAT('t', seq %% 100), NOW(6), REPEAT('x', 80) FROM `%s`.seq_%d_to_%d",
			c.db, c.db, first, min(first+9_999, rows))); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c.sites[1].srv.Exec(b, "TRUNCATE TABLE `"+c.db+"`.nn")
		c.sites[1].srv.Exec(b, "DELETE FROM `"+c.meta+"`.`_tandem_offsets`")
		b.StartTimer()
		start := time.Now()
		out, err := c.replicatorCmd(1, "seed", "--from", "s1", "--from-addr", fmt.Sprintf("127.0.0.1:%d", c.sites[0].srv.Port))
		if err != nil {
			b.Fatalf("seed: %v\n%s", err, out)
		}
		b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
	}
	if n := c.count(1, "`"+c.db+"`.nn"); n != rows {
		b.Fatalf("B holds %d rows; want %d", n, rows)
	}
}
