package replicator

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// Re-asserting the home site's versions (docs/tenants.md, "How home-only
// converges").
//
// Under a home policy (conflict.Policy{HomeSite}) the home site's sink
// refuses a non-home version of a row whose current version is the home
// site's, and logs a home_only_violation. When the non-home site made that
// write after it had applied the home version, nothing would ever reach it
// again: it would keep its own row while every other site keeps the home
// site's. So the home site answers each violation it logged by publishing
// its current version of the row again, which beats the non-home write at
// every site under the same policy:
//
//   - a row: a local (non-sink) UPDATE that assigns the version column to
//     itself where the row still holds the version that won. The BEFORE
//     UPDATE trigger stamps a new home version and the binlog reader
//     publishes the row like any local write.
//   - a tombstone (the home site deleted the row, the non-home site wrote
//     it again after applying the delete): there is no row to delete
//     again, so the replicator publishes the delete itself to the local
//     topic, with the tombstone's own version and the tenant column. The
//     receiving sink removes a row that the tombstone beats (pkg/sink: a
//     duplicate delete whose row loses is applied).
//
// Only violations of rows whose current version at this site is still the
// one that won are re-asserted: a later home write was published anyway
// and beats the non-home write by itself.
//
// Durability: the sink writes the violation into _tandem_conflicts in the
// same transaction as the batch it lost in, with reasserted_at NULL
// (pending). This loop re-asserts and only then sets reasserted_at, in a
// transaction of its own that the reader drops as sink bookkeeping. A crash
// in between leaves the violation pending: the next round finds the row's
// version moved on (the committed re-assert is in the binlog, which the
// source publishes) and only marks it, or publishes the same delete again,
// a duplicate everywhere.
type reasserter struct {
	db       *sql.DB
	site     uint8
	meta     string // meta schema
	version  string // version column
	registry interface{ Snapshot() *tenant.Snapshot }
	resolver *tenant.Resolver
	produce  func(ctx context.Context, key, value []byte) error
	clock    *hlc.Clock
	log      *zap.Logger
	count    *prometheus.CounterVec
	label    func(tenant string) string

	kick chan struct{}

	mu     sync.Mutex
	tables map[[2]string]*reassertTable
}

// reassertTable is what the loop needs to know about a replicated table.
type reassertTable struct {
	pk       []string
	binary   []bool   // pk column i holds bytes (keyJSON renders them 0x-hex)
	onUpdate []string // ON UPDATE CURRENT_TIMESTAMP columns, assigned to themselves
	tenant   string   // the tenant column when a column rule maps the table
}

// reassertPoll is the loop's period when nothing wakes it; conflicts in an
// applied batch wake it at once.
const reassertPoll = 5 * time.Second

// reassertBatch bounds the violations one round reads.
const reassertBatch = 256

// Outcomes counted in tandem_tenant_home_reasserts_total.
const (
	reassertRow        = "row"        // the row was stamped again
	reassertTombstone  = "tombstone"  // the delete was published again
	reassertSuperseded = "superseded" // a later write at this site already beats it
	reassertNotHome    = "not_home"   // this site is not the tenant's home (now)
	reassertFailed     = "failed"     // the key could not be found (table or key changed)
	reassertError      = "error"      // a statement failed; the violation stays pending
)

func newReasserter(r *Replicator, label func(string) string) *reasserter {
	ra := &reasserter{
		db:       r.db,
		site:     r.cfg.Site.ID,
		meta:     r.cfg.Schema.MetaSchema,
		version:  r.cfg.Schema.VersionColumn,
		registry: r.tenants.registry,
		resolver: r.tenants.resolver,
		clock:    r.clock,
		log:      r.log.Named("reassert"),
		label:    label,
		kick:     make(chan struct{}, 1),
		tables:   map[[2]string]*reassertTable{},
		count: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_tenant_home_reasserts_total",
			Help: "Attempts of this site to re-assert its home versions after home_only_violations, by tenant and outcome (row, tombstone: published again; superseded, not_home, failed: nothing to publish; error: left pending, tried again)."},
			[]string{"tenant", "outcome"}),
	}
	prod := r.prod
	ra.produce = func(ctx context.Context, key, value []byte) error {
		return prod.ProducePartition(ctx, pipeline.PartitionFor(key, prod.Partitions()), []pipeline.Message{{Key: key, Value: value}})
	}
	if r.reg != nil {
		prometheus.WrapRegistererWith(prometheus.Labels{"site": r.cfg.Site.Name}, r.reg).MustRegister(ra.count)
	}
	return ra
}

// wake makes the loop look for violations now.
func (ra *reasserter) wake() {
	select {
	case ra.kick <- struct{}{}:
	default:
	}
}

// run handles pending violations until ctx is cancelled. It goes through
// them in id order in passes; a violation whose re-assert failed stays
// pending and is tried again in the next pass, without holding up the
// ones after it.
func (ra *reasserter) run(ctx context.Context) error {
	ra.checkIndex(ctx)
	t := time.NewTicker(reassertPoll)
	defer t.Stop()
	failing := false
	var after uint64
	for {
		r, err := ra.round(ctx, after)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil && r.failed > 0 {
			err = fmt.Errorf("%d of %d violations stay pending; the first: %w", r.failed, r.read, r.firstErr)
		}
		switch {
		case err != nil && !failing:
			ra.log.Warn("re-asserting home versions failed; retrying", zap.Error(err))
			failing = true
		case err == nil && failing:
			ra.log.Info("re-asserting home versions recovered")
			failing = false
		}
		if r.read == reassertBatch {
			after = r.last // the next batch of this pass at once
			continue
		}
		after = 0
		var retry <-chan time.Time
		if err != nil {
			retry = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ra.kick:
		case <-t.C:
		case <-retry:
		}
	}
}

// checkIndex warns when _tandem_conflicts lacks the index the loop reads
// through (a table of an older release on which `schema prepare` has not
// been run again).
func (ra *reasserter) checkIndex(ctx context.Context) {
	indexes, err := schema.Indexes(ctx, ra.db, ra.meta, schema.Conflicts)
	if err == nil && indexes[reassertIndex] == nil {
		ra.log.Warn("the conflicts table has no index for pending home_only_violations; each look for them reads the whole table. Add it",
			zap.String("sql", fmt.Sprintf("ALTER TABLE %s.%s ADD KEY %s (kind, reasserted_at)", schema.QuoteIdent(ra.meta), schema.QuoteIdent(schema.Conflicts), schema.QuoteIdent(reassertIndex))))
	}
}

// reassertIndex is the index on _tandem_conflicts (kind, reasserted_at)
// (pkg/schema/meta.go).
const reassertIndex = "reassert_pending"

// violation is one pending home_only_violation.
type violation struct {
	id            uint64
	schema, table string
	pkJSON        string
	local         hlc.Timestamp
	tenant        string
}

// roundResult says what one round did.
type roundResult struct {
	read     int    // violations read
	last     uint64 // the greatest id read
	failed   int    // violations left pending after an error
	firstErr error  // the first of those errors
}

// round handles up to reassertBatch pending violations with ids above
// after. An error of the statements about one violation leaves it pending
// and the round goes on; any other error ends the round.
func (ra *reasserter) round(ctx context.Context, after uint64) (roundResult, error) {
	var r roundResult
	vs, err := ra.pending(ctx, after)
	if err != nil || len(vs) == 0 {
		return r, err
	}
	r.read, r.last = len(vs), vs[len(vs)-1].id
	conn, err := ra.db.Conn(ctx)
	if err != nil {
		return r, err
	}
	defer func() {
		// Closed, not returned to the pool: its session settings must not
		// reach other users of db.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
	}()
	// A local session: the triggers stamp versions (the sink's session
	// variable may only be 0 or NULL here), TIMESTAMP keys read as UTC text
	// as the binlog carries them.
	if _, err := conn.ExecContext(ctx, "SET "+schema.ApplySessionVar+" = 0, SESSION time_zone = '+00:00'"); err != nil {
		return r, err
	}
	ids := make([]string, 0, len(vs))
	handled := map[string]bool{} // violations of the same version of a key: one re-assert
	for _, v := range vs {
		key := v.schema + "\x00" + v.table + "\x00" + v.pkJSON + "\x00" + strconv.FormatUint(uint64(v.local), 10)
		ok, seen := handled[key]
		if !seen {
			outcome, err := ra.handle(ctx, conn, v)
			var me *mysql.MySQLError
			switch {
			case err == nil:
			case errors.As(err, &me) && ctx.Err() == nil:
				outcome = reassertError
				if r.firstErr == nil {
					r.firstErr = err
				}
			default:
				return r, err
			}
			ra.count.WithLabelValues(ra.label(v.tenant), outcome).Inc()
			ok = outcome != reassertError
			handled[key] = ok
		}
		if ok {
			ids = append(ids, strconv.FormatUint(v.id, 10))
		} else {
			r.failed++
		}
	}
	if len(ids) == 0 {
		return r, nil
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("UPDATE %s.%s SET reasserted_at = CURRENT_TIMESTAMP(6) WHERE id IN (%s)",
		schema.QuoteIdent(ra.meta), schema.QuoteIdent(schema.Conflicts), strings.Join(ids, ","))); err != nil {
		return r, fmt.Errorf("mark home_only_violations re-asserted: %w", err)
	}
	return r, nil
}

func (ra *reasserter) pending(ctx context.Context, after uint64) ([]violation, error) {
	rows, err := ra.db.QueryContext(ctx, fmt.Sprintf(
		"SELECT id, COALESCE(schema_name, ''), COALESCE(table_name, ''), COALESCE(pk_json, ''), COALESCE(local_version, 0), COALESCE(tenant, '') "+
			"FROM %s.%s WHERE kind = 'home_only_violation' AND reasserted_at IS NULL AND id > ? ORDER BY id LIMIT %d",
		schema.QuoteIdent(ra.meta), schema.QuoteIdent(schema.Conflicts), reassertBatch), after)
	if err != nil {
		return nil, fmt.Errorf("read pending home_only_violations: %w", err)
	}
	defer rows.Close()
	var vs []violation
	for rows.Next() {
		var v violation
		var local uint64
		if err := rows.Scan(&v.id, &v.schema, &v.table, &v.pkJSON, &local, &v.tenant); err != nil {
			return nil, fmt.Errorf("read pending home_only_violations: %w", err)
		}
		v.local = hlc.Timestamp(local)
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending home_only_violations: %w", err)
	}
	return vs, nil
}

// handle re-asserts one violation and returns its outcome. Errors are
// those a later round may get past (connection, lock wait); a violation
// that can never be re-asserted (table or key gone) is an outcome.
func (ra *reasserter) handle(ctx context.Context, conn *sql.Conn, v violation) (string, error) {
	if v.local.Site() != ra.site || ra.registry.Snapshot().Get(v.tenant).Policy().HomeSite != ra.site {
		// Logged at a third site, or the tenant's policy changed since:
		// the home site (if any) answers for its own versions.
		return reassertNotHome, nil
	}
	tb, err := ra.table(ctx, v.schema, v.table)
	if err != nil {
		if reassertGone(err) {
			ra.log.Warn("cannot re-assert a home version: table unknown", zap.String("table", v.schema+"."+v.table),
				zap.String("tenant", v.tenant), zap.Error(err))
			return reassertFailed, nil
		}
		return "", err
	}
	where, args, err := tb.keyWhere(v.pkJSON)
	if err != nil {
		ra.log.Warn("cannot re-assert a home version: key does not fit the table", zap.String("table", v.schema+"."+v.table),
			zap.String("key", v.pkJSON), zap.String("tenant", v.tenant), zap.Error(err))
		return reassertFailed, nil
	}
	qt := schema.QuoteIdent(v.schema) + "." + schema.QuoteIdent(v.table)
	qv := schema.QuoteIdent(ra.version)
	set := []string{qv + " = " + qv}
	for _, c := range tb.onUpdate {
		set = append(set, schema.QuoteIdent(c)+" = "+schema.QuoteIdent(c)) // keep ON UPDATE CURRENT_TIMESTAMP columns as they are
	}
	res, err := conn.ExecContext(ctx, "UPDATE "+qt+" SET "+strings.Join(set, ", ")+" WHERE "+where+" AND "+qv+" = ?",
		append(args, uint64(v.local))...)
	if err != nil {
		return ra.failed(v, tb, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return reassertRow, nil
	}

	// No row with that version: the home version may be a tombstone.
	var present int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+qt+" WHERE "+where, args...).Scan(&present); err != nil {
		return ra.failed(v, tb, err)
	}
	if present > 0 {
		return reassertSuperseded, nil
	}
	var tomb uint64
	err = conn.QueryRowContext(ctx, "SELECT "+qv+" FROM "+schema.QuoteIdent(v.schema)+"."+schema.QuoteIdent(schema.TombTable(v.table))+" WHERE "+where,
		args...).Scan(&tomb)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Collected since: this site now takes any write of the key, so
		// a delete with the old version could remove at another site a
		// row that is applied here. (Collection waits for a grace period;
		// the violation was pending for longer.)
		ra.log.Warn("cannot re-assert a home delete: its tombstone was collected; the key may differ between sites (the verifier finds it)",
			zap.String("table", v.schema+"."+v.table), zap.String("key", v.pkJSON), zap.String("tenant", v.tenant))
		return reassertFailed, nil
	case err != nil:
		return ra.failed(v, tb, err)
	case hlc.Timestamp(tomb) != v.local:
		return reassertSuperseded, nil // deleted again since: published
	}
	if err := ra.publishDelete(ctx, v, tb, args); err != nil {
		return "", err
	}
	return reassertTombstone, nil
}

// publishDelete produces the delete of the violation's key, with the
// version that won, to the local topic, as the tenant's transaction.
func (ra *reasserter) publishDelete(ctx context.Context, v violation, tb *reassertTable, key []any) error {
	ch := event.Change{Schema: v.schema, Table: v.table, Op: event.OpDelete, Version: v.local}
	for i, c := range tb.pk {
		// The key as text (bytes for binary columns), as keyWhere
		// decoded it: what the sink writes as a literal and compares with
		// the rows it reads back.
		var val event.Value
		switch k := key[i].(type) {
		case []byte:
			val = event.Value{Kind: event.KindBytes, Bytes: k}
		case string:
			val = event.Value{Kind: event.KindString, Bytes: []byte(k)}
		}
		ch.Columns = append(ch.Columns, c)
		ch.PK = append(ch.PK, i)
		ch.Row = append(ch.Row, val)
	}
	if tb.tenant != "" && !slices.Contains(tb.pk, tb.tenant) {
		// The receiving applier checks that the change belongs to the
		// transaction's tenant, by this column.
		ch.Columns = append(ch.Columns, tb.tenant)
		ch.Row = append(ch.Row, event.Value{Kind: event.KindString, Bytes: []byte(v.tenant)})
	}
	stamp, err := ra.clock.Now()
	if err != nil {
		return err
	}
	txn := event.Txn{
		Origin: ra.site, GTID: "reassert:" + strconv.FormatUint(v.id, 10), CommitTime: time.Now().UTC(),
		Stamp: stamp, Tenant: v.tenant, Last: true, Changes: []event.Change{ch},
	}
	payload, err := event.Encode(nil, &txn)
	if err != nil {
		return fmt.Errorf("encode the re-asserted delete of %s.%s %s: %w", v.schema, v.table, v.pkJSON, err)
	}
	return ra.produce(ctx, txn.Key(), payload)
}

// failed turns a statement error into an outcome (the table changed
// under the violation) or an error to retry.
func (ra *reasserter) failed(v violation, tb *reassertTable, err error) (string, error) {
	if reassertGone(err) {
		ra.mu.Lock()
		delete(ra.tables, [2]string{v.schema, v.table})
		ra.mu.Unlock()
		ra.log.Warn("cannot re-assert a home version", zap.String("table", v.schema+"."+v.table),
			zap.String("key", v.pkJSON), zap.String("tenant", v.tenant), zap.Error(err))
		return reassertFailed, nil
	}
	return "", fmt.Errorf("re-assert %s.%s %s: %w", v.schema, v.table, v.pkJSON, err)
}

// reassertGone reports errors that say the table or a column is not (any longer)
// what the violation names, or that a key value does not fit its column.
func reassertGone(err error) bool {
	if errors.Is(err, schema.ErrNoTable) {
		return true
	}
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case 1049, 1054, 1146, // unknown database, column, table
		1292, 1366, 1406, 1264: // a key value the column cannot hold
		return true
	}
	return false
}

// table returns (and caches) what the loop needs about schema.table.
func (ra *reasserter) table(ctx context.Context, schemaName, table string) (*reassertTable, error) {
	k := [2]string{schemaName, table}
	ra.mu.Lock()
	tb := ra.tables[k]
	ra.mu.Unlock()
	if tb != nil {
		return tb, nil
	}
	cols, err := schema.TableColumns(ctx, ra.db, schemaName, table)
	if err != nil {
		return nil, err
	}
	pk, err := schema.PKColumns(ctx, ra.db, schemaName, table)
	if err != nil {
		return nil, err
	}
	if len(pk) == 0 {
		return nil, fmt.Errorf("%s.%s: %w", schemaName, table, schema.ErrNoTable)
	}
	byName := map[string]schema.Column{}
	tb = &reassertTable{pk: pk, binary: make([]bool, len(pk)), tenant: ra.resolver.Column(schemaName, table)}
	for _, c := range cols {
		byName[c.Name] = c
		if !c.Generated && strings.Contains(strings.ToLower(c.Extra), "on update") {
			tb.onUpdate = append(tb.onUpdate, c.Name)
		}
	}
	for i, name := range pk {
		tb.binary[i] = schema.IsBinaryType(byName[name].DataType)
	}
	ra.mu.Lock()
	ra.tables[k] = tb
	ra.mu.Unlock()
	return tb, nil
}

// keyWhere turns a _tandem_conflicts.pk_json (the key values as text,
// bytes as 0x-hex) into "pk1 = ? AND …" and its arguments.
func (tb *reassertTable) keyWhere(pkJSON string) (string, []any, error) {
	var vals []string
	if err := json.Unmarshal([]byte(pkJSON), &vals); err != nil {
		return "", nil, fmt.Errorf("pk_json %q: %w", pkJSON, err)
	}
	if len(vals) != len(tb.pk) {
		return "", nil, fmt.Errorf("pk_json %q has %d values for the %d primary key columns", pkJSON, len(vals), len(tb.pk))
	}
	parts := make([]string, len(vals))
	args := make([]any, len(vals))
	for i, s := range vals {
		parts[i] = schema.QuoteIdent(tb.pk[i]) + " = ?"
		args[i] = s
		if tb.binary[i] {
			b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
			if err != nil {
				return "", nil, fmt.Errorf("pk_json %q: column %s: %w", pkJSON, tb.pk[i], err)
			}
			args[i] = b
		}
	}
	return strings.Join(parts, " AND "), args, nil
}
