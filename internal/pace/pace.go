// Package pace spreads work evenly over time: a loop that has done n units
// since start waits until n units are due at a rate, so that it never runs
// ahead of the rate however fast each step is (a workload generator, the
// backfill's --rate).
package pace

import (
	"context"
	"time"
)

// Wait blocks until done units are due at rate units per second since
// start, or until ctx ends (returning its error). A rate of 0 or less
// means no limit.
func Wait(ctx context.Context, start time.Time, done int, rate float64) error {
	if rate <= 0 {
		return nil
	}
	d := time.Until(start.Add(time.Duration(float64(done) / rate * float64(time.Second))))
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
