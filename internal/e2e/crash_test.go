package e2e

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// TestCrashSafety SIGKILLs the replicators at random moments while a
// 200k-change load runs at A, restarting them each time. B must end
// identical to A: nothing lost, nothing applied twice in effect.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := oneWay(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.start(0)
	c.start(1)
	s := seed(t)
	r := rand.New(rand.NewPCG(s, 1))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var st workload.Stats
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		st, werr = workload.Run(ctx, c.dbAt(0), workload.Options{
			DB: c.db, Seed: s, Changes: 200_000, Keys: 8000, TxnRows: 40,
		})
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	// Kill the source-side and the sink-side replicator alternately, at
	// random moments, while the load runs.
	kills, duringLoad := 0, 0
	for kills < 6 {
		wait := time.Duration(500+r.IntN(2500)) * time.Millisecond
		select {
		case <-done:
		case <-time.After(wait): // a random moment, not a synchronisation
		}
		select {
		case <-done:
		default:
			duringLoad++
		}
		victim := kills % 2
		c.kill(victim)
		c.start(victim)
		kills++
	}
	<-done
	if duringLoad < 5 {
		t.Fatalf("only %d of %d SIGKILLs hit while the load ran; the test needs at least 5", duringLoad, kills)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("workload at A: %+v; %d SIGKILLs", st, kills)
	// One more kill after the load, mid catch-up.
	c.kill(1)
	c.start(1)
	res := c.waitConverged(0, 1, 4*time.Minute)
	t.Logf("B equals A after %d kills: rows %v", kills+1, res.Rows)
}
