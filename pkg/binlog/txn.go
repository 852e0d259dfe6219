package binlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// errNoMetadata is wrapped by every error about a table map that lacks the
// metadata binlog_row_metadata=FULL provides.
var errNoMetadata = errors.New("the table map carries no column metadata: set binlog_row_metadata=FULL on the source " +
	"(SET GLOBAL binlog_row_metadata = 'FULL'; and binlog_row_metadata = FULL under [mysqld] in my.cnf); " +
	"the reader takes column names from the binlog, never from the live table")

// emptyFlushInterval bounds how long a run of empty transactions (DDL,
// filtered tables, transactions written by sinks) is coalesced into one
// emitted Txn while a backlog is being read.
const emptyFlushInterval = 200 * time.Millisecond

// tableRole says what the reader does with the row events of a table.
type tableRole uint8

const (
	rolePublish tableRole = iota // published as changes
	roleSkip                     // filtered out, or one of Tandem's unpublished tables
	roleTomb                     // tombstone table: supplies delete versions
	roleLoop                     // sink bookkeeping: the transaction was written by a sink
)

// tableInfo is everything the reader derives from one table map.
type tableInfo struct {
	tm            *replication.TableMapEvent
	schema, table string
	role          tableRole
	err           error // column metadata could not be derived; reported only if rows must be decoded

	columns []string
	pk      []int
	cols    []column
	version int // index of the version column, -1 when absent
	// stampVersion: a heartbeat or probe row without a version (no column,
	// or 0) is versioned with the transaction's stamp.
	stampVersion bool
	// keyCols lists, sorted by column name, the primary-key columns of a
	// published table or the non-version columns of a tombstone table; the
	// two sides build the same key for the same row.
	keyCols  []int
	tombBase string
}

// txnState is the transaction being read.
type txnState struct {
	active     bool
	standalone bool // MariaDB FL_STANDALONE: the group ends at its first query
	sawBegin   bool // MySQL: a BEGIN query opened the group
	gtid       txnGTID
	gtidText   string
	before     event.Position
	changes    []event.Change
	size       int
	fragment   uint32
	stamp      hlc.Timestamp
	lastTS     uint32
	dropping   bool // a sink wrote it: publish nothing
	fillStamp  bool // some change is versioned with the stamp
}

// assembler turns binlog events into transactions. It is used by one
// goroutine; the Reader feeds it the events of successive connections.
type assembler struct {
	cfg    Config
	filter filter
	log    *zap.Logger
	clock  *hlc.Clock
	stats  *counters
	now    func() time.Time

	tables map[uint64]*tableInfo
	warned map[string]bool // tables already reported for deletes without tombstone

	// Position after the last completed transaction.
	gtids  gtidSet
	file   string
	offset uint32
	// curFile is the binlog file the events being read come from.
	curFile string

	txn   txnState
	tombs map[string]hlc.Timestamp
	key   []byte
	arena arena

	// pending is a completed empty transaction not yet emitted; see
	// flushPending.
	pending      event.Txn
	hasPending   bool
	pendingSince time.Time
}

func newAssembler(cfg Config, f filter, log *zap.Logger, clock *hlc.Clock, stats *counters, from event.Position) (*assembler, error) {
	gs, err := parseGTIDSet(cfg.Flavor, from.GTIDSet)
	if err != nil {
		return nil, fmt.Errorf("binlog: start position: %w", err)
	}
	return &assembler{
		cfg:     cfg,
		filter:  f,
		log:     log,
		clock:   clock,
		stats:   stats,
		now:     time.Now,
		tables:  make(map[uint64]*tableInfo),
		warned:  make(map[string]bool),
		gtids:   gs,
		file:    from.File,
		offset:  from.Offset,
		curFile: from.File,
		tombs:   make(map[string]hlc.Timestamp),
	}, nil
}

// position is where to resume after the last completed transaction.
func (a *assembler) position() event.Position {
	return event.Position{GTIDSet: a.gtids.String(), File: a.file, Offset: a.offset}
}

// reconnected forgets everything tied to the previous connection: the
// partly read transaction (it is read again from its start) and the table
// ids, which a restarted server assigns anew.
func (a *assembler) reconnected() {
	a.resetTxn()
	clear(a.tables)
}

func (a *assembler) resetTxn() {
	a.txn = txnState{}
	if len(a.tombs) > 1024 {
		a.tombs = make(map[string]hlc.Timestamp)
	} else {
		clear(a.tombs)
	}
}

// handle processes one event. Errors are fatal: they mean the binlog holds
// something the reader must not guess about.
func (a *assembler) handle(ctx context.Context, ev *replication.BinlogEvent, emit emitFunc) error {
	h := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		a.curFile = string(e.NextLogName)
	case *replication.MariadbGTIDEvent:
		return a.begin(ctx, txnGTID{maria: e.GTID}, h, e.Flags&replication.BINLOG_MARIADB_FL_STANDALONE != 0, emit)
	case *replication.GTIDEvent:
		return a.beginMySQL(ctx, e, h, emit)
	case *replication.GtidTaggedLogEvent:
		return a.beginMySQL(ctx, &e.GTIDEvent, h, emit)
	case *replication.QueryEvent:
		return a.query(ctx, e, h, emit)
	case *replication.XIDEvent:
		if a.txn.active {
			return a.end(ctx, h, emit)
		}
	case *replication.TableMapEvent:
		return a.tableMap(e)
	case *replication.RowsEvent:
		return a.rows(ctx, h, e, emit)
	case *replication.GenericEvent:
		// MariaDB logs XA PREPARE as its own event type at the end of the
		// prepared transaction's group; its changes are published then
		// (see query for XA ROLLBACK).
		if h.EventType == replication.XA_PREPARE_LOG_EVENT && a.txn.active {
			return a.end(ctx, h, emit)
		}
	case *replication.TransactionPayloadEvent:
		// MySQL binlog_transaction_compression: the transaction's events
		// are nested, already decoded.
		for _, inner := range e.Events {
			if err := a.handle(ctx, inner, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *assembler) beginMySQL(ctx context.Context, e *replication.GTIDEvent, h *replication.EventHeader, emit emitFunc) error {
	next, err := e.GTIDNext()
	if err != nil {
		return fmt.Errorf("binlog: decode GTID at %s:%d: %w", a.curFile, h.LogPos, err)
	}
	return a.begin(ctx, txnGTID{mysql: next.String()}, h, false, emit)
}

func (a *assembler) begin(ctx context.Context, g txnGTID, h *replication.EventHeader, standalone bool, emit emitFunc) error {
	if a.txn.active {
		// Every group ends with a commit or its single statement; if one
		// did not, publish what it had rather than lose it.
		a.log.Error("binlog transaction has no commit event before the next GTID; publishing it as complete",
			zap.String("gtid", a.txn.gtidText), zap.String("next_gtid", g.String()),
			zap.String("file", a.curFile), zap.Uint32("offset", h.LogPos))
		if err := a.end(ctx, h, emit); err != nil {
			return err
		}
	}
	a.txn = txnState{
		active:     true,
		standalone: standalone,
		gtid:       g,
		gtidText:   g.String(),
		before:     a.position(),
		lastTS:     h.Timestamp,
	}
	return nil
}

func (a *assembler) query(ctx context.Context, e *replication.QueryEvent, h *replication.EventHeader, emit emitFunc) error {
	if !a.txn.active {
		return nil
	}
	q := bytes.TrimSpace(e.Query)
	switch {
	case bytes.EqualFold(q, []byte("BEGIN")):
		a.txn.sawBegin = true
		return nil
	case hasPrefixFold(q, "XA ROLLBACK"):
		// The prepared transaction's changes were logged, and published,
		// at XA PREPARE; the reader cannot take them back.
		a.log.Error("XA ROLLBACK of a prepared transaction whose changes were already published at XA PREPARE; the other sites keep them",
			zap.String("gtid", a.txn.gtidText), zap.ByteString("query", q))
		return a.end(ctx, h, emit)
	case bytes.EqualFold(q, []byte("COMMIT")), bytes.EqualFold(q, []byte("ROLLBACK")),
		hasPrefixFold(q, "XA PREPARE"), hasPrefixFold(q, "XA COMMIT"):
		// ROLLBACK ends a group that changed a non-transactional table:
		// those changes happened and are published.
		return a.end(ctx, h, emit)
	case a.txn.standalone || (a.cfg.Flavor == FlavorMySQL && !a.txn.sawBegin):
		return a.end(ctx, h, emit) // DDL and other single-statement groups
	}
	return nil // a statement inside a transaction (SAVEPOINT, …)
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

func (a *assembler) tableMap(te *replication.TableMapEvent) error {
	if info, ok := a.tables[te.TableID]; ok && sameTableMap(info.tm, te) {
		return nil
	}
	if len(a.tables) > 4096 {
		clear(a.tables) // table ids churn with DDL; keep the cache bounded
	}
	a.tables[te.TableID] = a.newTableInfo(te)
	return nil
}

func (a *assembler) newTableInfo(te *replication.TableMapEvent) *tableInfo {
	info := &tableInfo{tm: te, schema: string(te.Schema), table: string(te.Table), version: -1}
	meta := info.schema == a.cfg.MetaSchema
	_, isTomb := schema.IsTomb(info.table)
	switch {
	case meta && (info.table == schema.Offsets || info.table == schema.Parked ||
		info.table == schema.Watermarks || info.table == schema.Conflicts):
		info.role = roleLoop
		return info // never decoded
	case isTomb:
		info.role = roleTomb
	case schema.IsInternal(info.table):
		info.role = roleSkip
		if meta && schema.Replicates(info.table) {
			info.role = rolePublish
		}
	case a.filter.allows(info.schema, info.table):
		info.role = rolePublish
	default:
		info.role = roleSkip
	}
	if info.role == roleSkip {
		return info
	}
	cols, err := newColumns(te)
	if err != nil {
		info.err = fmt.Errorf("binlog: table %s.%s: %w", info.schema, info.table, err)
		return info
	}
	info.cols = cols
	info.columns = make([]string, len(cols))
	for i := range cols {
		info.columns[i] = cols[i].name
		if cols[i].name == a.cfg.VersionColumn {
			info.version = i
		}
	}
	info.pk = make([]int, len(te.PrimaryKey))
	for i, c := range te.PrimaryKey {
		info.pk[i] = int(c)
	}
	switch info.role {
	case roleTomb:
		info.tombBase, _ = schema.IsTomb(info.table)
		for i := range cols {
			if i != info.version {
				info.keyCols = append(info.keyCols, i)
			}
		}
	case rolePublish:
		info.keyCols = slices.Clone(info.pk)
		// Heartbeats and probes without a version (no column, or 0 because
		// no trigger stamps them) take the transaction's stamp, so a newer
		// heartbeat always wins at the receiver.
		info.stampVersion = meta && schema.Replicates(info.table)
	}
	slices.SortFunc(info.keyCols, func(x, y int) int {
		return compareStrings(info.columns[x], info.columns[y])
	})
	return info
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func rowsOp(t replication.EventType) (event.Op, bool) {
	switch t {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2,
		replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		return event.OpInsert, true
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2,
		replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1, replication.PARTIAL_UPDATE_ROWS_EVENT:
		return event.OpUpdate, true
	case replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2,
		replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		return event.OpDelete, true
	}
	return 0, false
}

func (a *assembler) rows(ctx context.Context, h *replication.EventHeader, re *replication.RowsEvent, emit emitFunc) error {
	op, ok := rowsOp(h.EventType)
	if !ok {
		return nil
	}
	info := a.tables[re.TableID]
	if info == nil {
		return fmt.Errorf("binlog: rows event for table id %d at %s:%d without a table map", re.TableID, a.curFile, h.LogPos)
	}
	if !a.txn.active {
		return fmt.Errorf("binlog: rows event for %s.%s at %s:%d outside a transaction (no GTID event before it)",
			info.schema, info.table, a.curFile, h.LogPos)
	}
	n := len(re.Rows)
	if op == event.OpUpdate {
		n /= 2
	}
	a.stats.rowsRead.Add(uint64(n))
	a.txn.lastTS = h.Timestamp
	if info.role == roleLoop {
		a.dropTxn(info)
		return nil
	}
	if a.txn.dropping || info.role == roleSkip {
		return nil
	}
	if info.err != nil {
		return info.err
	}
	for _, skipped := range re.SkippedColumns {
		if len(skipped) > 0 {
			return fmt.Errorf("binlog: rows of %s.%s at %s:%d lack %d columns: set binlog_row_image=FULL on the source "+
				"(SET GLOBAL binlog_row_image = 'FULL'; and binlog_row_image = FULL in my.cnf)",
				info.schema, info.table, a.curFile, h.LogPos, len(skipped))
		}
	}
	var err error
	if info.role == roleTomb {
		err = a.tombRows(info, op, re.Rows)
	} else {
		err = a.publishRows(ctx, info, op, re.Rows, emit)
	}
	if err != nil {
		return fmt.Errorf("binlog: decode rows %s.%s at %s:%d: %w", info.schema, info.table, a.curFile, h.LogPos, err)
	}
	return nil
}

// dropTxn marks the transaction as written by a sink: nothing of it is
// published (loop prevention).
func (a *assembler) dropTxn(info *tableInfo) {
	if a.txn.dropping {
		return
	}
	a.txn.dropping = true
	if a.txn.fragment > 0 {
		// Sinks write _tandem_offsets first, so this means a sink broke
		// that rule, or a user wrote the table: the fragments already
		// published will be applied at the other sites.
		a.log.Error("transaction writes sink bookkeeping after fragments of it were published; the published fragments may echo back",
			zap.String("gtid", a.txn.gtidText), zap.String("table", info.schema+"."+info.table),
			zap.Uint32("fragments", a.txn.fragment))
	}
	a.txn.changes = nil
	a.txn.size = 0
	a.txn.fillStamp = false
}

func (a *assembler) tombRows(info *tableInfo, op event.Op, rows [][]any) error {
	if op == event.OpDelete {
		return nil // tombstone collection
	}
	if info.version < 0 {
		return fmt.Errorf("tombstone table has no %s column; run `replicator schema prepare`", a.cfg.VersionColumn)
	}
	step, first := 1, 0
	if op == event.OpUpdate {
		step, first = 2, 1 // after images
	}
	for i := first; i < len(rows); i += step {
		vals, _, err := convertRow(info.cols, rows[i], &a.arena)
		if err != nil {
			return err
		}
		a.tombs[string(a.rowKey(info.schema, info.tombBase, info, vals))] = versionOf(vals[info.version])
	}
	return nil
}

func (a *assembler) rowKey(schemaName, table string, info *tableInfo, row []event.Value) []byte {
	k := append(a.key[:0], schemaName...)
	k = append(k, 0)
	k = append(k, table...)
	k = append(k, 0)
	for _, i := range info.keyCols {
		k = append(k, info.columns[i]...)
		k = append(k, 0)
		k = keyAppend(k, row[i])
	}
	a.key = k
	return k
}

func versionOf(v event.Value) hlc.Timestamp {
	switch v.Kind {
	case event.KindUint:
		return hlc.Timestamp(v.Uint)
	case event.KindInt:
		return hlc.Timestamp(uint64(v.Int))
	}
	return 0
}

func (a *assembler) publishRows(ctx context.Context, info *tableInfo, op event.Op, rows [][]any, emit emitFunc) error {
	if info.version < 0 && !info.stampVersion {
		return fmt.Errorf("table has no %s version column: run `replicator schema prepare` for it, or exclude it", a.cfg.VersionColumn)
	}
	if len(info.pk) == 0 {
		return fmt.Errorf("table has no PRIMARY KEY; Tandem replicates only tables with one: add a primary key or exclude the table")
	}
	version := func(row []event.Value) hlc.Timestamp {
		var v hlc.Timestamp
		if info.version >= 0 {
			v = versionOf(row[info.version])
		}
		if v == 0 && info.stampVersion {
			a.txn.fillStamp = true // versioned with the transaction's stamp
		}
		return v
	}
	switch op {
	case event.OpInsert:
		for _, raw := range rows {
			row, size, err := convertRow(info.cols, raw, &a.arena)
			if err != nil {
				return err
			}
			if err := a.add(ctx, info, event.OpInsert, row, version(row), size, emit); err != nil {
				return err
			}
		}
	case event.OpDelete:
		for _, raw := range rows {
			row, size, err := convertRow(info.cols, raw, &a.arena)
			if err != nil {
				return err
			}
			if err := a.add(ctx, info, event.OpDelete, row, a.deleteVersion(info, row), size, emit); err != nil {
				return err
			}
		}
	case event.OpUpdate:
		for i := 0; i+1 < len(rows); i += 2 {
			after, size, err := convertRow(info.cols, rows[i+1], &a.arena)
			if err != nil {
				return err
			}
			v := version(after)
			if !pkChanged(info.pk, rows[i], rows[i+1]) {
				if err := a.add(ctx, info, event.OpUpdate, after, v, size, emit); err != nil {
					return err
				}
				continue
			}
			// A key change is a delete of the old key and an insert of the
			// new: sinks apply changes by key, and the old row must go
			// with the version of the write that moved it.
			before, bsize, err := convertRow(info.cols, rows[i], &a.arena)
			if err != nil {
				return err
			}
			// The BEFORE UPDATE trigger wrote the old key's tombstone with
			// this same version; it is not needed for a delete later.
			delete(a.tombs, string(a.rowKey(info.schema, info.table, info, before)))
			if err := a.add(ctx, info, event.OpDelete, before, v, bsize, emit); err != nil {
				return err
			}
			if err := a.add(ctx, info, event.OpInsert, after, v, size, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// pkChanged compares the key columns of go-mysql's before and after images.
func pkChanged(pk []int, before, after []any) bool {
	for _, i := range pk {
		b, x := before[i], after[i]
		bb, ok1 := b.([]byte)
		xb, ok2 := x.([]byte)
		if ok1 || ok2 {
			if !ok1 || !ok2 || !bytes.Equal(bb, xb) {
				return true
			}
			continue
		}
		if b != x {
			return true
		}
	}
	return false
}

// deleteVersion is the version of a delete: the tombstone the BEFORE
// DELETE trigger wrote in this transaction, or, if the trigger is missing,
// one tick after the deleted row's version.
func (a *assembler) deleteVersion(info *tableInfo, row []event.Value) hlc.Timestamp {
	key := a.rowKey(info.schema, info.table, info, row)
	if v, ok := a.tombs[string(key)]; ok {
		delete(a.tombs, string(key))
		return v
	}
	a.stats.deletesWithoutTombstone.Add(1)
	name := info.schema + "." + info.table
	if !a.warned[name] {
		a.warned[name] = true
		a.log.Warn("delete without a tombstone in its transaction; versioning it one tick after the deleted row (is the BEFORE DELETE trigger missing? run `replicator schema prepare`). Further occurrences are only counted",
			zap.String("table", name), zap.String("gtid", a.txn.gtidText))
	}
	var before hlc.Timestamp
	if info.version >= 0 {
		before = versionOf(row[info.version])
	}
	return hlc.FromTick(before.Tick()+1, a.cfg.Site)
}

func (a *assembler) add(ctx context.Context, info *tableInfo, op event.Op, row []event.Value, v hlc.Timestamp, size int, emit emitFunc) error {
	if n := len(a.txn.changes); n > 0 && (n >= a.cfg.MaxFragmentChanges || a.txn.size+size > a.cfg.MaxFragmentBytes) {
		if err := a.emitFragment(ctx, emit); err != nil {
			return err
		}
	}
	if a.txn.changes == nil {
		// A transaction that already filled a fragment is likely to fill
		// the next one too.
		n := min(a.cfg.MaxFragmentChanges, 64)
		if a.txn.fragment > 0 {
			n = min(a.cfg.MaxFragmentChanges, 4096)
		}
		a.txn.changes = make([]event.Change, 0, n)
	}
	a.txn.changes = append(a.txn.changes, event.Change{
		Schema:  info.schema,
		Table:   info.table,
		Op:      op,
		Columns: info.columns,
		PK:      info.pk,
		Row:     row,
		Version: v,
	})
	a.txn.size += size
	return nil
}

func (a *assembler) stamp() (hlc.Timestamp, error) {
	if a.txn.stamp == 0 {
		s, err := a.clock.Now()
		if err != nil {
			return 0, fmt.Errorf("binlog: stamp transaction %s: %w", a.txn.gtidText, err)
		}
		a.txn.stamp = s
	}
	return a.txn.stamp, nil
}

func (a *assembler) txnOf(pos event.Position, last bool) (event.Txn, error) {
	s, err := a.stamp()
	if err != nil {
		return event.Txn{}, err
	}
	changes := a.txn.changes
	if a.txn.fillStamp {
		for i := range changes {
			if changes[i].Version == 0 && changes[i].Schema == a.cfg.MetaSchema && schema.Replicates(changes[i].Table) {
				changes[i].Version = s
			}
		}
	}
	return event.Txn{
		Origin:     a.cfg.Site,
		GTID:       a.txn.gtidText,
		Position:   pos,
		CommitTime: time.Unix(int64(a.txn.lastTS), 0).UTC(),
		Stamp:      s,
		Fragment:   a.txn.fragment,
		Last:       last,
		Changes:    changes,
	}, nil
}

// emitFragment publishes the changes held so far as a non-final fragment.
// Its Position is the one before the transaction, so a checkpoint taken
// from it can never land inside the transaction.
func (a *assembler) emitFragment(ctx context.Context, emit emitFunc) error {
	t, err := a.txnOf(a.txn.before, false)
	if err != nil {
		return err
	}
	a.hasPending = false // the fragment's Position supersedes it
	if err := emitTxn(ctx, emit, t); err != nil {
		return err
	}
	a.stats.fragments.Add(1)
	a.stats.txnsEmitted.Add(1)
	a.txn.fragment++
	a.txn.changes = nil
	a.txn.size = 0
	a.txn.fillStamp = false
	return nil
}

// end completes the transaction at the event with header h.
func (a *assembler) end(ctx context.Context, h *replication.EventHeader, emit emitFunc) error {
	if err := a.gtids.commit(a.txn.gtid); err != nil {
		return fmt.Errorf("binlog: transaction %s: %w", a.txn.gtidText, err)
	}
	a.file = a.curFile
	if h.LogPos > 0 {
		a.offset = h.LogPos
	}
	a.txn.lastTS = h.Timestamp
	a.stats.txnsRead.Add(1)
	if a.txn.dropping {
		a.stats.txnsDroppedLoop.Add(1)
	}
	if len(a.txn.changes) == 0 && a.txn.fragment == 0 {
		// Empty: keep only the latest of a run (flushPending decides when
		// it goes out). Its stamp is taken when it is emitted.
		a.pending = event.Txn{Origin: a.cfg.Site, GTID: a.txn.gtidText, Position: a.position(),
			CommitTime: time.Unix(int64(h.Timestamp), 0).UTC(), Last: true}
		if !a.hasPending {
			a.hasPending = true
			a.pendingSince = a.now()
		}
		a.resetTxn()
		return nil
	}
	t, err := a.txnOf(a.position(), true)
	if err != nil {
		return err
	}
	a.hasPending = false
	a.resetTxn()
	if err := emitTxn(ctx, emit, t); err != nil {
		return err
	}
	a.stats.txnsEmitted.Add(1)
	return nil
}

// flushPending emits the pending empty transaction when the stream is idle
// (nothing is waiting to be read, so no later transaction would carry its
// position soon) or when it has waited emptyFlushInterval. While a backlog
// is read, a run of empty transactions thus costs one emit per 200 ms, and
// a non-empty transaction simply supersedes it: its Position is later.
func (a *assembler) flushPending(ctx context.Context, idle bool, emit emitFunc) error {
	if !a.hasPending || a.txn.active {
		return nil
	}
	if !idle && a.now().Sub(a.pendingSince) < emptyFlushInterval {
		return nil
	}
	s, err := a.clock.Now()
	if err != nil {
		return fmt.Errorf("binlog: stamp transaction %s: %w", a.pending.GTID, err)
	}
	t := a.pending
	t.Stamp = s
	a.hasPending = false
	a.pending = event.Txn{}
	if err := emitTxn(ctx, emit, t); err != nil {
		return err
	}
	a.stats.txnsEmitted.Add(1)
	return nil
}

func emitTxn(ctx context.Context, emit emitFunc, t event.Txn) error {
	if err := emit(ctx, t); err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // Run returns nil on cancellation
		}
		return fmt.Errorf("binlog: emit transaction %s fragment %d: %w", t.GTID, t.Fragment, err)
	}
	return nil
}
