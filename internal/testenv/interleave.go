package testenv

import (
	"context"
	"database/sql"
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
	deleter, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer deleter.Close()
	tx, err := deleter.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
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
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
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
	waitFor(ctx, t, "the sink's delete to wait for the test's row lock", func() bool {
		// By the holder's connection, not its transaction id: the
		// tables are a cache refreshed at most every 0.1 s, which may
		// still show an earlier transaction of the same connection.
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS AS w "+
			"JOIN information_schema.INNODB_TRX AS b ON b.trx_id = w.blocking_trx_id WHERE b.trx_mysql_thread_id = ?", holderID).Scan(&n); err != nil {
			t.Fatalf("read information_schema.INNODB_LOCK_WAITS: %v", err)
		}
		return n > 0
	}, nil)
	insertBehind(ctx, t, db, ins, lag, "the sink's delete", tx.Commit)
}

// insertBehind runs ins on a connection of its own with its statement
// clock set back by lag, waits until the server reports it in a lock
// wait, calls release (which lets the blocking delete commit) and waits
// for ins to succeed.
func insertBehind(ctx context.Context, t testing.TB, db *sql.DB, ins string, lag time.Duration, blocker string, release func() error) {
	t.Helper()
	inserter, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer inserter.Close()
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
	waitFor(ctx, t, ins+" to wait for the row lock of "+blocker, func() bool {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.INNODB_TRX "+
			"WHERE trx_mysql_thread_id = ? AND trx_state = 'LOCK WAIT'", id).Scan(&n); err != nil {
			t.Fatalf("read information_schema.INNODB_TRX: %v", err)
		}
		return n > 0
	}, done)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("%s: %v", ins, err)
	}
	if _, err := inserter.ExecContext(ctx, "SET timestamp = DEFAULT"); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds; it fails the test when ctx ends, or
// when finished (if not nil) delivers first: the statement it watches
// ended without waiting.
func waitFor(ctx context.Context, t testing.TB, what string, cond func() bool, finished <-chan error) {
	t.Helper()
	for !cond() {
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
