package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// replicaIDs hands out reader server ids: two replicas registering with
// one id make the server drop the older connection.
var replicaIDs atomic.Uint32

func readerConfig(m *testenv.MariaDB, include ...string) Config {
	return Config{
		Host:         m.Host,
		Port:         m.Port,
		User:         m.User,
		Password:     m.Password,
		ServerID:     50000 + replicaIDs.Add(1),
		Site:         uint8(m.DomainID),
		Include:      include,
		ReconnectMin: 20 * time.Millisecond,
		ReconnectMax: 300 * time.Millisecond,
	}
}

// collector records emitted transactions.
type collector struct {
	mu   sync.Mutex
	txns []event.Txn
}

func (c *collector) emit(_ context.Context, t event.Txn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.txns = append(c.txns, t)
	return nil
}

func (c *collector) all() []event.Txn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event.Txn(nil), c.txns...)
}

// changes returns the changes to tables of schema db, in emitted order.
func (c *collector) changes(db string) []event.Change {
	var out []event.Change
	for _, t := range c.all() {
		for _, ch := range t.Changes {
			if ch.Schema == db {
				out = append(out, ch)
			}
		}
	}
	return out
}

// txnsOf returns the emitted transactions holding changes of schema db.
func (c *collector) txnsOf(db string) []event.Txn {
	var out []event.Txn
	for _, t := range c.all() {
		for _, ch := range t.Changes {
			if ch.Schema == db {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

// runningReader is a Reader running in the background.
type runningReader struct {
	r      *Reader
	c      *collector
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func startReader(t *testing.T, cfg Config, from event.Position) *runningReader {
	t.Helper()
	return startReaderEmit(t, cfg, from, nil)
}

func startReaderEmit(t *testing.T, cfg Config, from event.Position, emit func(context.Context, event.Txn) error) *runningReader {
	t.Helper()
	clock, err := hlc.NewClock(cfg.Site, hlc.SystemClock{}, hlc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(cfg, zaptest.NewLogger(t), clock)
	if err != nil {
		t.Fatal(err)
	}
	rr := &runningReader{r: r, c: &collector{}, done: make(chan error, 1)}
	if emit == nil {
		emit = rr.c.emit
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr.cancel = cancel
	go func() { rr.done <- r.Run(ctx, from, emit) }()
	t.Cleanup(func() {
		if err := rr.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return rr
}

// stop cancels Run and returns its result.
func (rr *runningReader) stop() error {
	rr.once.Do(func() {
		rr.cancel()
		rr.err = <-rr.done
	})
	return rr.err
}

// waitChanges waits until at least n changes of schema db were emitted.
func (rr *runningReader) waitChanges(t *testing.T, db string, n int) []event.Change {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("%d changes of %s", n, db), func() bool {
		select {
		case err := <-rr.done:
			rr.once.Do(func() { rr.err = err })
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		return len(rr.c.changes(db)) >= n
	})
	return rr.c.changes(db)
}

func currentPosition(t testing.TB, m *testenv.MariaDB) event.Position {
	t.Helper()
	cfg := readerConfig(m)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := &Reader{cfg: cfg}
	p, err := r.CurrentPosition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func execAll(t *testing.T, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// inTx runs stmts in one transaction.
func inTx(t *testing.T, db *sql.DB, stmts ...string) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(s); err != nil {
			tx.Rollback()
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// describe renders a change compactly for comparisons in failures.
func describe(c event.Change) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s v%d", c.Op, c.Table, c.Version)
	for _, v := range c.Row {
		b.WriteByte(' ')
		b.WriteString(fmtValue(v))
	}
	return b.String()
}
