package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/pkg/hlc"
)

// site is the site id the trigger tests install; it differs from the test
// server's gtid_domain_id so a version's low byte can only come from the
// triggers.
const testSite = 7

// conn is one session, so that @tandem_apply and transactions stick.
type conn struct {
	t *testing.T
	c *sql.Conn
}

func (f *fixture) conn(t *testing.T) *conn {
	t.Helper()
	c, err := f.db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{t, c}
}

func (c *conn) exec(query string, args ...any) sql.Result {
	c.t.Helper()
	res, err := c.c.ExecContext(context.Background(), query, args...)
	if err != nil {
		c.t.Fatalf("%s: %v", query, err)
	}
	return res
}

// version returns the version of a row or tombstone, 0 when there is none.
func (c *conn) version(table, where string, args ...any) hlc.Timestamp {
	c.t.Helper()
	var v uint64
	err := c.c.QueryRowContext(context.Background(),
		"SELECT _tandem_hlc FROM "+table+" WHERE "+where, args...).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0
	}
	if err != nil {
		c.t.Fatalf("version of %s where %s: %v", table, where, err)
	}
	return hlc.Timestamp(v)
}

func (c *conn) row(id int64) hlc.Timestamp  { return c.version("accounts", "id = ?", id) }
func (c *conn) tomb(id int64) hlc.Timestamp { return c.version(TombTable("accounts"), "id = ?", id) }

// checkLocal checks that v was stamped now by a trigger of testSite, and
// agrees with a Go clock of the same site.
func checkLocal(t *testing.T, what string, v hlc.Timestamp) {
	t.Helper()
	clock, err := hlc.NewClock(testSite, hlc.SystemClock{}, hlc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	goNow, err := clock.Now()
	if err != nil {
		t.Fatal(err)
	}
	if v.Site() != testSite {
		t.Errorf("%s: version %s has site %d; want %d", what, v, v.Site(), testSite)
	}
	skew := time.Duration(int64(goNow.WallMillis())-int64(v.WallMillis())) * time.Millisecond
	if skew < -5*time.Second || skew > 5*time.Second {
		t.Errorf("%s: version %s is %v away from the Go clock's %s; want within 5s", what, v, skew, goNow)
	}
}

func TestTriggerVersions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testSite, testTables[:2]...)
	f.prepare(t)
	c := f.conn(t)

	// Insert stamps a fresh version.
	res := c.exec("INSERT INTO accounts (name) VALUES ('a')")
	id, err := res.LastInsertId()
	if err != nil {
		t.Fatal(err)
	}
	v1 := c.row(id)
	checkLocal(t, "insert", v1)

	// Update bumps it, also twice in a row within one transaction.
	c.exec("UPDATE accounts SET balance = balance + 1 WHERE id = ?", id)
	v2 := c.row(id)
	checkLocal(t, "update", v2)
	c.exec("BEGIN")
	c.exec("UPDATE accounts SET balance = balance + 1 WHERE id = ?", id)
	v3 := c.row(id)
	c.exec("UPDATE accounts SET balance = balance + 1 WHERE id = ?", id)
	v4 := c.row(id)
	c.exec("COMMIT")
	if !(v1 < v2 && v2 < v3 && v3 < v4) {
		t.Errorf("versions do not increase strictly: %s %s %s %s", v1, v2, v3, v4)
	}

	// One statement writes the same row three times within one millisecond
	// (the statement's clock): the logical counter keeps them apart.
	c.exec("INSERT INTO accounts (id, name) VALUES (100, 'a'), (100, 'b'), (100, 'c') ON DUPLICATE KEY UPDATE name = VALUES(name)")
	if v := c.row(100); v.Logical() != 2 {
		t.Errorf("insert + 2 updates in one statement: version %s; want logical 2", v)
	}

	// Delete writes a tombstone after the row's last version.
	last := c.row(id)
	c.exec("DELETE FROM accounts WHERE id = ?", id)
	tomb := c.tomb(id)
	checkLocal(t, "delete tombstone", tomb)
	if tomb <= last {
		t.Errorf("tombstone %s is not after the deleted row's version %s", tomb, last)
	}
	if c.row(id) != 0 {
		t.Error("row still there after delete")
	}
	// A delete in the same millisecond as a later write still orders.
	c.exec("INSERT INTO accounts (id, name) VALUES (101, 'x')")
	c.exec("BEGIN")
	c.exec("UPDATE accounts SET name = 'y' WHERE id = 101")
	before := c.row(101)
	c.exec("DELETE FROM accounts WHERE id = 101")
	c.exec("COMMIT")
	if tomb := c.tomb(101); tomb <= before {
		t.Errorf("tombstone %s not after the version %s deleted in the same transaction", tomb, before)
	}

	// Re-insert is causally after the delete; the tombstone stays.
	c.exec("INSERT INTO accounts (id, name) VALUES (?, 'again')", id)
	if v := c.row(id); v <= tomb {
		t.Errorf("re-inserted row has version %s, not after the tombstone %s", v, tomb)
	}
	// Delete again: the tombstone moves forward.
	reinserted := c.row(id)
	c.exec("DELETE FROM accounts WHERE id = ?", id)
	if t2 := c.tomb(id); t2 <= reinserted || t2 <= tomb {
		t.Errorf("second tombstone %s not after %s and %s", t2, reinserted, tomb)
	}

	// A primary key change deletes the old key with the new version.
	c.exec("INSERT INTO accounts (id, name) VALUES (200, 'pk')")
	old := c.row(200)
	c.exec("UPDATE accounts SET id = 201 WHERE id = 200")
	moved := c.row(201)
	if moved <= old {
		t.Errorf("moved row version %s not after %s", moved, old)
	}
	if tomb := c.tomb(200); tomb != moved {
		t.Errorf("tombstone of the old key is %s; want the new version %s", tomb, moved)
	}
	// Moving onto a deleted key is after that key's tombstone.
	c.exec("INSERT INTO accounts (id, name) VALUES (202, 'x')")
	c.exec("DELETE FROM accounts WHERE id = 202")
	c.exec("UPDATE accounts SET id = 202 WHERE id = 201")
	if v, tomb := c.row(202), c.tomb(202); v <= tomb {
		t.Errorf("row moved onto a deleted key has version %s, not after its tombstone %s", v, tomb)
	}

	// REPLACE deletes and re-inserts; the new row must beat the tombstone
	// the delete wrote, also when one statement replaces the row twice in
	// the same millisecond.
	c.exec("INSERT INTO accounts (id, name) VALUES (300, 'a')")
	c.exec("REPLACE INTO accounts (id, name) VALUES (300, 'b'), (300, 'c')")
	if v, tomb := c.row(300), c.tomb(300); v <= tomb || tomb == 0 {
		t.Errorf("after REPLACE the row has version %s and the tombstone %s; want row > tombstone > 0", v, tomb)
	}

	// Keys compare by the column's collation in both tables.
	c.exec("INSERT INTO items (sku, n, qty) VALUES ('ABC', 1, 1)")
	c.exec("DELETE FROM items WHERE sku = 'ABC' AND n = 1")
	c.exec("INSERT INTO items (sku, n, qty) VALUES ('abc', 1, 2)")
	v := c.version("items", "sku = 'abc' AND n = 1")
	if tomb := c.version(TombTable("items"), "sku = 'ABC' AND n = 1"); v <= tomb || tomb == 0 {
		t.Errorf("items: re-insert under another case has version %s, tombstone %s", v, tomb)
	}
	checkLocal(t, "composite key insert", v)

	// Heartbeats replicate like data, so they are versioned too.
	c.exec("INSERT INTO " + QuoteIdent(f.meta) + ".`_tandem_heartbeat` (site, hlc, wall) VALUES (7, 1, NOW(6))")
	checkLocal(t, "heartbeat", c.version(QuoteIdent(f.meta)+".`_tandem_heartbeat`", "site = 7"))
}

func TestTriggersLeaveSinkSessionsAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testSite, testTables[0])
	f.prepare(t)
	sink := f.conn(t)
	sink.exec("SET " + ApplySessionVar + " = 1")

	remote := hlc.New(uint64(time.Now().UnixMilli()), 5, 3)
	sink.exec("INSERT INTO accounts (id, name, _tandem_hlc) VALUES (1, 'remote', ?)", uint64(remote))
	if v := sink.row(1); v != remote {
		t.Errorf("sink insert: version %s; want the explicit %s", v, remote)
	}
	sink.exec("UPDATE accounts SET name = 'r2', _tandem_hlc = ? WHERE id = 1", uint64(remote+256))
	if v := sink.row(1); v != remote+256 {
		t.Errorf("sink update: version %s; want the explicit %s", v, remote+256)
	}
	sink.exec("UPDATE accounts SET name = 'r3' WHERE id = 1")
	if v := sink.row(1); v != remote+256 {
		t.Errorf("sink update without version: version %s; want it unchanged", v)
	}
	sink.exec("UPDATE accounts SET id = 2 WHERE id = 1")
	sink.exec("DELETE FROM accounts WHERE id = 2")
	var tombs int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM " + TombTable("accounts")).Scan(&tombs); err != nil {
		t.Fatal(err)
	}
	if tombs != 0 {
		t.Errorf("sink session wrote %d tombstones; want none (sinks write their own)", tombs)
	}
	// Resetting the variable to 0 makes the session local again.
	sink.exec("SET " + ApplySessionVar + " = 0")
	sink.exec("INSERT INTO accounts (id, name, _tandem_hlc) VALUES (3, 'local', 42)")
	checkLocal(t, "insert after reset", sink.row(3))
}

// A REPLACE whose snapshot missed a concurrent write would insert a row
// below the tombstone its own delete wrote; the AFTER INSERT trigger
// refuses it with a retryable error instead.
func TestReplaceRaceIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testSite, testTables[0])
	f.prepare(t)
	a, sink := f.conn(t), f.conn(t)
	a.exec("INSERT INTO accounts (id, name) VALUES (1, 'a')")

	// The check after an insert runs only after a delete in the session
	// (deleteFlag), and lowers the flag; a REPLACE raises it itself.
	flag := func() bool {
		t.Helper()
		var v sql.NullInt64
		if err := a.c.QueryRowContext(context.Background(), "SELECT "+deleteFlag).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v.Valid
	}
	if flag() {
		t.Errorf("%s raised by an insert", deleteFlag)
	}
	a.exec("INSERT INTO accounts (id, name) VALUES (2, 'b')")
	a.exec("DELETE FROM accounts WHERE id = 2")
	if !flag() {
		t.Errorf("%s not raised by a delete", deleteFlag)
	}
	a.exec("INSERT INTO accounts (id, name) VALUES (2, 'c')")
	if flag() {
		t.Errorf("%s still raised after the next insert's check", deleteFlag)
	}

	a.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT")
	a.row(1)
	// A sink applies a write from a site whose clock runs an hour ahead.
	ahead := hlc.New(uint64(time.Now().Add(time.Hour).UnixMilli()), 0, 3)
	sink.exec("SET " + ApplySessionVar + " = 1")
	sink.exec("UPDATE accounts SET name = 'remote', _tandem_hlc = ? WHERE id = 1", uint64(ahead))

	_, err := a.c.ExecContext(context.Background(), "REPLACE INTO accounts (id, name) VALUES (1, 'local')")
	var me *mysql.MySQLError
	if !errors.As(err, &me) || string(me.SQLState[:]) != "40001" {
		t.Fatalf("racing REPLACE: error %v; want SQLSTATE 40001", err)
	}
	a.exec("ROLLBACK")
	if v := a.row(1); v != ahead {
		t.Errorf("row version %s after the refused REPLACE; want the sink's %s", v, ahead)
	}
	// Retried with a fresh snapshot it succeeds, after the remote version.
	a.exec("REPLACE INTO accounts (id, name) VALUES (1, 'local')")
	if v, tomb := a.row(1), a.tomb(1); v <= tomb || tomb <= ahead {
		t.Errorf("retried REPLACE: row %s, tombstone %s; want row > tombstone > %s", v, tomb, ahead)
	}
}

// The reader takes a delete's version from the tombstone written just
// before it in the same transaction.
func TestTombstonePrecedesDeleteInBinlog(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testSite, testTables[0])
	f.prepare(t)
	c := f.conn(t)
	c.exec("INSERT INTO accounts (id, name) VALUES (1, 'a')")
	var file string
	var pos int64
	var ignore sql.NullString
	row := c.c.QueryRowContext(context.Background(), "SHOW MASTER STATUS")
	if err := row.Scan(&file, &pos, &ignore, &ignore); err != nil {
		t.Fatal(err)
	}
	c.exec("DELETE FROM accounts WHERE id = 1")

	rows, err := c.c.QueryContext(context.Background(), fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %d", file, pos))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	tableMap := regexp.MustCompile(`^table_id: (\d+) \(([^)]*)\)`)
	rowEvent := regexp.MustCompile(`^table_id: (\d+)`)
	names := map[string]string{}
	var order []string
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		typ, info := string(vals[2]), string(vals[5])
		if m := tableMap.FindStringSubmatch(info); typ == "Table_map" && m != nil {
			names[m[1]] = m[2]
			continue
		}
		if m := rowEvent.FindStringSubmatch(info); strings.Contains(typ, "_rows") && m != nil {
			if name, ok := names[m[1]]; ok && strings.HasPrefix(name, f.data+".") {
				order = append(order, typ+" "+strings.TrimPrefix(name, f.data+"."))
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"Write_rows_v1 " + TombTable("accounts"), "Delete_rows_v1 accounts"}
	if strings.Join(order, ", ") != strings.Join(want, ", ") {
		t.Errorf("binlog row events %v; want %v", order, want)
	}
}

// Concurrent transactions that insert new keys and delete old ones do not
// deadlock on the triggers' reads. (Reads in SET or IF subqueries would be
// locking reads that take gap locks under REPEATABLE READ; with them
// almost every transaction of this workload deadlocked.)
func TestTriggersDoNotDeadlockWriters(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testSite, testTables[0])
	for i := 1; i <= 400; i++ {
		f.exec(t, "INSERT INTO accounts (id, name) VALUES (?, 'old')", i)
	}
	f.prepare(t)
	const workers, txns = 8, 40
	var (
		mu        sync.Mutex
		nextID    = int64(1000)
		oldID     = int64(0)
		failures  []string
		wg        sync.WaitGroup
		committed atomic.Int64
	)
	take := func(p *int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		*p++
		return *p
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < txns; i++ {
				err := func() error {
					tx, err := f.db.Begin()
					if err != nil {
						return err
					}
					defer tx.Rollback()
					for j := 0; j < 2; j++ {
						if _, err := tx.Exec("INSERT INTO accounts (id, name) VALUES (?, 'new')", take(&nextID)); err != nil {
							return err
						}
					}
					if _, err := tx.Exec("DELETE FROM accounts WHERE id = ?", take(&oldID)); err != nil {
						return err
					}
					return tx.Commit()
				}()
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				committed.Add(1)
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d transactions failed, first: %s", len(failures), workers*txns, failures[0])
	}
	var tombs int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM " + TombTable("accounts")).Scan(&tombs); err != nil {
		t.Fatal(err)
	}
	if int64(tombs) != committed.Load() {
		t.Errorf("%d tombstones for %d committed deletes", tombs, committed.Load())
	}
}

// Triggers raise no warnings (a SELECT … INTO that finds nothing would).
func TestTriggersRaiseNoWarnings(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testSite, testTables[:2]...)
	f.prepare(t)
	c := f.conn(t)
	for _, q := range []string{
		"INSERT INTO accounts (id, name) VALUES (1, 'a')",
		"REPLACE INTO accounts (id, name) VALUES (1, 'b')",
		"UPDATE accounts SET id = 2 WHERE id = 1",
		"DELETE FROM accounts WHERE id = 2",
		"INSERT INTO items (sku, n) VALUES ('x', 1)",
	} {
		c.exec(q)
		var n int
		if err := c.c.QueryRowContext(context.Background(), "SELECT @@warning_count").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: %d warnings", q, n)
		}
	}
}

// TestInsertVersionMatchesNestedForm: the BEFORE INSERT trigger's flat
// expression (hlc.SQLNextInsert, generation 5) computes exactly what the
// nested one of generation 4 computed, for tombstone and row versions
// behind, at and ahead of the server's clock, and NULL. Both are evaluated
// in one statement, so they share its clock.
func TestInsertVersionMatchesNestedForm(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testSite)
	nowMs := uint64(time.Now().UnixMilli())
	ver := func(ms, logical uint64, site uint64) string {
		return fmt.Sprint((ms<<hlc.LogicalBits|logical)<<hlc.SiteBits | site)
	}
	values := []string{"NULL", "0", "1",
		ver(nowMs-3_600_000, 7, 2), // an hour behind
		ver(nowMs-1, 4095, 3),      // the millisecond before
		ver(nowMs, 0, 1), ver(nowMs, 5, testSite), ver(nowMs+1, 0, 2), ver(nowMs+2, 4095, 4),
		ver(nowMs+30_000, 17, 5), // a site 30 s ahead
	}
	var rows []string
	for _, a := range values {
		for _, p := range values {
			rows = append(rows, fmt.Sprintf("SELECT CAST(%s AS UNSIGNED) AS a, CAST(%s AS UNSIGNED) AS p", a, p))
		}
	}
	nested := hlc.SQLNext(testSite, "a", "IF(p IS NULL, NULL, "+hlc.SQLNext(testSite, "p", "a")+")")
	flat := hlc.SQLNextInsert(testSite, "a", "p")
	q := "SELECT a, p, " + nested + ", " + flat + " FROM (" + strings.Join(rows, " UNION ALL ") + ") AS x"
	// Several statements, so that some straddle a millisecond boundary
	// of the clock the expressions read.
	for range 20 {
		rs, err := f.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rs.Next() {
			var a, p sql.NullInt64 // unsigned values fit: the test's are below 2^63
			var want, got uint64
			if err := rs.Scan(&a, &p, &want, &got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("tomb %v, row %v: flat form %s, nested form %s", a, p, hlc.Timestamp(got), hlc.Timestamp(want))
			}
			n++
		}
		if err := rs.Err(); err != nil {
			t.Fatal(err)
		}
		rs.Close()
		if n != len(rows) {
			t.Fatalf("%d rows evaluated; want %d", n, len(rows))
		}
	}
}
