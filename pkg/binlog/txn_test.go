package binlog

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// fixedWall is a wall clock for tests that only need a valid HLC.
type fixedWall struct{}

func (fixedWall) Now() time.Time { return time.UnixMilli(1_700_000_000_000) }

// harness feeds synthetic events to an assembler and records what it emits.
type harness struct {
	t      *testing.T
	a      *assembler
	out    []event.Txn
	pos    uint32
	seq    uint64
	idle   bool
	nowVal time.Time
}

func newHarness(t *testing.T, mut func(*Config)) *harness {
	t.Helper()
	cfg := validConfig()
	cfg.Site = 3
	if mut != nil {
		mut(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f, err := newFilter(cfg.Include, cfg.Exclude)
	if err != nil {
		t.Fatal(err)
	}
	clock, err := hlc.NewClock(cfg.Site, fixedWall{}, hlc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAssembler(cfg, f, zap.NewNop(), clock, &counters{}, event.Position{GTIDSet: "0-1-5,3-103-10", File: "mysql-bin.000001", Offset: 4})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, a: a, pos: 100, seq: 10, idle: true, nowVal: time.Unix(1000, 0)}
	a.now = func() time.Time { return h.nowVal }
	return h
}

func (h *harness) emit(_ context.Context, t event.Txn) error {
	h.out = append(h.out, t)
	return nil
}

func (h *harness) feed(e replication.Event, typ replication.EventType) error {
	h.pos += 50
	ev := &replication.BinlogEvent{Header: &replication.EventHeader{EventType: typ, LogPos: h.pos, Timestamp: 1_700_000_000}, Event: e}
	if err := h.a.handle(context.Background(), ev, h.emit); err != nil {
		return err
	}
	return h.a.flushPending(context.Background(), h.idle, h.emit)
}

func (h *harness) must(e replication.Event, typ replication.EventType) {
	h.t.Helper()
	if err := h.feed(e, typ); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) begin() {
	h.seq++
	h.must(&replication.MariadbGTIDEvent{GTID: mysql.MariadbGTID{DomainID: 3, ServerID: 103, SequenceNumber: h.seq}}, replication.MARIADB_GTID_EVENT)
}

func (h *harness) commit() { h.must(&replication.XIDEvent{XID: h.seq}, replication.XID_EVENT) }

func (h *harness) tableMap(te *replication.TableMapEvent) { h.must(te, replication.TABLE_MAP_EVENT) }

func (h *harness) rows(typ replication.EventType, id uint64, rows ...[]any) error {
	return h.feed(&replication.RowsEvent{TableID: id, Rows: rows}, typ)
}

func (h *harness) mustRows(typ replication.EventType, id uint64, rows ...[]any) {
	h.t.Helper()
	if err := h.rows(typ, id, rows...); err != nil {
		h.t.Fatal(err)
	}
}

// Table fixtures: (id INT, v VARCHAR, _tandem_hlc BIGINT UNSIGNED), PK id.
func userTable(id uint64, schemaName, table string) *replication.TableMapEvent {
	return newTableMap(id, schemaName, table, []uint64{0},
		colSpec{name: "id", typ: mysql.MYSQL_TYPE_LONG},
		colSpec{name: "v", typ: mysql.MYSQL_TYPE_VARCHAR, meta: 40, collation: utf8mb4Bin},
		colSpec{name: schema.DefaultVersionColumn, typ: mysql.MYSQL_TYPE_LONGLONG, unsigned: true},
	)
}

func tombTable(id uint64, schemaName, base string) *replication.TableMapEvent {
	return newTableMap(id, schemaName, schema.TombTable(base), []uint64{0},
		colSpec{name: "id", typ: mysql.MYSQL_TYPE_LONG},
		colSpec{name: schema.DefaultVersionColumn, typ: mysql.MYSQL_TYPE_LONGLONG, unsigned: true},
	)
}

func offsetsTable(id uint64) *replication.TableMapEvent {
	return newTableMap(id, schema.DefaultMetaSchema, schema.Offsets, []uint64{0, 1},
		colSpec{name: "origin", typ: mysql.MYSQL_TYPE_TINY, unsigned: true},
		colSpec{name: "part", typ: mysql.MYSQL_TYPE_LONG},
		colSpec{name: "next", typ: mysql.MYSQL_TYPE_LONGLONG},
	)
}

func row(id int32, v string, ver uint64) []any { return []any{id, v, ver} }

const (
	write  = replication.WRITE_ROWS_EVENTv1
	update = replication.UPDATE_ROWS_EVENTv1
	del    = replication.DELETE_ROWS_EVENTv1
)

func TestAssemblerTransaction(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(write, 7, row(1, "a", 1000), row(2, "b", 1001))
	h.mustRows(update, 7, row(1, "a", 1000), row(1, "a2", 1002))
	h.commit()
	if len(h.out) != 1 {
		t.Fatalf("emitted %d txns, want 1", len(h.out))
	}
	txn := h.out[0]
	if txn.GTID != "3-103-11" || txn.Position.GTIDSet != "0-1-5,3-103-11" || txn.Position.File != "mysql-bin.000001" ||
		txn.Position.Offset != h.pos || txn.Origin != 3 || !txn.Last || txn.Fragment != 0 || txn.Stamp == 0 || txn.Tenant != "" ||
		!txn.CommitTime.Equal(time.Unix(1_700_000_000, 0)) {
		t.Fatalf("txn = %+v", txn)
	}
	if len(txn.Changes) != 3 {
		t.Fatalf("%d changes", len(txn.Changes))
	}
	c := txn.Changes[2]
	if c.Op != event.OpUpdate || c.Version != 1002 || string(c.Row[1].Bytes) != "a2" || c.Schema != "shop" || c.Table != "orders" ||
		strings.Join(c.Columns, ",") != "id,v,_tandem_hlc" || len(c.PK) != 1 || c.PK[0] != 0 {
		t.Fatalf("update change = %+v", c)
	}
	if s := h.a.stats; s.txnsRead.Load() != 1 || s.rowsRead.Load() != 3 || s.txnsEmitted.Load() != 1 {
		t.Fatalf("stats read=%d rows=%d emitted=%d", s.txnsRead.Load(), s.rowsRead.Load(), s.txnsEmitted.Load())
	}
}

func TestAssemblerFragments(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxFragmentChanges = 1000 })
	before := h.a.position()
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	for i := range 25 {
		batch := make([][]any, 100)
		for j := range batch {
			batch[j] = row(int32(i*100+j), "x", 5)
		}
		h.mustRows(write, 7, batch...)
	}
	h.commit()
	if len(h.out) != 3 {
		t.Fatalf("%d txns, want 3 fragments", len(h.out))
	}
	for i, f := range h.out {
		last := i == 2
		if f.Fragment != uint32(i) || f.Last != last || f.GTID != "3-103-11" || f.Stamp != h.out[0].Stamp {
			t.Errorf("fragment %d: %+v", i, f)
		}
		if !last && f.Position != before {
			t.Errorf("fragment %d position %v, want the position before the transaction %v", i, f.Position, before)
		}
	}
	if n := []int{len(h.out[0].Changes), len(h.out[1].Changes), len(h.out[2].Changes)}; n[0] != 1000 || n[1] != 1000 || n[2] != 500 {
		t.Fatalf("fragment sizes %v", n)
	}
	if h.out[2].Position.GTIDSet != "0-1-5,3-103-11" {
		t.Fatalf("final position %v", h.out[2].Position)
	}
	if h.a.stats.fragments.Load() != 2 {
		t.Fatalf("Fragments = %d", h.a.stats.fragments.Load())
	}
}

func TestAssemblerFragmentBytes(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxFragmentBytes = 1000 })
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	big := strings.Repeat("x", 300)
	for i := range 10 {
		h.mustRows(write, 7, row(int32(i), big, 5))
	}
	h.commit()
	total := 0
	for _, f := range h.out {
		size := 0
		for _, c := range f.Changes {
			size += 8 * len(c.Row)
			for _, v := range c.Row {
				size += len(v.Bytes)
			}
		}
		if size > 1000 {
			t.Errorf("fragment %d holds %d bytes, bound 1000", f.Fragment, size)
		}
		total += len(f.Changes)
	}
	if total != 10 || len(h.out) != 4 {
		t.Fatalf("%d changes in %d fragments", total, len(h.out))
	}
}

func TestAssemblerLoopDrop(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	h.tableMap(offsetsTable(9))
	h.mustRows(write, 9, []any{uint8(1), int32(0), int64(42)})
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(write, 7, row(1, "a", 1000))
	h.commit()
	if len(h.out) != 1 || len(h.out[0].Changes) != 0 || h.out[0].Position.GTIDSet != "0-1-5,3-103-11" {
		t.Fatalf("sink transaction emitted as %+v", h.out)
	}
	if h.a.stats.txnsDroppedLoop.Load() != 1 {
		t.Fatal("TxnsDroppedLoop not counted")
	}

	// Bookkeeping after published fragments: the rest is dropped and the
	// transaction still ends with a Last piece.
	h = newHarness(t, func(c *Config) { c.MaxFragmentChanges = 2 })
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(write, 7, row(1, "a", 1), row(2, "b", 1), row(3, "c", 1))
	h.tableMap(offsetsTable(9))
	h.mustRows(write, 9, []any{uint8(1), int32(0), int64(42)})
	h.commit()
	if len(h.out) != 2 || h.out[0].Last || !h.out[1].Last || h.out[1].Fragment != 1 || len(h.out[1].Changes) != 0 {
		t.Fatalf("got %+v", h.out)
	}
}

func TestAssemblerTombstones(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	h.tableMap(tombTable(8, "shop", "orders"))
	h.mustRows(write, 8, []any{int32(1), uint64(5000)})
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(del, 7, row(1, "a", 1000))
	// A tombstone that already existed is updated by the trigger.
	h.tableMap(tombTable(8, "shop", "orders"))
	h.mustRows(update, 8, []any{int32(2), uint64(10)}, []any{int32(2), uint64(6000)})
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(del, 7, row(2, "b", 1000))
	// No tombstone: one tick after the deleted row's version, at this site.
	h.mustRows(del, 7, row(3, "c", uint64(hlc.FromTick(77, 1))))
	h.commit()
	if len(h.out) != 1 || len(h.out[0].Changes) != 3 {
		t.Fatalf("got %+v", h.out)
	}
	ch := h.out[0].Changes
	if ch[0].Op != event.OpDelete || ch[0].Version != 5000 || ch[0].Row[0].Int != 1 {
		t.Errorf("delete 1: %+v", ch[0])
	}
	if ch[1].Version != 6000 {
		t.Errorf("delete 2 version %d, want the updated tombstone 6000", ch[1].Version)
	}
	if want := hlc.FromTick(78, 3); ch[2].Version != want {
		t.Errorf("delete without tombstone: version %s, want %s", ch[2].Version, want)
	}
	if h.a.stats.deletesWithoutTombstone.Load() != 1 {
		t.Errorf("DeletesWithoutTombstone = %d", h.a.stats.deletesWithoutTombstone.Load())
	}
	for _, c := range ch {
		if strings.HasPrefix(c.Table, schema.Prefix) {
			t.Errorf("tombstone table published: %+v", c)
		}
	}
}

func TestAssemblerPKChange(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(update, 7, row(1, "a", 1000), row(9, "a", 2000))
	h.commit()
	ch := h.out[0].Changes
	if len(ch) != 2 || ch[0].Op != event.OpDelete || ch[0].Row[0].Int != 1 || ch[0].Version != 2000 ||
		ch[1].Op != event.OpInsert || ch[1].Row[0].Int != 9 || ch[1].Version != 2000 {
		t.Fatalf("PK change emitted as %+v", ch)
	}
}

func TestAssemblerErrors(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	h.tableMap(newTableMap(7, "shop", "legacy", []uint64{0}, colSpec{name: "id", typ: mysql.MYSQL_TYPE_LONG}))
	err := h.rows(write, 7, []any{int32(1)})
	if err == nil || !strings.Contains(err.Error(), "shop.legacy") || !strings.Contains(err.Error(), "replicator schema prepare") {
		t.Fatalf("missing version column: %v", err)
	}

	h = newHarness(t, nil)
	h.begin()
	te := userTable(7, "shop", "orders")
	te.ColumnName = nil
	h.tableMap(te)
	if err := h.rows(write, 7, row(1, "a", 1)); err == nil || !strings.Contains(err.Error(), "binlog_row_metadata=FULL") {
		t.Fatalf("no column names: %v", err)
	}

	// A filtered-out table needs no metadata at all.
	h = newHarness(t, func(c *Config) { c.Exclude = []string{"shop.*"} })
	h.begin()
	h.tableMap(te)
	h.mustRows(write, 7, row(1, "a", 1))
	h.commit()
	if len(h.out) != 1 || len(h.out[0].Changes) != 0 {
		t.Fatalf("filtered table: %+v", h.out)
	}
}

func TestAssemblerInternalTables(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	hb := newTableMap(5, schema.DefaultMetaSchema, schema.Heartbeat, []uint64{0},
		colSpec{name: "site", typ: mysql.MYSQL_TYPE_TINY, unsigned: true},
		colSpec{name: "hlc", typ: mysql.MYSQL_TYPE_LONGLONG, unsigned: true})
	h.tableMap(hb)
	h.mustRows(update, 5, []any{uint8(3), uint64(1)}, []any{uint8(3), uint64(2)})
	h.tableMap(userTable(6, "shop", "_tandem_scratch"))
	h.mustRows(write, 6, row(1, "a", 1))
	h.commit()
	ch := h.out[0].Changes
	if len(ch) != 1 || ch[0].Table != schema.Heartbeat || ch[0].Version != h.out[0].Stamp {
		t.Fatalf("changes %+v (stamp %d)", ch, h.out[0].Stamp)
	}
}

func TestAssemblerCoalescesEmptyTransactions(t *testing.T) {
	h := newHarness(t, nil)
	h.idle = false
	ddl := func() {
		h.seq++
		h.must(&replication.MariadbGTIDEvent{GTID: mysql.MariadbGTID{DomainID: 3, ServerID: 103, SequenceNumber: h.seq},
			Flags: replication.BINLOG_MARIADB_FL_STANDALONE}, replication.MARIADB_GTID_EVENT)
		h.must(&replication.QueryEvent{Query: []byte("CREATE TABLE x (id INT)")}, replication.QUERY_EVENT)
	}
	ddl()
	ddl()
	ddl()
	if len(h.out) != 0 {
		t.Fatalf("empty transactions emitted while more events wait: %+v", h.out)
	}
	h.nowVal = h.nowVal.Add(emptyFlushInterval)
	ddl()
	if len(h.out) != 1 || h.out[0].GTID != "3-103-14" || h.out[0].Position.GTIDSet != "0-1-5,3-103-14" || !h.out[0].Last || h.out[0].Stamp == 0 {
		t.Fatalf("after %s: %+v", emptyFlushInterval, h.out)
	}
	// A non-empty transaction supersedes a pending empty one.
	ddl()
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(write, 7, row(1, "a", 1))
	h.commit()
	if len(h.out) != 2 || len(h.out[1].Changes) != 1 || h.out[1].Position.GTIDSet != "0-1-5,3-103-16" {
		t.Fatalf("got %+v", h.out)
	}
	// Idle: emitted at once.
	h.idle = true
	ddl()
	if len(h.out) != 3 || h.out[2].GTID != "3-103-17" {
		t.Fatalf("idle: %+v", h.out)
	}
}

func TestAssemblerNonTransactionalCommit(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(write, 7, row(1, "a", 1))
	h.must(&replication.QueryEvent{Query: []byte("COMMIT")}, replication.QUERY_EVENT)
	if len(h.out) != 1 || len(h.out[0].Changes) != 1 {
		t.Fatalf("Aria/MyISAM transaction ending in COMMIT: %+v", h.out)
	}
}

func TestAssemblerXA(t *testing.T) {
	h := newHarness(t, nil)
	h.begin()
	h.tableMap(userTable(7, "shop", "orders"))
	h.mustRows(write, 7, row(1, "a", 1))
	h.must(&replication.QueryEvent{Query: []byte("XA END X'7831',X'',1")}, replication.QUERY_EVENT)
	if len(h.out) != 0 {
		t.Fatal("XA END ended the transaction")
	}
	h.must(&replication.GenericEvent{}, replication.XA_PREPARE_LOG_EVENT)
	if len(h.out) != 1 || len(h.out[0].Changes) != 1 || h.out[0].GTID != "3-103-11" {
		t.Fatalf("XA PREPARE: %+v", h.out)
	}
	h.seq++
	h.must(&replication.MariadbGTIDEvent{GTID: mysql.MariadbGTID{DomainID: 3, ServerID: 103, SequenceNumber: h.seq},
		Flags: replication.BINLOG_MARIADB_FL_STANDALONE}, replication.MARIADB_GTID_EVENT)
	h.must(&replication.QueryEvent{Query: []byte("XA COMMIT X'7831',X'',1")}, replication.QUERY_EVENT)
	if len(h.out) != 2 || len(h.out[1].Changes) != 0 || h.out[1].Position.GTIDSet != "0-1-5,3-103-12" {
		t.Fatalf("XA COMMIT: %+v", h.out)
	}
}

func TestAssemblerHeartbeatVersion(t *testing.T) {
	h := newHarness(t, nil)
	hb := newTableMap(5, schema.DefaultMetaSchema, schema.Heartbeat, []uint64{0},
		colSpec{name: "site", typ: mysql.MYSQL_TYPE_TINY, unsigned: true},
		colSpec{name: schema.DefaultVersionColumn, typ: mysql.MYSQL_TYPE_LONGLONG, unsigned: true})
	h.begin()
	h.tableMap(hb)
	h.mustRows(write, 5, []any{uint8(3), uint64(0)}, []any{uint8(4), uint64(777)})
	h.commit()
	ch := h.out[0].Changes
	if ch[0].Version != h.out[0].Stamp || ch[1].Version != 777 {
		t.Fatalf("versions %d %d, want the stamp %d (no version written) and 777", ch[0].Version, ch[1].Version, h.out[0].Stamp)
	}
}
