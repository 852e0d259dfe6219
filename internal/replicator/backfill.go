package replicator

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/tandemdb/tandem/internal/pace"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/sink"
)

// Backfill bounds.
const (
	defaultBackfillChunk = 1000
	maxBackfillChunk     = 100_000
)

func cmdBackfill(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	var (
		chunk  *int
		rate   *float64
		dryRun *bool
		tables stringList
	)
	cfg, _, err := loadConfig("backfill", args, env, func(fs *flag.FlagSet) {
		chunk = fs.Int("chunk", defaultBackfillChunk, "rows stamped per transaction")
		rate = fs.Float64("rate", 0, "at most this many rows per second (0: no limit)")
		dryRun = fs.Bool("dry-run", false, "only count the rows that would be stamped")
		fs.Var(&tables, "table", "schema.table to backfill (repeatable; default: every table of schema.tables)")
	})
	if err != nil {
		return err
	}
	if *chunk < 1 || *chunk > maxBackfillChunk {
		return usageError{fmt.Errorf("backfill: --chunk %d: allowed 1..%d", *chunk, maxBackfillChunk)}
	}
	if *rate < 0 {
		return usageError{fmt.Errorf("backfill: --rate %g: allowed 0 (no limit) or a positive number of rows per second", *rate)}
	}
	db, err := sql.Open("mysql", cfg.Database.DSN())
	if err != nil {
		return err
	}
	defer db.Close()
	refs, err := backfillTables(ctx, db, cfg, tables)
	if err != nil {
		return err
	}
	b := backfill{db: db, ver: cfg.Schema.VersionColumn, version: hlc.InitialLoad(cfg.Site.ID), chunk: *chunk, rate: *rate}
	total := 0
	for _, t := range refs {
		var n int
		if *dryRun {
			n, err = b.count(ctx, t)
		} else {
			n, err = b.table(ctx, t)
		}
		total += n
		if err != nil {
			return fmt.Errorf("backfill: %s: %w (%d rows stamped before this error; running backfill again goes on from there)", t, err, total)
		}
		if *dryRun {
			fmt.Fprintf(stdout, "backfill: %s: %d rows to stamp\n", t, n)
		} else {
			fmt.Fprintf(stdout, "backfill: %s: %d rows stamped\n", t, n)
		}
	}
	if *dryRun {
		fmt.Fprintf(stdout, "backfill: dry run: %d rows of %d tables still have version 0\n", total, len(refs))
		return nil
	}
	fmt.Fprintf(stdout, "backfill: %d rows of %d tables stamped with the initial-load version %v; this site's replicator publishes them to its peers\n",
		total, len(refs), b.version)
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// backfillTables is every replicated table, or the --table ones, which
// must be replicated.
func backfillTables(ctx context.Context, db *sql.DB, cfg *config.Config, only []string) ([]schema.TableRef, error) {
	all, err := resolveTables(ctx, db, cfg.Schema.Tables)
	if err != nil {
		return nil, err
	}
	if len(only) == 0 {
		if len(all) == 0 {
			return nil, fmt.Errorf("backfill: schema.tables %v matches no table at this site", cfg.Schema.Tables)
		}
		return all, nil
	}
	var out []schema.TableRef
	for _, spec := range only {
		s, tb, ok := strings.Cut(spec, ".")
		ref := schema.TableRef{Schema: s, Table: tb}
		if !ok || !slices.Contains(all, ref) {
			return nil, usageError{fmt.Errorf("backfill: --table %q is not one of the replicated tables (schema.tables %v)", spec, cfg.Schema.Tables)}
		}
		out = append(out, ref)
	}
	return out, nil
}

// backfill stamps the rows of a site that existed before replication
// started, and so still hold version 0, with hlc.InitialLoad(site).
//
// Why: Tandem replicates changes, and a row no one has changed since
// `schema prepare` was never published. Stamping it is a change: the
// binlog carries it, this site's reader publishes it like any local write,
// and every other site applies it by the usual compare-and-set, where the
// initial-load version beats a version-0 copy (or no copy) and loses to
// any version a write since replication started got (pkg/hlc). So running
// backfill at every site copies each site's pre-existing rows to the
// others, lets two sites' pre-existing copies of a row settle on the
// higher site id's, and never undoes a write made since.
//
// The rows are stamped in a sink session (schema.ApplySessionVar), so the
// triggers keep the version written, but without the sink's bookkeeping
// write, so the reader publishes them as this site's own. They go in
// chunks of primary-key order, one short transaction each; a row written
// meanwhile no longer has version 0 and is left alone. Stopping and
// running it again goes on where it stopped: only version-0 rows are
// stamped.
type backfill struct {
	db      *sql.DB
	ver     string // version column
	version hlc.Timestamp
	chunk   int
	rate    float64 // rows per second, 0 = no limit

	start   time.Time
	stamped int // across tables, for the rate
}

// count is the dry run: how many rows of t still have version 0.
func (b *backfill) count(ctx context.Context, t schema.TableRef) (int, error) {
	if _, err := b.pk(ctx, t); err != nil {
		return 0, err
	}
	var n int
	err := b.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t.Quoted()+" WHERE "+schema.QuoteIdent(b.ver)+" = 0").Scan(&n)
	return n, err
}

// pk returns t's primary key columns, checking that t is prepared.
func (b *backfill) pk(ctx context.Context, t schema.TableRef) ([]string, error) {
	cols, err := schema.TableColumns(ctx, b.db, t.Schema, t.Table)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(cols, func(c schema.Column) bool { return c.Name == b.ver }) {
		return nil, fmt.Errorf("no version column %q: run `replicator schema prepare --config FILE` first", b.ver)
	}
	return schema.PKColumns(ctx, b.db, t.Schema, t.Table)
}

func (b *backfill) table(ctx context.Context, t schema.TableRef) (n int, err error) {
	pk, err := b.pk(ctx, t)
	if err != nil {
		return 0, err
	}
	conn, err := b.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer func() {
		// Never hand a sink session back to the pool: discard the
		// connection instead of resetting it.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}()
	if _, err := conn.ExecContext(ctx, "SET "+schema.ApplySessionVar+" = 1"); err != nil {
		return 0, err
	}
	if b.start.IsZero() {
		b.start = time.Now()
	}

	q := make([]string, len(pk))
	for i, c := range pk {
		q[i] = schema.QuoteIdent(c)
	}
	keys := strings.Join(q, ", ")
	ver := schema.QuoteIdent(b.ver)
	after := afterKey(q) // the next chunk starts after the last one's key
	// The next chunk's last key: the chunk-th version-0 row after the
	// previous one. The scan walks the primary key, so the whole table is
	// read once, however many rows are stamped already.
	boundFirst := fmt.Sprintf("SELECT %s FROM %s WHERE %s = 0 ORDER BY %s LIMIT 1 OFFSET %d", keys, t.Quoted(), ver, keys, b.chunk-1)
	boundNext := fmt.Sprintf("SELECT %s FROM %s WHERE %s = 0 AND (%s) ORDER BY %s LIMIT 1 OFFSET %d", keys, t.Quoted(), ver, after, keys, b.chunk-1)
	update := fmt.Sprintf("UPDATE %s SET %s = %d WHERE %s = 0", t.Quoted(), ver, uint64(b.version), ver)

	var last []any
	for {
		var bq string
		var bargs []any
		if last == nil {
			bq = boundFirst
		} else {
			bq, bargs = boundNext, afterArgs(last)
		}
		hi := make([]any, len(pk))
		ptrs := make([]any, len(pk))
		for i := range hi {
			ptrs[i] = &hi[i]
		}
		found := true
		if err := conn.QueryRowContext(ctx, bq, bargs...).Scan(ptrs...); errors.Is(err, sql.ErrNoRows) {
			found = false // fewer than a chunk left: the last one
		} else if err != nil {
			return n, err
		}
		uq, uargs := update, []any{}
		if last != nil {
			uq += " AND (" + after + ")"
			uargs = append(uargs, afterArgs(last)...)
		}
		if found {
			uq += " AND NOT (" + after + ")"
			uargs = append(uargs, afterArgs(hi)...)
		}
		k, err := b.stamp(ctx, conn, uq, uargs)
		if err != nil {
			return n, err
		}
		n += int(k)
		b.stamped += int(k)
		if !found {
			return n, nil
		}
		last = hi
		if err := pace.Wait(ctx, b.start, b.stamped, b.rate); err != nil {
			return n, err
		}
	}
}

// maxLockRetries bounds the retries of one chunk after deadlocks or lock
// wait timeouts.
const maxLockRetries = 20

// stamp runs one chunk's UPDATE, retrying it when it lost a deadlock (the
// sinks write the same rows) or timed out on a lock. That is safe: it
// changes only rows still at version 0, so a retry stamps what is left.
func (b *backfill) stamp(ctx context.Context, conn *sql.Conn, q string, args []any) (int64, error) {
	for attempt := 1; ; attempt++ {
		res, err := conn.ExecContext(ctx, q, args...)
		if err == nil {
			return res.RowsAffected()
		}
		if !sink.IsLockConflict(err) || attempt == maxLockRetries {
			return 0, err
		}
		t := time.NewTimer(time.Duration(attempt) * 10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// afterKey is the condition "key > (?, …)" over the quoted key columns,
// spelled out (a > ? OR a = ? AND b > ? …) so that both MariaDB and MySQL
// read it as a range of the primary key. Its arguments are afterArgs(key).
func afterKey(cols []string) string {
	var or []string
	for i := range cols {
		var and []string
		for _, c := range cols[:i] {
			and = append(and, c+" = ?")
		}
		and = append(and, cols[i]+" > ?")
		or = append(or, "("+strings.Join(and, " AND ")+")")
	}
	return strings.Join(or, " OR ")
}

// afterArgs are the arguments of afterKey for key.
func afterArgs(key []any) []any {
	var args []any
	for i := range key {
		args = append(args, key[:i+1]...)
	}
	return args
}
