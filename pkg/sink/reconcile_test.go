package sink

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// versions reads the row version and the tombstone version of kv key id
// (0 when absent).
func (f *fixture) versions(t *testing.T, id int64) (row, tomb hlc.Timestamp) {
	t.Helper()
	var v uint64
	err := f.db.QueryRow("SELECT _tandem_hlc FROM kv WHERE id = ?", id).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	row, v = hlc.Timestamp(v), 0
	err = f.db.QueryRow("SELECT _tandem_hlc FROM "+schema.TombTable("kv")+" WHERE id = ?", id).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return row, hlc.Timestamp(v)
}

// TestReconcileRemovesInsertBehindDelete reproduces a local insert that
// commits after a concurrent delete with a greater version, and checks
// that Reconcile removes it — and only it — in a transaction the binlog
// reader drops, with a conflict record.
func TestReconcileRemovesInsertBehindDelete(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	ctx := context.Background()
	f.exec(t, "INSERT INTO kv (id, val) VALUES (1, 'a'), (2, 'b')")

	testenv.InsertBehindDelete(t, f.db, "DELETE FROM kv WHERE id = 1", "INSERT INTO kv (id, val) VALUES (1, 'late')", 5*time.Second)
	row, tomb := f.versions(t, 1)
	if row == 0 || tomb == 0 || row > tomb {
		t.Fatalf("key 1: row version %v, tombstone %v: the interleaving did not leave a row below its tombstone", row, tomb)
	}
	t.Logf("key 1 after the interleaving: row %v <= tombstone %v (the other sites drop this insert)", row, tomb)

	// Key 2 is deleted and inserted again one after the other: the insert
	// sees the tombstone and is versioned after it; it must stay.
	f.exec(t, "DELETE FROM kv WHERE id = 2")
	f.exec(t, "INSERT INTO kv (id, val) VALUES (2, 'again')")
	if row, tomb := f.versions(t, 2); row <= tomb {
		t.Fatalf("key 2: re-insert version %v not above its tombstone %v", row, tomb)
	}

	// A range that ends below key 1's tombstone finds nothing.
	if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, tomb, HomeRows{}); err != nil || n != 0 {
		t.Fatalf("Reconcile below the tombstone = %d, %v; want 0, nil", n, err)
	}

	file, pos := binlogPosition(t, f)
	n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, HomeRows{})
	if err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want 1, nil", n, err)
	}
	if row, after := f.versions(t, 1); row != 0 || after != tomb {
		t.Errorf("key 1 after Reconcile: row version %v (want absent), tombstone %v (want %v unchanged)", row, after, tomb)
	}
	var val string
	if err := f.db.QueryRow("SELECT val FROM kv WHERE id = 2").Scan(&val); err != nil || val != "again" {
		t.Errorf("key 2 after Reconcile: %q, %v; want 'again'", val, err)
	}

	var pk, kind string
	var local, incoming uint64
	err = f.db.QueryRow("SELECT pk_json, kind, local_version, incoming_version FROM "+quoteIdent(f.meta)+"."+schema.Conflicts+
		" WHERE table_name = 'kv'").Scan(&pk, &kind, &local, &incoming)
	if err != nil {
		t.Fatalf("read the conflict record: %v", err)
	}
	if pk != `["1"]` || kind != kindLateInsert || hlc.Timestamp(local) != row || hlc.Timestamp(incoming) != tomb {
		t.Errorf("conflict record %s %s local %v incoming %v; want [\"1\"] %s %v %v", pk, kind,
			hlc.Timestamp(local), hlc.Timestamp(incoming), kindLateInsert, row, tomb)
	}

	// Loop prevention: the repair's first row event is on a sink
	// bookkeeping table, so the local reader drops it.
	var txns [][]string
	for _, tables := range binlogTxnTables(t, f, file, pos) {
		if strings.HasPrefix(tables[0], f.data+".") || strings.HasPrefix(tables[0], f.meta+".") {
			txns = append(txns, tables) // not another test's, on the shared server
		}
	}
	if len(txns) != 1 || txns[0][0] != f.meta+"."+schema.Conflicts {
		t.Errorf("binlog transactions of the repair (table maps): %v; want one, starting with %s.%s", txns, f.meta, schema.Conflicts)
	}

	if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, HomeRows{}); err != nil || n != 0 {
		t.Errorf("second Reconcile = %d, %v; want 0, nil", n, err)
	}
}

// TestReconcileHomePolicy: a row of site 1 below a tombstone of site 2 is
// removed unless the row's tenant has home site 1 (a home row beats a
// numerically greater tombstone of another site: every other site keeps
// the row); with home site 2 the home tombstone wins, and with home site 3
// neither is home and the greater version wins, as without a policy.
func TestReconcileHomePolicy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	ctx := context.Background()
	row, tomb := hlc.New(1000, 0, 1), hlc.New(2000, 0, 2)
	for _, c := range []struct {
		homes HomeRows
		want  int64 // rows removed
	}{
		{HomeRows{Site: 1}, 0},
		{HomeRows{Site: 2}, 1},
		{HomeRows{Site: 3}, 1},
		{HomeRows{}, 1},
	} {
		f.execAsSink(t, "DELETE FROM kv", "DELETE FROM "+schema.TombTable("kv"),
			"INSERT INTO kv (id, val, _tandem_hlc) VALUES (1, 'a', "+strconv.FormatUint(uint64(row), 10)+")",
			"INSERT INTO "+schema.TombTable("kv")+" (id, _tandem_hlc) VALUES (1, "+strconv.FormatUint(uint64(tomb), 10)+")")
		if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, c.homes); err != nil || n != c.want {
			t.Errorf("Reconcile(%+v) = %d, %v; want %d, nil (row of site 1, greater tombstone of site 2)", c.homes, n, err, c.want)
		}
	}
}

// TestReconcileHomeTenants: with tenants mapped by a column, the rows of
// tenants whose home is the row's site (1) stay beside a greater tombstone
// of site 2; the rows of tenants at home at site 2, of other tenants, and
// rows whose tenant column is NULL (the global tenant) lose to it. The
// names match the column's bytes exactly, as the replicator resolves
// tenants, also for an integer column. Where the column cannot name rows
// (a column of another type, or missing), no row of a home site stays
// compared with another site's tombstone.
func TestReconcileHomeTenants(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	ctx := context.Background()
	row, tomb := hlc.New(1000, 0, 1), hlc.New(2000, 0, 2)
	rv, tv := strconv.FormatUint(uint64(row), 10), strconv.FormatUint(uint64(tomb), 10)
	load := func() {
		t.Helper()
		f.execAsSink(t, "DELETE FROM kv", "DELETE FROM "+schema.TombTable("kv"),
			"INSERT INTO kv (id, val, _tandem_hlc) VALUES (1, 'home', "+rv+"), (2, 'other', "+rv+"), (3, NULL, "+rv+"), "+
				"(4, 'HOME', "+rv+"), (5, 'home ', "+rv+")",
			"INSERT INTO "+schema.TombTable("kv")+" (id, _tandem_hlc) VALUES (1, "+tv+"), (2, "+tv+"), (3, "+tv+"), (4, "+tv+"), (5, "+tv+")")
	}
	for _, c := range []struct {
		name  string
		homes HomeRows
		want  []int64 // rows kept
	}{
		{"string column", HomeRows{Column: "val", Tenants: map[uint8][]string{1: {"home", "absent"}}}, []int64{1}},
		{"tenants at home elsewhere", HomeRows{Column: "val", Tenants: map[uint8][]string{2: {"home", "other"}, 3: {"HOME"}}}, nil},
		{"both", HomeRows{Column: "val", Tenants: map[uint8][]string{1: {"home"}, 2: {"other"}}}, []int64{1}},
		{"no home tenants", HomeRows{Column: "val"}, nil},
		{"integer column", HomeRows{Column: "id", Tenants: map[uint8][]string{1: {"2", "04"}}}, []int64{2}},
		{"unknown column", HomeRows{Column: "nope", Tenants: map[uint8][]string{1: {"home"}}}, []int64{1, 2, 3, 4, 5}},
		{"unknown column, homes elsewhere", HomeRows{Column: "nope", Tenants: map[uint8][]string{2: {"home"}}}, nil},
		{"whole table", HomeRows{Site: 1}, []int64{1, 2, 3, 4, 5}},
		{"whole table, home elsewhere", HomeRows{Site: 2}, nil},
	} {
		load()
		if _, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, c.homes); err != nil {
			t.Fatalf("%s: Reconcile: %v", c.name, err)
		}
		if got := idsOf(t, f.db, "kv"); !slices.Equal(got, c.want) {
			t.Errorf("%s: rows left %v; want %v", c.name, got, c.want)
		}
	}
}

// A tenant column of another type than a string or an integer names its
// rows as the replicator renders its binlog value (tenant.SQLMatch; the
// agreement is checked against the reader in pkg/binlog): a DATE as
// "2024-01-02", a YEAR 0 as "0", an ENUM by its label, a FLOAT by its
// shortest digits (compared as numbers), a JSON document (text in
// MariaDB) by its text. A geometry column cannot name them, so every row
// a home site stamped stays.
func TestReconcileHomeTenantsByOtherTypes(t *testing.T) {
	t.Parallel()
	const evTable = "CREATE TABLE ev (id BIGINT NOT NULL PRIMARY KEY, day DATE, yr YEAR, region ENUM('eu', 'us'), score FLOAT, doc JSON, place POINT) ENGINE=InnoDB"
	f := newFixture(t, Config{}, evTable)
	ctx := context.Background()
	row, tomb := hlc.New(1000, 0, 1), hlc.New(2000, 0, 2)
	rv, tv := strconv.FormatUint(uint64(row), 10), strconv.FormatUint(uint64(tomb), 10)
	for _, c := range []struct {
		name  string
		homes HomeRows
		want  []int64 // rows kept
	}{
		{"date", HomeRows{Column: "day", Tenants: map[uint8][]string{1: {"2024-01-02"}}}, []int64{1}},
		{"year", HomeRows{Column: "yr", Tenants: map[uint8][]string{1: {"0"}}}, []int64{2}},
		{"enum", HomeRows{Column: "region", Tenants: map[uint8][]string{1: {"us"}}}, []int64{2}},
		{"float", HomeRows{Column: "score", Tenants: map[uint8][]string{1: {"0.1"}}}, []int64{1}},
		{"json", HomeRows{Column: "doc", Tenants: map[uint8][]string{1: {`{"a": 1}`}}}, []int64{1}},
		{"geometry", HomeRows{Column: "place", Tenants: map[uint8][]string{1: {"POINT(1 1)"}}}, []int64{1, 2, 3}},
	} {
		f.execAsSink(t, "DELETE FROM ev", "DELETE FROM "+schema.TombTable("ev"),
			"INSERT INTO ev (id, day, yr, region, score, doc, place, _tandem_hlc) VALUES "+
				"(1, '2024-01-02', 2024, 'eu', 0.1, '{\"a\": 1}', POINT(1, 1), "+rv+"), (2, '2024-01-03', 0, 'us', 2.5, '{}', POINT(2, 2), "+rv+"), "+
				"(3, NULL, NULL, NULL, NULL, NULL, NULL, "+rv+")",
			"INSERT INTO "+schema.TombTable("ev")+" (id, _tandem_hlc) VALUES (1, "+tv+"), (2, "+tv+"), (3, "+tv+")")
		if _, err := f.sink.Reconcile(ctx, f.data, "ev", 0, math.MaxUint64, c.homes); err != nil {
			t.Fatalf("%s: Reconcile: %v", c.name, err)
		}
		if got := idsOf(t, f.db, "ev"); !slices.Equal(got, c.want) {
			t.Errorf("%s: rows left %v; want %v", c.name, got, c.want)
		}
	}
}

// idsOf lists the ids of table's rows in order.
func idsOf(t *testing.T, db *sql.DB, table string) []int64 {
	t.Helper()
	rows, err := db.Query("SELECT id FROM " + table + " ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}
