package sink

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// TestKeyTypes applies changes to tables whose primary keys are not plain
// integers: a case-insensitive string in a composite key (the server
// returns the stored spelling, which the sink must still match), and
// DECIMAL, DATETIME and BINARY keys.
func TestKeyTypes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{},
		`CREATE TABLE items (sku VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL, n BIGINT NOT NULL,
			qty INT, PRIMARY KEY (sku, n)) ENGINE=InnoDB`,
		`CREATE TABLE odd (d DECIMAL(20,4) NOT NULL, ts DATETIME(6) NOT NULL, b BINARY(4) NOT NULL, qty INT,
			PRIMARY KEY (d, ts, b)) ENGINE=InnoDB`)
	vs := newVersions()
	item := func(op event.Op, sku string, qty int64, v hlc.Timestamp) event.Change {
		return event.Change{Schema: f.data, Table: "items", Op: op, Columns: []string{"sku", "n", "qty", "_tandem_hlc"}, PK: []int{0, 1},
			Row: []event.Value{vStr(sku), vInt(7), vInt(qty), vUint(uint64(v))}, Version: v}
	}
	v1, v0, v2, v3 := vs.next(2), vs.next(1), vs.next(2), vs.next(2)
	f.apply(t, f.batch(txn(item(ins, "abc", 1, v1))))
	res := f.apply(t, f.batch(txn(item(upd, "ABC", 2, v2))))
	if res.Applied != 1 {
		t.Errorf("update through another spelling: %+v", res)
	}
	// The winner's spelling is stored, so every site holds the same bytes.
	if got := f.query(t, "SELECT sku, qty, _tandem_hlc FROM items"); len(got) != 1 || got[0] != fmt.Sprintf("ABC|2|%d", v2) {
		t.Errorf("items: %v", got)
	}
	res = f.apply(t, f.batch(txn(item(upd, "Abc", 3, v0))))
	if res.Conflicts != 1 {
		t.Errorf("older write through another spelling: %+v", res)
	}
	res = f.apply(t, f.batch(txn(item(del, "aBc", 0, v3))))
	if res.Applied != 1 || res.Deletes != 1 {
		t.Errorf("delete through another spelling: %+v", res)
	}
	if got := f.query(t, "SELECT COUNT(*) FROM items"); got[0] != "0" {
		t.Errorf("items left: %v", got)
	}
	res = f.apply(t, f.batch(txn(item(ins, "ABc", 4, v2))))
	if res.Conflicts != 1 {
		t.Errorf("late older insert through another spelling: %+v", res)
	}

	odd := func(op event.Op, qty int64, v hlc.Timestamp) event.Change {
		return event.Change{Schema: f.data, Table: "odd", Op: op, Columns: []string{"d", "ts", "b", "qty", "_tandem_hlc"}, PK: []int{0, 1, 2},
			Row: []event.Value{vKind(event.KindDecimal, "-12.5000"), vKind(event.KindDateTime, "2024-01-02 03:04:05.000006"),
				vBytes([]byte{1, 0, 0, 0}), vInt(qty), vUint(uint64(v))}, Version: v}
	}
	w1, w2, w3 := vs.next(2), vs.next(2), vs.next(2)
	for _, step := range []struct {
		c    event.Change
		want string
	}{{odd(ins, 1, w1), "applied"}, {odd(upd, 2, w2), "applied"}, {odd(upd, 3, w1), "conflict"}, {odd(del, 0, w3), "applied"}, {odd(ins, 5, w2), "conflict"}} {
		res := f.apply(t, f.batch(txn(step.c)))
		got := map[bool]string{true: "applied", false: "conflict"}[res.Applied == 1]
		if got != step.want {
			t.Errorf("odd %v %v: %+v, want %s", step.c.Op, step.c.Version, res, step.want)
		}
	}
	if got := f.query(t, "SELECT COUNT(*) FROM odd"); got[0] != "0" {
		t.Errorf("odd rows left: %v", got)
	}
	if got := f.query(t, "SELECT d, ts, HEX(b), _tandem_hlc FROM _tandem_tomb_odd"); strings.Join(got, ",") != fmt.Sprintf("-12.5000|2024-01-02 03:04:05.000006|01000000|%d", w3) {
		t.Errorf("odd tombstones: %v", got)
	}
}
