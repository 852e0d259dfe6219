package pipeline

import (
	"time"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// StageFunc receives how long after its source commit a transaction
// reached a stage of the pipeline: "read" (the origin's binlog reader has
// it, encoded), "acked" (Kafka acknowledged it), "fetched" (a peer's apply
// loop took it from Kafka into a batch, so after the batch before it
// committed) and "applied" (committed at the peer). All four are
// measured from the same point, so the differences between their
// distributions show where lag accrues. rows is the number of row changes
// of the transaction (a message), so that small transactions waiting
// behind bulk ones can be told apart from the bulk ones themselves. It
// must be cheap and safe for concurrent use.
type StageFunc func(stage string, rows int, sinceCommit time.Duration)

// CommitTime is when t's source transaction wrote its rows, to the
// millisecond: the wall time of the greatest version among its changes
// (the triggers stamp versions with the writing transaction's clock). It
// is zero for a transaction without versioned changes. The origin's clock
// and the receiver's are compared, so across hosts the stages include
// their clock offset, exactly like the heartbeat lag.
func CommitTime(t *event.Txn) time.Time {
	var v uint64
	for i := range t.Changes {
		v = max(v, uint64(t.Changes[i].Version))
	}
	if hlc.Timestamp(v).WallMillis() == 0 {
		// No version, or an initial-load version (replicator backfill):
		// not a commit time.
		return time.Time{}
	}
	return hlc.Timestamp(v).Time()
}
