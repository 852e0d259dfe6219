package sink

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// TestInitialLoadVersions: a row that existed at a site before replication
// and was backfilled there arrives with hlc.InitialLoad(origin). It
// replaces a version-0 copy and an initial-load copy of a lower site, and
// fills a missing row; it gives way, without a conflict, to any write made
// since replication started (a row or a tombstone); against an
// initial-load copy of a higher site it loses and is logged, because the
// two sites held the row before replication.
func TestInitialLoadVersions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	real := newVersions().next(1)
	tomb := schema.TombTable("kv")
	f.execAsSink(t,
		"INSERT INTO kv (id, val, _tandem_hlc) VALUES (1, 'local', 0)",
		fmt.Sprintf("INSERT INTO kv (id, val, _tandem_hlc) VALUES (2, 'written since', %d)", real),
		fmt.Sprintf("INSERT INTO kv (id, val, _tandem_hlc) VALUES (3, 'local', %d)", hlc.InitialLoad(1)),
		fmt.Sprintf("INSERT INTO kv (id, val, _tandem_hlc) VALUES (4, 'site 3', %d)", hlc.InitialLoad(3)),
		fmt.Sprintf("INSERT INTO %s (id, _tandem_hlc) VALUES (5, %d)", tomb, real),
	)
	in := hlc.InitialLoad(2)
	if !in.IsInitialLoad() || hlc.Timestamp(0).IsInitialLoad() || real.IsInitialLoad() || !(in > 0 && in < real) {
		t.Fatalf("InitialLoad(2) = %v: want above 0, below %v, and IsInitialLoad", in, real)
	}
	cases := []struct {
		id       int64
		want     string // applied, superseded, conflict
		wantVal  string // "" = no row
		wantVer  hlc.Timestamp
		conflict bool
	}{
		{1, "applied", "remote", in, false},
		{2, "superseded", "written since", real, false},
		{3, "applied", "remote", in, false},
		{4, "conflict", "site 3", hlc.InitialLoad(3), true},
		{5, "superseded", "", 0, false},
		{6, "applied", "remote", in, false},
	}
	for _, c := range cases {
		res := f.apply(t, f.batch(txn(f.kv(upd, c.id, "remote", in))))
		if got := outcome(res); got != c.want {
			t.Errorf("row %d: %s, want %s (%+v)", c.id, outcome(res), c.want, res)
		}
		st := f.state(t, "kv", c.id)
		vals := f.query(t, "SELECT val FROM kv WHERE id = ?", c.id)
		if st.row != c.wantVer || strings.Join(vals, "") != c.wantVal {
			t.Errorf("row %d: %q at %v, want %q at %v", c.id, vals, st.row, c.wantVal, c.wantVer)
		}
		if n := f.conflictCount(t, c.id); (n == 1) != c.conflict || n > 1 {
			t.Errorf("row %d: %d conflict rows, want conflict=%t", c.id, n, c.conflict)
		}
	}
	detail := f.query(t, "SELECT detail FROM "+quoteIdent(f.meta)+"._tandem_conflicts WHERE pk_json = '[\"4\"]'")
	if len(detail) != 1 || !strings.Contains(detail[0], "initial load") {
		t.Errorf("conflict detail %q, want one naming the initial load", detail)
	}

	// At site 3 a row still at version 0 stands for InitialLoad(3), which
	// site 2's copy loses to even before site 3's backfill stamped it:
	// otherwise the order of the two backfills would pick the winner.
	f3 := newFixture(t, Config{Site: 3}, kvTable)
	f3.execAsSink(t, "INSERT INTO kv (id, val, _tandem_hlc) VALUES (1, 'site 3', 0)")
	res := f3.apply(t, f3.batch(txn(f3.kv(upd, 1, "remote", in))))
	if st := f3.state(t, "kv", 1); res.Conflicts != 1 || st.row != 0 || f3.conflictCount(t, 1) != 1 {
		t.Errorf("site 3, unstamped row: %+v, row version %v, %d conflict rows; want 1 conflict, version 0 kept, 1 conflict row",
			res, st.row, f3.conflictCount(t, 1))
	}
	if got := f3.query(t, "SELECT val FROM kv WHERE id = 1"); len(got) != 1 || got[0] != "site 3" {
		t.Errorf("site 3, unstamped row: %q, want [site 3]", got)
	}
}
