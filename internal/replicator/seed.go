package replicator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandemdb/tandem/internal/promtext"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/tenant"
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
	admin    *queueCheck     // its replicator's tenant queues; nil: not checked
}

// cmdSeed: replicator seed --config FILE --from PEER --from-addr HOST:PORT
// [--from-user USER], or, for a database restored from a physical backup
// of PEER, replicator seed --config FILE --from PEER --backup-gtid GTID
// [--queues-empty-at-backup]. See docs/operations.md ("Adding a site").
func cmdSeed(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	var from, fromAddr, fromUser, fromAdmin, backupGTID *string
	var queuesEmpty, withinRetention *bool
	cfg, _, err := loadConfig("seed", args, env, func(fs *flag.FlagSet) {
		from = fs.String("from", "", "the peer (site name) to copy from")
		fromAddr = fs.String("from-addr", "", "host:port of that peer's database server")
		fromUser = fs.String("from-user", "", "user at that server (default: this site's database user)")
		fromAdmin = fs.String("from-admin", "", "base URL of that peer's replicator admin server (needed with more than one peer)")
		backupGTID = fs.String("backup-gtid", "", "instead of copying: this site's database was restored from a physical backup of the peer, "+
			"consistent with this GTID position (the GTID field of the backup's xtrabackup_binlog_info)")
		queuesEmpty = fs.Bool("queues-empty-at-backup", false, "with --backup-gtid and more than one peer: the peer held no queued messages when the backup was taken")
		withinRetention = fs.Bool("backup-within-retention", false, "with --backup-gtid: the backup is younger than the retention of the peer's topic")
	})
	if err != nil {
		return err
	}
	if *from == "" || (*fromAddr == "") == (*backupGTID == "") {
		return usageError{errors.New("seed: --from PEER and either --from-addr HOST:PORT (copy from the peer's database) " +
			"or --backup-gtid GTID (this database was restored from the peer's physical backup) are required")}
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
	if *backupGTID != "" {
		if *fromUser != "" || *fromAdmin != "" {
			return usageError{errors.New("seed: --from-user and --from-admin belong to a copy from the peer's database (--from-addr); " +
				"with --backup-gtid nothing is read from the peer but its topic")}
		}
		set, err := parseBackupGTID(*backupGTID)
		if err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		return seedFromBackup(ctx, cfg, backupSource{peer: src.peer, gtid: set, text: strings.TrimSpace(*backupGTID),
			queuesEmpty: *queuesEmpty, withinRetention: *withinRetention}, stdout)
	}
	if *queuesEmpty || *withinRetention {
		return usageError{errors.New("seed: --queues-empty-at-backup and --backup-within-retention go with --backup-gtid; " +
			"a copy (--from-addr) checks the peer's queues itself (--from-admin) and starts at the topic's end")}
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
	if len(cfg.Peers) > 1 {
		// Other peers' messages the source queued (paused, throttled or
		// dead-lettered tenants) are past its stored offsets but not in
		// its data: the seed checks through its admin API that there are
		// none while it takes the snapshot.
		if *fromAdmin == "" {
			return fmt.Errorf("seed: this site has %d peers, so the seed must check that %s holds no queued messages of the others: "+
				"pass --from-admin http://HOST:PORT (its admin server; token from TANDEM_SEED_ADMIN_TOKEN[_FILE])", len(cfg.Peers), src.peer.Name)
		}
		u, err := url.Parse(*fromAdmin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("seed: --from-admin %q is not an http(s)://host:port URL", *fromAdmin)
		}
		src.admin = &queueCheck{base: strings.TrimSuffix(*fromAdmin, "/"), client: &http.Client{Timeout: 10 * time.Second}}
		if f := env("TANDEM_SEED_ADMIN_TOKEN_FILE"); f != "" {
			if src.admin.token, err = config.SecretFile(f); err != nil {
				return fmt.Errorf("seed: TANDEM_SEED_ADMIN_TOKEN_FILE: %w", err)
			}
		} else {
			src.admin.token = config.Secret(env("TANDEM_SEED_ADMIN_TOKEN"))
		}
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
	if err := sdb.PingContext(ctx); err != nil {
		return fmt.Errorf("seed: %s's database %s: %w", src.peer.Name, src.database.Addr(), err)
	}
	tables, err := preparedSite(ctx, tgt, cfg, "")
	if err != nil {
		return err
	}
	offsetsTable := schema.TableRef{Schema: cfg.Schema.MetaSchema, Table: schema.Offsets}.Quoted()
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
		err := tgt.QueryRowContext(ctx, "SELECT 1 FROM "+t.Quoted()+" LIMIT 1").Scan(&n)
		if err == nil {
			return fmt.Errorf("seed: %s is not empty at this site; seed copies into empty tables only (empty them, or all of a failed seed's tables, and run it again)", t)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("seed: read %s: %w", t, err)
		}
	}

	kc, err := kafkaConfig(cfg)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if err := pipeline.Probe(ctx, kc); err != nil {
		return fmt.Errorf("seed: %w", kafkaHint(cfg, err))
	}
	srcTopic := cfg.Topic(src.peer.Name)
	ends, err := pipeline.EndOffsets(ctx, kc, srcTopic)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}

	var queues queueState
	if src.admin != nil {
		if queues, err = src.admin.read(ctx); err != nil {
			return fmt.Errorf("seed: %s's tenant queues: %w", src.peer.Name, err)
		}
		if len(queues.busy) > 0 {
			return fmt.Errorf("seed: %s holds queued messages of other sites (%s); they are past its offsets but not in its data, "+
				"so this site would never get them: resume or drain those tenants (retry or skip their dead letters), then seed", src.peer.Name, strings.Join(queues.busy, "; "))
		}
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
	// Parked messages of the other peers are past the source's offsets and
	// not in its data, like queued ones: the new site would never get them.
	parkedTable := schema.TableRef{Schema: cfg.Schema.MetaSchema, Table: schema.Parked}.Quoted()
	var parked int
	for topic := range peerTopics {
		var n int
		if err := sconn.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+parkedTable+" WHERE status = 'parked' AND topic = ?", topic).Scan(&n); err != nil {
			return fmt.Errorf("seed: read %s at %s: %w", parkedTable, src.peer.Name, err)
		}
		parked += n
	}
	if parked > 0 {
		return fmt.Errorf("seed: %s holds %d parked messages of other sites (GET /v1/parked on its admin server); they are past its offsets but not in its data, "+
			"so this site would never get them: retry or skip them there (POST /v1/parked/retry, /v1/parked/{id}/skip), then seed", src.peer.Name, parked)
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
	if src.admin != nil {
		// The snapshot is taken: nothing may have been queued since the
		// first look, or a queued message may be behind the offsets just
		// read and in none of the data.
		after, err := src.admin.read(ctx)
		if err != nil {
			return fmt.Errorf("seed: %s's tenant queues: %w", src.peer.Name, err)
		}
		if len(after.busy) > 0 || after.parked != queues.parked {
			waiting := "none waiting now"
			if len(after.busy) > 0 {
				waiting = strings.Join(after.busy, "; ")
			}
			return fmt.Errorf("seed: %s queued %.0f messages of other sites while the snapshot was taken (%s); run the seed again",
				src.peer.Name, after.parked-queues.parked, waiting)
		}
	}

	tconn, err := unloggedSinkSession(ctx, tgt, "the copy")
	if err != nil {
		return err
	}
	defer tconn.Close()
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

// preparedSite checks this site's database for a seed: reachable, its
// replicated tables resolved, its schema prepared for this site. hint,
// when set, ends the error for a schema that is not.
func preparedSite(ctx context.Context, db *sql.DB, cfg *config.Config, hint string) ([]schema.TableRef, error) {
	if err := db.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("seed: this site's database %s: %w", cfg.Database.Addr(), err)
	}
	tables, err := resolveTables(ctx, db, cfg.Schema.Tables)
	if err != nil {
		return nil, err
	}
	opt := schema.Options{Site: cfg.Site.ID, MetaSchema: cfg.Schema.MetaSchema, VersionColumn: cfg.Schema.VersionColumn, Tables: tables}
	problems, err := schema.Check(ctx, db, opt)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("seed: this site's schema is not prepared for site %d (%s: %s); run `replicator schema prepare` first%s",
			cfg.Site.ID, problems[0].Object, problems[0].Problem, hint)
	}
	return tables, nil
}

// unloggedSinkSession returns a connection of db whose writes go neither
// to the binary log (sql_log_bin = 0), so this site's reader never
// publishes them (the other sites hold them already), nor through the
// triggers (a sink session), so the versions written stay. Its settings
// need no undoing: the pool is the seed's own and closes with it. what
// names what is written, for the error.
func unloggedSinkSession(ctx context.Context, db *sql.DB, what string) (*sql.Conn, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("seed: SET sql_log_bin = 0 at this site (needs SUPER or BINLOG ADMIN, so that %s is not published): %w", what, err)
	}
	if _, err := conn.ExecContext(ctx, "SET "+schema.ApplySessionVar+" = 1"); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// copyTable copies every row of t from the source snapshot (src) to the
// target session (dst) in multi-row INSERTs. Rows are read and written
// through the binary protocol (prepared statements), so FLOAT, DOUBLE and
// BIT values keep their exact bits; generated columns are left to the
// target to compute, and invisible ones (the version column) are named.
func copyTable(ctx context.Context, src, dst *sql.Conn, t schema.TableRef) (int, error) {
	all, err := schema.TableColumns(ctx, src, t.Schema, t.Table)
	if err != nil {
		return 0, err
	}
	var cols []string
	for _, c := range all {
		if !c.Generated {
			cols = append(cols, schema.QuoteIdent(c.Name))
		}
	}
	list := strings.Join(cols, ", ")
	// A placeholder makes the driver prepare the statement: binary protocol.
	rs, err := src.QueryContext(ctx, "SELECT "+list+" FROM "+t.Quoted()+" WHERE ? = 1", 1)
	if err != nil {
		return 0, err
	}
	defer rs.Close()
	rowPH := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	insert := "INSERT INTO " + t.Quoted() + " (" + list + ") VALUES "
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

// queueCheck reads a replicator's tenant queues through its admin API.
type queueCheck struct {
	base   string // http://host:port
	token  config.Secret
	client *http.Client
}

// queueState is what queueCheck reads: the queues holding messages, and
// how many messages were ever queued (tandem_tenant_parked_total), which
// tells whether any was queued between two reads.
type queueState struct {
	busy   []string
	parked float64
}

func (q *queueCheck) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+q.token.Reveal())
	resp, err := q.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, body, err
}

func (q *queueCheck) read(ctx context.Context) (queueState, error) {
	var st queueState
	code, body, err := q.get(ctx, "/v1/tenants")
	if err != nil {
		return st, err
	}
	switch code {
	case http.StatusServiceUnavailable:
		// Tenants are off there: it queues nothing (parked_total stays 0).
		return st, nil
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return st, fmt.Errorf("GET %s/v1/tenants: %d: set TANDEM_SEED_ADMIN_TOKEN[_FILE] to its admin token", q.base, code)
	default:
		return st, fmt.Errorf("GET %s/v1/tenants: %d %s", q.base, code, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	var list struct {
		Tenants []struct {
			ID     string                 `json:"id"`
			Queues map[string]tenant.Stat `json:"queues"`
		} `json:"tenants"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return st, fmt.Errorf("GET %s/v1/tenants: %w", q.base, err)
	}
	for _, t := range list.Tenants {
		for _, origin := range slices.Sorted(maps.Keys(t.Queues)) {
			if s := t.Queues[origin]; s.Depth > 0 {
				st.busy = append(st.busy, fmt.Sprintf("tenant %s: %d messages of %s (%d dead-lettered)", t.ID, s.Depth, origin, s.Dead))
			}
		}
	}
	code, body, err = q.get(ctx, "/metrics")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("GET %s/metrics: %d", q.base, code)
	}
	st.parked = promtext.Parse(string(body)).Sum("tandem_tenant_parked_total")
	return st, nil
}
