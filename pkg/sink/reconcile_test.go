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
	if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, tomb, SameSite{}); err != nil || n != 0 {
		t.Fatalf("Reconcile below the tombstone = %d, %v; want 0, nil", n, err)
	}

	file, pos := binlogPosition(t, f)
	n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, SameSite{})
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

	if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, SameSite{}); err != nil || n != 0 {
		t.Errorf("second Reconcile = %d, %v; want 0, nil", n, err)
	}
}

// TestReconcileSameSite: a row below a tombstone of another site is left
// alone when only one site's versions may be compared (a home-only policy
// can rank the row above the tombstone), and removed otherwise.
func TestReconcileSameSite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	ctx := context.Background()
	row, tomb := hlc.New(1000, 0, 1), hlc.New(2000, 0, 2)
	f.execAsSink(t,
		"INSERT INTO kv (id, val, _tandem_hlc) VALUES (1, 'a', "+strconv.FormatUint(uint64(row), 10)+")",
		"INSERT INTO "+schema.TombTable("kv")+" (id, _tandem_hlc) VALUES (1, "+strconv.FormatUint(uint64(tomb), 10)+")")
	if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, SameSite{All: true}); err != nil || n != 0 {
		t.Fatalf("Reconcile(sameSite) = %d, %v; want 0, nil (row of site 1, tombstone of site 2)", n, err)
	}
	if n, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, SameSite{}); err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want 1, nil", n, err)
	}
}

// TestReconcileSameSiteTenants: with tenants mapped by a column, only the
// rows of the named (home-policy) tenants are compared within their site;
// the others, and rows whose tenant column is NULL (the global tenant),
// lose to a greater tombstone of another site. The names match the
// column's bytes exactly, as the replicator resolves tenants, also for an
// integer column; a column of another type keeps every row within its site.
func TestReconcileSameSiteTenants(t *testing.T) {
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
	left := func() []int64 {
		t.Helper()
		rows, err := f.db.Query("SELECT id FROM kv ORDER BY id")
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
		return ids
	}
	for _, c := range []struct {
		name string
		same SameSite
		want []int64 // rows kept
	}{
		{"string column", SameSite{Column: "val", Tenants: []string{"home", "absent"}}, []int64{1}},
		{"no home tenants", SameSite{Column: "val"}, nil},
		{"integer column", SameSite{Column: "id", Tenants: []string{"2", "04"}}, []int64{2}},
		{"unknown column", SameSite{Column: "nope", Tenants: []string{"home"}}, []int64{1, 2, 3, 4, 5}},
		{"whole table", SameSite{All: true}, []int64{1, 2, 3, 4, 5}},
	} {
		load()
		if _, err := f.sink.Reconcile(ctx, f.data, "kv", 0, math.MaxUint64, c.same); err != nil {
			t.Fatalf("%s: Reconcile: %v", c.name, err)
		}
		if got := left(); !slices.Equal(got, c.want) {
			t.Errorf("%s: rows left %v; want %v", c.name, got, c.want)
		}
	}
}
