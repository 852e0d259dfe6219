package verify

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fixture is two prepared sites holding identical rows, written in sink
// mode with explicit versions, and no replicator: the test plants every
// difference itself and knows the exact answer.
type fixture struct {
	t      *testing.T
	db     string
	meta   string
	srv    []*testenv.MariaDB
	conn   []*sql.DB
	cfg    *Config
	rows   map[string]int // table → rows per site
	nextID int
}

// Tables exercising composite keys, every kind of column the hash
// normalises, NULLs and separators inside values.
var fixtureDDL = []string{
	"CREATE TABLE `%s`.items (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, qty INT NOT NULL, " +
		"price DECIMAL(12,2) NOT NULL, note TEXT NULL, updated DATETIME(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
	"CREATE TABLE `%s`.pairs (tenant VARCHAR(32) NOT NULL, seq BIGINT UNSIGNED NOT NULL, val VARCHAR(255) NULL, n DOUBLE NULL, " +
		"PRIMARY KEY (tenant, seq)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
	"CREATE TABLE `%s`.odd (k DECIMAL(30,10) NOT NULL PRIMARY KEY, f FLOAT NULL, b VARBINARY(16) NULL, bt BIT(12) NULL, " +
		"l1 CHAR(8) CHARACTER SET latin1 NULL, ts TIMESTAMP(3) NULL, js JSON NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
}

func newFixture(t *testing.T, rowsPerTable int) *fixture {
	t.Helper()
	f := &fixture{t: t, srv: []*testenv.MariaDB{testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2)}, rows: map[string]int{}}
	f.db = testenv.NewDatabaseOn(t, "vc", f.srv...)
	f.meta = f.db + "_m"
	for _, s := range f.srv {
		s.CreateDatabase(t, f.meta)
		for _, q := range fixtureDDL {
			s.Exec(t, fmt.Sprintf(q, f.db))
		}
	}
	ctx := context.Background()
	for i, s := range f.srv {
		db := s.DB(t, "")
		f.conn = append(f.conn, db)
		var refs []schema.TableRef
		for _, tb := range []string{"items", "pairs", "odd"} {
			refs = append(refs, schema.TableRef{Schema: f.db, Table: tb})
		}
		plan, err := schema.Inspect(ctx, db, schema.Options{Site: uint8(i + 1), MetaSchema: f.meta, Tables: refs})
		if err != nil {
			t.Fatal(err)
		}
		if err := plan.Apply(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	f.cfg = DefaultConfig()
	f.cfg.MetaSchema = f.meta
	for i, s := range f.srv {
		f.cfg.Sites = append(f.cfg.Sites, Site{Name: fmt.Sprintf("s%d", i+1), ID: uint8(i + 1), Host: s.Host, Port: s.Port, User: s.User})
	}
	f.cfg.Check.Tables = []string{f.db + ".*"}
	f.cfg.Check.Retries = 0
	if err := f.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f.fill(rowsPerTable)
	// Watermarks far ahead: nothing is in flight unless a test says so.
	f.watermark(0, time.Now().Add(time.Hour))
	f.watermark(1, time.Now().Add(time.Hour))
	return f
}

// both runs q at both sites in sink mode.
func (f *fixture) both(q string) {
	f.t.Helper()
	f.at(0, q)
	f.at(1, q)
}

// at runs statements at site i in sink mode (@tandem_apply = 1): the
// triggers keep versions and tombstones as written.
func (f *fixture) at(i int, qs ...string) {
	f.t.Helper()
	ctx := context.Background()
	conn, err := f.conn[i].Conn(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET @tandem_apply = 1"); err != nil {
		f.t.Fatal(err)
	}
	defer conn.ExecContext(ctx, "SET @tandem_apply = NULL")
	for _, q := range qs {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			f.t.Fatalf("site %d: %s: %v", i+1, q, err)
		}
	}
}

func version(t time.Time, site uint8) uint64 { return uint64(hlc.New(uint64(t.UnixMilli()), 0, site)) }

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func (f *fixture) fill(n int) {
	r := rand.New(rand.NewPCG(7, 7))
	words := []string{"a#b", "", "naïve", "quote'", "back\\slash", "日本", "x"}
	var items, pairs, odd []string
	for i := 1; i <= n; i++ {
		v := version(base.Add(time.Duration(i)*time.Millisecond), uint8(1+i%2))
		note := "NULL"
		if i%5 != 0 {
			note = binaryLiteral(words[r.IntN(len(words))] + "#" + words[r.IntN(len(words))])
		}
		items = append(items, fmt.Sprintf("(%d, %s, %d, '%d.%02d', %s, '2026-01-02 03:04:05.%06d', %d)",
			i, binaryLiteral(words[r.IntN(len(words))]), r.IntN(1000), r.IntN(10000), r.IntN(100), note, i, v))
		val := "NULL"
		if i%3 != 0 {
			val = binaryLiteral(words[r.IntN(len(words))])
		}
		pairs = append(pairs, fmt.Sprintf("(%s, %d, %s, %g, %d)", binaryLiteral(fmt.Sprintf("t%02d", i%7)), i, val, r.NormFloat64()*1e6, v))
		odd = append(odd, fmt.Sprintf("('%d.%010d', %g, %s, %d, %s, '2026-01-02 03:04:05.%03d', '{\"i\": %d}', %d)",
			i, r.IntN(1e9), r.Float32(), binaryLiteral(string([]byte{byte(i), 0, '#', byte(r.IntN(256))})), r.IntN(4096),
			binaryLiteral(fmt.Sprintf("l%d", i)), i%1000, i, v))
	}
	v := quoteIdent(schema.DefaultVersionColumn)
	for _, batch := range chunks(items, 500) {
		f.both(fmt.Sprintf("INSERT INTO `%s`.items (id, name, qty, price, note, updated, %s) VALUES %s", f.db, v, strings.Join(batch, ", ")))
	}
	for _, batch := range chunks(pairs, 500) {
		f.both(fmt.Sprintf("INSERT INTO `%s`.pairs (tenant, seq, val, n, %s) VALUES %s", f.db, v, strings.Join(batch, ", ")))
	}
	for _, batch := range chunks(odd, 500) {
		f.both(fmt.Sprintf("INSERT INTO `%s`.odd (k, f, b, bt, l1, ts, js, %s) VALUES %s", f.db, v, strings.Join(batch, ", ")))
	}
	f.rows = map[string]int{"items": n, "pairs": n, "odd": n}
	f.nextID = n + 1
}

func chunks(s []string, n int) [][]string {
	var out [][]string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}

func (f *fixture) watermark(site int, until time.Time) {
	f.t.Helper()
	f.at(site, fmt.Sprintf("INSERT INTO `%s`.`_tandem_watermarks` (origin, applied_hlc) VALUES (1, %d), (2, %d) "+
		"ON DUPLICATE KEY UPDATE applied_hlc = VALUES(applied_hlc)", f.meta, version(until, 1), version(until, 2)))
}

func (f *fixture) check(opt CheckOptions) *CheckResult {
	f.t.Helper()
	ctx := context.Background()
	c, err := NewChecker(ctx, f.cfg, nil, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Run(ctx, opt)
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

type want struct {
	table, key, site, class string
}

func diffsOf(res *CheckResult) []want {
	var got []want
	for _, d := range res.Diffs {
		got = append(got, want{d.Table[strings.IndexByte(d.Table, '.')+1:], d.KeyText, d.Site, d.Class})
	}
	slices.SortFunc(got, func(a, b want) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return got
}

// TestCheckFindsEveryPlantedDifference plants each class of difference
// at random keys of a table much larger than a chunk, and demands exactly
// those keys with exactly those classes, then repairs and finds nothing.
func TestCheckFindsEveryPlantedDifference(t *testing.T) {
	f := newFixture(t, 3000)
	f.cfg.Check.ChunkRows = 200
	f.cfg.Check.LeafRows = 16
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	perm := r.Perm(3000)
	key := func(i int) int { return perm[i] + 1 }
	var exp []want
	later := version(base.Add(time.Hour), 1)
	v := schema.DefaultVersionColumn
	// Diverged, same version: contents changed behind the replicator's
	// back at site 2.
	for i := 0; i < 3; i++ {
		k := key(i)
		f.at(1, fmt.Sprintf("UPDATE `%s`.items SET qty = qty + 1000 WHERE id = %d", f.db, k))
		exp = append(exp, want{"items", fmt.Sprintf("id=%d", k), "s2", ClassDiverged})
	}
	// Diverged, older version at site 2 although its watermark passed
	// site 1's newer write.
	k := key(3)
	f.at(0, fmt.Sprintf("UPDATE `%s`.items SET name = 'newer', %s = %d WHERE id = %d", f.db, v, later, k))
	exp = append(exp, want{"items", fmt.Sprintf("id=%d", k), "s2", ClassDiverged})
	// Missing at site 2: deleted there without a tombstone.
	k = key(4)
	f.at(1, fmt.Sprintf("DELETE FROM `%s`.items WHERE id = %d", f.db, k))
	exp = append(exp, want{"items", fmt.Sprintf("id=%d", k), "s2", ClassMissing})
	// Resurrected at site 2: site 1 deleted the row (tombstone newer
	// than the row), site 2 still has it.
	k = key(5)
	f.at(0, fmt.Sprintf("DELETE FROM `%s`.items WHERE id = %d", f.db, k),
		fmt.Sprintf("INSERT INTO `%s`.`_tandem_tomb_items` (id, %s) VALUES (%d, %d)", f.db, v, k, later))
	exp = append(exp, want{"items", fmt.Sprintf("id=%d", k), "s2", ClassResurrected})
	// Composite key, present only at site 1 with a new row: missing at 2.
	f.at(0, fmt.Sprintf("INSERT INTO `%s`.pairs (tenant, seq, val, n, %s) VALUES ('t99', 99999, NULL, NULL, %d)", f.db, v, later))
	exp = append(exp, want{"pairs", `tenant="t99", seq=99999`, "s2", ClassMissing})
	// A NULL becoming '' is a difference (CONCAT_WS alone would miss it).
	k = key(6)
	f.at(1, fmt.Sprintf("UPDATE `%s`.pairs SET val = IF(val IS NULL, '', NULL) WHERE seq = %d", f.db, k))
	exp = append(exp, want{"pairs", fmt.Sprintf(`tenant="t%02d", seq=%d`, k%7, k), "s2", ClassDiverged})
	// A separator moved between two columns is a difference.
	k = key(7)
	f.at(0, fmt.Sprintf("UPDATE `%s`.items SET name = 'p#q', note = 'r' WHERE id = %d", f.db, k))
	f.at(1, fmt.Sprintf("UPDATE `%s`.items SET name = 'p', note = 'q#r' WHERE id = %d", f.db, k))
	exp = append(exp, want{"items", fmt.Sprintf("id=%d", k), "s1", ClassDiverged}) // origin decides: even keys are site 1's
	// FLOAT differing in the last bit, BIT, latin1 text, TIMESTAMP.
	for i, set := range []string{"f = f + 0.0000001", "bt = bt ^ 1", "l1 = 'zz'", "ts = ts + INTERVAL 1 SECOND"} {
		var kk string
		if err := f.conn[1].QueryRow(fmt.Sprintf("SELECT k FROM `%s`.odd ORDER BY k LIMIT 1 OFFSET %d", f.db, 100*(i+1))).Scan(&kk); err != nil {
			t.Fatal(err)
		}
		f.at(1, fmt.Sprintf("UPDATE `%s`.odd SET %s WHERE k = %s", f.db, set, kk))
		exp = append(exp, want{"odd", "k=" + kk, "s2", ClassDiverged})
	}
	res := f.check(CheckOptions{})
	got := diffsOf(res)
	expected := normalise(f, exp)
	if !slices.Equal(got, expected) {
		t.Fatalf("diffs:\n got  %v\n want %v\n%s", got, expected, textOf(res, f.cfg))
	}
	if res.Pass || res.Rows != 9000 {
		t.Fatalf("pass %v rows %d; want a failing check over 9000 rows (site 1)\n%s", res.Pass, res.Rows, textOf(res, f.cfg))
	}
	t.Logf("%s", textOf(res, f.cfg))

	res = f.check(CheckOptions{Repair: true})
	for _, rp := range res.Repairs {
		if !rp.Applied {
			t.Errorf("repair of %s %s at %s not applied: %s", rp.Table, rp.Key, rp.Site, rp.Skipped)
		}
	}
	res = f.check(CheckOptions{})
	if !res.Pass || len(res.Diffs) != 0 {
		t.Fatalf("after repair: %s", textOf(res, f.cfg))
	}
}

// normalise computes, for same-version differences, which site the
// checker must call wrong: the one that did not write the version.
func normalise(f *fixture, ws []want) []want {
	out := slices.Clone(ws)
	for i, w := range out {
		if w.class != ClassDiverged {
			continue
		}
		var table, where string
		table = w.table
		where = strings.ReplaceAll(strings.ReplaceAll(w.key, ", ", " AND "), `"`, "'")
		var v uint64
		if err := f.conn[0].QueryRow(fmt.Sprintf("SELECT %s FROM `%s`.%s WHERE %s", schema.DefaultVersionColumn, f.db, table, where)).Scan(&v); err != nil {
			f.t.Fatal(err)
		}
		var v2 uint64
		if err := f.conn[1].QueryRow(fmt.Sprintf("SELECT %s FROM `%s`.%s WHERE %s", schema.DefaultVersionColumn, f.db, table, where)).Scan(&v2); err != nil {
			f.t.Fatal(err)
		}
		if v == v2 {
			// Same version: the site that did not write it is wrong.
			out[i].site = "s1"
			if hlc.Timestamp(v).Site() == 1 {
				out[i].site = "s2"
			}
		}
	}
	slices.SortFunc(out, func(a, b want) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return out
}

func textOf(res *CheckResult, cfg *Config) string {
	var b strings.Builder
	res.WriteText(&b, cfg.Sites)
	return b.String()
}

// TestCheckInFlight: a newer version above the lagging site's watermark
// is in flight, retried, and not a failure; once the watermark passes it
// (and the row still differs) it is diverged.
func TestCheckInFlight(t *testing.T) {
	f := newFixture(t, 200)
	f.watermark(1, base) // site 2 has applied nothing of site 1 past base
	later := version(time.Now(), 1)
	f.at(0, fmt.Sprintf("UPDATE `%s`.items SET qty = 1, %s = %d WHERE id = 10", f.db, schema.DefaultVersionColumn, later))
	f.cfg.Check.Retries = 2
	f.cfg.Check.RetryDelay = Duration(10 * time.Millisecond)
	res := f.check(CheckOptions{})
	if got := diffsOf(res); !res.Pass || res.InFlight != 1 || len(got) != 1 || got[0] != (want{"items", "id=10", "s2", ClassInFlight}) || res.Rechecks != 2 {
		t.Fatalf("pass %v in flight %d rechecks %d diffs %v; want one in-flight row, retried twice, passing\n%s",
			res.Pass, res.InFlight, res.Rechecks, got, textOf(res, f.cfg))
	}
	f.watermark(1, time.Now().Add(time.Hour))
	res = f.check(CheckOptions{})
	if got := diffsOf(res); res.Pass || len(got) != 1 || got[0] != (want{"items", "id=10", "s2", ClassDiverged}) {
		t.Fatalf("after the watermark passed: %v\n%s", got, textOf(res, f.cfg))
	}
	// Repair, dry run: SQL for site 2 only, nothing applied.
	if len(res.Repairs) != 1 || res.Repairs[0].Site != "s2" || res.Repairs[0].Applied || !strings.Contains(res.Repairs[0].SQL[0], fmt.Sprint(later)) {
		t.Fatalf("repairs %+v", res.Repairs)
	}
}

// TestCheckTenantScope checks one tenant's rows only.
func TestCheckTenantScope(t *testing.T) {
	f := newFixture(t, 300)
	f.at(1, fmt.Sprintf("UPDATE `%s`.pairs SET val = 'x' WHERE tenant = 't03' AND seq = 3", f.db))
	f.cfg.Check.Tables = []string{f.db + ".pairs"}
	f.cfg.Check.TenantColumn, f.cfg.Check.Tenant = "tenant", "t04"
	if res := f.check(CheckOptions{}); !res.Pass || res.Rows == 0 || res.Rows > 50 {
		t.Fatalf("tenant t04: pass %v rows %d\n%s", res.Pass, res.Rows, textOf(res, f.cfg))
	}
	f.cfg.Check.Tenant = "t03"
	if res := f.check(CheckOptions{}); res.Pass || len(res.Diffs) != 1 {
		t.Fatalf("tenant t03: %s", textOf(res, f.cfg))
	}
}

// TestCheckSameChangeOnTwoRows: two rows of one chunk changed by the same
// bytes at the same offsets. An XOR of CRCs (linear) would cancel the two
// changes out and call the chunk equal; the checksum must not.
func TestCheckSameChangeOnTwoRows(t *testing.T) {
	f := newFixture(t, 200)
	v := version(base, 1)
	f.both(fmt.Sprintf("UPDATE `%s`.items SET name = 'aaaa', qty = 1, price = '1.00', note = 'n', updated = '2026-01-01 00:00:00', %s = %d WHERE id IN (101, 102)",
		f.db, schema.DefaultVersionColumn, v))
	f.at(1, fmt.Sprintf("UPDATE `%s`.items SET name = 'aaab' WHERE id IN (101, 102)", f.db))
	res := f.check(CheckOptions{})
	if got := diffsOf(res); len(got) != 2 || got[0].key != "id=101" || got[1].key != "id=102" || got[0].class != ClassDiverged {
		t.Fatalf("diffs %v\n%s", got, textOf(res, f.cfg))
	}
}
