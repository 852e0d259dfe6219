package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
	"github.com/tandemdb/tandem/pkg/schema"
)

// TestTombstoneCollection: tombstones are collected once every site has
// applied past them, and not while a site lags behind (its sinks paused):
// a late older write could still arrive then.
func TestTombstoneCollection(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.createTables()
	c.writeConfigs("tombstones: {gc_interval: 200ms, gc_grace: 0s}\n")
	c.prepare()
	c.start(0)
	c.start(1)
	ctx := context.Background()
	tombs := func(i int) int {
		n := 0
		for _, tb := range workload.Tables {
			n += c.count(i, fmt.Sprintf("`%s`.`%s`", c.db, schema.TombTable(tb)))
		}
		return n
	}
	if _, err := workload.Run(ctx, c.dbAt(0), workload.Options{DB: c.db, Seed: 7, Changes: 3000, Keys: 200}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(0, 1, time.Minute)
	testenv.WaitFor(t, time.Minute, "tombstones collected at both sites", func() bool { return tombs(0) == 0 && tombs(1) == 0 })

	// B stops applying: A's deletes from now on must keep their tombstones.
	c.admin(1, "POST", "/v1/appliers/pause")
	if _, err := workload.Run(ctx, c.dbAt(0), workload.Options{DB: c.db, Seed: 8, Changes: 2000, Keys: 200}); err != nil {
		t.Fatal(err)
	}
	kept := tombs(0)
	if kept == 0 {
		t.Fatal("the workload deleted nothing")
	}
	runs := c.metric(0, "tandem_tombstone_gc_runs_total", "")
	testenv.WaitFor(t, 30*time.Second, "five more collection passes at A", func() bool {
		return c.metric(0, "tandem_tombstone_gc_runs_total", "") >= runs+5
	})
	if got := tombs(0); got < kept {
		t.Fatalf("A collected tombstones (%d → %d) while B had not applied them", kept, got)
	}
	c.admin(1, "POST", "/v1/appliers/resume")
	c.waitConverged(0, 1, time.Minute)
	testenv.WaitFor(t, time.Minute, "tombstones collected after B caught up", func() bool { return tombs(0) == 0 && tombs(1) == 0 })
	t.Logf("%d tombstones kept while B lagged, collected once it caught up", kept)
}

// TestLateInsertConverges: an insert that commits after a concurrent
// delete of the same key, with a version below the delete's (its statement
// clock and snapshot predate the delete), is dropped by the other site as
// the rule says; the writing site must remove it too (sink.Reconcile), or
// the two sites differ for good.
func TestLateInsertConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.createTables()
	c.writeConfigs("tombstones: {reconcile_interval: 200ms}\n")
	c.prepare()
	c.start(0)
	c.start(1)
	a := c.dbAt(0)
	items := fmt.Sprintf("`%s`.items", c.db)
	mustExec(t, a, "INSERT INTO "+items+" (id, name, qty, price, updated) VALUES (1, 'first', 1, 1.00, NOW(6))")
	c.waitConverged(0, 1, time.Minute)

	testenv.InsertBehindDelete(t, a, "DELETE FROM "+items+" WHERE id = 1",
		"INSERT INTO "+items+" (id, name, qty, price, updated) VALUES (1, 'late', 2, 2.00, NOW(6))", 5*time.Second)

	c.waitConverged(0, 1, time.Minute)
	if n := c.count(0, items+" WHERE id = 1") + c.count(1, items+" WHERE id = 1"); n != 0 {
		t.Fatalf("key 1 exists at %d sites; the delete has the greater version and must win everywhere", n)
	}
	if got := c.metric(0, "tandem_late_inserts_removed_total", ""); got != 1 {
		t.Errorf("tandem_late_inserts_removed_total at s1 = %v, want 1", got)
	}
}
