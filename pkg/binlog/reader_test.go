package binlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

const vcol = "_tandem_hlc BIGINT UNSIGNED NOT NULL"

func TestReaderMixedWorkload(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	execAll(t, db,
		"CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20), "+vcol+")",
		"CREATE TABLE b (k1 VARCHAR(10), k2 INT, n INT, "+vcol+", PRIMARY KEY (k2, k1))",
		// As `schema prepare` adds it: invisible, still in the binlog.
		"CREATE TABLE c (id BIGINT UNSIGNED PRIMARY KEY, d DECIMAL(10,2), _tandem_hlc BIGINT UNSIGNED NOT NULL DEFAULT 0 INVISIBLE)",
	)
	rr := startReader(t, readerConfig(m, dbName+".*"), event.Position{})
	// Wait until the reader is positioned, so the workload is after it.
	marks := syncReader(t, rr, db, dbName, "INSERT INTO a VALUES (%d, 'mark', 1)")

	inTx(t, db,
		"INSERT INTO a VALUES (1, 'one', 10), (2, 'two', 11)",
		"INSERT INTO b VALUES ('x', 1, 5, 12)",
		"INSERT INTO c (id, d, _tandem_hlc) VALUES (18446744073709551615, 12.50, 13)",
	)
	inTx(t, db,
		"UPDATE a SET v = 'uno', _tandem_hlc = 20 WHERE id = 1",
		"UPDATE b SET n = 6, _tandem_hlc = 21 WHERE k1 = 'x' AND k2 = 1",
		"DELETE FROM c WHERE id = 18446744073709551615",
	)
	execAll(t, db, "INSERT INTO b VALUES ('y', 1, 7, 30)") // autocommit
	inTx(t, db, "DELETE FROM a WHERE id = 2", "INSERT INTO c (id, d, _tandem_hlc) VALUES (1, -0.01, 31)")

	got := rr.waitChanges(t, dbName, marks+10)[marks:]
	want := []string{
		`insert a v10 int(1) kind6("one") kind2(10)`,
		`insert a v11 int(2) kind6("two") kind2(11)`,
		`insert b v12 kind6("x") int(1) int(5) kind2(12)`,
		`insert c v13 kind2(18446744073709551615) kind5("12.50") kind2(13)`,
		`update a v20 int(1) kind6("uno") kind2(20)`,
		`update b v21 kind6("x") int(1) int(6) kind2(21)`,
		// No tombstone trigger here: one tick after the row's version.
		fmt.Sprintf(`delete c v%d kind2(18446744073709551615) kind5("12.50") kind2(13)`, hlc.FromTick(hlc.Timestamp(13).Tick()+1, 1)),
		`insert b v30 kind6("y") int(1) int(7) kind2(30)`,
		fmt.Sprintf(`delete a v%d int(2) kind6("two") kind2(11)`, hlc.FromTick(hlc.Timestamp(11).Tick()+1, 1)),
		`insert c v31 kind2(1) kind5("-0.01") kind2(31)`,
	}
	var gotS []string
	for _, c := range got {
		gotS = append(gotS, describe(c))
	}
	if !slices.Equal(gotS, want) {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(gotS, "\n"), strings.Join(want, "\n"))
	}
	// Composite key in key order (k2, k1), column names from the binlog.
	if b := got[2]; !slices.Equal(b.PK, []int{1, 0}) || !slices.Equal(b.Columns, []string{"k1", "k2", "n", "_tandem_hlc"}) {
		t.Fatalf("table b: PK %v columns %v", b.PK, b.Columns)
	}
	txns := rr.c.txnsOf(dbName)[marks:]
	if len(txns) != 4 || len(txns[0].Changes) != 4 || len(txns[1].Changes) != 3 || len(txns[2].Changes) != 1 || len(txns[3].Changes) != 2 {
		t.Fatalf("transactions not kept whole: %d", len(txns))
	}
	for i, txn := range txns {
		if txn.Origin != 1 || !txn.Last || txn.Fragment != 0 || txn.Stamp == 0 || txn.CommitTime.IsZero() ||
			!strings.Contains(txn.Position.GTIDSet, txn.GTID) || txn.Position.File == "" || txn.Position.Offset == 0 {
			t.Errorf("txn %d: %+v", i, txn)
		}
		if i > 0 && txn.Stamp <= txns[i-1].Stamp {
			t.Errorf("stamps not increasing: %s then %s", txns[i-1].Stamp, txn.Stamp)
		}
	}
	if s := rr.r.Stats(); s.TxnsRead < 5 || s.RowsRead < 10 || s.DeletesWithoutTombstone != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestReaderResumeFromMidStream(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	execAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY, "+vcol+")")
	start := currentPosition(t, m)
	for i := 1; i <= 10; i++ {
		execAll(t, db, fmt.Sprintf("INSERT INTO t VALUES (%d, %d)", i, i))
	}
	cfg := readerConfig(m, dbName+".*")
	first := startReader(t, cfg, start)
	first.waitChanges(t, dbName, 10)
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	txns := first.c.txnsOf(dbName)
	mid := txns[3].Position // after the 4th insert

	cfg.ServerID = 50000 + replicaIDs.Add(1)
	second := startReader(t, cfg, mid)
	execAll(t, db, "INSERT INTO t VALUES (11, 11)")
	got := second.waitChanges(t, dbName, 7)
	var ids []int64
	for _, c := range got {
		ids = append(ids, c.Row[0].Int)
	}
	if !slices.Equal(ids, []int64{5, 6, 7, 8, 9, 10, 11}) {
		t.Fatalf("resumed at %s and got ids %v, want 5..11", mid, ids)
	}
	if g := second.c.txnsOf(dbName)[0].GTID; g != txns[4].GTID {
		t.Fatalf("first resumed GTID %s, want %s", g, txns[4].GTID)
	}
}

func TestReaderFilters(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	for _, tbl := range []string{"keep_a", "keep_secret", "other"} {
		execAll(t, db, "CREATE TABLE "+tbl+" (id INT PRIMARY KEY, "+vcol+")")
	}
	cfg := readerConfig(m, dbName+".keep_*")
	cfg.Exclude = []string{"*.keep_secret"}
	rr := startReader(t, cfg, currentPosition(t, m))
	execAll(t, db,
		"INSERT INTO keep_secret VALUES (1, 1)",
		"INSERT INTO other VALUES (2, 2)",
		"INSERT INTO keep_a VALUES (3, 3)",
	)
	got := rr.waitChanges(t, dbName, 1)
	execAll(t, db, "INSERT INTO keep_a VALUES (4, 4)")
	got = rr.waitChanges(t, dbName, 2)
	if len(got) != 2 || got[0].Table != "keep_a" || got[1].Table != "keep_a" {
		t.Fatalf("filtered changes: %v", got)
	}
}

func TestReaderLoopPrevention(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	meta := testenv.NewDatabase(t, m) // this test's own meta schema
	db := m.DB(t, dbName)
	execAll(t, db,
		"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), "+vcol+")",
		"CREATE TABLE `"+meta+"`."+schema.Offsets+" (origin TINYINT UNSIGNED, part INT, next_offset BIGINT, PRIMARY KEY (origin, part))",
		"CREATE TABLE `"+meta+"`."+schema.Heartbeat+" (site TINYINT UNSIGNED PRIMARY KEY, wall DATETIME(3), "+vcol+")",
		"CREATE TABLE `"+meta+"`.`_tandem_other` (id INT PRIMARY KEY)",
	)
	cfg := readerConfig(m, dbName+".*")
	cfg.MetaSchema = meta
	rr := startReader(t, cfg, currentPosition(t, m))
	// A sink's apply transaction: offsets first, then the data.
	inTx(t, db,
		"INSERT INTO `"+meta+"`."+schema.Offsets+" VALUES (2, 0, 17) ON DUPLICATE KEY UPDATE next_offset = 17",
		"INSERT INTO t VALUES (1, 'from-sink', 100)",
	)
	inTx(t, db, "INSERT INTO t VALUES (2, 'local', 200)", "INSERT INTO `"+meta+"`.`_tandem_other` VALUES (1)")
	inTx(t, db, "INSERT INTO `"+meta+"`."+schema.Heartbeat+" VALUES (1, '2024-01-01 00:00:00.123', 300)")
	testenv.WaitFor(t, 30*time.Second, "heartbeat", func() bool { return len(rr.c.changes(meta)) == 1 })
	got := rr.c.changes(dbName)
	if len(got) != 1 || string(got[0].Row[1].Bytes) != "local" {
		t.Fatalf("changes of %s: %v (the sink's write must be dropped)", dbName, got)
	}
	if hb := rr.c.changes(meta)[0]; hb.Table != schema.Heartbeat || hb.Version != 300 {
		t.Fatalf("heartbeat change %+v", hb)
	}
	if s := rr.r.Stats(); s.TxnsDroppedLoop != 1 {
		t.Fatalf("TxnsDroppedLoop = %d", s.TxnsDroppedLoop)
	}
}

func TestReaderTombstoneDeletes(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	tomb := schema.TombTable("t")
	execAll(t, db,
		"CREATE TABLE t (a INT, b VARCHAR(8), v INT, "+vcol+", PRIMARY KEY (a, b))",
		"CREATE TABLE "+tomb+" (b VARCHAR(8), a INT, "+vcol+", PRIMARY KEY (a, b))",
		// What `schema prepare` installs, simplified: the tombstone's
		// version is after the deleted row's.
		"CREATE TRIGGER t_bd BEFORE DELETE ON t FOR EACH ROW "+
			"INSERT INTO "+tomb+" (a, b, _tandem_hlc) VALUES (OLD.a, OLD.b, OLD._tandem_hlc + 4096) "+
			"ON DUPLICATE KEY UPDATE _tandem_hlc = VALUES(_tandem_hlc)",
		"INSERT INTO t VALUES (1, 'x', 0, 1000), (2, 'y', 0, 2000), (3, 'z', 0, 3000)",
		"INSERT INTO "+tomb+" VALUES ('z', 3, 5)", // an old tombstone is overwritten
	)
	rr := startReader(t, readerConfig(m, dbName+".*"), currentPosition(t, m))
	execAll(t, db, "DELETE FROM t WHERE a IN (1, 2, 3)")
	got := rr.waitChanges(t, dbName, 3)
	for i, want := range []hlc.Timestamp{1000 + 4096, 2000 + 4096, 3000 + 4096} {
		if got[i].Op != event.OpDelete || got[i].Version != want {
			t.Errorf("delete %d: %s, want version %d", i, describe(got[i]), want)
		}
	}
	if s := rr.r.Stats(); s.DeletesWithoutTombstone != 0 {
		t.Errorf("DeletesWithoutTombstone = %d", s.DeletesWithoutTombstone)
	}
	for _, c := range got {
		if c.Table != "t" {
			t.Errorf("published %s", c.Table)
		}
	}
}

func TestReaderPKChange(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	execAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(8), "+vcol+")", "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)")
	rr := startReader(t, readerConfig(m, dbName+".*"), currentPosition(t, m))
	execAll(t, db, "UPDATE t SET id = id + 100, _tandem_hlc = _tandem_hlc + 1000 ORDER BY id DESC")
	got := rr.waitChanges(t, dbName, 4)
	var s []string
	for _, c := range got {
		s = append(s, describe(c))
	}
	want := []string{
		`delete t v1020 int(2) kind6("b") kind2(20)`,
		`insert t v1020 int(102) kind6("b") kind2(1020)`,
		`delete t v1010 int(1) kind6("a") kind2(10)`,
		`insert t v1010 int(101) kind6("a") kind2(1010)`,
	}
	if !slices.Equal(s, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(s, "\n"), strings.Join(want, "\n"))
	}
}

// TestReaderDomains checks that positions carry every GTID domain: a
// domain missing from the start position would be replayed from the start
// of the binlog.
func TestReaderDomains(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	db.SetMaxOpenConns(1) // the session variable must stick
	execAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY, "+vcol+")",
		"SET SESSION gtid_domain_id = 77",
		"INSERT INTO t VALUES (1, 1)",
		"SET SESSION gtid_domain_id = 1",
	)
	start := currentPosition(t, m)
	if !strings.Contains(start.GTIDSet, "77-") {
		t.Fatalf("position %s lacks domain 77", start)
	}
	cfg := readerConfig(m, dbName+".*")
	rr := startReader(t, cfg, start)
	execAll(t, db, "INSERT INTO t VALUES (2, 2)")
	got := rr.waitChanges(t, dbName, 1)
	if len(got) != 1 || got[0].Row[0].Int != 2 {
		t.Fatalf("got %v", got)
	}
	pos := rr.c.txnsOf(dbName)[0].Position
	if !strings.Contains(pos.GTIDSet, "77-") {
		t.Fatalf("emitted position %s lost domain 77", pos)
	}
	// Resuming from the emitted position does not replay domain 77.
	cfg.ServerID = 50000 + replicaIDs.Add(1)
	again := startReader(t, cfg, pos)
	execAll(t, db, "INSERT INTO t VALUES (3, 3)")
	got = again.waitChanges(t, dbName, 1)
	if len(got) != 1 || got[0].Row[0].Int != 3 {
		t.Fatalf("after resume: %v", got)
	}
}

func TestReaderSourceRestart(t *testing.T) {
	t.Parallel()
	m := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 2})
	dbName := testenv.NewDatabase(t, m)
	m.Exec(t, "CREATE TABLE `"+dbName+"`.t (id INT PRIMARY KEY, "+vcol+")")
	rr := startReader(t, readerConfig(m, dbName+".*"), currentPosition(t, m))
	insert := func(from, to int) {
		db := m.DB(t, dbName)
		for i := from; i <= to; i++ {
			execAll(t, db, fmt.Sprintf("INSERT INTO t VALUES (%d, %d)", i, i))
		}
		db.Close()
	}
	insert(1, 30)
	rr.waitChanges(t, dbName, 30)
	m.Stop(t)
	testenv.WaitFor(t, 30*time.Second, "a reconnect attempt", func() bool { return rr.r.Stats().Reconnects > 0 })
	m.Start(t)
	insert(31, 60)
	rr.waitChanges(t, dbName, 60)
	// A crash, with transactions committed while the reader is away.
	before := rr.r.Stats().Reconnects
	m.Kill(t)
	testenv.WaitFor(t, 30*time.Second, "a reconnect attempt after the crash", func() bool { return rr.r.Stats().Reconnects > before })
	m.Start(t)
	insert(61, 90)
	got := rr.waitChanges(t, dbName, 90)
	for i, c := range got {
		if c.Row[0].Int != int64(i+1) {
			t.Fatalf("change %d has id %d: lost or duplicated across the restart", i, c.Row[0].Int)
		}
	}
	if len(got) != 90 {
		t.Fatalf("%d changes, want 90", len(got))
	}
	if s := rr.r.Stats(); s.Reconnects == 0 {
		t.Fatalf("no reconnect counted: %+v", s)
	}
}

func TestPreflight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  testenv.MariaDBOptions
		want []string
	}{
		{"statement", testenv.MariaDBOptions{Site: 3, BinlogFormat: "STATEMENT"},
			[]string{"binlog_format is STATEMENT, must be ROW", "SET GLOBAL binlog_format = 'ROW';", "binlog_format = ROW"}},
		{"minimal metadata", testenv.MariaDBOptions{Site: 4, RowMetadata: "MINIMAL"},
			[]string{"binlog_row_metadata is MINIMAL, must be FULL", "SET GLOBAL binlog_row_metadata = 'FULL';", "binlog_row_metadata = FULL", "my.cnf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := testenv.NewMariaDB(t, tc.opt)
			rr := newReader(t, readerConfig(m))
			err := rr.Preflight(context.Background())
			if err == nil {
				t.Fatal("Preflight accepted the server")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
	t.Run("ok", func(t *testing.T) {
		t.Parallel()
		m := testenv.SharedMariaDB(t, 1)
		if err := newReader(t, readerConfig(m)).Preflight(context.Background()); err != nil {
			t.Fatal(err)
		}
		cfg := readerConfig(m)
		cfg.ServerID = m.ServerID
		if err := newReader(t, cfg).Preflight(context.Background()); err == nil || !strings.Contains(err.Error(), "ServerID") {
			t.Fatalf("ServerID equal to the source's: %v", err)
		}
		cfg = readerConfig(m)
		cfg.Flavor = FlavorMySQL
		if err := newReader(t, cfg).Preflight(context.Background()); err == nil || !strings.Contains(err.Error(), `set Flavor to "mariadb"`) {
			t.Fatalf("wrong flavor: %v", err)
		}
	})
}

// syncReader writes marker rows (stmt has one %d) until the reader, which
// resolves its start position asynchronously, has seen one, then waits for
// every marker written. It returns the number of markers the reader saw.
func syncReader(t *testing.T, rr *runningReader, db *sql.DB, schemaName, stmt string) int {
	t.Helper()
	n := 0
	testenv.WaitFor(t, 30*time.Second, "the reader to start", func() bool {
		n++
		execAll(t, db, fmt.Sprintf(stmt, -n))
		return len(rr.c.changes(schemaName)) > 0
	})
	n++
	execAll(t, db, fmt.Sprintf(stmt, -n))
	testenv.WaitFor(t, 30*time.Second, "the last marker", func() bool {
		ch := rr.c.changes(schemaName)
		return len(ch) > 0 && ch[len(ch)-1].Row[0].Int == int64(-n)
	})
	return len(rr.c.changes(schemaName))
}

func newReader(t *testing.T, cfg Config) *Reader {
	t.Helper()
	clock, err := hlc.NewClock(cfg.Site, hlc.SystemClock{}, hlc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(cfg, zaptest.NewLogger(t), clock)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReaderPositionPurged(t *testing.T) {
	t.Parallel()
	m := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 5})
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	execAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY, "+vcol+")", "INSERT INTO t VALUES (1, 1)")
	old := currentPosition(t, m)
	execAll(t, db, "INSERT INTO t VALUES (2, 2)", "FLUSH BINARY LOGS", "INSERT INTO t VALUES (3, 3)", "FLUSH BINARY LOGS")
	now := currentPosition(t, m)
	// MariaDB keeps a binlog until InnoDB has checkpointed its
	// transactions (and says so only in a warning), so purge until the
	// old files are really gone.
	testenv.WaitFor(t, 30*time.Second, "the old binlogs to be purged", func() bool {
		execAll(t, db, "PURGE BINARY LOGS TO '"+now.File+"'")
		var first string
		var size any
		rows, err := db.Query("SHOW BINARY LOGS")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		dest := []any{&first, &size}
		for range len(cols) - 2 {
			dest = append(dest, new(any))
		}
		if !rows.Next() || rows.Scan(dest...) != nil {
			t.Fatal("SHOW BINARY LOGS returned nothing")
		}
		return first == now.File
	})

	r := newReader(t, readerConfig(m, dbName+".*"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.Run(ctx, old, (&collector{}).emit)
	if !errors.Is(err, ErrPositionPurged) {
		t.Fatalf("Run from purged %s: %v", old, err)
	}
	for _, w := range []string{old.GTIDSet, "re-seed", "reset the reader's checkpoint"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q: %v", w, err)
		}
	}
	if r.Stats().Reconnects != 0 {
		t.Errorf("purged position was retried %d times", r.Stats().Reconnects)
	}
}

func TestReaderBadCredentials(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	for _, from := range []event.Position{{}, currentPosition(t, m)} {
		cfg := readerConfig(m)
		cfg.User = "nobody"
		cfg.Password = "wrong"
		r := newReader(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := r.Run(ctx, from, (&collector{}).emit)
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || !strings.Contains(err.Error(), "refused user") || timedOut {
			t.Fatalf("from %q: Run = %v, want an access-denied error without retrying until the deadline", from, err)
		}
	}
}

func TestReaderHugeTransactionFragments(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	execAll(t, db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), "+vcol+")")
	cfg := readerConfig(m, dbName+".*")
	cfg.MaxFragmentChanges = 1000
	cfg.MaxFragmentBytes = 40 << 10

	const rows = 100_000
	var (
		mu        sync.Mutex
		fragments []event.Txn
		total     int
		next      = int64(1)
		bad       error
	)
	// Check each fragment as it arrives and keep only its header, as a
	// publisher would.
	rr := startReaderEmit(t, cfg, currentPosition(t, m), func(_ context.Context, txn event.Txn) error {
		mu.Lock()
		defer mu.Unlock()
		if bad != nil || len(txn.Changes) == 0 || txn.Changes[0].Schema != dbName {
			return nil
		}
		size := 0
		for _, c := range txn.Changes {
			if c.Row[0].Int != next {
				bad = fmt.Errorf("fragment %d: id %d, want %d", txn.Fragment, c.Row[0].Int, next)
			}
			next++
			size += 8 * len(c.Row)
			for _, v := range c.Row {
				size += len(v.Bytes)
			}
		}
		if len(txn.Changes) > cfg.MaxFragmentChanges || size > cfg.MaxFragmentBytes {
			bad = fmt.Errorf("fragment %d: %d changes, %d bytes", txn.Fragment, len(txn.Changes), size)
		}
		total += len(txn.Changes)
		txn.Changes = nil
		fragments = append(fragments, txn)
		return nil
	})
	execAll(t, db, fmt.Sprintf("INSERT INTO t SELECT seq, CONCAT('row-', seq), seq FROM seq_1_to_%d", rows))
	testenv.WaitFor(t, 120*time.Second, "the whole transaction", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return total >= rows || bad != nil
	})
	if err := rr.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if bad != nil {
		t.Fatal(bad)
	}
	// The position before the transaction holds the previous sequence
	// number of its domain.
	g, err := parseMariaGTID(fragments[0].GTID)
	if err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprintf("%d-%d-%d", g.DomainID, g.ServerID, g.SequenceNumber-1)
	for i, f := range fragments {
		last := i == len(fragments)-1
		if f.Fragment != uint32(i) || f.Last != last || f.GTID != fragments[0].GTID {
			t.Fatalf("fragment %d: number %d last %v gtid %s", i, f.Fragment, f.Last, f.GTID)
		}
		if !last && (f.Position != fragments[0].Position || !strings.Contains(f.Position.GTIDSet, before)) {
			t.Fatalf("fragment %d position %s, want the position before transaction %s", i, f.Position, f.GTID)
		}
		if last && !strings.Contains(f.Position.GTIDSet, f.GTID) {
			t.Fatalf("last fragment position %s does not include %s", f.Position, f.GTID)
		}
	}
	if len(fragments) < rows/cfg.MaxFragmentChanges {
		t.Fatalf("%d fragments", len(fragments))
	}
	t.Logf("%d rows in %d fragments", total, len(fragments))
}
