package verify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// Row classes of a difference (DESIGN.md §7).
const (
	// ClassInFlight: the newer version has not reached the site yet by its
	// applied watermark; replication will fix it.
	ClassInFlight = "in_flight"
	// ClassDiverged: the site holds an older or different row although its
	// watermark says the winning version was applied, or the same version
	// with different contents (which no replication can ever repair).
	ClassDiverged = "diverged"
	// ClassMissing: the row is absent at the site with no tombstone that
	// explains it.
	ClassMissing = "missing"
	// ClassResurrected: the row is present at the site although a delete
	// with a version at or above the row's won.
	ClassResurrected = "resurrected"
)

// dbSite is a configured site with its connection pool.
type dbSite struct {
	Site
	db *sql.DB
}

func openSite(s Site) (*dbSite, error) {
	db, err := sql.Open("mysql", s.DSN())
	if err != nil {
		return nil, fmt.Errorf("site %s: %w", s.Name, err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxLifetime(10 * time.Minute)
	return &dbSite{Site: s, db: db}, nil
}

// Checker compares tables between two or more sites while they are being
// written (see Run).
type Checker struct {
	cfg   *Config
	sites []*dbSite
	log   *zap.Logger
	hash  string
}

// NewChecker connects to the named sites (all configured sites when names
// is empty). A nil log discards.
func NewChecker(ctx context.Context, cfg *Config, names []string, log *zap.Logger) (_ *Checker, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	c := &Checker{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if len(names) == 0 {
		for _, s := range cfg.Sites {
			names = append(names, s.Name)
		}
	}
	if len(names) < 2 {
		return nil, fmt.Errorf("check: %d site(s) chosen; allowed: at least 2", len(names))
	}
	for _, n := range names {
		s, ok := cfg.SiteByName(n)
		if !ok {
			return nil, fmt.Errorf("check: no site named %q in the configuration", n)
		}
		ds, err := openSite(s)
		if err != nil {
			return nil, err
		}
		c.sites = append(c.sites, ds)
	}
	c.hash = HashMD5
	for _, s := range c.sites {
		if err := s.db.PingContext(ctx); err != nil {
			return nil, fmt.Errorf("check: site %s (%s): %w", s.Name, s.Addr(), err)
		}
	}
	return c, nil
}

// Close closes the connections.
func (c *Checker) Close() error {
	var errs []error
	for _, s := range c.sites {
		errs = append(errs, s.db.Close())
	}
	return errors.Join(errs...)
}

// CheckOptions choose what a check does.
type CheckOptions struct {
	// Tables overrides the configuration's check.tables.
	Tables []string
	// Fenced writes marker rows at every site, waits until all are
	// visible everywhere, then demands equality: nothing counts as in
	// flight and nothing is retried. Use it once writes have stopped.
	Fenced bool
	// Repair applies the winning version of each diverged, missing or
	// resurrected row at the site that lacks it. Without it the repair
	// SQL is only produced (dry run).
	Repair bool
	// Progress, when set, receives a line per table.
	Progress io.Writer
}

// RowDiff is one key that differs at one site after the retries.
type RowDiff struct {
	Table string   `json:"table"`
	Key   []string `json:"key"`
	// KeyColumns name the key's columns; KeyText renders both.
	KeyColumns []string `json:"key_columns"`
	KeyText    string   `json:"key_text"`
	// Site holds the row that is wrong; Winner holds the winning version
	// (a row, or a tombstone when WinnerDeleted).
	Site          string `json:"site"`
	Class         string `json:"class"`
	Winner        string `json:"winner"`
	WinnerVersion string `json:"winner_version"`
	WinnerDeleted bool   `json:"winner_deleted"`
	// States is what every site holds: "row 1732…@1 hash …", "absent",
	// "absent, tombstone …".
	States map[string]string `json:"states"`
	// Watermark is the site's applied watermark for the winner's origin.
	Watermark string `json:"watermark,omitempty"`
	// Note explains a judgement call, e.g. which copy of a version
	// written twice with different contents was taken as the original.
	Note string `json:"note,omitempty"`
}

// Repair is the SQL that makes one site hold a row's winning version.
type Repair struct {
	Site  string   `json:"site"`
	Table string   `json:"table"`
	Key   string   `json:"key"`
	Class string   `json:"class"`
	SQL   []string `json:"sql"`
	// Applied is set when --repair ran it; Skipped says why not.
	Applied bool   `json:"applied"`
	Skipped string `json:"skipped,omitempty"`
}

// TableResult is one table's scan.
type TableResult struct {
	Table      string `json:"table"`
	Rows       int64  `json:"rows"`
	Chunks     int    `json:"chunks"`
	Mismatched int    `json:"mismatched_chunks"`
	Elapsed    Millis `json:"elapsed_ms"`
	// FinalChunkRows is the chunk size the tuning settled on.
	FinalChunkRows int `json:"final_chunk_rows"`
}

// CheckResult is a whole check.
type CheckResult struct {
	Started    time.Time     `json:"started"`
	Elapsed    Millis        `json:"elapsed_ms"`
	Sites      []string      `json:"sites"`
	Mode       string        `json:"mode"`
	HashMode   string        `json:"hash"`
	Tables     []TableResult `json:"tables"`
	Rows       int64         `json:"rows"`
	RowsPerSec float64       `json:"rows_per_sec"`
	// Settled counts keys that differed during the scan and became equal
	// on a re-read (they were in flight).
	Settled     int       `json:"settled"`
	InFlight    int       `json:"in_flight"`
	Diverged    int       `json:"diverged"`
	Missing     int       `json:"missing"`
	Resurrected int       `json:"resurrected"`
	Rechecks    int       `json:"rechecks"`
	Diffs       []RowDiff `json:"diffs"`
	Repairs     []Repair  `json:"repairs"`
	Pass        bool      `json:"pass"`
	Verdict     string    `json:"verdict"`
}

// CheckSummary is the line `verifier check --run DIR` appends.
type CheckSummary struct {
	Started     time.Time `json:"started"`
	Elapsed     Millis    `json:"elapsed_ms"`
	Sites       []string  `json:"sites"`
	Mode        string    `json:"mode"`
	Tables      []string  `json:"tables"`
	Rows        int64     `json:"rows"`
	RowsPerSec  float64   `json:"rows_per_sec"`
	Settled     int       `json:"settled"`
	InFlight    int       `json:"in_flight"`
	Diverged    int       `json:"diverged"`
	Missing     int       `json:"missing"`
	Resurrected int       `json:"resurrected"`
	Pass        bool      `json:"pass"`
	Verdict     string    `json:"verdict"`
}

// Summary is r's line for a run directory.
func (r *CheckResult) Summary() CheckSummary {
	s := CheckSummary{Started: r.Started, Elapsed: r.Elapsed, Sites: r.Sites, Mode: r.Mode, Rows: r.Rows,
		RowsPerSec: r.RowsPerSec, Settled: r.Settled, InFlight: r.InFlight, Diverged: r.Diverged,
		Missing: r.Missing, Resurrected: r.Resurrected, Pass: r.Pass, Verdict: r.Verdict}
	for _, t := range r.Tables {
		s.Tables = append(s.Tables, t.Table)
	}
	return s
}

// Run checks the tables: primary-key chunks checksummed on every site
// inside START TRANSACTION WITH CONSISTENT SNAPSHOT, mismatched chunks
// bisected (in the same snapshots) down to rows, and each differing key
// read again — watermarks first, then rows and tombstones — up to
// check.retries times, check.retry_delay apart, until it is equal (it was
// in flight) or its class is final. Only diverged, missing and
// resurrected rows fail a check; rows still in flight after the retries
// are reported but do not, except in fenced mode.
func (c *Checker) Run(ctx context.Context, opt CheckOptions) (*CheckResult, error) {
	start := time.Now()
	res := &CheckResult{Started: start.UTC(), Mode: "live", HashMode: c.hash, Diffs: []RowDiff{}, Repairs: []Repair{}}
	for _, s := range c.sites {
		res.Sites = append(res.Sites, s.Name)
	}
	patterns := opt.Tables
	if len(patterns) == 0 {
		patterns = c.cfg.Check.Tables
	}
	if len(patterns) == 0 {
		return nil, errors.New("check: no tables chosen; allowed: check.tables in the configuration or --table schema.table")
	}
	tables, err := c.resolveTables(ctx, patterns)
	if err != nil {
		return nil, err
	}
	retries := c.cfg.Check.Retries
	if opt.Fenced {
		res.Mode = "fenced"
		retries = 0
		if err := c.fence(ctx); err != nil {
			return nil, err
		}
	}
	pend := &pending{keys: map[string]*keyState{}}
	var models []*tableModel
	for _, ref := range tables {
		tm, err := c.model(ctx, ref)
		if err != nil {
			return nil, err
		}
		models = append(models, tm)
		tr, err := c.scanTable(ctx, tm, pend)
		if err != nil {
			return nil, err
		}
		res.Tables = append(res.Tables, tr)
		res.Rows += tr.Rows
		if opt.Progress != nil {
			fmt.Fprintf(opt.Progress, "check %s: %d rows in %s (%.0f rows/s), %d chunks (%d mismatched, final size %d)\n",
				tr.Table, tr.Rows, round(tr.Elapsed.D()), float64(tr.Rows)/max(tr.Elapsed.D().Seconds(), 1e-9),
				tr.Chunks, tr.Mismatched, tr.FinalChunkRows)
		}
	}
	scanned := time.Since(start)
	res.RowsPerSec = float64(res.Rows) / max(scanned.Seconds(), 1e-9)

	if err := c.settle(ctx, pend, retries, res); err != nil {
		return nil, err
	}
	c.collect(pend, res)
	if err := c.repairs(ctx, pend, res, opt.Repair); err != nil {
		return nil, err
	}
	res.Elapsed = Millis(time.Since(start))
	bad := res.Diverged + res.Missing + res.Resurrected
	if opt.Fenced {
		bad += res.InFlight
	}
	res.Pass = bad == 0
	switch {
	case res.Pass && res.InFlight > 0:
		res.Verdict = fmt.Sprintf("consistent; %d row(s) still in flight after %d re-reads", res.InFlight, retries)
	case res.Pass:
		res.Verdict = fmt.Sprintf("consistent: %d rows equal at %s", res.Rows, strings.Join(res.Sites, ", "))
	default:
		res.Verdict = fmt.Sprintf("inconsistent: %d diverged, %d missing, %d resurrected", res.Diverged, res.Missing, res.Resurrected)
		if opt.Fenced && res.InFlight > 0 {
			res.Verdict += fmt.Sprintf(", %d not equal after the fence", res.InFlight)
		}
	}
	return res, nil
}

// resolveTables expands patterns at the first site; Tandem's own tables
// are never checked.
func (c *Checker) resolveTables(ctx context.Context, patterns []string) ([]schema.TableRef, error) {
	rows, err := c.sites[0].db.QueryContext(ctx,
		"SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "+
			"AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY TABLE_SCHEMA, TABLE_NAME")
	if err != nil {
		return nil, fmt.Errorf("check: list tables at %s: %w", c.sites[0].Name, err)
	}
	defer rows.Close()
	var out []schema.TableRef
	for rows.Next() {
		var s, t string
		if err := rows.Scan(&s, &t); err != nil {
			return nil, fmt.Errorf("check: list tables at %s: %w", c.sites[0].Name, err)
		}
		if schema.IsInternal(t) || s == c.cfg.MetaSchema {
			continue
		}
		for _, p := range patterns {
			sp, tp, _ := strings.Cut(p, ".")
			ms, _ := path.Match(sp, s)
			mt, _ := path.Match(tp, t)
			if ms && mt {
				out = append(out, schema.TableRef{Schema: s, Table: t})
				break
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("check: list tables at %s: %w", c.sites[0].Name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("check: no table at %s matches %s", c.sites[0].Name, strings.Join(patterns, ", "))
	}
	return out, nil
}

// model loads a table's definition at every site and insists they agree:
// comparing rows of differently shaped tables would report noise.
func (c *Checker) model(ctx context.Context, ref schema.TableRef) (*tableModel, error) {
	var first *tableModel
	for _, s := range c.sites {
		tm, err := loadTable(ctx, s.db, ref.Schema, ref.Table, c.cfg.VersionColumn)
		if err != nil {
			return nil, fmt.Errorf("check: site %s: %w", s.Name, err)
		}
		if first == nil {
			first = tm
			continue
		}
		if d := first.sameShape(tm); d != "" {
			return nil, fmt.Errorf("check: table %s differs in shape between %s and %s: %s; align the schemas first",
				ref, c.sites[0].Name, s.Name, d)
		}
		first.hasTomb = first.hasTomb && tm.hasTomb
	}
	if k := c.cfg.Check; k.TenantColumn != "" {
		for _, col := range first.cols {
			if col.Name == k.TenantColumn {
				first.tenantCol, first.tenantVal = k.TenantColumn, k.Tenant
			}
		}
	}
	return first, nil
}

// chunkSum is one site's checksum of a range.
type chunkSum struct {
	count int64
	xor   uint64
}

func sumsEqual(s []chunkSum) bool {
	for _, x := range s[1:] {
		if x != s[0] {
			return false
		}
	}
	return true
}

// snapshot is one consistent-snapshot transaction per site, shared by a
// chunk's checksum and its bisection, so that every query of the chunk at
// one site sees the same data.
type snapshot struct {
	conns []*sql.Conn
}

func (c *Checker) openSnapshot(ctx context.Context) (*snapshot, error) {
	sn := &snapshot{conns: make([]*sql.Conn, len(c.sites))}
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range c.sites {
		g.Go(func() error {
			conn, err := s.db.Conn(gctx)
			if err != nil {
				return fmt.Errorf("check: site %s (%s): %w", s.Name, s.Addr(), err)
			}
			sn.conns[i] = conn
			if _, err := conn.ExecContext(gctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
				return fmt.Errorf("check: site %s: start snapshot: %w", s.Name, err)
			}
			return nil
		})
	}
	err := g.Wait()
	if err != nil {
		sn.close()
		return nil, err
	}
	return sn, nil
}

func (sn *snapshot) close() {
	for _, conn := range sn.conns {
		if conn != nil {
			// COMMIT of a read-only snapshot ends it; a failure means the
			// connection is broken, and Close discards it.
			_, _ = conn.ExecContext(context.Background(), "COMMIT")
			conn.Close()
		}
	}
}

// scanTable checksums tm chunk by chunk and adds every differing key to
// pend.
func (c *Checker) scanTable(ctx context.Context, tm *tableModel, pend *pending) (TableResult, error) {
	tr := TableResult{Table: tm.String()}
	start := time.Now()
	size := c.cfg.Check.ChunkRows
	var lo bound
	sumSQL := "SELECT COUNT(*), COALESCE(BIT_XOR(" + tm.rowHash() + "), 0) FROM " + tm.quoted()
	var inBoundary, inSnapshot, inSum, inBisect time.Duration
	for {
		t0 := time.Now()
		hi, err := c.boundary(ctx, c.sites[0].db, tm, lo, nil, size-1)
		if err != nil {
			return tr, err
		}
		t1 := time.Now()
		sn, err := c.openSnapshot(ctx)
		if err != nil {
			return tr, err
		}
		t2 := time.Now()
		sums, err := c.checksums(ctx, sn, tm, sumSQL, lo, hi)
		elapsed := time.Since(t2)
		inBoundary, inSnapshot, inSum = inBoundary+t1.Sub(t0), inSnapshot+t2.Sub(t1), inSum+elapsed
		if err == nil && !sumsEqual(sums) {
			tr.Mismatched++
			t3 := time.Now()
			err = c.bisect(ctx, sn, tm, sumSQL, lo, hi, sums, pend, 0)
			inBisect += time.Since(t3)
		}
		sn.close()
		if err != nil {
			return tr, err
		}
		tr.Chunks++
		tr.Rows += sums[0].count
		var most int64
		for _, s := range sums {
			most = max(most, s.count)
		}
		size = c.tune(size, most, elapsed)
		if hi == nil {
			break
		}
		lo = hi
	}
	tr.Elapsed = Millis(time.Since(start))
	tr.FinalChunkRows = size
	c.log.Debug("table scanned", zap.String("table", tm.String()), zap.Int64("rows", tr.Rows), zap.Int("chunks", tr.Chunks),
		zap.Duration("boundaries", inBoundary), zap.Duration("snapshots", inSnapshot), zap.Duration("checksums", inSum),
		zap.Duration("bisection", inBisect), zap.Int("final_chunk_rows", size))
	return tr, nil
}

// tune moves the chunk size towards check.chunk_time: at most doubling or
// halving per chunk (as pt-table-checksum does), so one slow or fast
// chunk does not swing it.
func (c *Checker) tune(size int, rows int64, took time.Duration) int {
	target := c.cfg.Check.ChunkTime.Duration()
	next := 2 * size
	if took > 0 && rows > 0 {
		want := float64(rows) / took.Seconds() * target.Seconds()
		next = int(min(max(want, float64(size)/2), float64(size)*2))
	}
	return max(min(next, c.cfg.Check.MaxChunkRows), 1)
}

// boundary returns the key offset rows past lo (within hi), or nil when
// the range holds no such row.
func (c *Checker) boundary(ctx context.Context, q queryer, tm *tableModel, lo, hi bound, offset int) (bound, error) {
	where, err := tm.rangeWhere(lo, hi)
	if err != nil {
		return nil, err
	}
	query := "SELECT " + tm.pkList() + " FROM " + tm.quoted() + where + " ORDER BY " + tm.pkList() +
		" LIMIT 1 OFFSET " + strconv.Itoa(max(offset, 0))
	vals := make([]sql.RawBytes, len(tm.pk))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("check: %s: chunk boundary: %w", tm, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, fmt.Errorf("check: %s: chunk boundary: %w", tm, err)
	}
	b := make(bound, len(vals))
	for i, v := range vals {
		b[i] = string(v)
	}
	return b, rows.Err()
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// checksums runs the range checksum at every site in parallel.
func (c *Checker) checksums(ctx context.Context, sn *snapshot, tm *tableModel, sumSQL string, lo, hi bound) ([]chunkSum, error) {
	where, err := tm.rangeWhere(lo, hi)
	if err != nil {
		return nil, err
	}
	q := sumSQL + where
	sums := make([]chunkSum, len(c.sites))
	g, gctx := errgroup.WithContext(ctx)
	for i := range c.sites {
		g.Go(func() error {
			if err := sn.conns[i].QueryRowContext(gctx, q).Scan(&sums[i].count, &sums[i].xor); err != nil {
				return fmt.Errorf("check: site %s: checksum %s: %w", c.sites[i].Name, tm, err)
			}
			return nil
		})
	}
	return sums, g.Wait()
}

// maxDepth bounds bisection; a range still mismatched below it is compared
// row by row whatever its size.
const maxDepth = 40

// bisect narrows a mismatched range (lo, hi] to the rows that differ:
// halves split at the median key of the site holding the most rows, each
// checksummed in the chunk's snapshots, recursing into those that differ
// until a range holds at most check.leaf_rows rows.
func (c *Checker) bisect(ctx context.Context, sn *snapshot, tm *tableModel, sumSQL string, lo, hi bound, sums []chunkSum, pend *pending, depth int) error {
	most, at := int64(0), 0
	for i, s := range sums {
		if s.count > most {
			most, at = s.count, i
		}
	}
	if most <= int64(c.cfg.Check.LeafRows) || depth >= maxDepth {
		return c.compareRows(ctx, sn, tm, lo, hi, pend)
	}
	mid, err := c.boundary(ctx, sn.conns[at], tm, lo, hi, int(most/2)-1)
	if err != nil {
		return err
	}
	if mid == nil {
		return c.compareRows(ctx, sn, tm, lo, hi, pend)
	}
	for _, half := range [][2]bound{{lo, mid}, {mid, hi}} {
		hs, err := c.checksums(ctx, sn, tm, sumSQL, half[0], half[1])
		if err != nil {
			return err
		}
		if !sumsEqual(hs) {
			if err := c.bisect(ctx, sn, tm, sumSQL, half[0], half[1], hs, pend, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// rowObs is what one site holds for one key.
type rowObs struct {
	present bool
	version uint64
	hash    uint64
	tomb    uint64 // tombstone version, 0 when none
}

// keyState is one differing key.
type keyState struct {
	tm    *tableModel
	key   bound
	obs   []rowObs
	class []string // per site: "" (holds the winner) or a Class
	// certain: same version, different contents; no re-read changes
	// that verdict short of a new write.
	certain bool
	// ambiguous: same version, different contents, and no majority; the
	// writing site's copy was taken as the winner.
	ambiguous bool
	winner    int // site index holding the winning version
	winVer    uint64
	winTomb   bool
	wm        []uint64 // per site: watermark for the winner's origin
}

type pending struct {
	mu    sync.Mutex
	keys  map[string]*keyState
	order []string
}

func (p *pending) add(tm *tableModel, key bound, nsites int) {
	id := tm.String() + "\x00" + keyString(key)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.keys[id]; ok {
		return
	}
	p.keys[id] = &keyState{tm: tm, key: key, obs: make([]rowObs, nsites)}
	p.order = append(p.order, id)
}

// compareRows reads (key, version, hash) of a range at every site and
// adds the keys that differ to pend.
func (c *Checker) compareRows(ctx context.Context, sn *snapshot, tm *tableModel, lo, hi bound, pend *pending) error {
	where, err := tm.rangeWhere(lo, hi)
	if err != nil {
		return err
	}
	q := "SELECT " + tm.pkList() + ", " + quoteIdent(tm.version) + ", " + tm.rowHash() +
		" FROM " + tm.quoted() + where + " ORDER BY " + tm.pkList()
	perSite := make([]map[string]rowObs, len(c.sites))
	keys := make([]map[string]bound, len(c.sites))
	g, gctx := errgroup.WithContext(ctx)
	for i := range c.sites {
		g.Go(func() error {
			m, k, err := readRows(gctx, sn.conns[i], q, len(tm.pk))
			if err != nil {
				return fmt.Errorf("check: site %s: rows of %s: %w", c.sites[i].Name, tm, err)
			}
			perSite[i], keys[i] = m, k
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i := range c.sites {
		for id, k := range keys[i] {
			differs := false
			for j := range c.sites {
				a, b := perSite[i][id], perSite[j][id]
				if a != b {
					differs = true
					break
				}
			}
			if differs {
				pend.add(tm, k, len(c.sites))
			}
		}
	}
	return nil
}

// readRows reads (pk…, version, hash) rows into a map by key.
func readRows(ctx context.Context, q queryer, query string, npk int) (map[string]rowObs, map[string]bound, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	vals := make([]sql.RawBytes, npk+2)
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	out, keys := map[string]rowObs{}, map[string]bound{}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, err
		}
		k := make(bound, npk)
		for i := range k {
			k[i] = string(vals[i])
		}
		ver, err := strconv.ParseUint(string(vals[npk]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("version %q: %w", vals[npk], err)
		}
		h, err := strconv.ParseUint(string(vals[npk+1]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("row hash %q: %w", vals[npk+1], err)
		}
		id := keyString(k)
		out[id] = rowObs{present: true, version: ver, hash: h}
		keys[id] = k
	}
	return out, keys, rows.Err()
}

// settle re-reads the differing keys until they are equal or their class
// is final, at most retries times after the first read.
func (c *Checker) settle(ctx context.Context, pend *pending, retries int, res *CheckResult) error {
	for attempt := 0; len(pend.keys) > 0; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(c.cfg.Check.RetryDelay.Duration())
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			res.Rechecks++
		}
		wms, err := c.watermarks(ctx)
		if err != nil {
			return err
		}
		if err := c.observe(ctx, pend); err != nil {
			return err
		}
		allCertain := true
		for _, id := range slices.Clone(pend.order) {
			ks := pend.keys[id]
			if c.classify(ks, wms) {
				delete(pend.keys, id)
				res.Settled++
				continue
			}
			if !ks.certain {
				allCertain = false
			}
		}
		pend.order = slices.DeleteFunc(pend.order, func(id string) bool { _, ok := pend.keys[id]; return !ok })
		if attempt >= retries || allCertain {
			break
		}
	}
	return nil
}

// watermarks reads every site's applied watermark per origin. Read before
// the rows: whatever a watermark claims applied was applied before the
// rows were read.
func (c *Checker) watermarks(ctx context.Context) ([]map[uint8]uint64, error) {
	out := make([]map[uint8]uint64, len(c.sites))
	q := "SELECT origin, applied_hlc FROM " + qualified(c.cfg.MetaSchema, schema.Watermarks)
	for i, s := range c.sites {
		out[i] = map[uint8]uint64{}
		rows, err := s.db.QueryContext(ctx, q)
		if isNoTable(err) {
			continue // never applied anything: every newer version is in flight
		}
		if err != nil {
			return nil, fmt.Errorf("check: site %s: read watermarks: %w", s.Name, err)
		}
		for rows.Next() {
			var o uint8
			var v uint64
			if err := rows.Scan(&o, &v); err != nil {
				rows.Close()
				return nil, fmt.Errorf("check: site %s: read watermarks: %w", s.Name, err)
			}
			out[i][o] = v
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("check: site %s: read watermarks: %w", s.Name, err)
		}
	}
	return out, nil
}

// observe reads the current row and tombstone of every pending key at
// every site.
func (c *Checker) observe(ctx context.Context, pend *pending) error {
	byTable := map[*tableModel][]*keyState{}
	var tables []*tableModel
	for _, id := range pend.order {
		ks := pend.keys[id]
		if _, ok := byTable[ks.tm]; !ok {
			tables = append(tables, ks.tm)
		}
		byTable[ks.tm] = append(byTable[ks.tm], ks)
	}
	const batch = 200
	g, gctx := errgroup.WithContext(ctx)
	for si := range c.sites {
		g.Go(func() error {
			db := c.sites[si].db
			for _, tm := range tables {
				list := byTable[tm]
				for lo := 0; lo < len(list); lo += batch {
					part := list[lo:min(lo+batch, len(list))]
					keys := make([]bound, len(part))
					for i, ks := range part {
						keys[i] = ks.key
					}
					where, err := tm.keyWhere(keys)
					if err != nil {
						return err
					}
					q := "SELECT " + tm.pkList() + ", " + quoteIdent(tm.version) + ", " + tm.rowHash() +
						" FROM " + tm.quoted() + " WHERE " + where
					got, _, err := readRows(gctx, db, q, len(tm.pk))
					if err != nil {
						return fmt.Errorf("check: site %s: re-read %s: %w", c.sites[si].Name, tm, err)
					}
					tombs := map[string]uint64{}
					if tm.hasTomb {
						tq := "SELECT " + tm.pkList() + ", " + quoteIdent(tm.version) + ", 0 FROM " + tm.tombQuoted() + " WHERE " + where
						tr, _, err := readRows(gctx, db, tq, len(tm.pk))
						if err != nil && !isNoTable(err) {
							return fmt.Errorf("check: site %s: tombstones of %s: %w", c.sites[si].Name, tm, err)
						}
						for id, o := range tr {
							tombs[id] = o.version
						}
					}
					for _, ks := range part {
						id := keyString(ks.key)
						o := got[id]
						o.tomb = tombs[id]
						ks.obs[si] = o
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// classify decides, from the observations and the watermarks, which sites
// hold the winning version and what is wrong with the others. It returns
// true when every site agrees (the key settled).
func (c *Checker) classify(ks *keyState, wms []map[uint8]uint64) bool {
	var maxRow, maxTomb uint64
	for _, o := range ks.obs {
		if o.present {
			maxRow = max(maxRow, o.version)
		}
		maxTomb = max(maxTomb, o.tomb)
	}
	ks.winTomb = maxTomb > maxRow
	ks.winVer = maxRow
	if ks.winTomb {
		ks.winVer = maxTomb
	}
	origin := hlc.Timestamp(ks.winVer).Site()
	// The winning contents: the site that wrote the version holds the
	// original; otherwise the first site holding the version.
	ks.winner = -1
	for i, o := range ks.obs {
		holds := (ks.winTomb && o.tomb == ks.winVer) || (!ks.winTomb && o.present && o.version == ks.winVer)
		if !holds {
			continue
		}
		if ks.winner < 0 || c.sites[i].ID == origin {
			ks.winner = i
		}
	}
	if ks.winner < 0 {
		// Absent everywhere without tombstones: deleted meanwhile by a
		// table without tombstones. Nothing differs any more.
		return true
	}
	var winHash uint64
	ks.ambiguous = false
	if !ks.winTomb {
		winHash = ks.obs[ks.winner].hash
		// Several sites hold the winning version with different contents
		// (written behind the replicator's back): a strict majority of
		// them decides; without one, the writing site's copy is assumed
		// to be the original.
		votes, holders := map[uint64]int{}, 0
		for _, o := range ks.obs {
			if o.present && o.version == ks.winVer {
				votes[o.hash]++
				holders++
			}
		}
		if len(votes) > 1 {
			ks.ambiguous = true
			for h, n := range votes {
				if 2*n > holders {
					winHash, ks.ambiguous = h, false
					for i, o := range ks.obs {
						if o.present && o.version == ks.winVer && o.hash == h && (ks.obs[ks.winner].hash != h || c.sites[i].ID == origin) {
							ks.winner = i
						}
					}
				}
			}
		}
	}
	ks.class = make([]string, len(ks.obs))
	ks.wm = make([]uint64, len(ks.obs))
	ks.certain = false
	equal := true
	for i, o := range ks.obs {
		ks.wm[i] = wms[i][origin]
		// In flight: another site wrote the winning version and this
		// site's watermark for that site has not passed its wall time.
		inFlight := c.sites[i].ID != origin &&
			hlc.Timestamp(ks.winVer).WallMillis() >= hlc.Timestamp(ks.wm[i]).WallMillis()
		var class string
		switch {
		case ks.winTomb && !o.present:
		case ks.winTomb && inFlight:
			class = ClassInFlight
		case ks.winTomb:
			class = ClassResurrected
		case o.present && o.version == ks.winVer && o.hash == winHash:
		case o.present && o.version == ks.winVer:
			class = ClassDiverged
			ks.certain = true
		case inFlight:
			class = ClassInFlight
		case o.present:
			class = ClassDiverged
		default:
			class = ClassMissing
		}
		ks.class[i] = class
		if class != "" {
			equal = false
		}
	}
	return equal
}

func fmtVersion(v uint64) string {
	if v == 0 {
		return "0"
	}
	t := hlc.Timestamp(v)
	return fmt.Sprintf("%d (%s, %s)", v, t, t.Time().Format("15:04:05.000"))
}

func (tm *tableModel) keyText(k bound) string {
	parts := make([]string, len(k))
	for i, c := range tm.pk {
		v := k[i]
		switch c.kind {
		case kInt, kDecimal, kDouble:
		case kBit:
			v = bitLiteral(v)
		default:
			v = strconv.Quote(v)
		}
		parts[i] = c.Name + "=" + v
	}
	return strings.Join(parts, ", ")
}

// collect turns the keys still pending into RowDiffs and counts.
func (c *Checker) collect(pend *pending, res *CheckResult) {
	for _, id := range pend.order {
		ks := pend.keys[id]
		states := map[string]string{}
		for i, o := range ks.obs {
			var s string
			switch {
			case o.present:
				s = fmt.Sprintf("row version %s hash %016x", fmtVersion(o.version), o.hash)
			default:
				s = "absent"
			}
			if o.tomb != 0 {
				s += ", tombstone " + fmtVersion(o.tomb)
			}
			states[c.sites[i].Name] = s
		}
		cols := make([]string, len(ks.tm.pk))
		for i, col := range ks.tm.pk {
			cols[i] = col.Name
		}
		for i, class := range ks.class {
			if class == "" {
				continue
			}
			switch class {
			case ClassInFlight:
				res.InFlight++
			case ClassDiverged:
				res.Diverged++
			case ClassMissing:
				res.Missing++
			case ClassResurrected:
				res.Resurrected++
			}
			d := RowDiff{Table: ks.tm.String(), Key: ks.key, KeyColumns: cols, KeyText: ks.tm.keyText(ks.key),
				Site: c.sites[i].Name, Class: class, Winner: c.sites[ks.winner].Name,
				WinnerVersion: fmtVersion(ks.winVer), WinnerDeleted: ks.winTomb, States: states}
			if c.sites[i].ID != hlc.Timestamp(ks.winVer).Site() {
				d.Watermark = fmtVersion(ks.wm[i])
			}
			if ks.ambiguous {
				d.Note = fmt.Sprintf("the sites hold version %d with different contents and no majority; %s's copy is taken as the original because that site wrote the version (or holds it first); review before --repair",
					ks.winVer, c.sites[ks.winner].Name)
			}
			res.Diffs = append(res.Diffs, d)
		}
	}
}
