package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fixture is a data schema and a meta schema of their own on the shared
// server of site 1, prepared by pkg/schema, with a sink writing to them.
type fixture struct {
	m     *testenv.MariaDB
	db    *sql.DB
	data  string
	meta  string
	sink  *MySQL
	clock *hlc.Clock
	topic string
	next  int64 // next Kafka offset batch() hands out
}

// newFixture creates the tables (CREATE TABLE statements naming the table
// third), prepares them and opens a sink for site cfg.Site (default 1).
func newFixture(t testing.TB, cfg Config, ddl ...string) *fixture {
	t.Helper()
	m := testenv.SharedMariaDB(t, 1)
	f := &fixture{m: m, data: testenv.NewDatabase(t, m), topic: "topic_" + strings.ReplaceAll(t.Name(), "/", "_")}
	f.meta = testenv.NewDatabase(t, m)
	m.Exec(t, "DROP DATABASE "+quoteIdent(f.meta)) // prepare creates it; NewDatabase drops it at the end
	f.db = m.DB(t, f.data)
	if cfg.Site == 0 {
		cfg.Site = 1
	}
	opt := schema.Options{Site: cfg.Site, MetaSchema: f.meta}
	for _, q := range ddl {
		f.exec(t, q)
		opt.Tables = append(opt.Tables, schema.TableRef{Schema: f.data, Table: strings.Trim(strings.Fields(q)[2], "`")})
	}
	ctx := context.Background()
	plan, err := schema.Inspect(ctx, f.db, opt)
	if err != nil {
		t.Fatalf("schema.Inspect: %v", err)
	}
	if err := plan.Apply(ctx, f.db); err != nil {
		t.Fatalf("schema prepare: %v", err)
	}
	f.clock, err = hlc.NewClock(cfg.Site, hlc.SystemClock{}, hlc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetaSchema = f.meta
	var log *zap.Logger
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	} else {
		log = zap.NewNop()
	}
	f.sink, err = NewMySQL(m.SinkDB(t, ""), cfg, log, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.sink.Close() })
	return f
}

func (f *fixture) exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// execAsSink runs statements on one connection with the sink's session
// variable set, so that the triggers leave versions and tombstones alone:
// the way to set up a row or tombstone with a chosen version.
func (f *fixture) execAsSink(t testing.TB, qs ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := f.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET "+schema.ApplySessionVar+" = 1"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(ctx, "SET "+schema.ApplySessionVar+" = NULL")
	for _, q := range qs {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// batch wraps txns in a batch of the fixture's topic, partition 0, at the
// next offsets.
func (f *fixture) batch(txns ...event.Txn) Batch {
	b := Batch{Topic: f.topic, Partition: 0, FirstOffset: f.next, NextOffset: f.next + int64(max(len(txns), 1)), Origin: 2, Txns: txns}
	f.next = b.NextOffset
	return b
}

func (f *fixture) apply(t testing.TB, b Batch) Result {
	t.Helper()
	res, err := f.sink.Apply(context.Background(), b)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := res.Applied + res.Duplicates + res.Conflicts + res.Superseded; !res.AlreadyApplied && got != res.Rows {
		t.Errorf("Result %+v does not account for every row: %d != %d", res, got, res.Rows)
	}
	f.checkIdle(t)
	return res
}

// outcome names what Apply did with a batch of one row change.
func outcome(res Result) string {
	switch {
	case res.Applied == 1:
		return "applied"
	case res.Duplicates == 1:
		return "duplicate"
	case res.Conflicts == 1:
		return "conflict"
	case res.Superseded == 1:
		return "superseded"
	}
	return "?"
}

// checkIdle fails t when one of the sink's idle connections has an InnoDB
// transaction open. Sink sessions run with autocommit off: a use that
// ended without COMMIT or ROLLBACK would keep its locks, and its rows out
// of sight, until the connection's next apply.
func (f *fixture) checkIdle(t testing.TB) {
	t.Helper()
	// Taken out of the idle list while checked: a concurrent Apply opens
	// a connection of its own instead of starting a transaction here.
	f.sink.mu.Lock()
	idle := f.sink.idle
	f.sink.idle = nil
	f.sink.mu.Unlock()
	defer func() {
		for _, c := range idle {
			f.sink.release(c, true)
		}
	}()
	for _, c := range idle {
		// @@in_transaction (MariaDB) rather than INNODB_TRX, which is a
		// cache refreshed at most every 0.1 s and shows transactions
		// committed just before.
		var id, open int64
		if err := c.QueryRowContext(context.Background(), "SELECT CONNECTION_ID(), @@in_transaction").Scan(&id, &open); err != nil {
			t.Fatal(err)
		}
		if open != 0 {
			t.Errorf("idle sink connection %d has a transaction open", id)
		}
	}
}

// query returns the rows of q as strings ("NULL" for NULL), columns joined
// by "|".
func (f *fixture) query(t testing.TB, q string, args ...any) []string {
	t.Helper()
	rows, err := f.db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			parts[i] = "NULL"
			if v.Valid {
				parts[i] = v.String
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checksum fingerprints a table (and its tombstones) to prove that
// something changed nothing.
func (f *fixture) checksum(t testing.TB, table string) string {
	t.Helper()
	var b strings.Builder
	for _, tb := range []string{table, schema.TombTable(table)} {
		var name string
		var sum sql.NullInt64
		if err := f.db.QueryRow("CHECKSUM TABLE "+quoteIdent(tb)+" EXTENDED").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%d ", tb, sum.Int64)
	}
	return b.String()
}

// state is one row's stored versions: the row's (0 = no row) and the
// tombstone's (0 = none).
type state struct{ row, tomb hlc.Timestamp }

func (f *fixture) state(t testing.TB, table string, id int64) state {
	t.Helper()
	var s state
	for _, q := range []struct {
		table string
		dst   *hlc.Timestamp
	}{{table, &s.row}, {schema.TombTable(table), &s.tomb}} {
		var v uint64
		err := f.db.QueryRow("SELECT _tandem_hlc FROM "+quoteIdent(q.table)+" WHERE id = ?", id).Scan(&v)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			t.Fatal(err)
		}
		*q.dst = hlc.Timestamp(v)
	}
	return s
}

// versions hands out increasing timestamps of a site, starting a while in
// the past so that the local clock accepts them.
type versions struct{ wall uint64 }

func newVersions() *versions { return &versions{wall: uint64(time.Now().Add(-time.Hour).UnixMilli())} }

func (v *versions) next(site uint8) hlc.Timestamp {
	v.wall++
	return hlc.New(v.wall, 0, site)
}

// Value constructors.
func vInt(i int64) event.Value   { return event.Value{Kind: event.KindInt, Int: i} }
func vUint(u uint64) event.Value { return event.Value{Kind: event.KindUint, Uint: u} }
func vStr(s string) event.Value  { return event.Value{Kind: event.KindString, Bytes: []byte(s)} }
func vBytes(b []byte) event.Value {
	return event.Value{Kind: event.KindBytes, Bytes: append([]byte{}, b...)}
}
func vKind(k event.Kind, s string) event.Value { return event.Value{Kind: k, Bytes: []byte(s)} }

// kvCols is the column list of the kv table most tests use.
var kvCols = []string{"id", "val", "_tandem_hlc"}

const kvTable = "CREATE TABLE kv (id BIGINT NOT NULL PRIMARY KEY, val VARCHAR(100)) ENGINE=InnoDB"

// kv returns a change of the kv table (val is ignored for deletes).
func (f *fixture) kv(op event.Op, id int64, val string, v hlc.Timestamp) event.Change {
	return event.Change{Schema: f.data, Table: "kv", Op: op, Columns: kvCols, PK: []int{0},
		Row: []event.Value{vInt(id), vStr(val), vUint(uint64(v))}, Version: v}
}

func txn(changes ...event.Change) event.Txn {
	return event.Txn{Origin: 2, GTID: "2-102-1", Stamp: changes[0].Version, Last: true, Changes: changes}
}
