package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// TestSourceRestartAndBrokerOutage restarts the source MariaDB mid-stream
// and kills the broker process for 30 s while a load runs at A: the
// replicators neither crash nor lose data, and replication resumes.
func TestSourceRestartAndBrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	a := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 1})
	broker := testenv.NewBroker(t)
	c := oneWay(t, broker, a, testenv.SharedMariaDB(t, 2))
	c.start(0)
	c.start(1)

	ctx := context.Background()
	done := make(chan struct{})
	var st workload.Stats
	var werr error
	go func() {
		defer close(done)
		// About 60 s of writes at 1000 changes/s.
		st, werr = workload.Run(ctx, c.dbAt(0), workload.Options{
			DB: c.db, Seed: seed(t), Changes: 60_000, Keys: 5000, TxnRows: 20, Rate: 1000,
		})
	}()
	pause := func(d time.Duration) { <-time.After(d) } // fault schedule, not synchronisation

	pause(5 * time.Second)
	t.Log("fault: restarting the source MariaDB at A")
	a.Stop(t)
	a.Start(t)

	pause(5 * time.Second)
	t.Log("fault: killing the broker for 30 s")
	broker.Kill(t)
	pause(30 * time.Second)
	if !c.running(0) || !c.running(1) {
		t.Fatal("a replicator exited while the broker was down")
	}
	broker.Start(t)
	t.Log("broker back")

	<-done
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("workload at A: %+v", st)
	res := c.waitConverged(0, 1, 3*time.Minute)
	t.Logf("B equals A after a source restart and a 30 s broker outage: rows %v", res.Rows)
}
