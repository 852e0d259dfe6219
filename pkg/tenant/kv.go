package tenant

import (
	"errors"

	"github.com/cockroachdb/pebble"
)

// KV is the ordered key-value store the queues live in: the replicator's
// Pebble store (PebbleKV), or, under site-level HA, a table of the site's
// database that every replicator of the site reaches (the replicator's
// sqlKV), so that a replicator taking over finds the queues.
type KV interface {
	// Has reports whether key exists.
	Has(key []byte) (bool, error)
	// Write applies sets and deletes atomically and durably.
	Write(sets []KVPair, dels [][]byte) error
	// Scan calls fn with the pairs whose keys lie in [lower, upper) in
	// key order (bytewise), until fn returns false. upper nil means no
	// bound. key and value are valid only during the call.
	Scan(lower, upper []byte, fn func(key, value []byte) bool) error
}

// KVPair is one key and its value.
type KVPair struct{ Key, Value []byte }

// PebbleKV is a KV in a Pebble store; every write is synced.
type PebbleKV struct{ DB *pebble.DB }

// Has implements KV.
func (p PebbleKV) Has(key []byte) (bool, error) {
	_, closer, err := p.DB.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// Write implements KV.
func (p PebbleKV) Write(sets []KVPair, dels [][]byte) error {
	b := p.DB.NewBatch()
	defer b.Close()
	for _, s := range sets {
		if err := b.Set(s.Key, s.Value, nil); err != nil {
			return err
		}
	}
	for _, k := range dels {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// Scan implements KV.
func (p PebbleKV) Scan(lower, upper []byte, fn func(key, value []byte) bool) error {
	it, err := p.DB.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if !fn(it.Key(), it.Value()) {
			break
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	return it.Close()
}
