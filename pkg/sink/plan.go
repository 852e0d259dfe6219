package sink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// itemState is where one row of a plan stands.
type itemState uint8

const (
	statePending   itemState = iota // decided Apply, not yet written
	stateApplied                    // written
	stateDuplicate                  // the target already had the version
	stateConflict                   // lost, or broke a unique key; logged
	stateObsolete                   // an initial-load version a later write overtook; counted as superseded
)

// item is one row (schema, table, primary key) of a batch, carrying the
// winning incoming change after collapsing.
type item struct {
	ch  *event.Change
	txn int // index in Batch.Txns of ch's transaction
	lay *layout
	key string // appendKeyPart encoding of the primary key

	// Read under lock.
	present bool          // the row exists
	rowV    hlc.Timestamp // its version
	tombV   hlc.Timestamp // the tombstone's version, 0 if none
	chunk   int           // scratch: the read that asked for this item
	raced   bool          // missing at lookup, but maybe not when written
	// tombRead: tombV was read after this transaction's write, in the
	// write's round trip (run), so checkFresh need not read it again.
	tombRead bool

	state itemState
}

func (it *item) isDelete() bool { return it.ch.Op == event.OpDelete }

// tablePlan is the collapsed changes of one table.
type tablePlan struct {
	meta  *tableMeta
	items []*item // in order of the key's first appearance
	byKey map[string]*item
	// delRank and upsRank order the tables for the delete and the upsert
	// phase: the position in the batch of the first change of a winning
	// delete (upsert). Deleting in source order before upserting in source
	// order keeps what foreign keys and unique keys saw at the source as
	// far as collapsing allows; the one-transaction-at-a-time fallback
	// covers the rest.
	delRank, upsRank int
	// read counts the first items whose row versions the claim's round
	// trip already read (claimAndRead).
	read int
}

// plan is a batch collapsed per row: for every (schema, table, primary key)
// only the change with the greatest version is written, since applying a
// row's changes one by one under compare-and-set ends in the same state.
type plan struct {
	tables []*tablePlan
	rows   int
	// superseded and replays count changes dropped while collapsing: those
	// overtaken by a newer version of the row in the batch, and repeats of
	// the same version.
	superseded, replays int
}

// buildPlan collapses txns (Batch.Txns[base:base+len(txns)]). Problems with
// a change or with the target's schema come back as *PermanentError naming
// the transaction.
func (s *MySQL) buildPlan(ctx context.Context, txns []event.Txn, base int) (*plan, error) {
	p := &plan{}
	tables := map[[2]string]*tablePlan{}
	type lastLayout struct {
		cols *string
		n    int
		lay  *layout
	}
	last := map[*tablePlan]lastLayout{}
	var keyBuf []byte
	for ti := range txns {
		txn := &txns[ti]
		for ci := range txn.Changes {
			ch := &txn.Changes[ci]
			p.rows++
			permanent := func(table string, err error) error {
				return &PermanentError{TxnIndex: base + ti, Table: table, Err: err}
			}
			name := ch.Schema + "." + ch.Table
			if err := checkChange(ch); err != nil {
				return nil, permanent(name, err)
			}
			tk := [2]string{ch.Schema, ch.Table}
			tp := tables[tk]
			if tp == nil {
				m, _, err := s.meta.get(ctx, ch.Schema, ch.Table)
				if err != nil {
					var se *schemaError
					if errors.As(err, &se) {
						return nil, permanent(name, err)
					}
					return nil, err
				}
				tp = &tablePlan{meta: m, byKey: map[string]*item{}, delRank: -1, upsRank: -1}
				tables[tk] = tp
				p.tables = append(p.tables, tp)
			}
			// Changes of one table map share their Columns slice; compare
			// its identity before building a key from the names.
			var lay *layout
			if ll, ok := last[tp]; ok && ll.n == len(ch.Columns) && ll.cols == unsafe.SliceData(ch.Columns) {
				lay = ll.lay
			} else {
				var err error
				if lay, err = s.layoutFor(ctx, tp, ch.Columns); err != nil {
					var se *schemaError
					if errors.As(err, &se) {
						return nil, permanent(name, err)
					}
					return nil, err
				}
				last[tp] = lastLayout{cols: unsafe.SliceData(ch.Columns), n: len(ch.Columns), lay: lay}
			}
			keyBuf = keyBuf[:0]
			for _, i := range lay.pk {
				keyBuf = appendKeyPart(keyBuf, ch.Row[i])
			}
			if prev := tp.byKey[string(keyBuf)]; prev != nil {
				switch c := s.cfg.Policy.Compare(ch.Version, prev.ch.Version); {
				case c > 0:
					prev.ch, prev.txn, prev.lay = ch, base+ti, lay
					p.superseded++
				case c == 0:
					p.replays++ // the same version again: a replay
				default:
					p.superseded++
				}
				continue
			}
			it := &item{ch: ch, txn: base + ti, lay: lay, key: string(keyBuf), chunk: -1}
			tp.byKey[it.key] = it
			tp.items = append(tp.items, it)
		}
	}
	// Rank tables by the first appearance of a winning delete and upsert.
	// Items are in first-appearance order, so the first item of a kind
	// gives the table's rank in that kind's phase; a running counter over
	// tables in first-appearance order preserves the source order.
	rank := 0
	for _, tp := range p.tables {
		for _, it := range tp.items {
			rank++
			if it.isDelete() && tp.delRank < 0 {
				tp.delRank = rank
			}
			if !it.isDelete() && tp.upsRank < 0 {
				tp.upsRank = rank
			}
		}
	}
	return p, nil
}

// phaseOrder returns the tables that have items of the phase, in rank order.
func (p *plan) phaseOrder(deletes bool) []*tablePlan {
	var out []*tablePlan
	for _, tp := range p.tables {
		if r := tp.rank(deletes); r >= 0 {
			out = append(out, tp)
		}
	}
	slices.SortStableFunc(out, func(a, b *tablePlan) int { return a.rank(deletes) - b.rank(deletes) })
	return out
}

func (tp *tablePlan) rank(deletes bool) int {
	if deletes {
		return tp.delRank
	}
	return tp.upsRank
}

// layoutFor maps a source column list onto tp's table; when a column is
// missing it reads the table's metadata again once, in case the target
// was altered since it was cached.
func (s *MySQL) layoutFor(ctx context.Context, tp *tablePlan, cols []string) (*layout, error) {
	lay, err := tp.meta.layoutFor(cols, s.cfg.VersionColumn)
	var se *schemaError
	if err == nil || !errors.As(err, &se) {
		return lay, err
	}
	s.meta.invalidate(tp.meta.schema, tp.meta.table)
	m, _, merr := s.meta.get(ctx, tp.meta.schema, tp.meta.table)
	if merr != nil {
		return nil, merr
	}
	tp.meta = m
	return m.layoutFor(cols, s.cfg.VersionColumn)
}

// checkChange rejects a change no target could apply.
func checkChange(ch *event.Change) error {
	switch {
	case ch.Op != event.OpInsert && ch.Op != event.OpUpdate && ch.Op != event.OpDelete:
		return fmt.Errorf("change has unknown operation %v", ch.Op)
	case len(ch.Row) != len(ch.Columns):
		return fmt.Errorf("change has %d values for %d columns", len(ch.Row), len(ch.Columns))
	case ch.Version == 0:
		return errors.New("change has no version")
	}
	return nil
}

// decide sets it.state from the versions read under lock.
func decide(p conflict.Policy, it *item, site uint8) conflict.Decision {
	return p.Resolve(localVersion(p, it, site), it.ch.Version)
}

// localVersion is the version it's incoming change competes with at this
// site: the row's (when present) or its tombstone's, whichever wins.
//
// Against an initial-load change (hlc.InitialLoad, from `replicator
// backfill` at the origin) a row still at version 0 — it existed here
// before replication and this site's backfill has not stamped it yet —
// counts as this site's initial-load version, which it is about to get.
// So two sites' pre-existing copies of a row settle on the higher site
// id's whichever backfill runs first: without this, the first one to
// arrive would overwrite the other site's version-0 copy before that
// site could stamp and publish it.
func localVersion(p conflict.Policy, it *item, site uint8) hlc.Timestamp {
	var row hlc.Timestamp
	if it.present {
		row = it.rowV
		if row == 0 && it.ch.Version.IsInitialLoad() {
			row = hlc.InitialLoad(site)
		}
	}
	return p.Max(row, it.tombV)
}
