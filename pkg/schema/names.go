package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

const (
	// DefaultVersionColumn is the per-row version column (BIGINT UNSIGNED).
	DefaultVersionColumn = "_tandem_hlc"
	// DefaultMetaSchema holds the bookkeeping tables on every site.
	DefaultMetaSchema = "tandem"

	// Prefix starts the name of every object Tandem owns. The reader never
	// publishes changes to a table with this prefix, except Heartbeat and
	// Probe tables, which replicate like data to measure lag.
	Prefix = "_tandem_"

	// TombPrefix + table name is the tombstone table of a replicated table,
	// in the same schema: the table's primary key columns plus the version
	// column. A BEFORE DELETE trigger writes it in the deleting transaction.
	TombPrefix = "_tandem_tomb_"
	// TombVersionIndex is the index on a tombstone table's version column.
	TombVersionIndex = "_tandem_hlc_idx"
	// MaxTableName is the longest replicated table name: MariaDB's 64
	// character identifier limit minus len(TombPrefix).
	MaxTableName = 64 - len(TombPrefix)

	// Offsets (in the meta schema) stores, per (topic, partition), the next
	// Kafka offset a sink applies, written in the same target transaction as
	// the data (exactly-once effect). A sink writes it FIRST in every
	// transaction so that the local reader, seeing it as the first row event,
	// drops the whole transaction (loop prevention) without buffering it.
	Offsets = "_tandem_offsets"
	// Conflicts logs every lost compare-and-set and every conflict the rule
	// cannot resolve (unique secondary keys).
	Conflicts = "_tandem_conflicts"
	// Parked keeps messages a sink could not decode or apply, with the
	// error, so that nothing is lost and the pipeline can go on.
	Parked = "_tandem_parked"
	// Heartbeat rows are written by each replicator every 100 ms and
	// replicate like data; receivers compute lag from them.
	Heartbeat = "_tandem_heartbeat"
	// Probe rows are written by the verifier.
	Probe = "_tandem_probe"
	// Watermarks records, per origin site, the highest source HLC stamp a
	// sink has applied; tombstones below the lowest watermark of all sites
	// can be collected.
	Watermarks = "_tandem_watermarks"
	// State is a key-value table of replicator state that every
	// replicator of a site must reach: under site-level HA the tenant
	// queues live there, so that a replicator taking over finds them.
	State = "_tandem_state"

	// ApplySessionVar is set to 1 by sink sessions. Triggers leave versions
	// and tombstones alone when it is set, because the sink writes them
	// explicitly. NULL or 0 mean "local write": a pooled connection that
	// resets it to 0 gets versions stamped again.
	ApplySessionVar = "@tandem_apply"

	// MaxIdentifier is MariaDB's and MySQL's limit for table, column and
	// trigger names, in characters.
	MaxIdentifier = 64
)

// Trigger kinds, the middle part of a trigger's name.
const (
	TriggerBeforeInsert = "bi"
	TriggerBeforeUpdate = "bu"
	TriggerBeforeDelete = "bd"
	TriggerAfterInsert  = "ai"
)

// TriggerName returns the name of Tandem's trigger of kind (TriggerBefore…)
// on table: "_tandem_<kind>_<table>". A name longer than MaxIdentifier keeps
// a prefix of the table name and ends in 8 hex digits of the table name's
// SHA-256, so it stays unique and stable. (Replicated table names are at
// most MaxTableName characters, which always fits; the hash is a safety net.)
func TriggerName(kind, table string) string {
	name := Prefix + kind + "_" + table
	if utf8.RuneCountInString(name) <= MaxIdentifier {
		return name
	}
	sum := sha256.Sum256([]byte(table))
	suffix := "_" + hex.EncodeToString(sum[:4])
	keep := MaxIdentifier - utf8.RuneCountInString(Prefix+kind+"_") - len(suffix)
	short := []rune(table)[:keep]
	return Prefix + kind + "_" + string(short) + suffix
}

// TombTable returns the tombstone table name for a replicated table.
func TombTable(table string) string { return TombPrefix + table }

// IsTomb reports whether table is a tombstone table and returns the base
// table's name.
func IsTomb(table string) (base string, ok bool) {
	if strings.HasPrefix(table, TombPrefix) {
		return table[len(TombPrefix):], true
	}
	return "", false
}

// IsInternal reports whether table is one of Tandem's own tables.
func IsInternal(table string) bool { return strings.HasPrefix(table, Prefix) }

// Replicates reports whether changes to an internal table are published
// like data (heartbeats and probes measure lag end to end).
func Replicates(table string) bool { return table == Heartbeat || table == Probe }
