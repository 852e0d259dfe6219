package testenv

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
	"time"
)

// InsertBehindDelete reproduces, deterministically, an insert that commits
// after a concurrent delete of the same key although its version was
// computed before the delete (docs/tombstones.md, "Late inserts"):
//
//  1. del runs in an open transaction on one connection and keeps the
//     key's row lock;
//  2. ins runs on a second connection whose statement clock is set back
//     by lag (SET timestamp), as for a long multi-row statement that
//     reaches the key late; its BEFORE INSERT trigger computes the version
//     from a snapshot without the delete's tombstone, then it waits for
//     the row lock;
//  3. once the server reports the second connection in a lock wait, the
//     first commits, and the insert goes ahead.
//
// The key's row must exist before the call. Both statements must succeed.
func InsertBehindDelete(t testing.TB, db *sql.DB, del, ins string, lag time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, done := openTx(ctx, t, db)
	defer done()
	if _, err := tx.ExecContext(ctx, del); err != nil {
		t.Fatalf("%s: %v", del, err)
	}
	insertBehind(ctx, t, db, ins, lag, del, tx.Commit)
}

// InsertBehindSinkDelete is InsertBehindDelete with the delete made by this
// site's sink, applying a delete replicated from another site:
//
//  1. a transaction of the test runs lock (a SELECT … FOR UPDATE of the
//     key's row) and keeps the row lock;
//  2. remoteDelete deletes the key at another site; once the server
//     reports a transaction waiting for the test's lock (the sink
//     applying the replicated delete), ins runs as in InsertBehindDelete
//     and waits too, behind the sink;
//  3. the test's transaction commits. InnoDB grants a row's waiting locks
//     in the order they were requested, so the sink's delete commits
//     first and the insert goes ahead behind it.
//
// The key's row must exist at both sites before the call, and ins must
// succeed.
func InsertBehindSinkDelete(t testing.TB, db *sql.DB, lock string, remoteDelete func(), ins string, lag time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, done := openTx(ctx, t, db)
	defer done()
	rows, err := tx.QueryContext(ctx, lock)
	if err != nil {
		t.Fatalf("%s: %v", lock, err)
	}
	rows.Close()
	var holderID int64
	if err := tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&holderID); err != nil {
		t.Fatal(err)
	}
	remoteDelete()
	// By the holder's connection (its own, see ownConn), not its
	// transaction id: the tables are a cache, which right after the
	// locking read may still show the connection without that id.
	waitForRows(ctx, t, db, "the sink's delete to wait for the test's row lock", nil,
		"SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS AS w "+
			"JOIN information_schema.INNODB_TRX AS b ON b.trx_id = w.blocking_trx_id WHERE b.trx_mysql_thread_id = ?", holderID)
	insertBehind(ctx, t, db, ins, lag, "the sink's delete", tx.Commit)
}

// openTx begins a transaction on a connection of its own; done rolls it
// back (unless committed) and closes the connection for good.
func openTx(ctx context.Context, t testing.TB, db *sql.DB) (tx *sql.Tx, done func()) {
	t.Helper()
	conn := ownConn(ctx, t, db)
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		discardConn(conn)
		t.Fatal(err)
	}
	return tx, func() {
		tx.Rollback()
		discardConn(conn)
	}
}

// ownConn takes a connection for a statement whose lock waits the caller
// watches by connection id in information_schema.INNODB_TRX and
// INNODB_LOCK_WAITS. Those tables are a cache that may still show an
// earlier call's waits, so such a connection must not serve a later call:
// discardConn closes it instead of returning it to the pool, and a
// connection id is never reused by the server.
func ownConn(ctx context.Context, t testing.TB, db *sql.DB) *sql.Conn {
	t.Helper()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// discardConn closes conn's server connection rather than pooling it.
func discardConn(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

// insertBehind runs ins on a connection of its own with its statement
// clock set back by lag, waits until the server reports it in a lock
// wait, calls release (which lets the blocking delete commit) and waits
// for ins to succeed.
func insertBehind(ctx context.Context, t testing.TB, db *sql.DB, ins string, lag time.Duration, blocker string, release func() error) {
	t.Helper()
	inserter := ownConn(ctx, t, db)
	defer discardConn(inserter)
	var id int64
	if err := inserter.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := inserter.ExecContext(ctx, "SET timestamp = UNIX_TIMESTAMP(NOW(6)) - ?", lag.Seconds()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := inserter.ExecContext(ctx, ins)
		done <- err
	}()
	waitForRows(ctx, t, db, ins+" to wait for the row lock of "+blocker, done,
		"SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ? AND trx_state = 'LOCK WAIT'", id)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("%s: %v", ins, err)
	}
	// The inserter's clock setting goes with its connection (discarded).
}

// waitForRows polls count (a SELECT COUNT(*) of the information_schema
// tables, with args) until it is above zero; it fails the test when ctx
// ends, or when finished (if not nil) delivers first: the statement it
// watches ended without waiting.
func waitForRows(ctx context.Context, t testing.TB, db *sql.DB, what string, finished <-chan error, count string, args ...any) {
	t.Helper()
	for {
		var n int
		if err := db.QueryRowContext(ctx, count, args...).Scan(&n); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if n > 0 {
			return
		}
		select {
		case err := <-finished:
			t.Fatalf("waiting for %s: the statement finished first (err %v): it was not blocked", what, err)
		case <-ctx.Done():
			t.Fatalf("waiting for %s: not within a minute", what)
		case <-time.After(150 * time.Millisecond):
			// Polled no faster: InnoDB refreshes the INNODB_TRX (and
			// INNODB_LOCK_WAITS) snapshot only after 100 ms without
			// readers, so faster polling would read the same stale
			// snapshot forever.
		}
	}
}
