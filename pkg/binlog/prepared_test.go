package binlog

import (
	"context"
	"testing"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// TestReaderWithPreparedSchema reads what the triggers of `schema prepare`
// write: versions on every change, tombstones before deletes, and the old
// key's tombstone on a primary key change.
func TestReaderWithPreparedSchema(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	meta := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	execAll(t, db,
		"CREATE TABLE acc (id INT PRIMARY KEY, name VARCHAR(20))",
		"CREATE TABLE items (sku VARCHAR(10), n INT, qty INT, PRIMARY KEY (sku, n))",
	)
	ctx := context.Background()
	opt := schema.Options{Site: 1, MetaSchema: meta, Tables: []schema.TableRef{{Schema: dbName, Table: "acc"}, {Schema: dbName, Table: "items"}}}
	plan, err := schema.Inspect(ctx, m.DB(t, ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(ctx, m.DB(t, "")); err != nil {
		t.Fatal(err)
	}
	cfg := readerConfig(m, dbName+".*")
	cfg.MetaSchema = meta
	rr := startReader(t, cfg, currentPosition(t, m))
	execAll(t, db,
		"INSERT INTO acc (id, name) VALUES (1, 'a'), (2, 'b')",
		"UPDATE acc SET name = 'c' WHERE id = 1",
		"UPDATE acc SET id = 10 WHERE id = 2",
		"DELETE FROM acc WHERE id = 1",
		"INSERT INTO items (sku, n, qty) VALUES ('x', 1, 5)",
		"DELETE FROM items",
	)
	got := rr.waitChanges(t, dbName, 8)
	version := func(q string) hlc.Timestamp {
		var v uint64
		if err := db.QueryRow(q).Scan(&v); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return hlc.Timestamp(v)
	}
	for _, c := range got {
		if c.Version == 0 || c.Version.Site() != 1 || c.Table[0] == '_' {
			t.Errorf("change %s", describe(c))
		}
	}
	// insert 1, insert 2, update 1, key change 2→10 (delete + insert),
	// delete 1, insert item, delete item
	ops := ""
	for _, c := range got {
		ops += c.Op.String()[:1]
	}
	if ops != "iiudidid" {
		t.Fatalf("operations %q, want iiudidid", ops)
	}
	want := []struct {
		op  event.Op
		ver hlc.Timestamp
	}{
		{event.OpUpdate, 0},
		{event.OpDelete, version("SELECT _tandem_hlc FROM acc WHERE id = 10")},
		{event.OpInsert, version("SELECT _tandem_hlc FROM acc WHERE id = 10")},
		{event.OpDelete, version("SELECT _tandem_hlc FROM " + schema.TombTable("acc") + " WHERE id = 1")},
		{event.OpInsert, 0},
		{event.OpDelete, version("SELECT _tandem_hlc FROM " + schema.TombTable("items") + " WHERE sku = 'x' AND n = 1")},
	}
	for i, w := range want {
		c := got[i+2]
		if c.Op != w.op || (w.ver != 0 && c.Version != w.ver) {
			t.Errorf("change %d: %s, want %s with version %d", i+2, describe(c), w.op, w.ver)
		}
	}
	if got[5].Version <= got[2].Version {
		t.Errorf("delete version %s not after the update's %s", got[5].Version, got[2].Version)
	}
	if s := rr.r.Stats(); s.DeletesWithoutTombstone != 0 {
		t.Errorf("DeletesWithoutTombstone = %d: the reader did not match the prepared tombstones", s.DeletesWithoutTombstone)
	}
}
