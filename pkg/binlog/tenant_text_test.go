package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// tenant.SQLMatch finds a tenant's rows in SQL exactly as the replicator
// names a row's tenant (tenant.ValueString of the value this reader
// decodes), for every type it accepts; the late-insert reconciler relies
// on it to find a home-policy tenant's rows. Checked here against this
// reader on a real server: for each row and column, the condition for the
// tenant the reader names selects that row and no other. The session has
// time_zone '+00:00', as the sink's have; the rows are written in a
// session five hours east, so that a TIMESTAMP read in any other zone
// would differ.
func TestTenantSQLMatchesReader(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	cols := []struct {
		name, def string
		values    []string
	}{
		{"e", "ENUM('eu','us-east','x y')", []string{"'eu'", "'x y'", "'us-east'"}},
		{"s", "SET('a','b','c')", []string{"''", "'a'", "'c,a'"}},
		{"y", "YEAR", []string{"1901", "2024", "0"}},
		{"d", "DATE", []string{"'2024-01-02'", "'1000-01-01'", "'9999-12-31'"}},
		{"dc", "DECIMAL(12,3)", []string{"0", "-1.5", "123456789.125"}},
		{"dc0", "DECIMAL(5,0)", []string{"0", "-7", "99999"}},
		{"dt", "DATETIME", []string{"'2024-01-02 03:04:05'", "'1000-01-01 00:00:00'", "'9999-12-31 23:59:59'"}},
		{"dt3", "DATETIME(3)", []string{"'2024-01-02 03:04:05.120'", "'2024-01-02 03:04:05'", "'2024-01-02 03:04:05.001'"}},
		{"tm", "TIME(2)", []string{"'-12:00:01.50'", "'838:59:59'", "'00:00:00'"}},
		{"ts", "TIMESTAMP(3) NULL", []string{"'2024-01-02 03:04:05.120'", "'1970-01-02 00:00:00'", "'2038-01-01 00:00:00'"}},
		{"f", "FLOAT", []string{"1.5", "1000000", "0.1"}},
		{"db", "DOUBLE", []string{"1.5", "1e20", "0.1"}},
		{"bt", "BIT(8)", []string{"b'101'", "0", "255"}},
		{"u", "INT UNSIGNED", []string{"0", "4294967295", "7"}},
		{"bn", "BINARY(4)", []string{"'ab'", "'abcd'", "X'00FF'"}},
		{"vc", "VARCHAR(20) CHARACTER SET latin1", []string{"'Tenant A'", "'café'", "''"}},
		{"ch", "CHAR(4) CHARACTER SET utf8mb4", []string{"'ab'", "'é x'", "'a  '"}},
	}
	var defs, names []string
	for _, c := range cols {
		defs = append(defs, c.name+" "+c.def)
		names = append(names, c.name)
	}
	execAll(t, db, "CREATE TABLE tt (id INT PRIMARY KEY, "+strings.Join(defs, ", ")+", _tandem_hlc BIGINT UNSIGNED NOT NULL DEFAULT 1)")
	rr := startReader(t, readerConfig(m, dbName+".*"), event.Position{})
	marks := syncReader(t, rr, db, dbName, "INSERT INTO tt (id) VALUES (%d)")
	ctx := context.Background()
	session := func(zone string) *sql.Conn {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.ExecContext(ctx, "SET time_zone = '"+zone+"'"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	writer, reader := session("+05:00"), session("+00:00")
	for i := range 3 {
		vals := []string{fmt.Sprint(1000 + i)}
		for _, c := range cols {
			vals = append(vals, c.values[i])
		}
		q := "INSERT INTO tt (id, " + strings.Join(names, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ")"
		if _, err := writer.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	changes := rr.waitChanges(t, dbName, marks+3)[marks:]
	types := map[string]string{}
	rows, err := db.Query("SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'tt'", dbName)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n, dt string
		if err := rows.Scan(&n, &dt); err != nil {
			t.Fatal(err)
		}
		types[n] = dt
	}
	rows.Close()
	checked := map[string]bool{}
	for _, ch := range changes {
		id := ch.Row[0].Int
		for j, name := range ch.Columns {
			if name == "id" || name == "_tandem_hlc" {
				continue
			}
			ten := tenant.ValueString(ch.Row[j])
			cond, ok := tenant.SQLMatch("`"+name+"`", types[name], []string{ten}, func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" })
			if !ok {
				t.Errorf("column %s (%s): SQLMatch refuses it", name, types[name])
				continue
			}
			var ids []int64
			sel, err := reader.QueryContext(ctx, "SELECT id FROM tt WHERE id >= 1000 AND "+cond+" ORDER BY id")
			if err != nil {
				t.Fatalf("%s: %v", cond, err)
			}
			for sel.Next() {
				var got int64
				if err := sel.Scan(&got); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, got)
			}
			sel.Close()
			if len(ids) != 1 || ids[0] != id {
				t.Errorf("column %s (%s), row %d: the replicator names the tenant %q; %s selects rows %v", name, types[name], id, ten, cond, ids)
			}
			checked[types[name]] = true
		}
	}
	if len(changes) != 3 || len(checked) != 15 {
		t.Errorf("checked %d rows, types %v", len(changes), checked)
	}
}
