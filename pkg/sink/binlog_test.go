package sink

import (
	"strconv"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/pkg/schema"
)

// TestOffsetsRowIsFirstRowEvent checks the loop-prevention invariant in the
// server's own binary log: in every transaction the sink commits, the first
// row event is on _tandem_offsets, whatever else the transaction writes
// (rows, tombstones, conflicts, parked messages, the watermark).
func TestOffsetsRowIsFirstRowEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable, usersTable)
	file, pos := binlogPosition(t, f)

	vs := newVersions()
	v1, v2 := vs.next(2), vs.next(2)
	f.apply(t, f.batch(txn(f.kv(ins, 1, "a", v2), f.kv(ins, 2, "b", v2), f.user(ins, 1, "a@x", "a", v1))))
	b := f.batch(
		txn(f.kv(del, 1, "", vs.next(2))),            // tombstone + delete
		txn(f.kv(upd, 2, "old", v1)),                 // a lost compare: conflict row
		txn(f.user(ins, 2, "a@x", "dup", v2)),        // unique key conflict
		txn(f.kv(ins, 3, "c", vs.next(2))),           // plain insert
		txn(f.user(upd, 1, "a@x", "a2", vs.next(2))), // upsert of an existing row
	)
	b.Parked = []Parked{{Offset: b.NextOffset, Reason: "decode", Err: "x"}}
	b.NextOffset++
	f.next = b.NextOffset
	res := f.apply(t, b)
	if res.Conflicts != 2 || res.Tombstones != 1 {
		t.Fatalf("Result %+v", res)
	}

	offsets := f.meta + "." + schema.Offsets
	seen := 0
	for _, tables := range binlogTxnTables(t, f, file, pos) {
		mine := false
		for _, tb := range tables {
			mine = mine || strings.HasPrefix(tb, f.data+".") || strings.HasPrefix(tb, f.meta+".")
		}
		if !mine {
			continue
		}
		seen++
		if tables[0] != offsets {
			t.Errorf("a sink transaction's first row event is on %s, want %s (table maps: %v)", tables[0], offsets, tables)
		}
	}
	if seen != 2 {
		t.Errorf("found %d sink transactions in the binlog, want 2", seen)
	}
}

// binlogPosition is the server's current binlog file and position.
func binlogPosition(t *testing.T, f *fixture) (string, int64) {
	t.Helper()
	var file string
	var pos int64
	var ignore any
	if err := f.db.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &ignore, &ignore); err != nil {
		t.Fatalf("SHOW MASTER STATUS: %v", err)
	}
	return file, pos
}

// binlogTxnTables lists, per transaction written to the binlog since
// file:pos (by any client of the server), the tables of its table map
// events in order, as "schema.table".
func binlogTxnTables(t *testing.T, f *fixture, file string, pos int64) [][]string {
	t.Helper()
	rows, err := f.db.Query("SHOW BINLOG EVENTS IN '" + file + "' FROM " + strconv.FormatInt(pos, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var (
		out    [][]string
		tables []string // table maps of the current transaction, in order
	)
	for rows.Next() {
		var logName, eventType, info string
		var p, serverID, end int64
		if err := rows.Scan(&logName, &p, &eventType, &serverID, &end, &info); err != nil {
			t.Fatal(err)
		}
		switch eventType {
		case "Gtid":
			tables = nil
		case "Table_map":
			// "table_id: 42 (schema.table)"
			if i := strings.LastIndexByte(info, '('); i >= 0 {
				tables = append(tables, strings.TrimSuffix(info[i+1:], ")"))
			}
		case "Xid":
			if len(tables) > 0 {
				out = append(out, tables)
			}
			tables = nil
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
