package binlog

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

const benchDDL = "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(40), b BIGINT, c DECIMAL(12,2), d DATETIME(6), " + vcol + ")"

// BenchmarkReader decodes a backlog of 200k rows written in 1000-row
// transactions, from the binlog of a real server to emitted Txns.
func BenchmarkReader(b *testing.B) {
	const rows, perTxn = 200_000, 1000
	m := testenv.SharedMariaDB(b, 1)
	dbName := testenv.NewDatabase(b, m)
	db := m.DB(b, dbName)
	if _, err := db.Exec(benchDDL); err != nil {
		b.Fatal(err)
	}
	start := currentPosition(b, m)
	for i := 0; i < rows; i += perTxn {
		q := fmt.Sprintf("INSERT INTO t SELECT seq, CONCAT('value-', seq), seq * 1000, seq / 100, '2024-01-01 00:00:00.123456', seq FROM seq_%d_to_%d", i+1, i+perTxn)
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	benchmarkBacklog(b, m, dbName, start, rows)
}

// BenchmarkReaderSmallTxns decodes a backlog of 20k one-row transactions.
func BenchmarkReaderSmallTxns(b *testing.B) {
	const rows, writers = 20_000, 8
	m := testenv.SharedMariaDB(b, 1)
	dbName := testenv.NewDatabase(b, m)
	db := m.DB(b, dbName)
	db.SetMaxOpenConns(writers)
	if _, err := db.Exec(benchDDL); err != nil {
		b.Fatal(err)
	}
	start := currentPosition(b, m)
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < rows; i += writers {
				if _, err := db.Exec("INSERT INTO t VALUES (?, 'value', ?, 1.5, '2024-01-01 00:00:00.123456', ?)", i+1, i, i+1); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	benchmarkBacklog(b, m, dbName, start, rows)
}

func benchmarkBacklog(b *testing.B, m *testenv.MariaDB, dbName string, start event.Position, rows int) {
	b.ResetTimer()
	for range b.N {
		cfg := readerConfig(m, dbName+".*")
		if err := cfg.Validate(); err != nil {
			b.Fatal(err)
		}
		clock, err := hlc.NewClock(cfg.Site, hlc.SystemClock{}, hlc.Options{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := New(cfg, zap.NewNop(), clock)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		seen := 0
		err = r.Run(ctx, start, func(_ context.Context, t event.Txn) error {
			seen += len(t.Changes)
			if seen >= rows {
				cancel()
			}
			return nil
		})
		cancel()
		if err != nil || seen != rows {
			b.Fatalf("Run: %v after %d of %d rows", err, seen, rows)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkAssembler measures the reader's own work per row (conversion,
// versions, fragments) on pre-decoded events, without the server and
// go-mysql's parser.
func BenchmarkAssembler(b *testing.B) {
	te := newTableMap(7, "shop", "orders", []uint64{0},
		colSpec{name: "id", typ: mysql.MYSQL_TYPE_LONG},
		colSpec{name: "a", typ: mysql.MYSQL_TYPE_VARCHAR, meta: 160, collation: utf8mb4Bin},
		colSpec{name: "b", typ: mysql.MYSQL_TYPE_LONGLONG},
		colSpec{name: "c", typ: mysql.MYSQL_TYPE_NEWDECIMAL, meta: 12<<8 | 2},
		colSpec{name: "d", typ: mysql.MYSQL_TYPE_DATETIME2, meta: 6},
		colSpec{name: "_tandem_hlc", typ: mysql.MYSQL_TYPE_LONGLONG, unsigned: true},
	)
	batch := make([][]any, 50)
	for i := range batch {
		batch[i] = []any{int32(i), "value-12345", int64(i * 1000), "1234.50", "2024-01-01 00:00:00.123456", uint64(i)}
	}
	cfg := validConfig()
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	clock, _ := hlc.NewClock(1, hlc.SystemClock{}, hlc.Options{})
	a, err := newAssembler(cfg, filter{}, zap.NewNop(), clock, &counters{}, event.Position{GTIDSet: "1-101-1"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	emitted := 0
	emit := func(_ context.Context, t event.Txn) error { emitted += len(t.Changes); return nil }
	hdr := func(t replication.EventType) *replication.EventHeader {
		return &replication.EventHeader{EventType: t, LogPos: 100, Timestamp: uint32(time.Now().Unix())}
	}
	seq := uint64(1)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		seq++
		evs := []*replication.BinlogEvent{
			{Header: hdr(replication.MARIADB_GTID_EVENT), Event: &replication.MariadbGTIDEvent{GTID: mysql.MariadbGTID{DomainID: 1, ServerID: 101, SequenceNumber: seq}}},
			{Header: hdr(replication.TABLE_MAP_EVENT), Event: te},
			{Header: hdr(replication.WRITE_ROWS_EVENTv1), Event: &replication.RowsEvent{TableID: 7, Rows: batch}},
			{Header: hdr(replication.XID_EVENT), Event: &replication.XIDEvent{}},
		}
		for _, ev := range evs {
			if err := a.handle(ctx, ev, emit); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(emitted)/b.Elapsed().Seconds(), "rows/s")
}
