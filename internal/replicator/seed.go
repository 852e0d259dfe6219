package replicator

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
)

// seedBatchRows and seedBatchBytes bound one INSERT of the copy: large
// enough that the target absorbs rows at its batched rate, small enough
// for the default max_allowed_packet (16 MiB).
const (
	seedBatchRows  = 500
	seedBatchBytes = 4 << 20
)

// seedSource is the existing site a new one is seeded from.
type seedSource struct {
	peer     config.Peer     // the source site, one of this site's peers
	database config.Database // its server
}

// cmdSeed: replicator seed --config FILE --from PEER --from-addr HOST:PORT
// [--from-user USER]. See docs/operations.md ("Adding a site").
func cmdSeed(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	var from, fromAddr, fromUser *string
	cfg, _, err := loadConfig("seed", args, env, func(fs *flag.FlagSet) {
		from = fs.String("from", "", "the peer (site name) to copy from")
		fromAddr = fs.String("from-addr", "", "host:port of that peer's database server")
		fromUser = fs.String("from-user", "", "user at that server (default: this site's database user)")
	})
	if err != nil {
		return err
	}
	if *from == "" || *fromAddr == "" {
		return usageError{errors.New("seed: --from PEER and --from-addr HOST:PORT are required")}
	}
	src := seedSource{database: cfg.Database}
	found := false
	var names []string
	for _, p := range cfg.Peers {
		names = append(names, p.Name)
		if p.Name == *from {
			src.peer, found = p, true
		}
	}
	if !found {
		return fmt.Errorf("seed: --from %q is not one of this site's peers (allowed: %s)", *from, strings.Join(names, ", "))
	}
	host, port, err := net.SplitHostPort(*fromAddr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || host == "" || n <= 0 || n > 65535 {
		return fmt.Errorf("seed: --from-addr %q is not host:port", *fromAddr)
	}
	src.database.Host, src.database.Port = host, n
	if *fromUser != "" {
		src.database.User = *fromUser
	}
	// The source's password: TANDEM_SEED_PASSWORD or the file named by
	// TANDEM_SEED_PASSWORD_FILE, else this site's.
	if f := env("TANDEM_SEED_PASSWORD_FILE"); f != "" {
		if src.database.Password, err = config.SecretFile(f); err != nil {
			return fmt.Errorf("seed: TANDEM_SEED_PASSWORD_FILE: %w", err)
		}
	} else if pw := env("TANDEM_SEED_PASSWORD"); pw != "" {
		src.database.Password = config.Secret(pw)
	}
	return seed(ctx, cfg, src, stdout)
}

// seed copies the replicated tables (rows with their versions, and
// tombstones) from src's database into this site's empty tables, as of one
// consistent snapshot of src, and stores where this site's sinks start
// reading so that they apply exactly what the snapshot lacks:
//
//   - src's own topic: its end offsets read before the snapshot was taken.
//     Every transaction src commits after the snapshot is produced after
//     that, so at or above them; what lies between is in the snapshot too
//     and applies as a no-op (compare-and-set on equal versions).
//   - any other peer's topic: src's own applied offsets for it, read in the
//     same snapshot, so they match the data copied.
//
// Replaying a topic from its start instead would not do: tombstones are
// collected once every site applied past them, and an old insert replayed
// after its key's tombstone is gone would come back.
//
// The copy is written with sql_log_bin = 0, so this site's reader never
// publishes it (the other sites already hold it), and in a sink session,
// so the triggers keep the copied versions.
func seed(ctx context.Context, cfg *config.Config, src seedSource, out io.Writer) error {
	tgt, err := sql.Open("mysql", cfg.Database.DSN())
	if err != nil {
		return err
	}
	defer tgt.Close()
	sdb, err := sql.Open("mysql", src.database.DSN())
	if err != nil {
		return err
	}
	defer sdb.Close()
	if err := tgt.PingContext(ctx); err != nil {
		return fmt.Errorf("seed: this site's database %s: %w", cfg.Database.Addr(), err)
	}
	if err := sdb.PingContext(ctx); err != nil {
		return fmt.Errorf("seed: %s's database %s: %w", src.peer.Name, src.database.Addr(), err)
	}
	tables, err := resolveTables(ctx, tgt, cfg.Schema.Tables)
	if err != nil {
		return err
	}
	opt := schema.Options{Site: cfg.Site.ID, MetaSchema: cfg.Schema.MetaSchema, VersionColumn: cfg.Schema.VersionColumn, Tables: tables}
	problems, err := schema.Check(ctx, tgt, opt)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("seed: this site's schema is not prepared (%s: %s); run `replicator schema prepare` first", problems[0].Object, problems[0].Problem)
	}
	offsetsTable := schema.QuoteIdent(cfg.Schema.MetaSchema) + "." + schema.QuoteIdent(schema.Offsets)
	var n int
	err = tgt.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+offsetsTable).Scan(&n)
	if err != nil {
		return fmt.Errorf("seed: read %s: %w", offsetsTable, err)
	}
	if n > 0 {
		return fmt.Errorf("seed: this site already applied other sites' changes (%s has %d rows); seed only a new site", offsetsTable, n)
	}
	var copies []schema.TableRef
	for _, t := range tables {
		copies = append(copies, t, schema.TableRef{Schema: t.Schema, Table: schema.TombTable(t.Table)})
	}
	for _, t := range copies {
		err := tgt.QueryRowContext(ctx, "SELECT 1 FROM "+quoteRef(t)+" LIMIT 1").Scan(&n)
		if err == nil {
			return fmt.Errorf("seed: %s is not empty at this site; seed copies into empty tables only (empty them, or all of a failed seed's tables, and run it again)", t)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("seed: read %s: %w", t, err)
		}
	}

	kc := pipeline.KafkaConfig{Brokers: cfg.Kafka.Brokers}
	srcTopic := cfg.Topic(src.peer.Name)
	ends, err := pipeline.EndOffsets(ctx, kc, srcTopic)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}

	sconn, err := sdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer sconn.Close()
	for _, q := range []string{
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
		"START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
	} {
		if _, err := sconn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("seed: %s at %s: %w", q, src.peer.Name, err)
		}
	}
	defer sconn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck // read-only snapshot
	type offset struct {
		topic  string
		part   int
		next   int64
		origin uint8
	}
	var offs []offset
	for p := range len(ends) {
		offs = append(offs, offset{srcTopic, p, ends[p], src.peer.ID})
	}
	peerTopics := map[string]bool{}
	for _, p := range cfg.Peers {
		if p.Name != src.peer.Name {
			peerTopics[cfg.Topic(p.Name)] = true
		}
	}
	rows, err := sconn.QueryContext(ctx, "SELECT topic, part, next_offset, origin FROM "+offsetsTable)
	if err != nil {
		return fmt.Errorf("seed: read %s at %s: %w", offsetsTable, src.peer.Name, err)
	}
	for rows.Next() {
		var o offset
		if err := rows.Scan(&o.topic, &o.part, &o.next, &o.origin); err != nil {
			rows.Close()
			return err
		}
		if peerTopics[o.topic] {
			offs = append(offs, o)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	tconn, err := tgt.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// Its session settings must not reach other users of the pool.
		_ = tconn.Raw(func(any) error { return driver.ErrBadConn })
		_ = tconn.Close()
	}()
	if _, err := tconn.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
		return fmt.Errorf("seed: SET sql_log_bin = 0 at this site (needs SUPER or BINLOG ADMIN, so that the copy is not published): %w", err)
	}
	if _, err := tconn.ExecContext(ctx, "SET "+schema.ApplySessionVar+" = 1"); err != nil {
		return err
	}
	total := 0
	for _, t := range copies {
		n, err := copyTable(ctx, sconn, tconn, t)
		if err != nil {
			return fmt.Errorf("seed: copy %s: %w", t, err)
		}
		total += n
		fmt.Fprintf(out, "seed: %s: %d rows\n", t, n)
	}
	for _, o := range offs {
		if _, err := tconn.ExecContext(ctx, "INSERT INTO "+offsetsTable+" (topic, part, next_offset, origin, epoch) VALUES (?, ?, ?, ?, 0)",
			o.topic, o.part, o.next, o.origin); err != nil {
			return fmt.Errorf("seed: write %s: %w", offsetsTable, err)
		}
		fmt.Fprintf(out, "seed: %s/%d starts at offset %d\n", o.topic, o.part, o.next)
	}
	fmt.Fprintf(out, "seed: %d rows copied from %s (%s) as of one snapshot; start this site's replicator now\n",
		total, src.peer.Name, src.database.Addr())
	return nil
}

func quoteRef(t schema.TableRef) string {
	return schema.QuoteIdent(t.Schema) + "." + schema.QuoteIdent(t.Table)
}

// copyTable copies every row of t from the source snapshot (src) to the
// target session (dst) in multi-row INSERTs. Rows are read and written
// through the binary protocol (prepared statements), so FLOAT, DOUBLE and
// BIT values keep their exact bits; generated columns are left to the
// target to compute, and invisible ones (the version column) are named.
func copyTable(ctx context.Context, src, dst *sql.Conn, t schema.TableRef) (int, error) {
	crs, err := src.QueryContext(ctx, "SELECT COLUMN_NAME, EXTRA FROM information_schema.COLUMNS "+
		"WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", t.Schema, t.Table)
	if err != nil {
		return 0, err
	}
	var cols []string
	for crs.Next() {
		var name, extra string
		if err := crs.Scan(&name, &extra); err != nil {
			crs.Close()
			return 0, err
		}
		if !strings.Contains(strings.ToUpper(extra), "GENERATED") {
			cols = append(cols, schema.QuoteIdent(name))
		}
	}
	crs.Close()
	if err := crs.Err(); err != nil {
		return 0, err
	}
	if len(cols) == 0 {
		return 0, fmt.Errorf("no such table at the source")
	}
	list := strings.Join(cols, ", ")
	// A placeholder makes the driver prepare the statement: binary protocol.
	rs, err := src.QueryContext(ctx, "SELECT "+list+" FROM "+quoteRef(t)+" WHERE ? = 1", 1)
	if err != nil {
		return 0, err
	}
	defer rs.Close()
	rowPH := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	insert := "INSERT INTO " + quoteRef(t) + " (" + list + ") VALUES "
	var (
		args  []any
		nrows int
		size  int
		total int
	)
	flush := func() error {
		if nrows == 0 {
			return nil
		}
		q := insert + strings.TrimSuffix(strings.Repeat(rowPH+", ", nrows), ", ")
		if _, err := dst.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		total += nrows
		args, nrows, size = args[:0], 0, 0
		return nil
	}
	// A prepared statement takes at most 65,535 placeholders.
	maxRows := min(seedBatchRows, 65535/len(cols))
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rs.Next() {
		if err := rs.Scan(ptrs...); err != nil {
			return total, err
		}
		for _, v := range vals {
			if b, ok := v.([]byte); ok {
				size += len(b) // a copy: Scan into *any copies bytes
			}
			args = append(args, v)
		}
		nrows++
		if nrows >= maxRows || size >= seedBatchBytes {
			if err := flush(); err != nil {
				return total, err
			}
		}
	}
	if err := rs.Err(); err != nil {
		return total, err
	}
	return total, flush()
}
