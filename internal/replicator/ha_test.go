package replicator

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/schema"
)

// The new leader finds the connection whose transaction holds the row its
// fencing update waits for: on MariaDB through INNODB_LOCK_WAITS, and on
// MySQL 8, where that table is gone (error 1109), through
// performance_schema.data_lock_waits. No MySQL server runs here, so the
// MySQL 8 query reads a copy of that table (its two id columns) filled
// from MariaDB's real lock waits, and the fallback is driven by a real
// error 1109 from an information_schema table that does not exist.
func TestLockBlockers(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	name := testenv.NewDatabase(t, m)
	db := m.DB(t, name)
	ctx := context.Background()
	for _, q := range []string{
		"CREATE TABLE k (id INT PRIMARY KEY, n INT NOT NULL)",
		"INSERT INTO k VALUES (1, 0)",
		"CREATE TABLE data_lock_waits (REQUESTING_ENGINE_TRANSACTION_ID BIGINT UNSIGNED, BLOCKING_ENGINE_TRANSACTION_ID BIGINT UNSIGNED)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	connID := func(c interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) uint64 {
		var id uint64
		if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
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
	if _, err := tx.Exec("UPDATE k SET n = n + 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	holderID := connID(tx)

	waiter, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	waiterID := connID(waiter)
	waited := make(chan error, 1)
	go func() {
		_, err := waiter.ExecContext(ctx, "UPDATE k SET n = n + 1 WHERE id = 1")
		waited <- err
	}()

	// InnoDB refreshes information_schema's lock tables only after 100 ms
	// without readers, so they are polled no faster than fence does (at
	// least every 250 ms, a quarter of the shortest lease).
	var got []uint64
	deadline := time.After(10 * time.Second)
	for {
		got, err = lockBlockers(ctx, db, waiterID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			break
		}
		select {
		case err := <-waited:
			t.Fatalf("the waiter's update finished (err %v) while the holder held the row", err)
		case <-deadline:
			t.Fatal("the waiter's lock wait did not show within 10 s")
		case <-time.After(150 * time.Millisecond):
		}
	}
	if !slices.Equal(got, []uint64{holderID}) {
		t.Errorf("MariaDB: blockers of connection %d = %v; want [%d]", waiterID, got, holderID)
	}

	if _, err := db.Exec("INSERT INTO data_lock_waits SELECT requesting_trx_id, blocking_trx_id FROM information_schema.INNODB_LOCK_WAITS"); err != nil {
		t.Fatal(err)
	}
	got, err = blockersFrom(ctx, db, waiterID, []string{
		blockersQuery("information_schema.NO_SUCH_LOCK_WAITS", "blocking_trx_id", "requesting_trx_id"),
		blockersQueryMySQL8(schema.QuoteIdent(name)),
	})
	if err != nil || !slices.Equal(got, []uint64{holderID}) {
		t.Errorf("MySQL 8 query after error 1109: blockers = %v, %v; want [%d]", got, err, holderID)
	}

	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
}
