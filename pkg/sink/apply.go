package sink

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// Conflict kinds in _tandem_conflicts.kind.
const (
	kindLost      = "lost"
	kindUniqueKey = "unique_key"
	kindHomeOnly  = "home_only_violation"
)

// dataError is a data-shaped failure of a statement (see isDataError): the
// batch cannot be applied as collapsed, and Apply retries it one source
// transaction at a time to find the culprit (or to succeed, when only the
// collapsed order was at fault).
type dataError struct {
	m   *tableMeta
	err error
}

func (e *dataError) Error() string { return fmt.Sprintf("%s: %v", e.m.name, e.err) }
func (e *dataError) Unwrap() error { return e.err }

// conflictRow is one row for _tandem_conflicts.
type conflictRow struct {
	m        *tableMeta
	it       *item
	kind     string
	local    hlc.Timestamp
	incoming hlc.Timestamp
	detail   string
}

// applier writes plans inside one open target transaction.
type applier struct {
	s         *MySQL
	tx        stmtRunner  // the apply transaction's connection
	txns      []event.Txn // the batch's, indexed by item.txn
	conflicts []conflictRow
	// deleted and tombstones count rows deleted and tombstones written.
	deleted, tombstones int

	buf   []byte // statement being built
	tup   []byte // one row's tuple, before it joins the statement
	chunk int    // sequence number of the current multi-key read
	raw   []sql.RawBytes
	scan  []any

	// merge lets the data-changing statements of a batch be queued and
	// sent several per round trip (see queue and flush); false runs each
	// on its own.
	merge        bool
	pending      []pendingStmt
	pendingBytes int
}

// doneFunc receives a statement's affected-row count and the items it
// wrote.
type doneFunc func(affected int64, chunk []*item)

// pendingStmt is a queued data-changing statement.
type pendingStmt struct {
	m     *tableMeta
	q     string
	chunk []*item
	done  doneFunc // nil: nothing to learn from the result
}

// mergedError says that statements sent in one round trip came back with
// fewer results than statements and no error to tell which one stopped
// them (flush; not seen with MariaDB or MySQL). Apply runs the batch again
// one statement per round trip.
type mergedError struct {
	n   int
	err error
}

func (e *mergedError) Error() string {
	return fmt.Sprintf("sink: one of %d statements sent together failed: %v", e.n, e.err)
}
func (e *mergedError) Unwrap() error { return e.err }

// stmtBudget is the size a multi-row statement is cut at; rowLimit the size
// one row's statement may not exceed.
func (a *applier) stmtBudget() int { return min(a.rowLimit(), 4<<20) }
func (a *applier) rowLimit() int   { return int(a.s.maxPacket.Load()) - 4096 }

// run applies a plan: read every row's version under lock, decide, delete,
// upsert.
func (a *applier) run(ctx context.Context, p *plan) error {
	pol := a.s.cfg.Policy
	homeOnly := pol.HomeSite != 0
	for _, tp := range p.tables {
		if err := a.lookup(ctx, tp, tp.items[tp.read:], readRows); err != nil {
			return err
		}
	}
	for _, tp := range p.tables {
		// A row that exists beats its tombstone (writers only recreate a
		// row with a winning version), so only missing rows need the
		// tombstone read, except under a home-only policy, where a local
		// non-home write may have recreated a row over a home tombstone.
		var need []*item
		for _, it := range tp.items {
			if homeOnly || it.isDelete() && !it.present {
				need = append(need, it)
			}
		}
		if err := a.lookup(ctx, tp, need, readTombs); err != nil {
			return err
		}
	}
	for _, tp := range p.tables {
		for _, it := range tp.items {
			switch decide(pol, it, a.s.cfg.Site) {
			case conflict.Apply:
				it.state = statePending
			case conflict.Duplicate:
				it.state = stateDuplicate
				if it.isDelete() && it.present && pol.Compare(it.ch.Version, it.rowV) > 0 {
					// The tombstone is this delete's, yet a row it beats
					// exists: under a home-only policy a non-home write
					// recreated the row over the home site's delete, and
					// the home site sent the delete again to remove it
					// (internal/replicator/reassert.go).
					it.state = statePending
				}
			default:
				a.lose(tp.meta, it, localVersion(pol, it, a.s.cfg.Site), kindLost, "")
			}
		}
	}
	// The writes of every table go out together (queue), deletes first;
	// then the rows that were missing are checked against tombstones.
	for _, tp := range p.phaseOrder(true) {
		if err := a.deletes(ctx, tp); err != nil {
			return err
		}
	}
	ups := p.phaseOrder(false)
	for _, tp := range ups {
		if err := a.upserts(ctx, tp); err != nil {
			return err
		}
	}
	reads, err := a.freshReads(ups)
	if err != nil {
		return err
	}
	if err := a.flush(ctx, reads...); err != nil {
		return err
	}
	for _, r := range reads {
		if err := a.finishRead(ctx, r); err != nil {
			return err
		}
	}
	for _, tp := range ups {
		if err := a.checkFresh(ctx, tp, fresh(tp)); err != nil {
			return err
		}
	}
	return a.flush(ctx)
}

// lose records that it lost to the local version current: a conflict of
// kind (kindLost or kindUniqueKey).
func (a *applier) lose(m *tableMeta, it *item, current hlc.Timestamp, kind, detail string) {
	if kind == kindLost && it.ch.Version.IsInitialLoad() {
		if !current.IsInitialLoad() {
			// A copy of the row from before replication lost to a
			// write made since: out of date, not a conflict.
			it.state = stateObsolete
			return
		}
		// Both sites held the row before replication (the same or
		// different contents: the sink does not read them); the higher
		// site id's copy is kept everywhere. Worth a look, so logged.
		detail = "initial load: both sites held this row before replication started; the copy of the site with the higher id is kept"
	}
	it.state = stateConflict
	if h := a.s.cfg.Policy.HomeSite; kind == kindLost && h != 0 && current.Site() == h && it.ch.Version.Site() != h && it.ch.Version > current {
		// It would have won on its HLC: a write at a non-home site of a
		// home-only tenant.
		kind = kindHomeOnly
	}
	a.conflicts = append(a.conflicts, conflictRow{m: m, it: it, kind: kind, local: current, incoming: it.ch.Version, detail: detail})
}

// maxLookupKeys bounds the keys of one lookup. Lookups are cheap next to
// writes and their round trips are not: one lookup covers the rows of
// several multi-row writes.
const maxLookupKeys = 1000

// readMode says what lookup reads.
type readMode uint8

const (
	readRows  readMode = iota // the row's version → present, rowV
	readTombs                 // the tombstone's version → tombV
	readAfter                 // the row's and the tombstone's, after an upsert
)

// lookup reads the versions of items under lock (FOR UPDATE), in multi-key
// statements. Rows come back as text and are matched to items by their key
// text; a row that matches no item (a collation that ignores case or
// trailing spaces, a type the text form renders differently) sends the
// chunk's unmatched items through one-key statements, which need no
// matching.
func (a *applier) lookup(ctx context.Context, tp *tablePlan, items []*item, mode readMode) error {
	for len(items) > 0 {
		r, rest, err := a.newRead(tp, items, mode)
		if err != nil {
			return err
		}
		items = rest
		if err := a.query(ctx, tp.meta, r.q, r.ncols(), r.row); err != nil {
			return err
		}
		if err := a.finishRead(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// read is one multi-key read of lookup: its statement, the items it asks
// for, and what its rows matched.
type read struct {
	tp        *tablePlan
	mode      readMode
	q         string
	chunk     []*item
	id        int // the items' chunk number
	seen      map[*item]bool
	unmatched int
}

func (r *read) ncols() int { return len(r.tp.meta.pk) + r.mode.extra() }

// newRead builds the read of the first items (up to maxLookupKeys and the
// statement budget) and returns the rest.
func (a *applier) newRead(tp *tablePlan, items []*item, mode readMode) (*read, []*item, error) {
	m := tp.meta
	a.chunk++
	r := &read{tp: tp, mode: mode, id: a.chunk, seen: map[*item]bool{}}
	a.buf = a.selectHead(a.buf[:0], m, mode)
	a.buf = a.appendInHead(a.buf, m, mode)
	n := 0
	for _, it := range items {
		if n == maxLookupKeys || n > 0 && len(a.buf) > a.stmtBudget() {
			break
		}
		if n > 0 {
			a.buf = append(a.buf, ',')
		}
		var err error
		if a.buf, err = appendKeyTuple(a.buf, m, it); err != nil {
			return nil, nil, a.permanent(m, it, err)
		}
		it.chunk = r.id
		n++
	}
	a.buf = append(a.buf, ") FOR UPDATE"...)
	r.q = string(a.buf)
	r.chunk = items[:n]
	return r, items[n:], nil
}

// row matches one row of the read to its item by key text.
func (r *read) row(raw []sql.RawBytes) error {
	m := r.tp.meta
	var key []byte
	for _, c := range raw[:len(m.pk)] {
		key = appendRawKeyPart(key, c)
	}
	it := r.tp.byKey[string(key)]
	if it == nil || it.chunk != r.id || r.seen[it] {
		r.unmatched++
		return nil
	}
	r.seen[it] = true
	return setVersions(it, raw[len(m.pk):], r.mode)
}

// finishRead reads, one key per statement, the items of a read that came
// back with a row matching none of them.
func (a *applier) finishRead(ctx context.Context, r *read) error {
	if r.unmatched == 0 {
		return nil
	}
	m := r.tp.meta
	for _, it := range r.chunk {
		if r.seen[it] {
			continue
		}
		a.buf = a.selectHead(a.buf[:0], m, r.mode)
		a.buf = append(a.buf, " WHERE "...)
		var err error
		if a.buf, err = appendKeyEq(a.buf, m, it, r.mode.alias()); err != nil {
			return a.permanent(m, it, err)
		}
		a.buf = append(a.buf, " FOR UPDATE"...)
		if err := a.query(ctx, m, string(a.buf), r.ncols(), func(raw []sql.RawBytes) error {
			return setVersions(it, raw[len(m.pk):], r.mode)
		}); err != nil {
			return err
		}
	}
	return nil
}

func (mode readMode) extra() int {
	if mode == readAfter {
		return 2
	}
	return 1
}

func (mode readMode) alias() string {
	if mode == readAfter {
		return "r."
	}
	return ""
}

func (a *applier) selectHead(b []byte, m *tableMeta, mode readMode) []byte {
	b = append(b, "SELECT "...)
	switch mode {
	case readAfter:
		// The row is locked by this transaction's upsert; the join reads
		// the tombstone with a lock too, so it waits for a concurrent
		// delete that wrote one and is not yet committed.
		for _, c := range m.pk {
			b = append(b, "r."...)
			b = appendQuotedIdent(b, c)
			b = append(b, ',')
		}
		b = append(b, "r."...)
		b = append(b, m.qVersion...)
		b = append(b, ",b."...)
		b = append(b, m.qVersion...)
		b = append(b, " FROM "...)
		b = append(b, m.qTable...)
		b = append(b, " r LEFT JOIN "...)
		b = append(b, m.qTomb...)
		b = append(b, " b ON "...)
		for i, c := range m.pk {
			if i > 0 {
				b = append(b, " AND "...)
			}
			b = append(b, "b."...)
			b = appendQuotedIdent(b, c)
			b = append(b, "=r."...)
			b = appendQuotedIdent(b, c)
		}
		return b
	default:
		for _, c := range m.pk {
			b = appendQuotedIdent(b, c)
			b = append(b, ',')
		}
		b = append(b, m.qVersion...)
		b = append(b, " FROM "...)
		if mode == readTombs {
			return append(b, m.qTomb...)
		}
		return append(b, m.qTable...)
	}
}

// appendInHead appends " WHERE pk IN (" (a row constructor for a
// composite key; MariaDB and MySQL use range access on the key for both).
func (a *applier) appendInHead(b []byte, m *tableMeta, mode readMode) []byte {
	b = append(b, " WHERE "...)
	if len(m.pk) > 1 {
		b = append(b, '(')
	}
	for i, c := range m.pk {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, mode.alias()...)
		b = appendQuotedIdent(b, c)
	}
	if len(m.pk) > 1 {
		b = append(b, ')')
	}
	return append(b, " IN ("...)
}

// appendKeyTuple appends it's key as a literal or row constructor.
func appendKeyTuple(b []byte, m *tableMeta, it *item) ([]byte, error) {
	if len(it.lay.pk) > 1 {
		b = append(b, '(')
	}
	for i, src := range it.lay.pk {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendLiteral(b, it.ch.Row[src], colPlain); err != nil {
			return b, fmt.Errorf("primary key column %s: %w", m.pk[i], err)
		}
	}
	if len(it.lay.pk) > 1 {
		b = append(b, ')')
	}
	return b, nil
}

// appendKeyEq appends "pk1 = v1 AND pk2 = v2".
func appendKeyEq(b []byte, m *tableMeta, it *item, alias string) ([]byte, error) {
	for i, src := range it.lay.pk {
		if i > 0 {
			b = append(b, " AND "...)
		}
		b = append(b, alias...)
		b = appendQuotedIdent(b, m.pk[i])
		b = append(b, " = "...)
		var err error
		if b, err = appendLiteral(b, it.ch.Row[src], colPlain); err != nil {
			return b, fmt.Errorf("primary key column %s: %w", m.pk[i], err)
		}
	}
	return b, nil
}

// setVersions stores the version columns of a row read by lookup.
func setVersions(it *item, raw []sql.RawBytes, mode readMode) error {
	v, err := parseVersion(raw[0])
	if err != nil {
		return err
	}
	switch mode {
	case readRows:
		it.present, it.rowV = true, v
	case readTombs:
		it.tombV = v
	case readAfter:
		it.present, it.rowV = true, v
		if it.tombV, err = parseVersion(raw[1]); err != nil {
			return err
		}
	}
	return nil
}

// parseVersion parses a BIGINT UNSIGNED in text form; NULL is 0.
func parseVersion(b []byte) (hlc.Timestamp, error) {
	if b == nil {
		return 0, nil
	}
	var v uint64
	for _, c := range b {
		d := uint64(c - '0')
		if c < '0' || c > '9' || v > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("sink: version column holds %q, not a BIGINT UNSIGNED", b)
		}
		v = v*10 + d
	}
	return hlc.Timestamp(v), nil
}

// deletes applies tp's winning deletes: the tombstone first, then the row.
func (a *applier) deletes(ctx context.Context, tp *tablePlan) error {
	m := tp.meta
	var items []*item
	for _, it := range tp.items {
		if it.isDelete() && it.state == statePending {
			items = append(items, it)
		}
	}
	if len(items) == 0 {
		return nil
	}
	// The tombstone is written even when the row is missing, so that a
	// late, older insert of the row loses.
	head := []byte("INSERT INTO " + m.qTomb + " (")
	for _, c := range m.pk {
		head = appendQuotedIdent(head, c)
		head = append(head, ',')
	}
	head = append(head, m.qVersion+") VALUES "...)
	tail := " ON DUPLICATE KEY UPDATE " + m.qVersion + " = IF(" + m.wins("VALUES("+m.qVersion+")", m.qVersion) +
		", VALUES(" + m.qVersion + "), " + m.qVersion + ")"
	err := a.multiRow(ctx, m, items, head, tail, ",", func(b []byte, it *item) ([]byte, error) {
		b = append(b, '(')
		b, err := appendKeyTupleFlat(b, m, it)
		if err != nil {
			return b, err
		}
		b = append(b, ',')
		b = strconv.AppendUint(b, uint64(it.ch.Version), 10)
		return append(b, ')'), nil
	}, nil)
	if err != nil {
		return err
	}
	// Then the rows whose version the delete beats. DELETE reads each key
	// with a lock, so it also waits for, and then removes, a row that a
	// concurrent transaction inserted after the lookup found none; that
	// transaction's own post-upsert check sees this tombstone otherwise
	// (see checkFresh).
	head = []byte("DELETE FROM " + m.qTable + " WHERE ")
	return a.multiRow(ctx, m, items, head, "", " OR ", func(b []byte, it *item) ([]byte, error) {
		b = append(b, '(')
		b, err := appendKeyEq(b, m, it, "")
		if err != nil {
			return b, err
		}
		b = append(b, " AND "...)
		b = append(b, m.wins(strconv.FormatUint(uint64(it.ch.Version), 10), m.qVersion)...)
		return append(b, ')'), nil
	}, func(n int64, chunk []*item) {
		a.deleted += int(n)
		a.tombstones += len(chunk)
		for _, it := range chunk {
			it.state = stateApplied
		}
	})
}

// appendKeyTupleFlat appends the key values separated by commas.
func appendKeyTupleFlat(b []byte, m *tableMeta, it *item) ([]byte, error) {
	for i, src := range it.lay.pk {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendLiteral(b, it.ch.Row[src], colPlain); err != nil {
			return b, fmt.Errorf("primary key column %s: %w", m.pk[i], err)
		}
	}
	return b, nil
}

// rowFunc appends one row's part of a multi-row statement.
type rowFunc func(b []byte, it *item) ([]byte, error)

// multiRow writes items in statements head + row(it) + sep + … + tail, cut
// at MaxRowsPerStatement rows and at the statement budget, and calls done
// (when not nil) with each statement's affected rows and items, once the
// statement ran (see queue). A row too large for max_allowed_packet on its
// own is a PermanentError of its transaction.
func (a *applier) multiRow(ctx context.Context, m *tableMeta, items []*item, head []byte, tail, sep string,
	row rowFunc, done doneFunc) error {
	for len(items) > 0 {
		a.buf = append(a.buf[:0], head...)
		n := 0
		for _, it := range items {
			if n == a.s.cfg.MaxRowsPerStatement {
				break
			}
			var err error
			if a.tup, err = row(a.tup[:0], it); err != nil {
				return a.permanent(m, it, err)
			}
			if len(head)+len(a.tup)+len(tail) > a.rowLimit() {
				return a.permanent(m, it, fmt.Errorf("the row's statement is %d bytes, more than the target's max_allowed_packet (%d) allows",
					len(head)+len(a.tup)+len(tail), a.s.maxPacket.Load()))
			}
			if n > 0 && len(a.buf)+len(sep)+len(a.tup)+len(tail) > a.stmtBudget() {
				break
			}
			if n > 0 {
				a.buf = append(a.buf, sep...)
			}
			a.buf = append(a.buf, a.tup...)
			n++
		}
		a.buf = append(a.buf, tail...)
		chunk := items[:n]
		items = items[n:]
		if err := a.queue(ctx, m, string(a.buf), chunk, done); err != nil {
			return err
		}
	}
	return nil
}

// queue runs a data-changing statement, or, when the applier merges
// statements, holds it for the next flush. A busy server spends more time
// handing a small statement's round trip to and from its thread than
// running it, and the apply loop is what the replication lag queues
// behind: sent together, a batch's tombstones, deletes and upserts of
// every table take one round trip instead of one each.
func (a *applier) queue(ctx context.Context, m *tableMeta, q string, chunk []*item, done doneFunc) error {
	if !a.merge {
		res, err := a.exec(ctx, m, q)
		if err != nil {
			return err
		}
		if done != nil {
			n, _ := res.RowsAffected()
			done(n, chunk)
		}
		return nil
	}
	if len(a.pending) > 0 && a.pendingBytes+len(q)+len(rowCount) > a.stmtBudget() {
		if err := a.flush(ctx); err != nil {
			return err
		}
	}
	a.pending = append(a.pending, pendingStmt{m: m, q: q, chunk: chunk, done: done})
	a.pendingBytes += len(q) + len(rowCount)
	return nil
}

// rowCount follows every write of a merged round trip (flush).
const rowCount = ";SELECT ROW_COUNT();"

// resultSets walks the results of a multi-statement query, one result
// per statement that returns rows.
type resultSets struct {
	rows    *sql.Rows
	started bool
}

// errNoResult: a multi-statement query ended before its last statement
// without an error.
var errNoResult = errors.New("the server sent fewer results than statements")

// next moves to the next result; false when there is none (rows.Err()
// says why, nil when the server sent fewer than expected). go-sql-driver
// moves past a first statement's result without columns (a write) by
// itself, and NextResultSet past the others.
func (r *resultSets) next() bool {
	if !r.started {
		r.started = true
		if cols, err := r.rows.Columns(); err == nil && len(cols) > 0 {
			return true
		}
	}
	return r.rows.NextResultSet()
}

// count reads the current result's one number (a SELECT ROW_COUNT()).
func (r *resultSets) count() (int64, error) {
	var n int64
	for r.rows.Next() {
		if err := r.rows.Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, r.rows.Err()
}

// flush sends the queued statements, then reads, in one round trip (a
// multi-statement query; the sink's connections allow them, see
// MySQL.multi). Each write is followed by SELECT ROW_COUNT(), which hands
// it its affected rows and tells which statement an error belongs to: the
// server stops at the failing one. A single write goes alone.
func (a *applier) flush(ctx context.Context, reads ...*read) error {
	pend := a.pending
	a.pending, a.pendingBytes = nil, 0
	if len(pend)+len(reads) == 0 {
		return nil
	}
	if len(pend) == 1 && len(reads) == 0 {
		p := pend[0]
		res, err := a.exec(ctx, p.m, p.q)
		if err != nil {
			return err
		}
		if p.done != nil {
			n, _ := res.RowsAffected()
			p.done(n, p.chunk)
		}
		return nil
	}
	a.buf = a.buf[:0]
	for _, p := range pend {
		a.buf = append(a.buf, p.q...)
		a.buf = append(a.buf, rowCount...)
	}
	for _, r := range reads {
		a.buf = append(a.buf, r.q...)
		a.buf = append(a.buf, ';')
	}
	q := string(a.buf[:len(a.buf)-1])
	first := func() *tableMeta {
		if len(pend) > 0 {
			return pend[0].m
		}
		return reads[0].tp.meta
	}
	rows, err := a.tx.QueryContext(ctx, q)
	if err != nil {
		return a.stmtError(first(), err)
	}
	defer rows.Close()
	rs := resultSets{rows: rows}
	next := func(m *tableMeta) error {
		if rs.next() {
			return nil
		}
		if err := rows.Err(); err != nil {
			return a.stmtError(m, err)
		}
		return &mergedError{n: len(pend) + len(reads), err: errNoResult}
	}
	for _, p := range pend {
		if err := next(p.m); err != nil {
			return err
		}
		n, err := rs.count()
		if err != nil {
			return a.stmtError(p.m, err)
		}
		if p.done != nil {
			p.done(n, p.chunk)
		}
	}
	for _, r := range reads {
		if err := next(r.tp.meta); err != nil {
			return err
		}
		if err := a.scanRows(rows, r.tp.meta, r.ncols(), r.row); err != nil {
			return err
		}
	}
	if err := rows.Close(); err != nil {
		return a.stmtError(first(), err)
	}
	return nil
}

// upserts applies tp's winning inserts and updates.
func (a *applier) upserts(ctx context.Context, tp *tablePlan) error {
	m := tp.meta
	// One statement shape per source column list; several only when the
	// source table was altered within the batch.
	var layouts []*layout
	groups := map[*layout][]*item{}
	for _, it := range tp.items {
		if it.isDelete() || it.state != statePending {
			continue
		}
		if groups[it.lay] == nil {
			layouts = append(layouts, it.lay)
		}
		groups[it.lay] = append(groups[it.lay], it)
	}
	for _, lay := range layouts {
		items := groups[lay]
		if !m.unique {
			// INSERT … ON DUPLICATE KEY UPDATE with the compare-and-set on
			// every column: one statement for new and existing rows.
			if err := a.multiRow(ctx, m, items, []byte(lay.insertHead), lay.odku, ",", a.tupleFunc(m), a.upserted); err != nil {
				return err
			}
		} else if err := a.upsertsUnique(ctx, m, lay, items); err != nil {
			return err
		}
	}
	return nil
}

// freshReads returns, when statements are merged, the reads of the
// tombstones of every upserted row that was missing at the lookup, to be
// sent after the writes in their round trip: checkFresh needs them read
// after the write. (A row a concurrent writer inserted since the lookup,
// raced, is read again in full by checkFresh.) Reads that would make the
// round trip too large are left to checkFresh.
func (a *applier) freshReads(ups []*tablePlan) ([]*read, error) {
	if !a.merge {
		return nil, nil
	}
	var reads []*read
	size := a.pendingBytes
	for _, tp := range ups {
		var missing []*item
		for _, it := range tp.items {
			if !it.isDelete() && !it.present && (it.state == statePending || it.state == stateApplied) {
				missing = append(missing, it)
			}
		}
		for len(missing) > 0 {
			r, rest, err := a.newRead(tp, missing, readTombs)
			if err != nil {
				return nil, err
			}
			if size += len(r.q) + 1; size > a.stmtBudget() {
				return reads, nil
			}
			for _, it := range r.chunk {
				it.tombV, it.tombRead = 0, true
			}
			reads = append(reads, r)
			missing = rest
		}
	}
	return reads, nil
}

// fresh returns tp's upserted rows that were missing: their tombstones are
// checked after the write (checkFresh).
func fresh(tp *tablePlan) []*item {
	var out []*item
	for _, it := range tp.items {
		if !it.isDelete() && !it.present && it.state == stateApplied {
			out = append(out, it)
		}
	}
	return out
}

// upserted marks a multi-row upsert's items applied. Its affected-row count
// says whether every missing row was inserted by it (1 per insert, 2 per
// update of an existing row): if not, a concurrent transaction inserted
// one of them since the lookup, and checkFresh reads those rows back to
// learn which write won. (A connection with clientFoundRows counts an
// unchanged row like an insert; that only blurs the counts of this rare
// race, never the data.)
func (a *applier) upserted(n int64, chunk []*item) {
	want := int64(0)
	for _, it := range chunk {
		it.state = stateApplied
		want++
		if it.present {
			want++
		}
	}
	if n != want {
		for _, it := range chunk {
			it.raced = !it.present
		}
	}
}

func (a *applier) markApplied(_ int64, chunk []*item) {
	for _, it := range chunk {
		it.state = stateApplied
	}
}

// tupleFunc returns the rowFunc writing "(v1,v2,…,version)".
func (a *applier) tupleFunc(m *tableMeta) rowFunc {
	return func(b []byte, it *item) ([]byte, error) {
		b = append(b, '(')
		for i, src := range it.lay.write {
			var err error
			if b, err = appendLiteral(b, it.ch.Row[src], it.lay.kinds[i]); err != nil {
				return b, fmt.Errorf("column %s: %w", it.ch.Columns[src], err)
			}
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(it.ch.Version), 10)
		return append(b, ')'), nil
	}
}

// upsertsUnique applies upserts to a table with a unique secondary key.
// INSERT … ON DUPLICATE KEY UPDATE can update the row that holds the
// secondary key instead of the one with the incoming primary key, so new
// rows take a plain INSERT. Existing rows (locked since the lookup) still
// take the upsert: InnoDB checks the primary key first, so the duplicate it
// reports, and the row it updates, is the right one. When a multi-row
// statement fails on a duplicate key, its rows are retried one by one; a
// row that still breaks a unique secondary key is logged as a 'unique_key'
// conflict and skipped. A failed statement is rolled back as a whole by
// the server (statement atomicity), so a skipped row is never half
// applied, and the transaction goes on without a savepoint round trip.
func (a *applier) upsertsUnique(ctx context.Context, m *tableMeta, lay *layout, items []*item) error {
	// One statement per round trip: a duplicate key must be told from the
	// statement that raised it, after everything queued before it ran.
	if err := a.flush(ctx); err != nil {
		return err
	}
	merge := a.merge
	a.merge = false
	defer func() { a.merge = merge }()
	var existing, missing []*item
	for _, it := range items {
		if it.present {
			existing = append(existing, it)
		} else {
			missing = append(missing, it)
		}
	}
	tuple := a.tupleFunc(m)
	for _, part := range []struct {
		items []*item
		tail  string
	}{{existing, lay.odku}, {missing, ""}} {
		err := a.multiRow(ctx, m, part.items, []byte(lay.insertHead), part.tail, ",", tuple, a.markApplied)
		if sqlErrorNumber(err) != erDupEntry {
			if err != nil {
				return err
			}
			continue
		}
		// Statements before the failing one applied their rows; go on row
		// by row with those that are still pending.
		for _, it := range part.items {
			if it.state != statePending {
				continue
			}
			if err := a.upsertOne(ctx, m, lay, it); err != nil {
				return err
			}
		}
	}
	return nil
}

// upsertOne writes one row of a table with a unique secondary key.
func (a *applier) upsertOne(ctx context.Context, m *tableMeta, lay *layout, it *item) error {
	var err error
	a.buf = a.buf[:0]
	if it.present {
		a.buf = append(a.buf, "UPDATE "...)
		a.buf = append(a.buf, m.qTable...)
		a.buf = append(a.buf, " SET "...)
		for i, src := range lay.write {
			a.buf = append(a.buf, lay.qcols[i]...)
			a.buf = append(a.buf, " = "...)
			if a.buf, err = appendLiteral(a.buf, it.ch.Row[src], lay.kinds[i]); err != nil {
				return a.permanent(m, it, fmt.Errorf("column %s: %w", it.ch.Columns[src], err))
			}
			a.buf = append(a.buf, ", "...)
		}
		version := strconv.FormatUint(uint64(it.ch.Version), 10)
		a.buf = append(a.buf, m.qVersion+" = "+version+" WHERE "...)
		if a.buf, err = appendKeyEq(a.buf, m, it, ""); err != nil {
			return a.permanent(m, it, err)
		}
		a.buf = append(a.buf, " AND "...)
		a.buf = append(a.buf, m.wins(version, m.qVersion)...)
	} else {
		a.buf = append(a.buf, lay.insertHead...)
		if a.buf, err = a.tupleFunc(m)(a.buf, it); err != nil {
			return a.permanent(m, it, err)
		}
	}
	if len(a.buf) > a.rowLimit() {
		return a.permanent(m, it, fmt.Errorf("the row's statement is %d bytes, more than the target's max_allowed_packet (%d) allows",
			len(a.buf), a.s.maxPacket.Load()))
	}
	_, err = a.exec(ctx, m, string(a.buf))
	if sqlErrorNumber(err) != erDupEntry {
		if err == nil {
			it.state = stateApplied
		}
		return err
	}
	var me *mysql.MySQLError
	errors.As(err, &me)
	if !it.present && isPrimaryDup(me.Message) {
		// The lookup found no row and took no lock on the gap (READ
		// COMMITTED): another transaction inserted it since. A retry reads
		// it and decides again.
		return &transientError{err: fmt.Errorf("sink: insert into %s: %w: %v", m.name, errConcurrentWriter, err)}
	}
	current := it.rowV
	if !it.present {
		current = it.tombV
	}
	a.lose(m, it, current, kindUniqueKey, me.Message)
	return nil
}

// isPrimaryDup reports whether a duplicate-entry message is about the
// primary key ("… for key 'PRIMARY'", MySQL 8: "… for key 't.PRIMARY'").
func isPrimaryDup(msg string) bool {
	return strings.HasSuffix(msg, "PRIMARY'")
}

// checkFresh closes the one race READ COMMITTED leaves open. The lookup of
// a missing row takes no lock (there is no record to lock, and gap locks
// would make every pair of partitions appending to one table deadlock), so
// a concurrent delete may write a newer tombstone for the key after the
// lookup. Each side writes first and then reads the other's record with a
// lock: the upsert reads the tombstone here, the delete reads the row in its
// DELETE. Whichever reads second sees the other's write (waiting for its
// commit if need be), so the winning version always wins. Here the row is
// locked by this transaction's write; a tombstone that beats the incoming
// version turns the write into a lost one and removes it.
//
// Rows a concurrent transaction inserted between the lookup and the write
// (raced) are read back too, to learn whose version the upsert kept.
func (a *applier) checkFresh(ctx context.Context, tp *tablePlan, fresh []*item) error {
	if len(fresh) == 0 {
		return nil
	}
	m := tp.meta
	var clean, raced []*item
	for _, it := range fresh {
		if it.raced {
			it.tombV = 0
			it.present = false
			raced = append(raced, it)
			continue
		}
		it.rowV = it.ch.Version // inserted by this transaction
		if !it.tombRead {
			it.tombV = 0
			clean = append(clean, it)
		}
	}
	if err := a.lookup(ctx, tp, clean, readTombs); err != nil {
		return err
	}
	if err := a.lookup(ctx, tp, raced, readAfter); err != nil {
		return err
	}
	pol := a.s.cfg.Policy
	var undo []*item
	for _, it := range fresh {
		if it.raced && !it.present {
			return fmt.Errorf("sink: row %q of %s is missing right after this transaction wrote it", it.key, m.name)
		}
		ours := it.rowV == it.ch.Version
		var other hlc.Timestamp
		if !ours {
			other = it.rowV // a concurrent writer's version beat ours in the upsert's compare-and-set
		}
		current := pol.Max(other, it.tombV)
		if current == 0 {
			continue
		}
		switch pol.Resolve(current, it.ch.Version) {
		case conflict.Apply:
			continue
		case conflict.Duplicate:
			it.state = stateDuplicate
		default:
			a.lose(m, it, current, kindLost, "")
		}
		if ours {
			undo = append(undo, it)
		}
	}
	if len(undo) == 0 {
		return nil
	}
	head := []byte("DELETE FROM " + m.qTable + " WHERE ")
	return a.multiRow(ctx, m, undo, head, "", " OR ", func(b []byte, it *item) ([]byte, error) {
		b = append(b, '(')
		b, err := appendKeyEq(b, m, it, "")
		if err != nil {
			return b, err
		}
		b = append(b, " AND "+m.qVersion+" = "...)
		b = strconv.AppendUint(b, uint64(it.ch.Version), 10)
		return append(b, ')'), nil
	}, nil)
}

// exec runs a data statement on m. A data-shaped error comes back as
// *dataError.
func (a *applier) exec(ctx context.Context, m *tableMeta, q string) (sql.Result, error) {
	res, err := a.tx.ExecContext(ctx, q)
	if err != nil {
		return nil, a.stmtError(m, err)
	}
	return res, nil
}

// query runs a data query on m and calls fn with each row's columns (valid
// only during the call).
func (a *applier) query(ctx context.Context, m *tableMeta, q string, ncols int, fn func([]sql.RawBytes) error) error {
	// A read sees the transaction's queued writes.
	if err := a.flush(ctx); err != nil {
		return err
	}
	rows, err := a.tx.QueryContext(ctx, q)
	if err != nil {
		return a.stmtError(m, err)
	}
	defer rows.Close()
	return a.scanRows(rows, m, ncols, fn)
}

// scanRows calls fn with each row of rows' current result set (columns
// valid only during the call).
func (a *applier) scanRows(rows *sql.Rows, m *tableMeta, ncols int, fn func([]sql.RawBytes) error) error {
	if cap(a.raw) < ncols {
		a.raw = make([]sql.RawBytes, ncols)
		a.scan = make([]any, ncols)
	}
	raw, scan := a.raw[:ncols], a.scan[:ncols]
	for i := range raw {
		scan[i] = &raw[i]
	}
	for rows.Next() {
		if err := rows.Scan(scan...); err != nil {
			return fmt.Errorf("sink: read %s: %w", m.name, err)
		}
		if err := fn(raw); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return a.stmtError(m, err)
	}
	return nil
}

func (a *applier) stmtError(m *tableMeta, err error) error {
	if n := sqlErrorNumber(err); n != 0 && isDataError(n) {
		return &dataError{m: m, err: err}
	}
	return fmt.Errorf("sink: apply to %s: %w", m.name, err)
}

// permanent reports that it's transaction can never be applied.
func (a *applier) permanent(m *tableMeta, it *item, err error) error {
	return &PermanentError{TxnIndex: it.txn, Table: m.name, Err: err}
}

// writeConflicts inserts the conflict rows collected so far.
func (a *applier) writeConflicts(ctx context.Context, table string) error {
	for len(a.conflicts) > 0 {
		a.buf = append(a.buf[:0], "INSERT INTO "+table+
			" (schema_name, table_name, pk_json, kind, local_version, incoming_version, local_site, incoming_site, origin_gtid, tenant, detail) VALUES "...)
		n := 0
		for i, c := range a.conflicts {
			// A conflict row is at most ~20 kB (the detail is cut at 16 kB).
			if i == a.s.cfg.MaxRowsPerStatement || i > 0 && len(a.buf) > a.stmtBudget()-32<<10 {
				break
			}
			n++
			if i > 0 {
				a.buf = append(a.buf, ',')
			}
			txn := &a.txns[c.it.txn]
			a.buf = append(a.buf, '(')
			a.buf = appendTextString(a.buf, c.m.schema)
			a.buf = append(a.buf, ',')
			a.buf = appendTextString(a.buf, c.m.table)
			a.buf = append(a.buf, ',')
			a.buf = appendTextString(a.buf, keyJSON(c.it))
			a.buf = append(a.buf, ',')
			a.buf = appendTextString(a.buf, c.kind)
			a.buf = append(a.buf, ',')
			a.buf = strconv.AppendUint(a.buf, uint64(c.local), 10)
			a.buf = append(a.buf, ',')
			a.buf = strconv.AppendUint(a.buf, uint64(c.incoming), 10)
			a.buf = append(a.buf, ',')
			a.buf = strconv.AppendUint(a.buf, uint64(c.local.Site()), 10)
			a.buf = append(a.buf, ',')
			a.buf = strconv.AppendUint(a.buf, uint64(c.incoming.Site()), 10)
			a.buf = append(a.buf, ',')
			a.buf = appendTextString(a.buf, truncateUTF8(txn.GTID, 255))
			a.buf = append(a.buf, ',')
			a.buf = appendTextString(a.buf, truncateUTF8(txn.Tenant, 255))
			a.buf = append(a.buf, ',')
			if c.detail == "" {
				a.buf = append(a.buf, "NULL"...)
			} else {
				a.buf = appendTextString(a.buf, truncateUTF8(c.detail, 16000))
			}
			a.buf = append(a.buf, ')')
		}
		if _, err := a.tx.ExecContext(ctx, string(a.buf)); err != nil {
			return bookkeepingError("log conflicts in", table, err)
		}
		a.conflicts = a.conflicts[n:]
	}
	return nil
}

// keyJSON renders it's primary key as a JSON array of the values as text
// (binary values as 0x-prefixed hex).
func keyJSON(it *item) string {
	vals := make([]string, len(it.lay.pk))
	for i, src := range it.lay.pk {
		v := it.ch.Row[src]
		switch v.Kind {
		case event.KindInt:
			vals[i] = strconv.FormatInt(v.Int, 10)
		case event.KindUint, event.KindBit:
			vals[i] = strconv.FormatUint(v.Uint, 10)
		case event.KindFloat32:
			vals[i] = strconv.FormatFloat(v.Float, 'g', -1, 32)
		case event.KindFloat64:
			vals[i] = strconv.FormatFloat(v.Float, 'g', -1, 64)
		case event.KindBytes:
			vals[i] = "0x" + hex.EncodeToString(v.Bytes)
		case event.KindNull:
			vals[i] = "NULL"
		default:
			vals[i] = string(v.Bytes)
		}
	}
	b, _ := json.Marshal(vals) // strings never fail; invalid UTF-8 becomes U+FFFD
	return string(b)
}

// truncateUTF8 cuts s to at most n bytes at a character boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// bookkeepingError wraps a failed statement on one of the sink's own
// tables. A missing table is a setup step not yet done, and the retry after
// it succeeds; so is any other failure there, which is never about the
// data.
func bookkeepingError(what, table string, err error) error {
	if sqlErrorNumber(err) == erNoSuchTable {
		err = fmt.Errorf("%w (run `replicator schema prepare`)", err)
	}
	err = fmt.Errorf("sink: %s %s: %w", what, table, err)
	if sqlErrorNumber(err) != 0 {
		return &transientError{err: err}
	}
	return err
}
