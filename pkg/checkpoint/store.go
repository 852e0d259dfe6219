// Package checkpoint keeps the replicator's local durable state in Pebble
// and turns out-of-order publish acknowledgements into a safe resume
// position.
//
// The invariant (DESIGN.md §5): the stored binlog position only ever names
// a transaction boundary, and only once Kafka has acknowledged every
// transaction before it. Restarting from it can publish duplicates (harmless:
// sinks compare-and-set) but never skips a transaction.
package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/tandemdb/tandem/pkg/event"
)

var (
	keyPosition = []byte("reader/position")
	keyHLCBound = []byte("hlc/upper-bound")
)

// Store is the Pebble-backed local state of one replicator.
type Store struct {
	db *pebble.DB
}

// Open opens (creating if needed) the state directory.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("checkpoint: state_dir is empty; set state_dir to a writable directory")
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open state dir %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// DB exposes the Pebble handle to other local-state users (parked events).
// They must keep to their own key prefix.
func (s *Store) DB() *pebble.DB { return s.db }

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Position returns the last saved reader position, ok=false if none.
func (s *Store) Position() (pos event.Position, ok bool, err error) {
	v, closer, err := s.db.Get(keyPosition)
	if errors.Is(err, pebble.ErrNotFound) {
		return event.Position{}, false, nil
	}
	if err != nil {
		return event.Position{}, false, fmt.Errorf("checkpoint: read position: %w", err)
	}
	defer closer.Close()
	if err := json.Unmarshal(v, &pos); err != nil {
		return event.Position{}, false, fmt.Errorf("checkpoint: stored position is corrupt (%q): %w", v, err)
	}
	return pos, true, nil
}

// SavePosition durably records pos (fsync), replacing the previous one.
func (s *Store) SavePosition(pos event.Position) error {
	b, err := json.Marshal(pos)
	if err != nil {
		return fmt.Errorf("checkpoint: encode position: %w", err)
	}
	if err := s.db.Set(keyPosition, b, pebble.Sync); err != nil {
		return fmt.Errorf("checkpoint: save position %s: %w", pos, err)
	}
	return nil
}

// ResetPosition deletes the saved position (operator action after the
// source's binlog was purged past it).
func (s *Store) ResetPosition() error {
	return s.db.Delete(keyPosition, pebble.Sync)
}

// LoadUpperBound implements hlc.UpperBoundStore.
func (s *Store) LoadUpperBound() (uint64, error) {
	v, closer, err := s.db.Get(keyHLCBound)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("checkpoint: stored HLC upper bound has %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SaveUpperBound implements hlc.UpperBoundStore.
func (s *Store) SaveUpperBound(wallMillis uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], wallMillis)
	return s.db.Set(keyHLCBound, b[:], pebble.Sync)
}

// quietLogger drops Pebble's informational chatter; errors still surface
// through return values.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
