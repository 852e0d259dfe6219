// Package workload generates the row changes that the end-to-end tests,
// `make demo` and `make bench` replicate: three tables (a plain one, one
// with a composite primary key, one with every MariaDB column type) and a
// seeded random mix of inserts, updates and deletes.
package workload

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/tandemdb/tandem/internal/pace"
)

// Tables are the workload's tables, in creation order.
var Tables = []string{"items", "pairs", "alltypes"}

// DDL returns the CREATE TABLE statements for database db.
func DDL(db string) []string {
	return []string{
		fmt.Sprintf("CREATE TABLE `%s`.items ("+
			"id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, qty INT NOT NULL, "+
			"price DECIMAL(12,2) NOT NULL, note TEXT NULL, updated DATETIME(6) NOT NULL"+
			") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin", db),
		fmt.Sprintf("CREATE TABLE `%s`.pairs ("+
			"tenant VARCHAR(32) NOT NULL, seq BIGINT UNSIGNED NOT NULL, val VARCHAR(255) NULL, n DOUBLE NULL, "+
			"PRIMARY KEY (tenant, seq)"+
			") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin", db),
		fmt.Sprintf("CREATE TABLE `%s`.alltypes ("+
			"id INT NOT NULL PRIMARY KEY, "+
			"ti TINYINT NULL, tiu TINYINT UNSIGNED NULL, si SMALLINT NULL, siu SMALLINT UNSIGNED NULL, "+
			"mi MEDIUMINT NULL, miu MEDIUMINT UNSIGNED NULL, i INT NULL, iu INT UNSIGNED NULL, "+
			"bi BIGINT NULL, biu BIGINT UNSIGNED NULL, "+
			"d DECIMAL(65,30) NULL, f FLOAT NULL, db DOUBLE NULL, "+
			"c CHAR(8) NULL, vc VARCHAR(100) NULL, tx TEXT NULL, "+
			"bn BINARY(4) NULL, vb VARBINARY(64) NULL, bl BLOB NULL, "+
			"dt DATE NULL, dtm DATETIME(6) NULL, ts TIMESTAMP(6) NULL, tm TIME(6) NULL, yr YEAR NULL, "+
			"en ENUM('red','green','blue') NULL, st SET('a','b','c','d') NULL, bt BIT(64) NULL, bt1 BIT(1) NULL, "+
			"js JSON NULL"+
			") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin", db),
	}
}

// Create creates the workload's tables in db (which must exist).
func Create(ctx context.Context, conn *sql.DB, db string) error {
	for _, q := range DDL(db) {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("workload: %s: %w", q[:40], err)
		}
	}
	return nil
}

// Options shape a run.
type Options struct {
	DB      string // database holding the tables
	Seed    uint64
	Changes int // row changes to make in total
	// Keys is the key space per table; small key spaces make conflicts
	// frequent when several sites run the workload at once.
	Keys int
	// TxnRows is the number of row changes per transaction (1..TxnRows,
	// random). Default 20.
	TxnRows int
	// Tables restricts the run to some of Tables; default all.
	Tables []string
	// Rate limits changes per second (0: as fast as possible).
	Rate int
	// MultiRow writes each transaction as one multi-row statement on the
	// items table (an upsert of TxnRows rows, or every tenth transaction a
	// delete of TxnRows keys) instead of one statement per row: how
	// applications that batch write, and the way to generate thousands of
	// row changes per second without the load generator and the server
	// spending the CPU on statement round trips.
	MultiRow bool
}

// Stats counts what a run did.
type Stats struct {
	Inserts, Updates, Deletes, Txns int
	Errors                          int // transactions that failed (deadlocks under concurrency) and were rolled back
}

// Changes is the total number of row changes.
func (s Stats) Changes() int { return s.Inserts + s.Updates + s.Deletes }

// Run performs the workload through conn until opt.Changes row changes
// were committed or ctx ends.
func Run(ctx context.Context, conn *sql.DB, opt Options) (Stats, error) {
	if opt.TxnRows <= 0 {
		opt.TxnRows = 20
	}
	if opt.Keys <= 0 {
		opt.Keys = 10000
	}
	if len(opt.Tables) == 0 {
		opt.Tables = Tables
	}
	r := rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x5eed))
	var st Stats
	start := time.Now()
	for st.Changes() < opt.Changes {
		if ctx.Err() != nil {
			return st, nil
		}
		n := 1 + r.IntN(opt.TxnRows)
		n = min(n, opt.Changes-st.Changes())
		var ts Stats
		if opt.MultiRow {
			err := multiRow(ctx, conn, r, opt, n, &ts)
			if err == nil {
				st.Inserts += ts.Inserts
				st.Deletes += ts.Deletes
				st.Txns++
			} else if ctx.Err() != nil {
				return st, nil
			} else {
				st.Errors++
			}
			if err := pace.Wait(ctx, start, st.Changes(), float64(opt.Rate)); err != nil {
				return st, nil
			}
			continue
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err == nil {
			for range n {
				table := opt.Tables[r.IntN(len(opt.Tables))]
				if err = op(ctx, tx, r, opt, table, &ts); err != nil {
					break
				}
			}
			if err == nil {
				err = tx.Commit()
			} else {
				tx.Rollback()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return st, nil
			}
			st.Errors++
			if st.Errors > 100000+st.Txns {
				return st, fmt.Errorf("workload: too many failed transactions, last: %w", err)
			}
			// A failed transaction (deadlock, or the server restarting in a
			// fault test) is retried with a new random one after a short
			// backoff, so a down server is not hammered.
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return st, nil
			case <-t.C:
			}
			continue
		}
		st.Inserts += ts.Inserts
		st.Updates += ts.Updates
		st.Deletes += ts.Deletes
		st.Txns++
		if err := pace.Wait(ctx, start, st.Changes(), float64(opt.Rate)); err != nil {
			return st, nil
		}
	}
	return st, nil
}

// multiRow runs one transaction of one multi-row statement on items.
func multiRow(ctx context.Context, conn *sql.DB, r *rand.Rand, opt Options, n int, st *Stats) error {
	if r.IntN(10) == 0 {
		args := make([]any, n)
		for i := range args {
			args[i] = r.IntN(opt.Keys)
		}
		q := fmt.Sprintf("DELETE FROM `%s`.items WHERE id IN (?%s)", opt.DB, strings.Repeat(", ?", n-1))
		res, err := conn.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		// Only keys that existed count: a rate of "row changes" must not
		// include deletes that found nothing.
		deleted, _ := res.RowsAffected()
		st.Deletes += int(deleted)
		return nil
	}
	args := make([]any, 0, 5*n)
	seen := map[int]bool{}
	for len(seen) < n {
		k := r.IntN(opt.Keys)
		if seen[k] {
			continue
		}
		seen[k] = true
		args = append(args, k, word(r), r.IntN(1000), fmt.Sprintf("%d.%02d", r.IntN(100000), r.IntN(100)), maybe(r, sentence(r)))
	}
	q := fmt.Sprintf("INSERT INTO `%s`.items (id, name, qty, price, note, updated) VALUES %s "+
		"ON DUPLICATE KEY UPDATE name = VALUES(name), qty = VALUES(qty), price = VALUES(price), note = VALUES(note), updated = VALUES(updated)",
		opt.DB, strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, UTC_TIMESTAMP(6)),", n), ","))
	if _, err := conn.ExecContext(ctx, q, args...); err != nil {
		return err
	}
	st.Inserts += n
	return nil
}

func op(ctx context.Context, tx *sql.Tx, r *rand.Rand, opt Options, table string, st *Stats) error {
	key := r.IntN(opt.Keys)
	p := r.IntN(10)
	var q string
	var args []any
	switch {
	case p < 5: // upsert: an insert, or an update when the key exists
		q, args = upsert(r, opt.DB, table, key)
		st.Inserts++
	case p < 8:
		q, args = update(r, opt.DB, table, key)
		st.Updates++
	default:
		q, args = del(opt.DB, table, key)
		st.Deletes++
	}
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}

func pairKey(key int) (string, uint64) {
	return fmt.Sprintf("t%02d", key%17), uint64(key)
}

func upsert(r *rand.Rand, db, table string, key int) (string, []any) {
	switch table {
	case "items":
		return fmt.Sprintf("INSERT INTO `%s`.items (id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) "+
				"ON DUPLICATE KEY UPDATE name = VALUES(name), qty = VALUES(qty), price = VALUES(price), note = VALUES(note), updated = VALUES(updated)", db),
			[]any{key, word(r), r.IntN(1000), fmt.Sprintf("%d.%02d", r.IntN(100000), r.IntN(100)), maybe(r, sentence(r))}
	case "pairs":
		t, s := pairKey(key)
		return fmt.Sprintf("INSERT INTO `%s`.pairs (tenant, seq, val, n) VALUES (?, ?, ?, ?) "+
			"ON DUPLICATE KEY UPDATE val = VALUES(val), n = VALUES(n)", db), []any{t, s, maybe(r, sentence(r)), maybe(r, r.NormFloat64()*1e6)}
	default:
		cols, vals := allTypesRow(r)
		set := make([]string, len(cols))
		for i, c := range cols {
			set[i] = fmt.Sprintf("%s = VALUES(%s)", c, c)
		}
		return fmt.Sprintf("INSERT INTO `%s`.alltypes (id, %s) VALUES (?%s) ON DUPLICATE KEY UPDATE %s",
			db, strings.Join(cols, ", "), strings.Repeat(", ?", len(cols)), strings.Join(set, ", ")), append([]any{key}, vals...)
	}
}

func update(r *rand.Rand, db, table string, key int) (string, []any) {
	switch table {
	case "items":
		return fmt.Sprintf("UPDATE `%s`.items SET qty = qty + 1, name = ?, updated = UTC_TIMESTAMP(6) WHERE id = ?", db), []any{word(r), key}
	case "pairs":
		t, s := pairKey(key)
		return fmt.Sprintf("UPDATE `%s`.pairs SET val = ?, n = ? WHERE tenant = ? AND seq = ?", db), []any{maybe(r, sentence(r)), maybe(r, r.Float64()), t, s}
	default:
		cols, vals := allTypesRow(r)
		c := r.IntN(len(cols))
		return fmt.Sprintf("UPDATE `%s`.alltypes SET %s = ? WHERE id = ?", db, cols[c]), []any{vals[c], key}
	}
}

func del(db, table string, key int) (string, []any) {
	switch table {
	case "items":
		return fmt.Sprintf("DELETE FROM `%s`.items WHERE id = ?", db), []any{key}
	case "pairs":
		t, s := pairKey(key)
		return fmt.Sprintf("DELETE FROM `%s`.pairs WHERE tenant = ? AND seq = ?", db), []any{t, s}
	default:
		return fmt.Sprintf("DELETE FROM `%s`.alltypes WHERE id = ?", db), []any{key}
	}
}

var words = []string{"alpha", "beta", "gamma", "delta", "émoji 🚀", "naïve", "日本語", "z", "", "tab\there", "quote'\"", "back\\slash"}

func word(r *rand.Rand) string { return words[r.IntN(len(words))] }

func sentence(r *rand.Rand) string {
	n := 1 + r.IntN(6)
	ws := make([]string, n)
	for i := range ws {
		ws[i] = word(r)
	}
	return strings.Join(ws, " ")
}

func maybe(r *rand.Rand, v any) any {
	if r.IntN(8) == 0 {
		return nil
	}
	return v
}

// allTypesRow returns the non-key columns of alltypes and random values for
// them, extremes and NULLs included.
func allTypesRow(r *rand.Rand) ([]string, []any) {
	pick := func(vs ...any) any { return vs[r.IntN(len(vs))] }
	bin := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}
	cols := []string{"ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "d", "f", "db", "c", "vc", "tx",
		"bn", "vb", "bl", "dt", "dtm", "ts", "tm", "yr", "en", "st", "bt", "bt1", "js"}
	vals := []any{
		pick(-128, 127, 0, r.IntN(256)-128), pick(0, 255, r.IntN(256)),
		pick(-32768, 32767, r.IntN(65536)-32768), pick(0, 65535, r.IntN(65536)),
		pick(-8388608, 8388607, r.IntN(1<<24)-(1<<23)), pick(0, 16777215, r.IntN(1<<24)),
		pick(int64(-2147483648), int64(2147483647), r.Int64N(1<<32)-(1<<31)), pick(uint64(0), uint64(4294967295), r.Uint64N(1<<32)),
		pick(int64(-9223372036854775808), int64(9223372036854775807), r.Int64()), pick(uint64(0), uint64(18446744073709551615), r.Uint64()),
		pick("-99999999999999999999999999999999999.999999999999999999999999999999", "0.000000000000000000000000000001",
			fmt.Sprintf("%d.%030d", r.Int64N(1e15), r.Int64N(1e15))),
		pick(float32(3.4028235e38), float32(-1.17549435e-38), float32(r.NormFloat64())),
		pick(1.7976931348623157e308, 5e-324, r.NormFloat64()*1e100),
		pick("", "abc", "🚀x"), pick("", "naïve 日本語 🚀", sentence(r)), pick("", sentence(r)+sentence(r)),
		pick([]byte{0, 0, 0, 0}, []byte{0xff, 0, 0xff, 0}, bin(4)), pick([]byte{}, []byte{0}, bin(1+r.IntN(63))), pick([]byte{}, bin(1+r.IntN(500))),
		pick("1000-01-01", "9999-12-31", "2026-11-21"),
		pick("1000-01-01 00:00:00.000000", "9999-12-31 23:59:59.999999", "2026-11-21 12:34:56.789012"),
		pick("1970-01-01 00:00:01.000000", "2038-01-19 03:14:07.999999", "2026-11-21 12:34:56.000001"),
		pick("-838:59:59.000000", "838:59:59.000000", "00:00:00.000001", "-00:00:01.500000"),
		pick(1901, 2155, 2026),
		pick("red", "green", "blue"), pick("", "a", "a,b", "a,b,c,d"),
		pick(uint64(0), uint64(18446744073709551615), r.Uint64()), pick(0, 1),
		pick(`{"a": 1}`, `[1, 2.5, "x", null, true]`, `{"emoji": "🚀", "nested": {"k": [1, 2, 3]}}`),
	}
	for i := range vals {
		if r.IntN(12) == 0 {
			vals[i] = nil
		}
	}
	return cols, vals
}
