package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// TestSeedNewSite: site A has replicated data (rows, updates, deletes and
// so tombstones, every column type) and keeps being written while
// `replicator seed` copies it into a new, empty site B. B's replicator then
// starts from the offsets the seed stored, B is written too, and the sites
// converge row by row, versions included; no change is published twice
// (the copy is not B's to publish).
func TestSeedNewSite(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.createTables()
	c.writeConfigs("")
	c.prepare()
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
