package sink

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// DefaultMaxRowsPerStatement bounds the rows of one multi-row statement.
// MariaDB absorbs ~100k rows/s through one connection with 200-row
// upserts; bigger statements gain little and hold locks longer.
const DefaultMaxRowsPerStatement = 200

// Config configures a sink.
type Config struct {
	// Site is the local site's id (1..255): the site this sink writes to.
	Site uint8
	// MetaSchema holds the bookkeeping tables; default schema.DefaultMetaSchema.
	MetaSchema string
	// VersionColumn is the per-row version column; default
	// schema.DefaultVersionColumn.
	VersionColumn string
	// MaxRowsPerStatement bounds the rows of one multi-row statement;
	// default DefaultMaxRowsPerStatement.
	MaxRowsPerStatement int
	// Policy decides every compare-and-set.
	Policy conflict.Policy
}

// withDefaults returns c with defaults filled in, or an error naming the
// bad field and what is allowed.
func (c Config) withDefaults() (Config, error) {
	if c.MetaSchema == "" {
		c.MetaSchema = schema.DefaultMetaSchema
	}
	if c.VersionColumn == "" {
		c.VersionColumn = schema.DefaultVersionColumn
	}
	if c.MaxRowsPerStatement == 0 {
		c.MaxRowsPerStatement = DefaultMaxRowsPerStatement
	}
	switch {
	case c.Site == 0:
		return c, errors.New("sink: config: site id 0 is reserved; use 1..255")
	case c.MaxRowsPerStatement < 1 || c.MaxRowsPerStatement > maxRowsPerStatement:
		return c, fmt.Errorf("sink: config: max rows per statement %d: want 1..%d", c.MaxRowsPerStatement, maxRowsPerStatement)
	}
	return c, nil
}

// maxRowsPerStatement is an upper bound that keeps one statement's SQL text
// well inside max_allowed_packet for ordinary rows.
const maxRowsPerStatement = 10000

// Batch is one target transaction's worth of a topic partition: consecutive
// Kafka messages, decoded.
type Batch struct {
	Topic     string
	Partition int
	// FirstOffset is the offset of the batch's first message, NextOffset
	// one past its last: the offset stored for the partition on commit.
	FirstOffset, NextOffset int64
	// Origin is the site id the topic belongs to.
	Origin uint8
	// Epoch is the fencing epoch of this replicator's lease (0 = none). A
	// batch whose epoch is below the stored one is refused with ErrFenced.
	Epoch uint64
	// Txns are consecutive source transactions, in order (group commit).
	Txns []event.Txn
	// Parked are messages that could not be decoded or applied; they are
	// stored in the same transaction, once per (topic, partition, offset).
	Parked []Parked
}

// Parked is a message kept in _tandem_parked instead of being applied.
type Parked struct {
	Offset  int64
	Tenant  string
	Reason  string // short machine-readable reason ("decode", "apply", …)
	Err     string
	Payload []byte
}

// Result says what Apply did. Every incoming change of the batch is counted
// exactly once in Applied, Duplicates, Conflicts or Superseded:
//
//	Rows == Applied + Duplicates + Conflicts + Superseded
type Result struct {
	// Rows is the number of incoming row changes in the batch.
	Rows int
	// Applied counts changes whose version is now the row's (or the
	// tombstone's, for deletes).
	Applied int
	// Duplicates counts changes the target already had: the same version
	// was there (a replay).
	Duplicates int
	// Conflicts counts changes that lost the compare-and-set to a newer
	// local version, or that broke a unique secondary key; each one is
	// logged in _tandem_conflicts.
	Conflicts int
	// Superseded counts changes overtaken by a newer version of the same
	// row later in the same batch: only the newest is written. It also
	// counts initial-load versions (hlc.InitialLoad, from `replicator
	// backfill`) that lost to a write made at the target since replication
	// started: the row's pre-replication copy is simply out of date, which
	// is no conflict.
	Superseded int
	// Deletes is the number of rows deleted; Tombstones the number of
	// tombstones written (a winning delete always writes one, whether or
	// not the row was there).
	Deletes, Tombstones int
	// Skewed counts incoming versions and stamps the local clock refused
	// because they were too far ahead (hlc.ErrClockOffset). The data is
	// applied regardless.
	Skewed int
	// MaxStamp is the greatest Txn.Stamp of the batch.
	MaxStamp hlc.Timestamp
	// AlreadyApplied is set when the stored offset shows the whole batch
	// was applied before (a replay); nothing else was done.
	AlreadyApplied bool
}

// ErrFenced is returned when a newer fencing epoch owns the partition: a
// newer leader took over, and this replicator must stop applying.
var ErrFenced = errors.New("sink: fenced: a newer epoch owns this partition")

// PermanentError says that one transaction of the batch can never be
// applied as it is (unknown column, missing table, data too long, a foreign
// key or check constraint…). Retrying will not help: the caller parks that
// transaction and applies the rest.
type PermanentError struct {
	// TxnIndex is the index in Batch.Txns of the transaction at fault.
	TxnIndex int
	// Table is "schema.table" of the offending change, when known.
	Table string
	Err   error
}

func (e *PermanentError) Error() string {
	if e.Table == "" {
		return fmt.Sprintf("sink: transaction %d of the batch cannot be applied: %v", e.TxnIndex, e.Err)
	}
	return fmt.Sprintf("sink: transaction %d of the batch cannot be applied to %s: %v", e.TxnIndex, e.Table, e.Err)
}

func (e *PermanentError) Unwrap() error { return e.Err }

// errInvalidBatch is wrapped by errors about a malformed Batch: a bug in the
// caller, not something a retry fixes.
var errInvalidBatch = errors.New("invalid batch")

// IsRetryable reports whether err is transient: a deadlock, a lock wait
// timeout, a lost connection, a missing bookkeeping table, or another
// server-side condition that is not about the data (missing privileges,
// read-only server, too many connections) and that a later attempt may not
// meet. PermanentError, ErrFenced, a cancelled context and a malformed batch
// are not retryable; neither is an error the sink cannot classify.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var pe *PermanentError
	switch {
	case errors.As(err, &pe), errors.Is(err, ErrFenced), errors.Is(err, errInvalidBatch),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	var te *transientError
	if errors.As(err, &te) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		// Data-shaped errors of data statements become PermanentError in
		// Apply; one that escapes elsewhere is not transient either.
		return !isDataError(me.Number)
	}
	var ne net.Error
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne)
}

// IsLockConflict reports whether err is a deadlock (the server rolled this
// transaction back so another could go on) or a lock wait timeout: the
// conflicting transaction is done or about to be, so retrying at once is
// the remedy, not a growing backoff.
func IsLockConflict(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == erLockDeadlock || me.Number == erLockWaitTimeout
	}
	return false
}

// transientError marks an error a retry is expected to get past: another
// transaction created a row this one had found missing under lock, or a
// bookkeeping table is missing until `replicator schema prepare` runs.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// MariaDB/MySQL error numbers the sink tells apart.
const (
	erParse            = 1064
	erDupEntry         = 1062
	erLockWaitTimeout  = 1205
	erLockDeadlock     = 1213
	erBadFieldError    = 1054
	erNoSuchTable      = 1146
	erNetPacketTooBig  = 1153
	erTooBigRowsize    = 1118
	erBadNull          = 1048
	erNoDefault        = 1364
	erDataTooLong      = 1406
	erWarnOutOfRange   = 1264
	erDataTruncated    = 1265
	erTruncatedValue   = 1292
	erWrongValueField  = 1366
	erWrongValueType   = 1411
	erIllegalValueType = 1367
	erDataOutOfRange   = 1690
	erRowIsReferenced  = 1451
	erNoReferencedRow  = 1452
	erRowIsReferenced0 = 1217
	erNoReferencedRow0 = 1216
	erConstraintFailed = 4025 // MariaDB CHECK constraint
	erCheckViolated    = 3819 // MySQL CHECK constraint
	erInvalidJSON      = 3140 // MySQL JSON column
	erSignalException  = 1644 // SIGNAL in a user trigger
	erGeometryObject   = 1416
	erTruncatedWrong   = 1300 // invalid character string
	erCantAggregate2   = 1267
	erNonDefaultVCol   = 1906 // value given for a generated column
	erWrongFKDef       = 1215
)

// isDataError reports whether a server error is about the data or the
// target's schema: applying the same change again fails the same way.
func isDataError(n uint16) bool {
	switch n {
	case erDupEntry, erBadFieldError, erNoSuchTable, erNetPacketTooBig, erTooBigRowsize, erBadNull,
		erNoDefault, erDataTooLong, erWarnOutOfRange, erDataTruncated, erTruncatedValue,
		erWrongValueField, erWrongValueType, erIllegalValueType, erDataOutOfRange,
		erRowIsReferenced, erNoReferencedRow, erRowIsReferenced0, erNoReferencedRow0,
		erConstraintFailed, erCheckViolated, erInvalidJSON, erSignalException,
		erGeometryObject, erTruncatedWrong, erCantAggregate2, erNonDefaultVCol, erWrongFKDef:
		return true
	}
	return false
}

// sqlErrorNumber returns the server error number in err, or 0.
func sqlErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// errConcurrentWriter is wrapped when another transaction created a row
// this one had found missing; the retry reads it and decides again.
var errConcurrentWriter = errors.New("a concurrent transaction wrote the same row")
