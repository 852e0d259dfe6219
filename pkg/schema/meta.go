package schema

import (
	"fmt"
	"strings"
)

// metaColumn is one column of a bookkeeping table.
type metaColumn struct {
	name  string
	typ   string // SQL type, e.g. "BIGINT UNSIGNED"
	attrs string // NOT NULL, DEFAULT …
}

func (c metaColumn) def() string {
	return strings.TrimSpace(QuoteIdent(c.name) + " " + c.typ + " " + c.attrs)
}

// metaTable is a bookkeeping table in the meta schema.
type metaTable struct {
	name    string
	comment string
	columns []metaColumn
	pk      []string
	keys    []string // further index definitions
}

// metaCharset is the meta schema's character set. A binary collation
// makes topic and tenant names compare byte for byte, as Kafka and Redis
// do.
const (
	metaCharset   = "utf8mb4"
	metaCollation = "utf8mb4_bin"
)

// metaTables returns the bookkeeping tables for version column v.
func metaTables(v string) []metaTable {
	ts := "TIMESTAMP(6)"
	now := "NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
	nowOnUpdate := now + " ON UPDATE CURRENT_TIMESTAMP(6)"
	// Every TIMESTAMP column has an explicit default: with
	// explicit_defaults_for_timestamp=OFF the server would otherwise give
	// the first one ON UPDATE CURRENT_TIMESTAMP and rewrite it on every
	// update.
	return []metaTable{{
		name:    Offsets,
		comment: "Tandem: next Kafka offset per topic partition, written with the applied data",
		columns: []metaColumn{
			{"topic", "VARCHAR(249)", "NOT NULL"},
			{"part", "INT", "NOT NULL"},
			{"next_offset", "BIGINT", "NOT NULL"},
			{"origin", "TINYINT UNSIGNED", "NOT NULL"},
			{"epoch", "BIGINT UNSIGNED", "NOT NULL DEFAULT 0"},
			{"updated_at", ts, nowOnUpdate},
		},
		pk: []string{"topic", "part"},
	}, {
		name:    Conflicts,
		comment: "Tandem: lost compare-and-set and unresolvable conflicts",
		columns: []metaColumn{
			{"id", "BIGINT UNSIGNED", "NOT NULL AUTO_INCREMENT"},
			{"at", ts, now},
			{"schema_name", "VARCHAR(64)", "NULL"},
			{"table_name", "VARCHAR(64)", "NULL"},
			{"pk_json", "TEXT", "NULL COMMENT 'JSON array of the key values as text'"},
			{"kind", "VARCHAR(32)", "NULL COMMENT 'lost | unique_key | home_only_violation'"},
			{"local_version", "BIGINT UNSIGNED", "NULL"},
			{"incoming_version", "BIGINT UNSIGNED", "NULL"},
			{"local_site", "TINYINT UNSIGNED", "NULL"},
			{"incoming_site", "TINYINT UNSIGNED", "NULL"},
			{"origin_gtid", "VARCHAR(255)", "NULL"},
			{"tenant", "VARCHAR(255)", "NULL"},
			{"detail", "TEXT", "NULL"},
			{"reasserted_at", ts, "NULL DEFAULT NULL COMMENT 'home_only_violation: when the home site re-asserted its version (or found it superseded); NULL = pending'"},
		},
		pk: []string{"id"},
		keys: []string{
			"KEY `at` (`at`)",
			// The home site's re-assert loop finds its pending violations.
			"KEY `reassert_pending` (`kind`, `reasserted_at`)",
		},
	}, {
		name:    Parked,
		comment: "Tandem: messages a sink could not apply or that wait for a paused tenant",
		columns: []metaColumn{
			{"id", "BIGINT UNSIGNED", "NOT NULL AUTO_INCREMENT"},
			{"at", ts, now},
			{"topic", "VARCHAR(249)", "NULL"},
			{"part", "INT", "NULL"},
			{"msg_offset", "BIGINT", "NULL"},
			{"tenant", "VARCHAR(255)", "NULL"},
			{"reason", "VARCHAR(64)", "NULL"},
			{"error", "TEXT", "NULL"},
			{"payload", "LONGBLOB", "NULL"},
			{"status", "VARCHAR(16)", "NOT NULL DEFAULT 'parked'"},
		},
		pk: []string{"id"},
		keys: []string{
			"UNIQUE KEY `message` (`topic`, `part`, `msg_offset`)",
			// Resuming a tenant replays its parked messages in order.
			"KEY `tenant_status` (`tenant`, `status`, `id`)",
		},
	}, {
		name:    Watermarks,
		comment: "Tandem: highest source HLC applied per origin site",
		columns: []metaColumn{
			{"origin", "TINYINT UNSIGNED", "NOT NULL"},
			{"applied_hlc", "BIGINT UNSIGNED", "NOT NULL"},
			{"updated_at", ts, nowOnUpdate},
		},
		pk: []string{"origin"},
	}, {
		name:    State,
		comment: "Tandem: replicator state shared by a site's replicators (tenant queues under HA)",
		columns: []metaColumn{
			// Keys compare byte for byte, as in Pebble; 3072 bytes is
			// InnoDB's longest index key.
			{"k", "VARBINARY(3072)", "NOT NULL"},
			{"v", "LONGBLOB", "NOT NULL"},
		},
		pk: []string{"k"},
	}, {
		name:    Heartbeat,
		comment: "Tandem: per-site heartbeats; replicated like data to measure lag",
		columns: []metaColumn{
			{"site", "TINYINT UNSIGNED", "NOT NULL"},
			{"hlc", "BIGINT UNSIGNED", "NOT NULL"},
			{"wall", ts, now},
			{"watermarks", "VARCHAR(2048)", "NOT NULL DEFAULT '' COMMENT 'origin:applied_hlc,... of the writing site, for tombstone collection'"},
			{v, "BIGINT UNSIGNED", "NOT NULL DEFAULT 0"},
		},
		pk: []string{"site"},
	}, {
		name:    Probe,
		comment: "Tandem: verifier probes; replicated like data",
		columns: []metaColumn{
			{"site", "TINYINT UNSIGNED", "NOT NULL"},
			{"seq", "BIGINT UNSIGNED", "NOT NULL"},
			{"tenant", "VARCHAR(255)", "NOT NULL DEFAULT ''"},
			{"written_at", ts, now},
			{v, "BIGINT UNSIGNED", "NOT NULL DEFAULT 0"},
		},
		pk: []string{"site", "seq"},
	}}
}

// createSQL is the CREATE TABLE statement of m in schema.
func (m metaTable) createSQL(schema string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s.%s (\n", QuoteIdent(schema), QuoteIdent(m.name))
	for _, c := range m.columns {
		fmt.Fprintf(&b, "  %s,\n", c.def())
	}
	fmt.Fprintf(&b, "  PRIMARY KEY (%s)", identList(m.pk))
	for _, k := range m.keys {
		fmt.Fprintf(&b, ",\n  %s", k)
	}
	fmt.Fprintf(&b, "\n) ENGINE=InnoDB DEFAULT CHARSET=%s COLLATE=%s COMMENT=%s",
		metaCharset, metaCollation, quoteString(m.comment))
	return b.String()
}

// pkColumns describes m's primary key columns as information_schema would
// once m exists, for planning its tombstone table before it does.
func (m metaTable) pkColumns() []Column {
	var out []Column
	for _, name := range m.pk {
		for i, c := range m.columns {
			if c.name == name {
				col := Column{Name: c.name, Position: i + 1, ColumnType: strings.ToLower(c.typ)}
				col.DataType, _, _ = strings.Cut(col.ColumnType, " ")
				col.DataType, _, _ = strings.Cut(col.DataType, "(")
				if isText(col.DataType) {
					col.Charset, col.Collation = metaCharset, metaCollation
				}
				out = append(out, col)
			}
		}
	}
	return out
}

// isText reports whether a column of this data type has a character set.
func isText(dataType string) bool {
	switch dataType {
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set":
		return true
	}
	return false
}

// identList quotes and joins column names.
func identList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = QuoteIdent(n)
	}
	return strings.Join(q, ", ")
}
