package sink

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// sessionSQL configures a sink connection once, when it is opened:
//
//   - READ COMMITTED: the lookups lock the rows they find and no gaps, so
//     sinks applying partitions in parallel do not deadlock on the gap
//     locks of new keys (see checkFresh for the race this leaves and how it
//     is closed). It needs binlog_format=ROW, which Tandem requires anyway.
//   - utf8mb4 and an sql_mode the sink controls: the literals it writes
//     rely on both (see literal.go). STRICT_ALL_TABLES makes a value the
//     target cannot hold an error (the transaction is parked) instead of a
//     silently truncated row that would differ between sites;
//     NO_AUTO_VALUE_ON_ZERO stores an AUTO_INCREMENT value 0 as 0.
//   - time_zone +00:00: TIMESTAMP values travel as UTC text.
//   - schema.ApplySessionVar = 1: the triggers leave versions and
//     tombstones to the sink.
//   - autocommit off: an apply transaction begins with its first
//     statement, the offsets claim, instead of a START TRANSACTION round
//     trip of its own. Round trips are most of a small batch's apply time
//     on a busy server (a batch makes about ten), and the apply loop is
//     what the replication lag queues behind. Every use of a sink
//     connection therefore ends with COMMIT or ROLLBACK (see rollback).
var sessionSQL = []string{
	"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
	"SET NAMES utf8mb4",
	"SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', " +
		"SESSION time_zone = '+00:00', " + schema.ApplySessionVar + " = 1, SESSION autocommit = 0",
}

// stmtRunner runs the statements of an apply transaction: the sink's
// *sql.Conn (autocommit off), or a *sql.Tx in benchmarks.
type stmtRunner interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// MySQL applies batches to a MariaDB or MySQL server with compare-and-set
// on row versions and exactly-once offsets. It is safe for concurrent use:
// partitions apply in parallel, each Apply in its own transaction.
//
// It keeps its own connections, taken from db and configured once (see
// sessionSQL); they never go back to db's pool, so the session settings
// cannot leak into other users of db. It holds one connection per Apply
// in flight and keeps them between batches: give it a pool of its own, or
// one whose MaxOpenConns leaves room for the partitions applied in
// parallel.
type MySQL struct {
	db    *sql.DB
	cfg   Config
	log   *zap.Logger
	clock *hlc.Clock
	meta  *metaCache

	qOffsets, qConflicts, qParked, qWatermarks string

	maxPacket atomic.Int64 // the server's max_allowed_packet
	// multi records whether the connections accept several statements
	// per query (go-sql-driver's multiStatements): multiUnknown until the
	// first connection was asked.
	multi atomic.Int32

	mu     sync.Mutex
	idle   []*sql.Conn
	closed bool
}

const (
	multiUnknown int32 = iota
	multiOn
	multiOff
)

// maxIdleConns bounds the configured connections kept between batches.
const maxIdleConns = 64

// NewMySQL returns a sink writing to db. The bookkeeping tables, version
// columns, triggers and tombstone tables must exist (`replicator schema
// prepare`); a missing one fails the batches that need it.
func NewMySQL(db *sql.DB, cfg Config, log *zap.Logger, clock *hlc.Clock) (*MySQL, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	switch {
	case db == nil:
		return nil, errors.New("sink: nil *sql.DB")
	case log == nil:
		return nil, errors.New("sink: nil logger")
	case clock == nil:
		return nil, errors.New("sink: nil clock")
	}
	meta := quoteIdent(cfg.MetaSchema) + "."
	s := &MySQL{
		db:          db,
		cfg:         cfg,
		log:         log,
		clock:       clock,
		meta:        newMetaCache(db, cfg.VersionColumn, winsSQL(cfg.Policy)),
		qOffsets:    meta + quoteIdent(schema.Offsets),
		qConflicts:  meta + quoteIdent(schema.Conflicts),
		qParked:     meta + quoteIdent(schema.Parked),
		qWatermarks: meta + quoteIdent(schema.Watermarks),
	}
	s.maxPacket.Store(16 << 20)
	return s, nil
}

// Close releases the sink's connections. It does not close db.
func (s *MySQL) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle, s.closed = nil, true
	s.mu.Unlock()
	for _, c := range idle {
		discard(c)
	}
	return nil
}

// Offsets returns the stored next offset of every partition of topic, for
// the consumer to seek to at start.
func (s *MySQL) Offsets(ctx context.Context, topic string) (offs map[int]int64, err error) {
	conn, _, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { s.release(conn, rollback(conn) == nil && (err == nil || sqlErrorNumber(err) != 0)) }()
	q := appendTextString([]byte("SELECT part, next_offset FROM "+s.qOffsets+" WHERE topic = "), topic)
	rows, err := conn.QueryContext(ctx, string(q))
	if err != nil {
		return nil, bookkeepingError("read offsets from", s.qOffsets, err)
	}
	defer rows.Close()
	offs = map[int]int64{}
	for rows.Next() {
		var part int
		var next int64
		if err := rows.Scan(&part, &next); err != nil {
			return nil, fmt.Errorf("sink: read offsets from %s: %w", s.qOffsets, err)
		}
		offs[part] = next
	}
	if err := rows.Err(); err != nil {
		return nil, bookkeepingError("read offsets from", s.qOffsets, err)
	}
	return offs, nil
}

// Apply applies b in one target transaction:
//
//  1. lock the partition's offsets row; refuse an older epoch (ErrFenced)
//     and a batch already applied (Result.AlreadyApplied);
//  2. write the offsets row, as the transaction's FIRST row change;
//  3. apply the data with compare-and-set on versions, logging conflicts;
//  4. store the parked messages and raise the origin's watermark;
//  5. commit, then feed every incoming version to the local clock.
//
// A data-shaped failure of the collapsed batch makes Apply try again one
// source transaction at a time, which either applies the batch (the failure
// came from collapsing, e.g. a foreign key order) or names the transaction
// at fault in a *PermanentError. Deadlocks, lock wait timeouts and lost
// connections are returned as they are: IsRetryable says to retry the
// whole batch, which is safe because nothing was committed.
func (s *MySQL) Apply(ctx context.Context, b Batch) (Result, error) {
	if err := checkBatch(b); err != nil {
		return Result{}, err
	}
	res, err := s.applyOnce(ctx, b, applyMode{merge: true})
	var me *mergedError
	if errors.As(err, &me) {
		s.log.Debug("statements sent together failed; applying the batch again one statement per round trip",
			zap.String("topic", b.Topic), zap.Int("partition", b.Partition), zap.Int64("first_offset", b.FirstOffset), zap.Error(err))
		res, err = s.applyOnce(ctx, b, applyMode{})
	}
	var de *dataError
	if errors.As(err, &de) {
		s.meta.invalidate(de.m.schema, de.m.table)
		s.log.Debug("collapsed batch failed on the data; applying it one transaction at a time",
			zap.String("topic", b.Topic), zap.Int("partition", b.Partition), zap.Int64("first_offset", b.FirstOffset), zap.Error(err))
		res, err = s.applyOnce(ctx, b, applyMode{oneByOne: true})
	}
	if err != nil {
		return Result{}, err
	}
	if !res.AlreadyApplied {
		s.observe(b, &res)
	}
	return res, nil
}

func checkBatch(b Batch) error {
	switch {
	case b.Topic == "":
		return fmt.Errorf("sink: %w: empty topic", errInvalidBatch)
	case b.Partition < 0:
		return fmt.Errorf("sink: %w: partition %d is negative", errInvalidBatch, b.Partition)
	case b.FirstOffset < 0 || b.NextOffset <= b.FirstOffset:
		return fmt.Errorf("sink: %w: offsets [%d, %d) are not a range of messages", errInvalidBatch, b.FirstOffset, b.NextOffset)
	case b.Origin == 0:
		return fmt.Errorf("sink: %w: origin site 0 is reserved; use 1..255", errInvalidBatch)
	}
	return nil
}

// applyMode says how applyOnce writes a batch.
type applyMode struct {
	// oneByOne applies the source transactions one at a time instead of
	// collapsed.
	oneByOne bool
	// merge sends a batch in three round trips where the connection
	// allows several statements per query: the claim with the first reads
	// (claimAndRead), the writes with the reads that follow them
	// (applier.queue, flush), the watermark with the COMMIT.
	merge bool
}

// applyOnce runs one attempt in one transaction.
func (s *MySQL) applyOnce(ctx context.Context, b Batch, mode applyMode) (res Result, err error) {
	merge := mode.merge && s.multi.Load() == multiOn
	a := &applier{s: s, txns: b.Txns}
	var p *plan
	if merge && !mode.oneByOne {
		// Planned before the claim, so that the claim can carry the first
		// reads (claimAndRead). A batch that cannot be planned is claimed
		// first as usual: it may have been applied already, before its
		// table changed, and then its error must not matter.
		if p, err = s.buildPlan(ctx, b.Txns, 0); err != nil {
			p, err = nil, nil
		}
	}
	conn, already, err := s.claim(ctx, b, a, p)
	if conn == nil {
		return Result{}, err
	}
	committed := false
	defer func() {
		healthy := committed
		if !committed {
			// After a server-side error the connection is fine to reuse
			// once the rollback went through.
			healthy = rollback(conn) == nil && (err == nil || sqlErrorNumber(err) != 0 || isOwnError(err))
		}
		s.release(conn, healthy)
	}()
	if err != nil || already {
		return Result{AlreadyApplied: already}, err
	}

	a.tx, a.merge = conn, merge
	if !mode.oneByOne {
		if p == nil {
			if p, err = s.buildPlan(ctx, b.Txns, 0); err != nil {
				return Result{}, err
			}
		}
		if err := a.run(ctx, p); err != nil {
			return Result{}, err
		}
		res.tally(p)
	} else {
		for i := range b.Txns {
			p, err := s.buildPlan(ctx, b.Txns[i:i+1], i)
			if err == nil {
				err = a.run(ctx, p)
			}
			var de *dataError
			if errors.As(err, &de) {
				return Result{}, &PermanentError{TxnIndex: i, Table: de.m.name, Err: de.err}
			}
			if err != nil {
				return Result{}, err
			}
			res.tally(p)
		}
	}
	res.Deletes, res.Tombstones = a.deleted, a.tombstones
	if err := a.writeConflicts(ctx, s.qConflicts); err != nil {
		return Result{}, err
	}
	if err := s.writeParked(ctx, conn, a, b); err != nil {
		return Result{}, err
	}
	for i := range b.Txns {
		res.MaxStamp = max(res.MaxStamp, b.Txns[i].Stamp)
	}
	commit := "COMMIT"
	if res.MaxStamp != 0 {
		q := "INSERT INTO " + s.qWatermarks + " (origin, applied_hlc, updated_at) VALUES (" +
			strconv.Itoa(int(b.Origin)) + "," + strconv.FormatUint(uint64(res.MaxStamp), 10) + ",NOW(6))" +
			" ON DUPLICATE KEY UPDATE applied_hlc = GREATEST(applied_hlc, VALUES(applied_hlc)), updated_at = VALUES(updated_at)"
		if merge {
			// One round trip: the server stops at a failed raise, so the
			// COMMIT runs only after it succeeded.
			commit = q + ";COMMIT"
		} else if _, err := conn.ExecContext(ctx, q); err != nil {
			return Result{}, bookkeepingError("raise the watermark in", s.qWatermarks, err)
		}
	}
	if _, err := conn.ExecContext(ctx, commit); err != nil {
		if commit != "COMMIT" {
			return Result{}, bookkeepingError(fmt.Sprintf("commit batch %s/%d [%d, %d) after raising the watermark in",
				b.Topic, b.Partition, b.FirstOffset, b.NextOffset), s.qWatermarks, err)
		}
		return Result{}, fmt.Errorf("sink: commit batch %s/%d [%d, %d): %w", b.Topic, b.Partition, b.FirstOffset, b.NextOffset, err)
	}
	committed = true
	return res, nil
}

// isOwnError reports errors raised by the sink itself rather than by the
// connection: the transaction and connection are intact.
func isOwnError(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe) || errors.Is(err, ErrFenced)
}

// tally adds the outcome of p's items.
func (r *Result) tally(p *plan) {
	r.Rows += p.rows
	r.Superseded += p.superseded
	r.Duplicates += p.replays
	for _, tp := range p.tables {
		for _, it := range tp.items {
			switch it.state {
			case stateApplied:
				r.Applied++
			case stateDuplicate:
				r.Duplicates++
			case stateConflict:
				r.Conflicts++
			case stateObsolete:
				r.Superseded++
			}
		}
	}
}

// claim takes a sink connection and claims b's offsets as the first
// statement of its apply transaction (see claimOffsets); with a plan p it
// also reads the versions of p's first rows in the same round trip
// (claimAndRead). conn is nil only when there is no connection to release.
func (s *MySQL) claim(ctx context.Context, b Batch, a *applier, p *plan) (conn *sql.Conn, already bool, err error) {
	conn, err = s.firstUse(ctx, staleConn, func(c *sql.Conn) (err error) {
		if p == nil {
			already, err = s.claimOffsets(ctx, c, b)
			return err
		}
		a.tx = c
		already, err = s.claimAndRead(ctx, c, b, a, p)
		return err
	})
	return conn, already, err
}

// claimAndRead claims b's offsets and reads the row versions of the first
// keys of every table of p (as lookup would) in one round trip. The claim
// stays the transaction's first statement; the reads only lock rows,
// which the rollback of a batch found applied already, or fenced,
// releases.
func (s *MySQL) claimAndRead(ctx context.Context, c *sql.Conn, b Batch, a *applier, p *plan) (already bool, err error) {
	q := s.claimSQL(b)
	q = append(q, ";SELECT ROW_COUNT()"...)
	var reads []*read
	for _, tp := range p.tables {
		tp.read = 0
		if len(tp.items) == 0 {
			continue
		}
		r, _, err := a.newRead(tp, tp.items, readRows)
		if err != nil {
			return false, err
		}
		reads = append(reads, r)
		q = append(q, ';')
		q = append(q, r.q...)
	}
	rows, err := c.QueryContext(ctx, string(q))
	if err != nil {
		return false, bookkeepingError("write the offsets row in", s.qOffsets, err)
	}
	defer rows.Close()
	rs := resultSets{rows: rows}
	if !rs.next() {
		return false, bookkeepingError("write the offsets row in", s.qOffsets, resultErr(rows))
	}
	n, err := rs.count()
	if err != nil {
		return false, bookkeepingError("count the rows the claim changed in", s.qOffsets, err)
	}
	for _, r := range reads {
		if !rs.next() {
			return false, a.stmtError(r.tp.meta, resultErr(rows))
		}
		if err := a.scanRows(rows, r.tp.meta, r.ncols(), r.row); err != nil {
			return false, err
		}
		r.tp.read = len(r.chunk)
	}
	if err := rows.Close(); err != nil {
		return false, bookkeepingError("read the versions after claiming in", s.qOffsets, err)
	}
	if already, err = s.settleClaim(ctx, c, b, n); err != nil || already {
		return already, err
	}
	for _, r := range reads {
		if err := a.finishRead(ctx, r); err != nil {
			return false, err
		}
	}
	return false, nil
}

// resultErr is why a multi-statement query has no next result.
func resultErr(rows *sql.Rows) error {
	if err := rows.Err(); err != nil {
		return err
	}
	return errNoResult
}

// firstUse takes a configured connection and runs use on it. A pooled
// connection that went stale while idle (server restart, wait_timeout),
// as stale judges use's error, is discarded and use runs once more on a
// new one. conn is nil only when no connection was acquired.
func (s *MySQL) firstUse(ctx context.Context, stale func(error) bool, use func(*sql.Conn) error) (conn *sql.Conn, err error) {
	for attempt := 0; ; attempt++ {
		conn, pooled, err := s.acquire(ctx)
		if err != nil {
			return nil, err
		}
		err = use(conn)
		if err == nil || !pooled || attempt > 0 || !stale(err) {
			return conn, err
		}
		discard(conn)
	}
}

// staleConn reports an error of a connection that went away while idle,
// before the server answered: another connection may well succeed.
func staleConn(err error) bool {
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// rollback ends the transaction open on a sink connection (autocommit is
// off) without committing. It runs even when the apply's context has
// ended: a connection is reused only after its transaction is over.
func rollback(conn *sql.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	_, err := conn.ExecContext(ctx, "ROLLBACK")
	return err
}

// rollbackTimeout bounds a ROLLBACK on a connection that may be broken.
const rollbackTimeout = 10 * time.Second

// claimOffsets writes the partition's offsets row, unless the row belongs
// to a newer epoch (ErrFenced) or already covers b (already). It is one
// statement, and its write locks the row until the transaction ends.
//
// INVARIANT: the offsets write is the first row change of every apply
// transaction. The local binlog reader drops every transaction whose first
// row event touches _tandem_offsets: that is how a change applied by a sink
// is never published again (no echo). Nothing may write a row before it.
//
// The upsert changes the row only when the stored epoch is not newer and
// the stored offset is below b's end; otherwise it leaves the row as it is
// (0 rows affected; the sink's connections never set clientFoundRows) and
// a read of the now locked row tells which of the two it was. Deciding in
// the statement rather than after a SELECT … FOR UPDATE saves a round trip
// per batch, and a row that a concurrent replicator creates first is
// judged by its epoch like any other.
func (s *MySQL) claimOffsets(ctx context.Context, c stmtRunner, b Batch) (already bool, err error) {
	res, err := c.ExecContext(ctx, string(s.claimSQL(b)))
	if err != nil {
		return false, bookkeepingError("write the offsets row in", s.qOffsets, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return s.settleClaim(ctx, c, b, n)
}

// claimSQL is the conditional upsert of b's offsets row (claimOffsets).
func (s *MySQL) claimSQL(b Batch) []byte {
	epoch := strconv.AppendUint(nil, b.Epoch, 10)
	next := strconv.AppendInt(nil, b.NextOffset, 10)
	q := make([]byte, 0, 512)
	q = append(q, "INSERT INTO "...)
	q = append(q, s.qOffsets...)
	q = append(q, " (topic, part, next_offset, origin, epoch, updated_at) VALUES ("...)
	q = appendTextString(q, b.Topic)
	q = append(q, ',')
	q = strconv.AppendInt(q, int64(b.Partition), 10)
	q = append(q, ',')
	q = append(q, next...)
	q = append(q, ',')
	q = strconv.AppendUint(q, uint64(b.Origin), 10)
	q = append(q, ',')
	q = append(q, epoch...)
	q = append(q, ",NOW(6)) ON DUPLICATE KEY UPDATE "...)
	// Assignments are evaluated left to right against the row as updated
	// so far (unless sql_mode has SIMULTANEOUS_ASSIGNMENT, where they all
	// see the old row): the columns the condition reads come last, epoch
	// before next_offset, and once epoch is raised to b's the condition
	// still holds for next_offset. Either way all four agree.
	for _, col := range []string{"updated_at", "origin", "epoch", "next_offset"} {
		q = append(q, col...)
		q = append(q, " = IF(epoch <= "...)
		q = append(q, epoch...)
		q = append(q, " AND next_offset < "...)
		q = append(q, next...)
		q = append(q, ", VALUES("...)
		q = append(q, col...)
		q = append(q, "), "...)
		q = append(q, col...)
		q = append(q, ")"...)
		if col != "next_offset" {
			q = append(q, ", "...)
		}
	}
	return q
}

// settleClaim decides a claim from the upsert's affected rows n: 1
// created the row, 2 advanced it; 0 left it, and a read of the row (locked
// by the upsert) tells whether b was applied already or another epoch
// holds the partition.
func (s *MySQL) settleClaim(ctx context.Context, c stmtRunner, b Batch, n int64) (already bool, err error) {
	if n != 0 {
		return false, nil
	}
	where := make([]byte, 0, 64)
	where = append(where, " WHERE topic = "...)
	where = appendTextString(where, b.Topic)
	where = append(where, " AND part = "...)
	where = strconv.AppendInt(where, int64(b.Partition), 10)
	var (
		stored      int64
		storedEpoch uint64
	)
	if err := c.QueryRowContext(ctx, "SELECT next_offset, epoch FROM "+s.qOffsets+string(where)).Scan(&stored, &storedEpoch); err != nil {
		return false, bookkeepingError("read the offsets row in", s.qOffsets, err)
	}
	switch {
	case storedEpoch > b.Epoch:
		return false, fmt.Errorf("%w: %s/%d is held by epoch %d, this replicator has %d", ErrFenced, b.Topic, b.Partition, storedEpoch, b.Epoch)
	case stored >= b.NextOffset:
		return true, nil
	}
	return false, fmt.Errorf("sink: offsets row of %s/%d (next offset %d, epoch %d) was left unchanged by a batch ending at %d of epoch %d",
		b.Topic, b.Partition, stored, storedEpoch, b.NextOffset, b.Epoch)
}

// writeParked stores b's parked messages, once per (topic, partition,
// offset): a replay of an overlapping batch does not duplicate them.
func (s *MySQL) writeParked(ctx context.Context, tx stmtRunner, a *applier, b Batch) error {
	for _, p := range b.Parked {
		q := a.buf[:0]
		q = append(q, "INSERT INTO "...)
		q = append(q, s.qParked...)
		q = append(q, " (topic, part, msg_offset, tenant, reason, error, payload) VALUES ("...)
		q = appendTextString(q, b.Topic)
		q = append(q, ',')
		q = strconv.AppendInt(q, int64(b.Partition), 10)
		q = append(q, ',')
		q = strconv.AppendInt(q, p.Offset, 10)
		q = append(q, ',')
		q = appendTextString(q, truncateUTF8(p.Tenant, 255))
		q = append(q, ',')
		q = appendTextString(q, truncateUTF8(p.Reason, 64))
		q = append(q, ',')
		q = appendTextString(q, truncateUTF8(p.Err, 16000))
		q = append(q, ',')
		n := len(q)
		q = appendBinaryString(q, p.Payload)
		if len(q) > a.rowLimit() {
			// Parking must not stall the partition: keep the message's
			// place and reason without its body, which stays in Kafka
			// until retention.
			s.log.Error("parked message is too large for the target's max_allowed_packet; storing it without payload",
				zap.String("topic", b.Topic), zap.Int("partition", b.Partition), zap.Int64("offset", p.Offset),
				zap.Int("payload_bytes", len(p.Payload)))
			q = append(q[:n], "NULL"...)
		}
		// The unique key (topic, part, msg_offset) makes a replay a no-op;
		// unlike INSERT IGNORE this still fails on anything else.
		q = append(q, ") ON DUPLICATE KEY UPDATE id = id"...)
		a.buf = q
		if _, err := tx.ExecContext(ctx, string(q)); err != nil {
			return bookkeepingError("park a message in", s.qParked, err)
		}
	}
	return nil
}

// observe feeds the batch's versions and stamps to the local clock, so that
// local writes after it are causally after what was applied. A version too
// far ahead is refused by the clock and counted; the data was applied
// anyway, since skew does not change which version wins.
func (s *MySQL) observe(b Batch, res *Result) {
	var first error
	var firstRemote hlc.Timestamp
	update := func(ts hlc.Timestamp) {
		if ts == 0 {
			return
		}
		err := s.clock.Update(ts)
		if err == nil {
			return
		}
		if errors.Is(err, hlc.ErrClockOffset) {
			res.Skewed++
		}
		if first == nil {
			first, firstRemote = err, ts
		}
	}
	for i := range b.Txns {
		t := &b.Txns[i]
		update(t.Stamp)
		for j := range t.Changes {
			update(t.Changes[j].Version)
		}
	}
	if first == nil {
		return
	}
	fields := []zap.Field{zap.String("topic", b.Topic), zap.Int("partition", b.Partition), zap.Uint8("origin", b.Origin),
		zap.Stringer("remote_version", firstRemote), zap.Stringer("local_clock", s.clock.Last()), zap.Error(first)}
	if errors.Is(first, hlc.ErrClockOffset) {
		s.log.Warn("incoming versions are ahead of the local clock by more than the max offset; applied anyway",
			append(fields, zap.Int("skewed", res.Skewed))...)
		return
	}
	s.log.Error("could not advance the local clock past applied versions", fields...)
}

// begin opens a transaction on a configured connection (see firstUse).
func (s *MySQL) begin(ctx context.Context) (*sql.Conn, *sql.Tx, error) {
	var tx *sql.Tx
	conn, err := s.firstUse(ctx, IsRetryable, func(c *sql.Conn) (err error) {
		tx, err = c.BeginTx(ctx, nil)
		return err
	})
	if err != nil {
		if conn != nil {
			discard(conn)
		}
		return nil, nil, fmt.Errorf("sink: begin transaction: %w", err)
	}
	return conn, tx, nil
}

func (s *MySQL) acquire(ctx context.Context) (conn *sql.Conn, pooled bool, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, errors.New("sink: closed")
	}
	if n := len(s.idle); n > 0 {
		conn = s.idle[n-1]
		s.idle = s.idle[:n-1]
	}
	s.mu.Unlock()
	if conn != nil {
		return conn, true, nil
	}
	conn, err = s.db.Conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("sink: connect: %w", err)
	}
	for _, q := range sessionSQL {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			discard(conn)
			return nil, false, fmt.Errorf("sink: configure session (%s): %w", q, err)
		}
	}
	if s.multi.Load() == multiUnknown {
		// A connection without go-sql-driver's multiStatements gets a
		// syntax error for two statements in one query.
		_, err := conn.ExecContext(ctx, "DO 1;DO 1")
		switch n := sqlErrorNumber(err); {
		case err == nil:
			s.multi.Store(multiOn)
		case n == erParse:
			s.multi.Store(multiOff)
			s.log.Info("the sink's connections take one statement per query (DSN without multiStatements=true): each statement of a batch costs a round trip")
		default:
			discard(conn)
			return nil, false, fmt.Errorf("sink: probe for multi-statement queries: %w", err)
		}
	}
	var packet int64
	if err := conn.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&packet); err != nil {
		discard(conn)
		return nil, false, fmt.Errorf("sink: read max_allowed_packet: %w", err)
	}
	s.maxPacket.Store(packet)
	return conn, false, nil
}

func (s *MySQL) release(conn *sql.Conn, healthy bool) {
	if healthy {
		s.mu.Lock()
		if !s.closed && len(s.idle) < maxIdleConns {
			s.idle = append(s.idle, conn)
			conn = nil
		}
		s.mu.Unlock()
	}
	if conn != nil {
		discard(conn)
	}
}

// discard closes conn's underlying connection instead of returning it to
// db's pool, where its session settings would reach other users.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}
