package replicator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/admin"
	"github.com/tandemdb/tandem/pkg/checkpoint"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/lease"
	"github.com/tandemdb/tandem/pkg/schema"
)

// leader is what a replicator holding its site's lease runs with.
type leader struct {
	lease *lease.Lease
	// floor is the highest fencing epoch _tandem_offsets held before this
	// replicator took the lease: above 0, the site ran with HA before, so
	// its reader checkpoint must be in the lease's shared state.
	floor uint64
}

// Shared state fields.
const (
	statePosition = "position"
	stateHLCBound = "hlc_bound"
	// stateReset marks a `replicator checkpoint reset`: start at the
	// source's current position although the site ran with HA before.
	stateReset = "position_reset"
)

// errSharedCheckpointLost stops a leader that finds no checkpoint where
// one must be: no retry brings it back.
var errSharedCheckpointLost = errors.New("ha: the site's reader checkpoint is lost")

// stateTimeout bounds one shared-state read or write.
const stateTimeout = 3 * time.Second

// sharedStore is the reader checkpoint and HLC upper bound of a site with
// several replicators. It keeps them in the local state directory as a
// single replicator does, and in the lease's shared state, written only
// while this replicator holds the lease and read from there first: a
// replicator taking over resumes where the last leader's reader was
// acknowledged by Kafka, not where its own, stale or empty, state
// directory says. Resuming a little earlier than the last leader stopped
// republishes some transactions, which the sinks apply as no-ops.
type sharedStore struct {
	local  *checkpoint.Store
	leader *leader
	log    *zap.Logger
	failed atomic.Bool // the last shared write failed (logged once)
}

// shared writes field to the lease's shared state. Only a lost lease is
// an error: a Redis that does not answer for a moment must not stall the
// reader, whose checkpoint is saved locally anyway. A shared checkpoint
// left behind by such a gap makes a takeover resume earlier, which
// republishes transactions the sinks apply as no-ops; a gap longer than
// the lease ends the leadership (runHA).
func (s *sharedStore) shared(field, value string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	err := s.leader.lease.SaveState(ctx, field, value)
	switch {
	case errors.Is(err, lease.ErrLost):
		return err
	case err != nil:
		if !s.failed.Swap(true) {
			s.log.Warn("cannot share the reader checkpoint through Redis; keeping it locally and trying again", zap.String("field", field), zap.Error(err))
		}
	case s.failed.Swap(false):
		s.log.Info("sharing the reader checkpoint through Redis again")
	}
	return nil
}

func (s *sharedStore) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), stateTimeout)
}

func (s *sharedStore) Position() (event.Position, bool, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	v, ok, err := s.leader.lease.LoadState(ctx, statePosition)
	if err != nil {
		return event.Position{}, false, err
	}
	if ok {
		var p event.Position
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return event.Position{}, false, fmt.Errorf("ha: the shared reader checkpoint %q is corrupt: %w", v, err)
		}
		return p, true, nil
	}
	p, ok, err := s.local.Position()
	if err != nil || ok {
		// First start with HA: the replicator that ran alone before
		// brings its checkpoint.
		return p, ok, err
	}
	if _, reset, err := s.leader.lease.LoadState(ctx, stateReset); err != nil || reset {
		return p, false, err
	}
	if s.leader.floor > 0 {
		return event.Position{}, false, fmt.Errorf("%w: the lease's Redis holds no reader checkpoint, nor does this replicator's state_dir, "+
			"although this site ran with HA before (fencing epoch %d in _tandem_offsets): did Redis lose its data? Starting at the source's "+
			"current position would skip what was written since the last leader's checkpoint. Restore Redis' data (it needs appendonly), "+
			"or accept that loss and run `replicator checkpoint reset --config FILE`, after which the leader starts at the current position", errSharedCheckpointLost, s.leader.floor)
	}
	return p, false, nil
}

func (s *sharedStore) SavePosition(p event.Position) error {
	if err := s.local.SavePosition(p); err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	// A reset marker may stay: a stored position wins over it.
	return s.shared(statePosition, string(b))
}

// haClient connects to the lease's Redis.
func haClient(cfg *config.Config) *redis.Client { return redisClient(cfg.HA.Redis) }

// redisClient connects to a Redis server of the configuration (the
// tenant registry's, the lease's). It fails fast: neither a registry read
// nor a lease renewal may hold anything up, and both are tried again.
func redisClient(r config.TenantsRedis) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: r.Addr, Password: r.Password.Reveal(), DB: r.DB,
		DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: 1,
	})
}

func (s *sharedStore) LoadUpperBound() (uint64, error) {
	local, err := s.local.LoadUpperBound()
	if err != nil {
		return 0, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	v, ok, err := s.leader.lease.LoadState(ctx, stateHLCBound)
	if err != nil || !ok {
		return local, err
	}
	shared, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ha: the shared HLC bound %q is corrupt: %w", v, err)
	}
	return max(local, shared), nil
}

func (s *sharedStore) SaveUpperBound(wallMillis uint64) error {
	if err := s.local.SaveUpperBound(wallMillis); err != nil {
		return err
	}
	return s.shared(stateHLCBound, strconv.FormatUint(wallMillis, 10))
}

// fence raises every row of _tandem_offsets, and the tenant queues' epoch
// row of _tandem_state, to epoch, so that any apply or queue transaction a
// former leader starts later is refused.
//
// A former leader that froze (a long GC or VM pause, SIGSTOP) in the
// middle of an apply transaction still holds its offsets row locked, and
// MariaDB keeps that transaction open for as long as its connection lives:
// the update would wait for it indefinitely. So while the update waits,
// a second connection looks up the transactions it waits for and kills
// their connections (rolling them back; the former leader then finds its
// connection gone and, on retrying, is fenced or finds its lease lost).
// Seeing other connections' transactions needs the PROCESS privilege;
// killing a connection of the same account needs nothing more. Without
// PROCESS it says so and keeps waiting for the transaction to end.
func fence(ctx context.Context, db *sql.DB, offsets, state string, epoch uint64, patience time.Duration, log *zap.Logger) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var id uint64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			done <- err
			return
		}
		defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
		if _, err := tx.ExecContext(ctx, "UPDATE "+offsets+" SET epoch = ? WHERE epoch < ?", epoch, epoch); err != nil {
			done <- err
			return
		}
		// The tenant queues' epoch row (statekv.go).
		e := strconv.FormatUint(epoch, 10)
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+state+" (k, v) VALUES (?, ?) "+
			"ON DUPLICATE KEY UPDATE v = IF(CAST(v AS UNSIGNED) < CAST(VALUES(v) AS UNSIGNED), VALUES(v), v)", epochKey, e); err != nil {
			done <- err
			return
		}
		done <- tx.Commit()
	}()
	// At least 250 ms (a quarter of the shortest lease allowed): InnoDB
	// refreshes the lock tables lockBlockers reads only after 100 ms
	// without readers, and faster polling would read a stale snapshot.
	wait := min(patience/4, time.Second)
	warned := false
	for {
		t := time.NewTimer(wait)
		select {
		case err := <-done:
			t.Stop()
			return err
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		blockers, err := lockBlockers(ctx, db, id)
		switch {
		case err != nil && !warned:
			log.Warn("fencing waits for a transaction holding _tandem_offsets or _tandem_state (a former leader's, frozen?) and cannot see which one: grant PROCESS to this account so it can end it; waiting",
				zap.Error(err))
			warned = true
		case len(blockers) > 0:
			for _, b := range blockers {
				log.Warn("ending a transaction that holds _tandem_offsets or _tandem_state against the fencing update (a former leader's)", zap.Uint64("connection", b))
				if _, err := db.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatUint(b, 10)); err != nil {
					log.Warn("could not kill the connection; waiting for its transaction to end", zap.Uint64("connection", b), zap.Error(err))
				}
			}
		}
	}
}

// lockBlockers lists the connections whose transactions hold locks the
// transaction of connection waiter waits for. MariaDB (and MySQL 5.7)
// lists lock waits in information_schema.INNODB_LOCK_WAITS; MySQL 8
// removed that table (error 1109) for performance_schema.data_lock_waits,
// so the lookup falls back to that one (blockerQueries).
func lockBlockers(ctx context.Context, db *sql.DB, waiter uint64) ([]uint64, error) {
	return blockersFrom(ctx, db, waiter, blockerQueries)
}

// blockersFrom runs queries in turn until one does not fail with error
// 1109 (an information_schema table this server lacks).
func blockersFrom(ctx context.Context, db *sql.DB, waiter uint64, queries []string) ([]uint64, error) {
	var err error
	for _, q := range queries {
		var out []uint64
		out, err = queryBlockers(ctx, db, q, waiter)
		if me := (*mysql.MySQLError)(nil); !errors.As(err, &me) || me.Number != erUnknownTable {
			return out, err
		}
	}
	return nil, err
}

// blockerQueries are the lookups lockBlockers tries in turn.
var blockerQueries = []string{
	blockersQuery("information_schema.INNODB_LOCK_WAITS", "blocking_trx_id", "requesting_trx_id"),
	blockersQueryMySQL8("performance_schema"),
}

// erUnknownTable is "Unknown table '…' in information_schema".
const erUnknownTable = 1109

// blockersQuery reads the blocking connections of a waiting connection
// from waits, a table of lock waits by InnoDB transaction id, with
// INNODB_TRX naming each transaction's connection.
func blockersQuery(waits, blocking, requesting string) string {
	return `SELECT DISTINCT b.trx_mysql_thread_id
		FROM ` + waits + ` w
		JOIN information_schema.INNODB_TRX b ON b.trx_id = w.` + blocking + `
		JOIN information_schema.INNODB_TRX r ON r.trx_id = w.` + requesting + `
		WHERE r.trx_mysql_thread_id = ?`
}

// blockersQueryMySQL8 is blockersQuery on MySQL 8's data_lock_waits in
// schema (performance_schema; a test substitutes its own copy).
func blockersQueryMySQL8(schema string) string {
	return blockersQuery(schema+".data_lock_waits", "BLOCKING_ENGINE_TRANSACTION_ID", "REQUESTING_ENGINE_TRANSACTION_ID")
}

func queryBlockers(ctx context.Context, db *sql.DB, q string, waiter uint64) ([]uint64, error) {
	rows, err := db.QueryContext(ctx, q, waiter)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// errStandby is /readyz's answer while another replicator leads.
type errStandby struct{ holder string }

func (e errStandby) Error() string {
	if e.holder == "" {
		return "standby: waiting for the site's lease"
	}
	return "standby: the site's lease is held by " + e.holder
}

// runHA runs one of several replicators of a site: it stands by until it
// takes the site's lease, then replicates while it holds it. It returns
// nil after ctx ends (releasing the lease, so a standby takes over at
// once) and an error when it lost the lease, or could not renew it for
// longer than is safe: the process then exits, and its supervisor starts
// it again as a standby. Stopping rather than going back to standby in
// the same process leaves no state of the former leadership behind.
func runHA(ctx context.Context, cfg *config.Config, log *zap.Logger, reg *prometheus.Registry) error {
	rdb := haClient(cfg)
	defer rdb.Close()
	holder := cfg.HA.Holder
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	ttl, every := cfg.HA.LeaseTTL.Duration(), cfg.HA.RenewInterval.Duration()
	l, err := lease.New(lease.Config{Client: rdb, Prefix: cfg.HA.Redis.KeyPrefix, Site: cfg.Site.Name, Holder: holder, TTL: ttl})
	if err != nil {
		return err
	}
	db, err := sql.Open("mysql", cfg.Database.DSN())
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(3) // the fencing update, and one to look up and end what blocks it
	offsets := schema.TableRef{Schema: cfg.Schema.MetaSchema, Table: schema.Offsets}.Quoted()
	state := schema.TableRef{Schema: cfg.Schema.MetaSchema, Table: schema.State}.Quoted()

	if err := checkMeta(ctx, db, cfg, schema.Offsets, schema.State); err != nil {
		return err
	}

	leaderGauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_ha_leader",
		Help: "1 while this replicator holds its site's lease and replicates, 0 while it stands by.", ConstLabels: prometheus.Labels{"site": cfg.Site.Name}})
	epochGauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_ha_epoch",
		Help: "Fencing epoch of this replicator's lease (0 before it first took it).", ConstLabels: prometheus.Labels{"site": cfg.Site.Name}})
	reg.MustRegister(leaderGauge, epochGauge)

	// One admin server for both roles: a standby answers /healthz (it is
	// alive) but not /readyz (it serves nothing), so a Service routes
	// the admin API to the leader only.
	var current atomic.Pointer[Replicator]
	var standby atomic.Value // errStandby
	standby.Store(errStandby{})
	srv := admin.New(admin.Options{
		Listen: cfg.Admin.Listen, Token: cfg.Admin.Token.Reveal(), AllowNoToken: cfg.Admin.AllowNoToken,
		Registry: reg, Pprof: cfg.Admin.Pprof,
		Ready: func() error {
			if r := current.Load(); r != nil {
				return r.Ready()
			}
			return standby.Load().(errStandby)
		},
	}, log.Named("admin"))
	errc := make(chan error, 1)
	actx, cancelAdmin := context.WithCancel(ctx)
	defer func() { cancelAdmin(); <-errc }()
	go func() { errc <- srv.Run(actx) }()

	// Stand by.
	var floor uint64
	lastHolder := ""
	for {
		var ok bool
		var cur string
		if err = db.QueryRowContext(ctx, "SELECT COALESCE(MAX(epoch), 0) FROM "+offsets).Scan(&floor); err == nil {
			ok, cur, err = l.TryAcquire(ctx, floor)
		}
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			log.Warn("standby: cannot try the lease; trying again", zap.Error(err))
		case ok:
		case cur != lastHolder:
			log.Info("standby: the site's lease is held by another replicator", zap.String("holder", cur))
			lastHolder = cur
			standby.Store(errStandby{holder: cur})
		}
		if ok {
			break
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	epoch := l.Epoch()
	log.Info("took the site's lease: replicating", zap.String("holder", holder), zap.Uint64("epoch", epoch), zap.Uint64("previous_epoch", floor))
	leaderGauge.Set(1)
	epochGauge.Set(float64(epoch))
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		if err := l.Release(rctx); err != nil {
			log.Warn("could not release the lease; a standby takes over when it expires", zap.Error(err))
		}
		leaderGauge.Set(0)
	}()

	// Lead: renew the lease all along, from now on; stop replicating once
	// it is lost, or once it might have expired.
	lctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go func() {
		last := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(lctx, every)
			err := l.Renew(rctx)
			cancel()
			switch {
			case err == nil:
				last = time.Now()
			case errors.Is(err, lease.ErrLost):
				stop(fmt.Errorf("ha: lost the site's lease (epoch %d): another replicator took over; stopping", epoch))
				return
			case time.Since(last) > ttl-every:
				// The lease may expire before the next try: stop
				// while it certainly has not.
				stop(fmt.Errorf("ha: could not renew the site's lease for %s (lease_ttl %s): stopping before it can expire: %w",
					time.Since(last).Round(time.Millisecond), ttl, err))
				return
			default:
				log.Warn("could not renew the lease; trying again", zap.Error(err))
			}
		}
	}()

	// Fence every former leader at once: with every offsets row at this
	// epoch, a batch of a replicator that was paused past its lease is
	// refused (sink.ErrFenced) even on a partition this one has not
	// applied to yet. The lease is renewed meanwhile: this may wait for a
	// frozen former leader's transaction.
	if err := fence(lctx, db, offsets, state, epoch, ttl, log); err != nil {
		if cause := context.Cause(lctx); cause != nil && ctx.Err() == nil {
			return cause
		}
		return fmt.Errorf("ha: fence former leaders in %s: %w", offsets, err)
	}

	r, err := newReplicator(lctx, cfg, log, reg, &leader{lease: l, floor: floor})
	if err != nil {
		if cause := context.Cause(lctx); cause != nil && ctx.Err() == nil {
			return cause
		}
		return err
	}
	defer r.Close()
	r.registerAdmin(srv)
	current.Store(r)
	err = r.Run(lctx)
	if ctx.Err() != nil {
		return nil
	}
	if cause := context.Cause(lctx); cause != nil {
		return cause
	}
	return err
}
