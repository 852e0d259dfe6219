package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

const usersTable = `CREATE TABLE users (
	id BIGINT NOT NULL PRIMARY KEY,
	email VARCHAR(100) NOT NULL,
	name VARCHAR(100),
	UNIQUE KEY email (email)
) ENGINE=InnoDB`

var userCols = []string{"id", "email", "name", "_tandem_hlc"}

func (f *fixture) user(op event.Op, id int64, email, name string, v hlc.Timestamp) event.Change {
	return event.Change{Schema: f.data, Table: "users", Op: op, Columns: userCols, PK: []int{0},
		Row: []event.Value{vInt(id), vStr(email), vStr(name), vUint(uint64(v))}, Version: v}
}

// TestUniqueKeyConflict: a row that would break a unique secondary key is
// logged as a 'unique_key' conflict and skipped whole; the batch's other
// rows apply, and no row is updated through the wrong key.
func TestUniqueKeyConflict(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, usersTable)
	vs := newVersions()
	v1 := vs.next(2)
	f.apply(t, f.batch(txn(f.user(ins, 1, "a@x", "alice", v1), f.user(ins, 2, "b@x", "bob", v1))))
	before := f.query(t, "SELECT id, email, name, _tandem_hlc FROM users ORDER BY id")

	v2 := vs.next(2)
	res := f.apply(t, f.batch(
		// A new row taking alice's address: ON DUPLICATE KEY UPDATE would
		// have overwritten row 1.
		txn(f.user(ins, 3, "a@x", "mallory", v2)),
		// An existing row taking alice's address.
		txn(f.user(upd, 2, "a@x", "bob2", v2)),
		// Unrelated rows, new and existing.
		txn(f.user(ins, 4, "d@x", "dave", v2), f.user(upd, 1, "a@x", "alice2", v2)),
	))
	if res.Applied != 2 || res.Conflicts != 2 {
		t.Errorf("Result %+v, want 2 applied and 2 conflicts", res)
	}
	got := f.query(t, "SELECT id, email, name, _tandem_hlc FROM users ORDER BY id")
	want := []string{
		fmt.Sprintf("1|a@x|alice2|%d", v2),
		strings.TrimSuffix(before[1], ""), // row 2 untouched
		fmt.Sprintf("4|d@x|dave|%d", v2),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("users:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	kinds := f.query(t, "SELECT pk_json, kind, incoming_version FROM "+quoteIdent(f.meta)+"._tandem_conflicts ORDER BY pk_json")
	wantKinds := []string{fmt.Sprintf(`["2"]|unique_key|%d`, v2), fmt.Sprintf(`["3"]|unique_key|%d`, v2)}
	if strings.Join(kinds, "\n") != strings.Join(wantKinds, "\n") {
		t.Errorf("conflicts %q, want %q", kinds, wantKinds)
	}
	// Swapping two addresses in one source transaction cannot be applied
	// row by row in a collapsed batch; it is a conflict, not an error.
	v3 := vs.next(2)
	res = f.apply(t, f.batch(txn(f.user(upd, 1, "d@x", "alice3", v3), f.user(upd, 4, "a@x", "dave3", v3))))
	if res.Applied+res.Conflicts != 2 {
		t.Errorf("swap: %+v", res)
	}
}

// TestPermanentErrors: a transaction that can never apply is named by its
// index, and nothing of the batch is applied.
func TestPermanentErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable,
		"CREATE TABLE short (id INT NOT NULL PRIMARY KEY, s VARCHAR(3)) ENGINE=InnoDB",
		"CREATE TABLE child (id INT NOT NULL PRIMARY KEY, parent BIGINT, FOREIGN KEY (parent) REFERENCES kv (id)) ENGINE=InnoDB")
	f.exec(t, "CREATE TABLE unprepared (id INT NOT NULL PRIMARY KEY, _tandem_hlc BIGINT UNSIGNED NOT NULL DEFAULT 0)")
	vs := newVersions()
	ok := func() event.Txn { return txn(f.kv(ins, 1, "ok", vs.next(2))) }
	short := func(s string) event.Change {
		v := vs.next(2)
		return event.Change{Schema: f.data, Table: "short", Op: ins, Columns: []string{"id", "s", "_tandem_hlc"}, PK: []int{0},
			Row: []event.Value{vInt(1), vStr(s), vUint(uint64(v))}, Version: v}
	}
	unknown := f.kv(ins, 2, "x", vs.next(2))
	unknown.Columns = []string{"id", "nope", "_tandem_hlc"}
	child := func(id, parent int64) event.Change {
		v := vs.next(2)
		return event.Change{Schema: f.data, Table: "child", Op: ins, Columns: []string{"id", "parent", "_tandem_hlc"}, PK: []int{0},
			Row: []event.Value{vInt(id), vInt(parent), vUint(uint64(v))}, Version: v}
	}
	noTomb := event.Change{Schema: f.data, Table: "unprepared", Op: ins, Columns: []string{"id"}, PK: []int{0},
		Row: []event.Value{vInt(1)}, Version: vs.next(2)}
	missing := f.kv(ins, 3, "x", vs.next(2))
	missing.Table = "nosuchtable"

	for _, tc := range []struct {
		name    string
		txns    []event.Txn
		wantIdx int
		want    string
	}{
		{"unknown column", []event.Txn{ok(), ok(), txn(unknown)}, 2, "column nope of " + f.data + ".kv does not exist"},
		{"data too long", []event.Txn{ok(), txn(short("abcd")), ok()}, 1, "Data too long"},
		{"foreign key", []event.Txn{ok(), txn(child(1, 999))}, 1, "foreign key constraint fails"},
		{"no tombstone table", []event.Txn{txn(noTomb)}, 0, "run `replicator schema prepare`"},
		{"no table", []event.Txn{ok(), txn(missing)}, 1, "does not exist at the target"},
	} {
		sum := f.checksum(t, "kv")
		_, err := f.sink.Apply(context.Background(), f.batch(tc.txns...))
		var pe *PermanentError
		if !errors.As(err, &pe) || pe.TxnIndex != tc.wantIdx || !strings.Contains(err.Error(), tc.want) || IsRetryable(err) {
			t.Errorf("%s: Apply error %v (%#v), want PermanentError for transaction %d containing %q", tc.name, err, pe, tc.wantIdx, tc.want)
		}
		if got := f.checksum(t, "kv"); got != sum {
			t.Errorf("%s: a failed batch changed data", tc.name)
		}
	}

	// A foreign key order that only collapsing breaks: the batch writes the
	// child table first (its first change comes first), so child 7 would
	// precede its parent 101. The one-by-one fallback applies the batch.
	f.apply(t, f.batch(txn(f.kv(ins, 100, "parent", vs.next(2)))))
	res := f.apply(t, f.batch(
		txn(child(6, 100)),
		txn(f.kv(ins, 101, "parent", vs.next(2))),
		txn(child(7, 101)),
		txn(f.kv(upd, 101, "parent2", vs.next(2))),
	))
	// Applied one by one, nothing is superseded.
	if res.Applied != 4 || res.Rows != 4 {
		t.Errorf("foreign key batch: %+v", res)
	}
	if got := f.query(t, "SELECT id, parent FROM child ORDER BY id"); strings.Join(got, ",") != "6|100,7|101" {
		t.Errorf("children %v", got)
	}
	// Deleting children before their parent, as the source did.
	delChild := func(id int64) event.Change { c := child(id, 0); c.Op = del; return c }
	res = f.apply(t, f.batch(txn(short("abc")), txn(delChild(6), delChild(7)), txn(f.kv(del, 100, "", vs.next(2)), f.kv(del, 101, "", vs.next(2)))))
	if res.Applied != 5 || res.Deletes != 4 {
		t.Errorf("delete children then parents: %+v", res)
	}
}

// TestSkewedVersionsApply: versions far ahead of the local clock are
// counted and applied anyway.
func TestSkewedVersionsApply(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	clock, err := hlc.NewClock(1, hlc.SystemClock{}, hlc.Options{MaxOffset: 500e6})
	if err != nil {
		t.Fatal(err)
	}
	f.sink.clock = clock
	future := hlc.New(uint64(clock.Last().WallMillis()+3_600_000), 0, 2)
	if future.WallMillis() < 1e12 {
		future = hlc.New(uint64(4e12), 0, 2) // Last() is 0 before the first tick
	}
	tx := txn(f.kv(ins, 1, "future", future))
	tx.Stamp = 0
	res := f.apply(t, f.batch(tx))
	if res.Applied != 1 || res.Skewed != 1 {
		t.Errorf("Result %+v, want applied and skewed", res)
	}
	if st := f.state(t, "kv", 1); st.row != future {
		t.Errorf("row version %v, want %v", st.row, future)
	}
}

// TestRowTooLarge: a row whose statement cannot fit max_allowed_packet is a
// PermanentError (sending it would make the server drop the connection,
// which looks retryable and would retry for ever).
func TestRowTooLarge(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	vs := newVersions()
	f.apply(t, f.batch(txn(f.kv(ins, 1, "small", vs.next(2)))))
	f.sink.maxPacket.Store(8 << 10) // the idle connection keeps it
	_, err := f.sink.Apply(context.Background(), f.batch(txn(f.kv(ins, 2, "ok", vs.next(2))), txn(f.kv(ins, 3, strings.Repeat("x", 9000), vs.next(2)))))
	var pe *PermanentError
	if !errors.As(err, &pe) || pe.TxnIndex != 1 || !strings.Contains(err.Error(), "max_allowed_packet") {
		t.Errorf("Apply: %v, want a PermanentError for transaction 1 about max_allowed_packet", err)
	}
}

// TestUnpreparedMetaSchema: missing bookkeeping tables are a setup step not
// yet done: a retryable error that says what to run.
func TestUnpreparedMetaSchema(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	cfg := f.sink.cfg
	cfg.MetaSchema = "no_such_meta_schema"
	s, err := NewMySQL(f.m.DB(t, ""), cfg, f.sink.log, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Apply(context.Background(), f.batch(txn(f.kv(ins, 1, "a", newVersions().next(2)))))
	if err == nil || !IsRetryable(err) || !strings.Contains(err.Error(), "replicator schema prepare") {
		t.Errorf("Apply: %v, want a retryable error naming `replicator schema prepare`", err)
	}
	if _, err := s.Offsets(context.Background(), "t"); err == nil || !IsRetryable(err) {
		t.Errorf("Offsets: %v, want a retryable error", err)
	}
}

// TestMergedWritesNameFailingTable: writes sent in one round trip (flush)
// stop at the one that fails, and its error names that statement's
// table: the statements before it ran and were counted, the ones after
// it did not run.
func TestMergedWritesNameFailingTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable, "CREATE TABLE short (id INT NOT NULL PRIMARY KEY, s VARCHAR(3)) ENGINE=InnoDB")
	ctx := context.Background()
	conn, _, err := f.sink.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { f.sink.release(conn, rollback(conn) == nil) }()
	if f.sink.multi.Load() != multiOn {
		t.Fatalf("sink's connections take one statement per query")
	}
	kv, _, err := f.sink.meta.get(ctx, f.data, "kv")
	if err != nil {
		t.Fatal(err)
	}
	short, _, err := f.sink.meta.get(ctx, f.data, "short")
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{s: f.sink, tx: conn, merge: true}
	var counts []int64
	count := func(n int64, _ []*item) { counts = append(counts, n) }
	for _, w := range []struct {
		m *tableMeta
		q string
	}{
		{kv, "INSERT INTO " + kv.qTable + " (id, val, _tandem_hlc) VALUES (1, 'a', 1), (2, 'b', 1)"},
		{short, "INSERT INTO " + short.qTable + " (id, s, _tandem_hlc) VALUES (1, 'abcd', 1)"},
		{kv, "INSERT INTO " + kv.qTable + " (id, val, _tandem_hlc) VALUES (3, 'c', 1)"},
	} {
		if err := a.queue(ctx, w.m, w.q, nil, count); err != nil {
			t.Fatal(err)
		}
	}
	err = a.flush(ctx)
	var de *dataError
	if !errors.As(err, &de) || de.m != short || !strings.Contains(err.Error(), "Data too long") {
		t.Fatalf("flush: %v (%#v), want a data error of %s", err, de, short.name)
	}
	if len(counts) != 1 || counts[0] != 2 {
		t.Errorf("row counts handed out %v, want [2] (the first statement only)", counts)
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+kv.qTable).Scan(&n); err != nil || n != 2 {
		t.Errorf("kv holds %d rows in the transaction (%v), want 2: the statement after the failing one ran", n, err)
	}
}
