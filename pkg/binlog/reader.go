// Package binlog reads a MariaDB/MySQL binary log and turns it into
// committed transactions (event.Txn) in commit order.
//
// It sits on go-mysql's replication layer (BinlogSyncer), not on canal:
// canal reads table definitions from the live server, which is wrong after
// an ALTER TABLE and broken on MariaDB 10.11. Column names, primary keys,
// signedness, charsets and ENUM/SET labels come from the table-map metadata
// that binlog_row_metadata=FULL adds to the binlog.
//
// # What is emitted
//
// Every source transaction is emitted, in commit order, with the GTID set
// position after it, including transactions without published changes (DDL,
// filtered tables, transactions written by sinks): the checkpointer needs
// their positions to advance. Consecutive empty transactions are coalesced:
// only the latest of a run is emitted, as soon as no further event is
// waiting or at the latest every 200 ms; a non-empty transaction supersedes
// a pending empty one.
//
// A transaction with more than MaxFragmentChanges changes or
// MaxFragmentBytes value bytes is emitted as fragments 0, 1, … with Last
// set on the final one. Non-final fragments carry the position before the
// transaction, so a checkpoint never lands inside it.
//
// # Versions and deletes
//
// A change's Version is the row's version column (after image). A delete's
// version is the tombstone the BEFORE DELETE trigger wrote into
// schema.TombTable(table) earlier in the same transaction; without one
// (trigger missing) it is one tick after the deleted row's version, counted
// in Stats.DeletesWithoutTombstone. An UPDATE that changes the primary key
// is emitted as a delete of the old key and an insert of the new row, both
// with the update's version.
//
// # Tandem's own tables and loop prevention
//
// Tables whose name starts with schema.Prefix are not published, except
// schema.Heartbeat and schema.Probe in the meta schema. A transaction that
// writes one of the sink bookkeeping tables (_tandem_offsets, _parked,
// _watermarks, _conflicts in the meta schema) was written by a sink and is
// dropped whole (emitted empty for its position): that is what keeps a
// change from echoing between sites.
//
// # Limits
//
//   - DDL, TRUNCATE and other statements without row events are not
//     replicated; they are emitted as empty transactions.
//   - The binlog carries values of generated columns (VIRTUAL and STORED)
//     like any other column and cannot tell them apart; the applying side
//     must skip the target's generated columns.
//   - MariaDB JSON is LONGTEXT in the binlog and arrives as KindString.
//   - An XA transaction is published at XA PREPARE, when MariaDB logs its
//     changes; a later XA ROLLBACK cannot be undone and is logged as an
//     error.
//   - Reconnecting resumes after the last completed transaction, which may
//     be a coalesced empty one not emitted yet: only empty transactions lie
//     between it and the last emitted one, so nothing is skipped.
//   - The MySQL flavor follows the same code paths but is only exercised by
//     unit tests here; the integration tests run MariaDB.
package binlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	sqldriver "github.com/go-sql-driver/mysql"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// ErrPositionPurged is returned by Run when the source no longer has the
// binlogs for the requested GTID position. The reader never skips ahead on
// its own: the changes in between would be silently lost.
var ErrPositionPurged = errors.New("binlog: the requested GTID position is no longer in the source's binary logs")

const (
	// heartbeatPeriod asks the source for a heartbeat event whenever the
	// binlog is idle for this long, so that a dead connection shows as
	// silence.
	heartbeatPeriod = time.Second
	// silenceLimit is how many heartbeat periods without any event, while
	// the reader waits for one, make it treat the connection as dead.
	silenceLimit = 10
	// eventBuffer is how many decoded events wait between the connection
	// and the assembler: enough to keep the connection busy, small enough
	// that buffered rows stay bounded.
	eventBuffer = 64
)

type emitFunc = func(context.Context, event.Txn) error

// Stats are the reader's counters since it was created.
type Stats struct {
	TxnsRead                uint64 // source transactions completed
	TxnsEmitted             uint64 // Txn values passed to emit (fragments and empty transactions included)
	TxnsDroppedLoop         uint64 // transactions written by a sink, emitted without changes
	RowsRead                uint64 // row changes in row events of any table
	Fragments               uint64 // non-final fragments emitted
	DeletesWithoutTombstone uint64 // deletes versioned without a tombstone
	Reconnects              uint64 // connection attempts after a failure
}

type counters struct {
	txnsRead, txnsEmitted, txnsDroppedLoop, rowsRead, fragments, deletesWithoutTombstone, reconnects atomic.Uint64
}

// Reader reads one source's binlog.
type Reader struct {
	cfg    Config
	filter filter
	log    *zap.Logger
	slog   *slog.Logger
	clock  *hlc.Clock
	stats  counters
}

// New returns a reader for cfg (validated, defaults applied). log may be
// nil (no logging); clock stamps transactions.
func New(cfg Config, log *zap.Logger, clock *hlc.Clock) (*Reader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		return nil, errors.New("binlog: New: nil clock")
	}
	if log == nil {
		log = zap.NewNop()
	}
	f, err := newFilter(cfg.Include, cfg.Exclude)
	if err != nil {
		return nil, fmt.Errorf("binlog: %w", err) // unreachable after Validate
	}
	log = log.With(zap.Uint8("site", cfg.Site), zap.String("source", cfg.addr()))
	return &Reader{cfg: cfg, filter: f, log: log, slog: newSlog(log), clock: clock}, nil
}

func (c *Config) addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// Stats returns a snapshot of the counters.
func (r *Reader) Stats() Stats {
	return Stats{
		TxnsRead:                r.stats.txnsRead.Load(),
		TxnsEmitted:             r.stats.txnsEmitted.Load(),
		TxnsDroppedLoop:         r.stats.txnsDroppedLoop.Load(),
		RowsRead:                r.stats.rowsRead.Load(),
		Fragments:               r.stats.fragments.Load(),
		DeletesWithoutTombstone: r.stats.deletesWithoutTombstone.Load(),
		Reconnects:              r.stats.reconnects.Load(),
	}
}

// Run streams the committed transactions after from, in commit order, to
// emit; a blocking emit is the back-pressure. An empty from.GTIDSet starts
// at the source's current end. Connection failures are retried with
// exponential backoff (ReconnectMin..ReconnectMax, with jitter), resuming
// after the last completed transaction; a transaction that was partly
// emitted as fragments is emitted again from fragment 0. Run returns nil
// when ctx is cancelled, ErrPositionPurged when the position is gone, and
// an error for bad credentials, undecodable events or a failed emit.
// Run must not be called concurrently on one Reader.
func (r *Reader) Run(ctx context.Context, from event.Position, emit func(context.Context, event.Txn) error) error {
	var a *assembler
	attempt := 0
	for {
		var err error
		retry := true
		if a == nil {
			start := from
			if start.GTIDSet == "" {
				start, err = r.CurrentPosition(ctx)
			}
			if err == nil {
				if a, err = newAssembler(r.cfg, r.filter, r.log, r.clock, &r.stats, start); err != nil {
					return err
				}
				r.log.Info("binlog reader starting", zap.Stringer("position", start))
			}
		}
		if a != nil {
			retry, err = r.stream(ctx, a, emit, func() { attempt = 0 })
		}
		if ctx.Err() != nil {
			return nil
		}
		if !retry {
			return err
		}
		pos := from
		if a != nil {
			pos = a.position()
		}
		if fatal := r.fatal(err, pos); fatal != nil {
			return fatal
		}
		attempt++
		r.stats.reconnects.Add(1)
		d := backoff(r.cfg.ReconnectMin, r.cfg.ReconnectMax, attempt)
		r.log.Warn("binlog source connection failed; reconnecting",
			zap.Int("attempt", attempt), zap.Duration("backoff", d), zap.Stringer("position", pos), zap.Error(err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is the wait before reconnection attempt n (1-based): min·2^(n-1)
// capped at max, with "equal jitter" (half fixed, half random) so that
// readers that lost the same server do not reconnect in lockstep.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := hi
	if n <= 32 && lo > 0 && lo<<(n-1) > 0 && lo<<(n-1) < hi {
		d = lo << (n - 1)
	}
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// syncHandler passes decoded events from go-mysql's connection goroutine
// to Run's goroutine. Sending is the back-pressure: while Run is busy the
// connection is not read.
type syncHandler struct {
	events chan *replication.BinlogEvent
	done   chan struct{}
}

var errClosing = errors.New("binlog: reader is closing the connection")

func (h *syncHandler) HandleEvent(e *replication.BinlogEvent) error {
	select {
	case h.events <- e:
		return nil
	case <-h.done:
		return errClosing
	}
}

func (r *Reader) syncerConfig(h replication.EventHandler) replication.BinlogSyncerConfig {
	return replication.BinlogSyncerConfig{
		ServerID: r.cfg.ServerID,
		Flavor:   r.cfg.Flavor,
		Host:     r.cfg.Host,
		Port:     uint16(r.cfg.Port),
		User:     r.cfg.User,
		Password: r.cfg.Password,
		// Exact values: decimals and temporal types as text in the
		// server's own notation, TIMESTAMP in UTC, floats as Go floats.
		ParseTime:               false,
		TimestampStringLocation: time.UTC,
		UseDecimal:              false,
		// MySQL JSON (binary) rendered as MySQL prints it, so re-inserting
		// the text reproduces the value (MariaDB JSON is plain text).
		RenderJSONAsMySQLText: true,
		VerifyChecksum:        true,
		HeartbeatPeriod:       heartbeatPeriod,
		// The reader reconnects itself: go-mysql's retry would resume from
		// its own idea of the position, which may be mid-transaction.
		DisableRetrySync:        true,
		Logger:                  r.slog,
		EventCacheCount:         1, // unused with a SynchronousEventHandler
		SynchronousEventHandler: h,
	}
}

// stream runs one connection until it fails or ctx ends. retry reports
// whether err is about the connection (worth reconnecting, subject to
// fatal) rather than about the data or emit.
func (r *Reader) stream(ctx context.Context, a *assembler, emit emitFunc, connected func()) (retry bool, err error) {
	a.reconnected()
	set, err := a.gtids.syncSet()
	if err != nil {
		return false, fmt.Errorf("binlog: position %s: %w", a.position(), err)
	}
	h := &syncHandler{events: make(chan *replication.BinlogEvent, eventBuffer), done: make(chan struct{})}
	syncer := replication.NewBinlogSyncer(r.syncerConfig(h))
	streamer, err := syncer.StartSyncGTID(set)
	if err != nil {
		syncer.Close()
		return true, fmt.Errorf("binlog: start streaming from %s at %s: %w", r.cfg.addr(), a.position(), err)
	}
	// go-mysql reports the end of the stream (error packet, lost
	// connection, close) only through the streamer.
	errc := make(chan error, 1)
	go func() {
		_, err := streamer.GetEvent(context.Background())
		errc <- err
	}()
	streamDone := false
	defer func() {
		close(h.done)
		syncer.Close()
		if !streamDone {
			<-errc
		}
	}()

	ticker := time.NewTicker(heartbeatPeriod)
	defer ticker.Stop()
	silent, seen, up := 0, false, false
	for {
		select {
		case ev := <-h.events:
			seen = true
			if !up {
				switch ev.Event.(type) {
				case *replication.MariadbGTIDEvent, *replication.GTIDEvent, *replication.HeartbeatEvent:
					up = true // the server accepted the position
					connected()
				}
			}
			if err := a.handle(ctx, ev, emit); err != nil {
				return false, err
			}
			if err := a.flushPending(ctx, len(h.events) == 0, emit); err != nil {
				return false, err
			}
		case err := <-errc:
			streamDone = true
			return true, fmt.Errorf("binlog: stream from %s after %s: %w", r.cfg.addr(), a.position(), err)
		case <-ticker.C:
			// Ticks are only taken while waiting here, so time spent in a
			// blocking emit does not count as silence.
			if seen {
				silent = 0
			} else {
				silent++
			}
			seen = false
			if silent >= silenceLimit {
				return true, fmt.Errorf("binlog: no event or heartbeat from %s for %s", r.cfg.addr(), silenceLimit*heartbeatPeriod)
			}
		case <-ctx.Done():
			return false, nil
		}
	}
}

// fatal returns the error Run should return for a connection error, or nil
// when reconnecting may help.
func (r *Reader) fatal(err error, pos event.Position) error {
	var ee *replication.EventError
	if errors.As(err, &ee) {
		return fmt.Errorf("binlog: cannot decode an event after %s: %w", pos, err)
	}
	code, msg := serverError(err)
	switch code {
	case 1236:
		if isPurged(msg) {
			return fmt.Errorf("%w: the reader's checkpoint is %s and the source %s said: %q. "+
				"Nothing was skipped. Either re-seed this site's data at the other sites from a consistent snapshot "+
				"and then reset the reader's checkpoint explicitly to the snapshot's position, "+
				"or, if the source was rebuilt, reset the checkpoint to its current position knowing that changes in between are not replicated",
				ErrPositionPurged, pos, r.cfg.addr(), msg)
		}
	case 1044, 1045, 1227, 1698, 1142:
		return fmt.Errorf("binlog: source %s refused user %q: %s. Check User and Password, and grant the reader "+
			"REPLICATION SLAVE, REPLICATION CLIENT (MariaDB ≥10.5: BINLOG MONITOR, REPLICATION SLAVE) ON *.*",
			r.cfg.addr(), r.cfg.User, msg)
	}
	return nil
}

// serverError extracts the server's error code and message from an error
// of either MySQL client library, or from the text go-mysql sometimes
// flattens it into.
func serverError(err error) (uint16, string) {
	if err == nil {
		return 0, ""
	}
	var me *mysql.MyError
	if errors.As(err, &me) {
		return me.Code, me.Message
	}
	var de *sqldriver.MySQLError
	if errors.As(err, &de) {
		return de.Number, de.Message
	}
	s := err.Error()
	if i := strings.Index(s, "ERROR "); i >= 0 {
		if code := mysql.ErrorCode(s[i:]); code != 0 {
			return uint16(code), s[i:]
		}
	}
	return 0, s
}

// isPurged recognises the 1236 messages that mean the position is not in
// the source's binlogs (MariaDB and MySQL wordings).
func isPurged(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{
		"could not find gtid state",
		"purged",
		"not in the master's binlog",
		"not in the source's binlog",
		"could not find first log file",
	} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// openDB opens a single-connection pool on the source for status queries.
func (r *Reader) openDB() (*sql.DB, error) {
	c := sqldriver.NewConfig()
	c.User = r.cfg.User
	c.Passwd = r.cfg.Password
	c.Net = "tcp"
	c.Addr = r.cfg.addr()
	c.Timeout = 10 * time.Second
	c.ReadTimeout = 30 * time.Second
	c.WriteTimeout = 30 * time.Second
	conn, err := sqldriver.NewConnector(c)
	if err != nil {
		return nil, fmt.Errorf("binlog: source %s: %w", r.cfg.addr(), err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	return db, nil
}

// CurrentPosition returns the source's current end: its GTID position
// (MariaDB @@gtid_binlog_pos, MySQL @@gtid_executed) and binlog file and
// offset. The two are read one after the other, so under load the file and
// offset may be slightly ahead; they are informational.
func (r *Reader) CurrentPosition(ctx context.Context) (event.Position, error) {
	db, err := r.openDB()
	if err != nil {
		return event.Position{}, err
	}
	defer db.Close()
	var p event.Position
	q := "SELECT @@gtid_binlog_pos"
	if r.cfg.Flavor == FlavorMySQL {
		q = "SELECT @@gtid_executed"
	}
	if err := db.QueryRowContext(ctx, q).Scan(&p.GTIDSet); err != nil {
		return event.Position{}, fmt.Errorf("binlog: read the current GTID position of %s: %w", r.cfg.addr(), err)
	}
	p.GTIDSet = strings.ReplaceAll(strings.TrimSpace(p.GTIDSet), "\n", "")
	status := "SHOW MASTER STATUS"
	if r.cfg.Flavor == FlavorMySQL {
		// MySQL 8.4 removed SHOW MASTER STATUS; MariaDB must keep it
		// (SHOW BINARY LOG STATUS is MySQL's spelling).
		status = "SHOW BINARY LOG STATUS"
	}
	file, offset, err := r.binlogStatus(ctx, db, status)
	if err != nil && r.cfg.Flavor == FlavorMySQL {
		file, offset, err = r.binlogStatus(ctx, db, "SHOW MASTER STATUS")
	}
	if err != nil {
		return event.Position{}, err
	}
	p.File, p.Offset = file, offset
	return p, nil
}

func (r *Reader) binlogStatus(ctx context.Context, db *sql.DB, q string) (string, uint32, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return "", 0, fmt.Errorf("binlog: %s on %s: %w", q, r.cfg.addr(), err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", 0, fmt.Errorf("binlog: %s on %s: %w", q, r.cfg.addr(), err)
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return "", 0, fmt.Errorf("binlog: %s on %s: %w", q, r.cfg.addr(), err)
		}
		return "", 0, fmt.Errorf("binlog: %s on %s returned nothing: binary logging is off (set log_bin in my.cnf and restart)", q, r.cfg.addr())
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil || len(vals) < 2 {
		return "", 0, fmt.Errorf("binlog: %s on %s: unexpected result (%d columns): %v", q, r.cfg.addr(), len(cols), err)
	}
	off, err := strconv.ParseUint(string(vals[1]), 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("binlog: %s on %s: position %q: %w", q, r.cfg.addr(), vals[1], err)
	}
	return string(vals[0]), uint32(off), rows.Err()
}

// Preflight checks that the source logs what the reader needs: binary
// logging on, binlog_format=ROW, binlog_row_image=FULL and
// binlog_row_metadata=FULL (MariaDB ≥ 10.5, MySQL ≥ 8.0.1), GTIDs on MySQL,
// a flavor that matches the server and a ServerID different from the
// server's. The error lists every problem with the statements that fix it
// at runtime and the my.cnf lines that make the fix permanent.
func (r *Reader) Preflight(ctx context.Context) error {
	db, err := r.openDB()
	if err != nil {
		return err
	}
	defer db.Close()
	var version, logBin, format, image string
	var serverID uint64
	err = db.QueryRowContext(ctx, "SELECT @@version, @@server_id, @@log_bin, @@binlog_format, @@binlog_row_image").
		Scan(&version, &serverID, &logBin, &format, &image)
	if err != nil {
		return fmt.Errorf("binlog: preflight: query the settings of %s: %w", r.cfg.addr(), err)
	}
	isMaria := strings.Contains(strings.ToLower(version), "mariadb")
	if isMaria != (r.cfg.Flavor == FlavorMariaDB) {
		want := FlavorMySQL
		if isMaria {
			want = FlavorMariaDB
		}
		return fmt.Errorf("binlog: preflight: source %s runs %s but Flavor is %q; set Flavor to %q", r.cfg.addr(), version, r.cfg.Flavor, want)
	}
	var problems, runtime, mycnf []string
	need := func(problem, set, cnf string) {
		problems = append(problems, problem)
		if set != "" {
			runtime = append(runtime, set)
		}
		mycnf = append(mycnf, cnf)
	}
	if logBin != "1" && !strings.EqualFold(logBin, "ON") {
		need("log_bin is OFF: binary logging is disabled (it cannot be enabled at runtime; restart the server after the my.cnf change)",
			"", "log_bin = mysql-bin")
	}
	if !strings.EqualFold(format, "ROW") {
		need(fmt.Sprintf("binlog_format is %s, must be ROW", format), "SET GLOBAL binlog_format = 'ROW';", "binlog_format = ROW")
	}
	if !strings.EqualFold(image, "FULL") {
		need(fmt.Sprintf("binlog_row_image is %s, must be FULL", image), "SET GLOBAL binlog_row_image = 'FULL';", "binlog_row_image = FULL")
	}
	var meta string
	if err := db.QueryRowContext(ctx, "SELECT @@binlog_row_metadata").Scan(&meta); err != nil {
		if code, _ := serverError(err); code != 1193 { // unknown system variable
			return fmt.Errorf("binlog: preflight: query binlog_row_metadata on %s: %w", r.cfg.addr(), err)
		}
		problems = append(problems, fmt.Sprintf("%s has no binlog_row_metadata: column names are not in its binlog; "+
			"upgrade to MariaDB 10.5 or later, or MySQL 8.0.1 or later", version))
	} else if !strings.EqualFold(meta, "FULL") {
		need(fmt.Sprintf("binlog_row_metadata is %s, must be FULL", meta), "SET GLOBAL binlog_row_metadata = 'FULL';", "binlog_row_metadata = FULL")
	}
	if r.cfg.Flavor == FlavorMySQL {
		var gtidMode, valueOpts string
		if err := db.QueryRowContext(ctx, "SELECT @@gtid_mode, @@binlog_row_value_options").Scan(&gtidMode, &valueOpts); err != nil {
			return fmt.Errorf("binlog: preflight: query gtid_mode on %s: %w", r.cfg.addr(), err)
		}
		if !strings.EqualFold(gtidMode, "ON") {
			need(fmt.Sprintf("gtid_mode is %s, must be ON", gtidMode),
				"SET GLOBAL enforce_gtid_consistency = ON; SET GLOBAL gtid_mode = OFF_PERMISSIVE; SET GLOBAL gtid_mode = ON_PERMISSIVE; SET GLOBAL gtid_mode = ON;",
				"gtid_mode = ON\n  enforce_gtid_consistency = ON")
		}
		if valueOpts != "" {
			need(fmt.Sprintf("binlog_row_value_options is %q, must be empty (partial JSON updates cannot be replicated)", valueOpts),
				"SET GLOBAL binlog_row_value_options = '';", "binlog_row_value_options = ''")
		}
	}
	if uint64(r.cfg.ServerID) == serverID {
		problems = append(problems, fmt.Sprintf("the reader's ServerID %d equals the source's server_id; "+
			"choose a ServerID that no server in the topology uses", serverID))
	}
	if len(problems) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "binlog: preflight: source %s (%s) cannot be replicated by Tandem:\n", r.cfg.addr(), version)
	for _, p := range problems {
		fmt.Fprintf(&b, "  - %s\n", p)
	}
	if len(runtime) > 0 {
		b.WriteString("Fix it at runtime (new sessions pick it up; reconnect the applications' sessions):\n")
		for _, s := range runtime {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	if len(mycnf) > 0 {
		b.WriteString("and make it permanent in my.cnf under [mysqld]:\n")
		for _, s := range mycnf {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return errors.New(strings.TrimRight(b.String(), "\n"))
}
