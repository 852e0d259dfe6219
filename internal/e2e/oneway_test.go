package e2e

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// oneWay builds sites A and B where B applies A's topic (A applies nothing).
func oneWay(t *testing.T, broker *testenv.Broker, a, b *testenv.MariaDB) *cluster {
	c := newCluster(t, broker, a, b)
	c.peers[0] = []int{}  // A applies nobody
	c.peers[1] = []int{0} // B applies A
	c.createTables()
	c.writeConfigs("")
	c.prepare()
	return c
}

func seed(t *testing.T) uint64 {
	s := rand.Uint64()
	t.Logf("seed %d", s)
	return s
}

// TestOneWayMixedWorkload: 100k mixed inserts/updates/deletes at A over
// three tables (one with a composite key, one with every column type) while
// replicating; B ends identical to A, row by row.
func TestOneWayMixedWorkload(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := oneWay(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.start(0)
	c.start(1)
	st, err := workload.Run(context.Background(), c.dbAt(0), workload.Options{
		DB: c.db, Seed: seed(t), Changes: 100_000, Keys: 5000, TxnRows: 40,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("workload at A: %+v", st)
	res := c.waitConverged(0, 1, 3*time.Minute)
	t.Logf("B equals A: rows %v", res.Rows)
	for _, tb := range workload.Tables {
		if res.Rows[c.db+"."+tb] == 0 {
			t.Errorf("table %s is empty: the workload did not exercise it", tb)
		}
	}
}
