package replicator

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/sink"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// epochKey is the row of _tandem_state holding the fencing epoch of the
// site's current leader. It sorts before every "tenant/" key.
var epochKey = []byte("\x00ha/epoch")

// sqlKV is a tenant.KV in the site database's _tandem_state table, where
// every replicator of a site finds it: under site-level HA the tenant
// queues live here, so a replicator taking over finds the messages the
// former leader had queued (paused, throttled, dead-lettered tenants).
//
// Every write transaction first locks the epoch row (shared) and is
// refused with sink.ErrFenced when a newer leader raised it, like the
// sinks' offsets rows: a frozen former leader cannot queue or remove
// anything once another took over. The rows are written to the binary
// log like any others; the reader skips the meta schema's tables.
type sqlKV struct {
	db    *sql.DB
	table string // quoted meta.table
	epoch func() uint64
	// timeout bounds one call: the queues are on the apply path.
	timeout time.Duration
}

func newSQLKV(db *sql.DB, metaSchema string, epoch func() uint64) *sqlKV {
	return &sqlKV{db: db, table: schema.TableRef{Schema: metaSchema, Table: schema.State}.Quoted(), epoch: epoch, timeout: time.Minute}
}

func (s *sqlKV) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// Has implements tenant.KV.
func (s *sqlKV) Has(key []byte) (bool, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var one int
	err := s.db.QueryRowContext(ctx, "SELECT 1 FROM "+s.table+" WHERE k = ?", key).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	return err == nil, err
}

// maxStatementBytes bounds the values of one multi-row statement, well
// under the servers' default max_allowed_packet (16 MiB in MariaDB 10.11,
// 64 MiB in MySQL 8).
const maxStatementBytes = 4 << 20

// Write implements tenant.KV: one transaction, fenced.
func (s *sqlKV) Write(sets []tenant.KVPair, dels [][]byte) error {
	ctx, cancel := s.ctx()
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	var stored []byte
	// A shared lock: queue writes of all partitions go on side by side,
	// and fence's update of the row waits for them and then holds them
	// off until it commits.
	err = tx.QueryRowContext(ctx, "SELECT v FROM "+s.table+" WHERE k = ? LOCK IN SHARE MODE", epochKey).Scan(&stored)
	if err != nil && err != sql.ErrNoRows {
		return err
	}
	mine := s.epoch()
	if e, _ := strconv.ParseUint(string(stored), 10, 64); e > mine {
		return fmt.Errorf("%w: %s is held by epoch %d, this replicator has %d", sink.ErrFenced, s.table, e, mine)
	}
	for len(sets) > 0 {
		var q strings.Builder
		q.WriteString("INSERT INTO " + s.table + " (k, v) VALUES ")
		var args []any
		size := 0
		n := 0
		for n < len(sets) && (n == 0 || size+len(sets[n].Value) <= maxStatementBytes) {
			if n > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?, ?)")
			v := sets[n].Value
			if v == nil {
				v = []byte{} // NOT NULL: an empty value, not NULL
			}
			args = append(args, sets[n].Key, v)
			size += len(v)
			n++
		}
		q.WriteString(" ON DUPLICATE KEY UPDATE v = VALUES(v)")
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("write %s: %w", s.table, err)
		}
		sets = sets[n:]
	}
	for len(dels) > 0 {
		n := min(len(dels), 1000)
		args := make([]any, n)
		for i := range n {
			args[i] = dels[i]
		}
		q := "DELETE FROM " + s.table + " WHERE k IN (?" + strings.Repeat(",?", n-1) + ")"
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("delete from %s: %w", s.table, err)
		}
		dels = dels[n:]
	}
	return tx.Commit()
}

// Scan implements tenant.KV. VARBINARY compares byte for byte, the order
// Pebble keeps.
func (s *sqlKV) Scan(lower, upper []byte, fn func(key, value []byte) bool) error {
	ctx, cancel := s.ctx()
	defer cancel()
	q := "SELECT k, v FROM " + s.table + " WHERE k >= ?"
	args := []any{lower}
	if upper != nil {
		q += " AND k < ?"
		args = append(args, upper)
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY k", args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		if !fn(k, v) {
			return nil
		}
	}
	return rows.Err()
}
