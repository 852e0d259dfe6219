// Package event defines what flows through Tandem: a source transaction's
// row changes, their versions and the binlog position after them, plus the
// versioned wire codec used on Kafka (see docs/wire-format.md).
package event

import (
	"fmt"
	"time"

	"github.com/tandemdb/tandem/pkg/hlc"
)

// Op is the kind of row change.
type Op uint8

// Row operations. An UPDATE that changes the primary key is emitted by the
// reader as a Delete of the old key followed by an Insert of the new one.
const (
	OpInsert Op = 1
	OpUpdate Op = 2
	OpDelete Op = 3
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Kind tells how a Value is stored and how a sink binds it.
type Kind uint8

// Value kinds. The comment says which MariaDB column types map to it and
// which field of Value carries the data.
const (
	KindNull      Kind = 0  // SQL NULL in any column
	KindInt       Kind = 1  // signed TINYINT…BIGINT, YEAR: Int
	KindUint      Kind = 2  // unsigned TINYINT…BIGINT: Uint
	KindFloat32   Kind = 3  // FLOAT: Float (exactly a float32 value)
	KindFloat64   Kind = 4  // DOUBLE: Float
	KindDecimal   Kind = 5  // DECIMAL: Bytes, canonical text "-123.4500"
	KindString    Kind = 6  // CHAR/VARCHAR/TEXT (any charset, raw bytes): Bytes
	KindBytes     Kind = 7  // BINARY/VARBINARY/BLOB/GEOMETRY: Bytes
	KindDate      Kind = 8  // DATE: Bytes "YYYY-MM-DD"
	KindDateTime  Kind = 9  // DATETIME(n): Bytes "YYYY-MM-DD HH:MM:SS[.ffffff]"
	KindTimestamp Kind = 10 // TIMESTAMP(n), in UTC: Bytes as DATETIME
	KindTime      Kind = 11 // TIME(n): Bytes "[-]HHH:MM:SS[.ffffff]"
	KindJSON      Kind = 12 // JSON (LONGTEXT on MariaDB): Bytes, the text
	KindEnum      Kind = 13 // ENUM: Bytes is the label; Uint the 1-based index
	KindSet       Kind = 14 // SET: Bytes is comma-joined labels; Uint the bitmask
	KindBit       Kind = 15 // BIT(n): Uint
	kindMax       Kind = KindBit
)

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k <= kindMax }

// Value is one column value. It is a plain struct rather than an interface
// so that a row is one allocation and comparisons are cheap.
type Value struct {
	Kind  Kind
	Int   int64
	Uint  uint64
	Float float64
	Bytes []byte
}

// IsNull reports whether v is SQL NULL.
func (v Value) IsNull() bool { return v.Kind == KindNull }

// Null is the SQL NULL value.
var Null = Value{}

// Change is one row change of a source transaction.
type Change struct {
	Schema string
	Table  string
	Op     Op
	// Columns are the column names in table order, from the binlog's table
	// map metadata (binlog_row_metadata=FULL), never from the live table.
	Columns []string
	// PK are indexes into Columns of the primary key, in key order.
	PK []int
	// Row is the after image for inserts and updates and the before image
	// for deletes; len(Row) == len(Columns).
	Row []Value
	// Version is the change's version: the row's version column after an
	// insert or update, the tombstone's version for a delete.
	Version hlc.Timestamp
}

// Position is a point in a source's binlog stream to resume from.
type Position struct {
	// GTIDSet is MariaDB's gtid_binlog_pos form ("1-101-42,2-102-7") or a
	// MySQL GTID set; empty means "from the current end of the binlog".
	GTIDSet string
	// File and Offset are informational (logs, metrics, error messages).
	File   string
	Offset uint32
}

func (p Position) String() string {
	if p.File == "" {
		return "gtid " + p.GTIDSet
	}
	return fmt.Sprintf("gtid %s (%s:%d)", p.GTIDSet, p.File, p.Offset)
}

// Txn is (a fragment of) one committed source transaction for one tenant.
// It is the unit published to Kafka: one message per Txn.
type Txn struct {
	// Origin is the site id of the site that committed the transaction.
	Origin uint8
	// GTID identifies the source transaction ("1-101-42").
	GTID string
	// Position is where to resume reading after this transaction.
	Position Position
	// CommitTime is the source commit time (binlog event timestamp, 1 s
	// resolution).
	CommitTime time.Time
	// Stamp is the reader's HLC when it read the transaction; it drives
	// the receiving site's clock and lag metrics.
	Stamp hlc.Timestamp
	// Tenant is the tenant the changes belong to ("" = global tenant).
	Tenant string
	// Fragment numbers the pieces of a transaction split because it was
	// larger than the configured size, from 0; Last is set on the final
	// piece. An unsplit transaction is Fragment 0 with Last set.
	Fragment uint32
	Last     bool
	Changes  []Change
}

// Key is the Kafka message key for t: its tenant, so that all of a tenant's
// changes land in one partition in order.
func (t *Txn) Key() []byte { return []byte(t.Tenant) }
