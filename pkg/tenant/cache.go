package tenant

import (
	"bytes"
	"errors"

	"github.com/cockroachdb/pebble"
)

// PebbleCache is a SnapshotCache in the replicator's Pebble store.
type PebbleCache struct{ DB *pebble.DB }

var keySnapshot = []byte("tenant/snapshot")

// LoadSnapshot implements SnapshotCache; nil, nil when none is stored.
func (c PebbleCache) LoadSnapshot() ([]byte, error) {
	v, closer, err := c.DB.Get(keySnapshot)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// SaveSnapshot implements SnapshotCache.
func (c PebbleCache) SaveSnapshot(b []byte) error { return c.DB.Set(keySnapshot, b, pebble.Sync) }
