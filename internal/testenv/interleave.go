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
	inserter, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer inserter.Close()

	tx, err := deleter.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, del); err != nil {
		t.Fatalf("%s: %v", del, err)
	}
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
	for waiting := false; !waiting; {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.INNODB_TRX "+
			"WHERE trx_mysql_thread_id = ? AND trx_state = 'LOCK WAIT'", id).Scan(&n); err != nil {
			t.Fatalf("read information_schema.INNODB_TRX: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("%s finished before %s committed (err %v): it was not blocked by the delete", ins, del, err)
		case <-ctx.Done():
			t.Fatalf("%s did not wait for the delete's row lock within a minute", ins)
		case <-time.After(150 * time.Millisecond):
			// Polled no faster: InnoDB refreshes the INNODB_TRX snapshot
			// only after 100 ms without readers, so faster polling would
			// read the same stale snapshot forever.
		}
		waiting = n > 0
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("%s: %v", ins, err)
	}
	if _, err := inserter.ExecContext(ctx, "SET timestamp = DEFAULT"); err != nil {
		t.Fatal(err)
	}
}
