package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/sink"
)

// ParkedTopic is the pseudo topic under which the replay of topic's parked
// messages (_tandem_parked, without the tenant registry) stores its
// progress in _tandem_offsets: partition 0, offsets = _tandem_parked ids.
// A replay that committed but was cut off before the parked row was
// marked is recognised as applied, exactly like a Kafka batch.
func ParkedTopic(topic string) string {
	const sep = "~parked"
	if len(topic)+len(sep) <= 249 {
		return topic + sep
	}
	h := sha256.Sum256([]byte(topic))
	return topic[:249-len(sep)-33] + "~" + hex.EncodeToString(h[:16]) + sep
}

// ErrNotReplayable says that a parked message cannot be applied again as
// it is (undecodable, or claiming another origin): skip it.
var ErrNotReplayable = errors.New("parked message cannot be replayed")

// ReplayParked applies a message of this applier's topic that was parked
// (_tandem_parked row id, payload as stored) in a target transaction of
// its own, exactly once: the transaction records id in ParkedTopic's
// offsets row, so ids must be replayed in increasing order, and one that
// is already recorded comes back with Result.AlreadyApplied.
//
// The message is out of its partition's order by now, which
// compare-and-set makes safe: whatever the target received since with a
// greater version stays, and the message's changes are applied where they
// still win. A message whose transaction still fails is returned with the
// error; nothing of it is applied.
func (a *Applier) ReplayParked(ctx context.Context, id int64, payload []byte) (sink.Result, error) {
	if a.ten != nil {
		return sink.Result{}, errors.New("pipeline: with the tenant registry, messages wait in their tenant's dead-letter queue; replay them there")
	}
	t, err := event.Decode(payload)
	if err != nil {
		return sink.Result{}, fmt.Errorf("%w: %v", ErrNotReplayable, err)
	}
	if t.Origin != a.cfg.Origin {
		return sink.Result{}, fmt.Errorf("%w: it claims origin site %d but topic %s carries site %d", ErrNotReplayable, t.Origin, a.cfg.Topic, a.cfg.Origin)
	}
	b := sink.Batch{
		Topic:       ParkedTopic(a.cfg.Topic),
		Partition:   0,
		FirstOffset: id,
		NextOffset:  id + 1,
		Origin:      a.cfg.Origin,
		Epoch:       a.cfg.Epoch(),
		Txns:        []event.Txn{t},
	}
	res, err := a.applyRetrying(ctx, a.sink, b)
	if err != nil {
		return res, err
	}
	if !res.AlreadyApplied {
		a.observeApplied(b.Txns)
		if a.obs != nil {
			a.obs.Applied(a.cfg.Origin, -1, res, b.Txns, time.Now())
		}
	}
	return res, nil
}
