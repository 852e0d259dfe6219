package schema

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
)

// fixture is a database on the shared server of site 1 with a meta schema
// of its own, so tests run in parallel.
type fixture struct {
	m    *testenv.MariaDB
	db   *sql.DB
	data string // schema of the test's tables
	meta string // meta schema name; does not exist until prepared
	opt  Options
}

// testTables are the tables most tests replicate: an auto-increment key, a
// composite key of a case-insensitive utf8mb4 string and a number, and a
// table with most column types, keyed by a binary and an enum.
var testTables = []string{
	`CREATE TABLE accounts (
		id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
		name VARCHAR(50) NOT NULL DEFAULT '',
		balance DECIMAL(12,2) NOT NULL DEFAULT 0
	) ENGINE=InnoDB`,
	`CREATE TABLE items (
		sku VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
		n BIGINT NOT NULL,
		qty INT,
		PRIMARY KEY (sku, n)
	) ENGINE=InnoDB`,
	`CREATE TABLE kinds (
		u BINARY(16) NOT NULL,
		e ENUM('red','green') CHARACTER SET latin1 NOT NULL,
		ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT UNSIGNED,
		f FLOAT, d DOUBLE, dec1 DECIMAL(30,6),
		c CHAR(3) CHARACTER SET latin1, vc VARCHAR(100), tx TEXT, bl BLOB, vb VARBINARY(64),
		dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(2), yr YEAR,
		st SET('x','y'), bt BIT(5), j JSON, g POINT NULL,
		gen INT AS (ti + 1) VIRTUAL,
		PRIMARY KEY (u, e),
		UNIQUE KEY vc (vc)
	) ENGINE=InnoDB`,
}

func newFixture(t *testing.T, site uint8, tables ...string) *fixture {
	t.Helper()
	m := testenv.SharedMariaDB(t, 1)
	f := &fixture{m: m, data: testenv.NewDatabase(t, m)}
	f.meta = testenv.NewDatabase(t, m)
	// The meta schema is created by prepare; NewDatabase only reserved a
	// unique name and drops it at the end.
	m.Exec(t, "DROP DATABASE "+QuoteIdent(f.meta))
	f.db = m.DB(t, f.data)
	f.opt = Options{Site: site, MetaSchema: f.meta}
	for _, ddl := range tables {
		f.exec(t, ddl)
		name := strings.Fields(ddl)[2]
		f.opt.Tables = append(f.opt.Tables, TableRef{f.data, name})
	}
	return f
}

func (f *fixture) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func (f *fixture) inspect(t *testing.T) *Plan {
	t.Helper()
	p, err := Inspect(context.Background(), f.db, f.opt)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	return p
}

func (f *fixture) prepare(t *testing.T) {
	t.Helper()
	if err := f.inspect(t).Apply(context.Background(), f.db); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// snapshot describes every object in the fixture's schemas, to prove that
// something changed nothing.
func (f *fixture) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (?, ?) ORDER BY 1`,
		`SELECT CONCAT_WS(' ', TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, EXTRA) FROM information_schema.COLUMNS
			WHERE TABLE_SCHEMA IN (?, ?) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION`,
		`SELECT CONCAT_WS(' ', TRIGGER_SCHEMA, TRIGGER_NAME, ACTION_STATEMENT) FROM information_schema.TRIGGERS
			WHERE TRIGGER_SCHEMA IN (?, ?) ORDER BY 1`,
	} {
		rows, err := f.db.Query(q, f.data, f.meta)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s + "\n")
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return b.String()
}

func TestPrepareIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, testTables...)
	ctx := context.Background()
	before := f.snapshot(t)

	plan := f.inspect(t)
	// schema + 7 bookkeeping tables; per replicated table (2 bookkeeping, 3
	// test tables): tombstone + 4 triggers, plus the version column of
	// each test table.
	if want := 1 + 7 + 5*5 + 3; len(plan.Steps) != want {
		t.Errorf("first plan has %d steps; want %d:\n%s", len(plan.Steps), want, plan)
	}
	script := plan.String()
	for _, want := range []string{
		"CREATE DATABASE IF NOT EXISTS " + QuoteIdent(f.meta),
		"CREATE TABLE IF NOT EXISTS " + QuoteIdent(f.meta) + ".`_tandem_offsets`",
		"ALTER TABLE " + QuoteIdent(f.data) + ".`accounts` ADD COLUMN IF NOT EXISTS `_tandem_hlc` BIGINT UNSIGNED NOT NULL DEFAULT 0 INVISIBLE",
		"ALGORITHM=INSTANT",
		"CREATE TABLE IF NOT EXISTS " + QuoteIdent(f.data) + ".`_tandem_tomb_items`",
		"CREATE OR REPLACE TRIGGER " + QuoteIdent(f.data) + ".`_tandem_bd_kinds` BEFORE DELETE ON " + QuoteIdent(f.data) + ".`kinds`",
		fmt.Sprintf("tandem_v%d_site_2: BEGIN", triggerVersion),
		"DELIMITER //",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("dry-run script lacks %q", want)
		}
	}
	// Inspect and String are a dry run: nothing changed.
	if after := f.snapshot(t); after != before {
		t.Errorf("Inspect changed the database:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if again := f.inspect(t).String(); again != script {
		t.Errorf("a second Inspect planned something else:\n%s", again)
	}

	start := time.Now()
	if err := plan.Apply(ctx, f.db); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("prepare of %d steps took %v", len(plan.Steps), time.Since(start))
	if p := f.inspect(t); !p.Empty() {
		t.Fatalf("Inspect after Apply is not empty:\n%s", p)
	}
	prepared := f.snapshot(t)

	// Applying the old plan again only re-runs idempotent statements.
	if err := plan.Apply(ctx, f.db); err != nil {
		t.Fatalf("second Apply of the same plan: %v", err)
	}
	if p := f.inspect(t); !p.Empty() {
		t.Fatalf("Inspect after the second Apply is not empty:\n%s", p)
	}
	if after := f.snapshot(t); after != prepared {
		t.Errorf("second Apply changed objects:\nbefore:\n%s\nafter:\n%s", prepared, after)
	}
	problems, err := Check(ctx, f.db, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if !p.Warning {
			t.Errorf("Check after prepare: %s", p)
		}
	}

	// The tombstone tables copy the key columns exactly.
	for _, table := range []string{"accounts", "items", "kinds"} {
		pk, err := PKColumns(ctx, f.db, f.data, table)
		if err != nil {
			t.Fatal(err)
		}
		base, err := TableColumns(ctx, f.db, f.data, table)
		if err != nil {
			t.Fatal(err)
		}
		tomb, err := TableColumns(ctx, f.db, f.data, TombTable(table))
		if err != nil {
			t.Fatal(err)
		}
		tombPK, err := PKColumns(ctx, f.db, f.data, TombTable(table))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(pk, tombPK) {
			t.Errorf("%s: tombstone key %v; want %v", table, tombPK, pk)
		}
		for i, name := range pk {
			b := base[slices.IndexFunc(base, func(c Column) bool { return c.Name == name })]
			c := tomb[i]
			if c.Name != b.Name || c.ColumnType != b.ColumnType || c.Charset != b.Charset || c.Collation != b.Collation || c.Nullable {
				t.Errorf("%s: tombstone column %+v differs from key column %+v", table, c, b)
			}
		}
		v := tomb[len(tomb)-1]
		if v.Name != DefaultVersionColumn || !isVersionType(v) || v.Invisible {
			t.Errorf("%s: tombstone version column %+v", table, v)
		}
		v = base[len(base)-1]
		if v.Name != DefaultVersionColumn || !isVersionType(v) || !v.Invisible {
			t.Errorf("%s: version column %+v; want an invisible BIGINT UNSIGNED NOT NULL", table, v)
		}
	}
}

// The dry-run script is a real script: the mariadb client runs it and the
// site is prepared.
func TestDryRunScriptRuns(t *testing.T) {
	t.Parallel()
	client, err := exec.LookPath("mariadb")
	if err != nil {
		testenv.SkipOrFail(t, "mariadb client not installed: %v", err)
	}
	f := newFixture(t, 5, testTables[1])
	script := f.inspect(t).String()
	cmd := exec.Command(client, "--no-defaults", "-h", f.m.Host, "-P", strconv.Itoa(f.m.Port), "-u", f.m.User, "--batch")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("mariadb < plan.sql: %v\n%s\nscript:\n%s", err, out.String(), script)
	}
	if p := f.inspect(t); !p.Empty() {
		t.Fatalf("after running the script, Inspect plans:\n%s", p)
	}
}

func TestSiteChangeReplacesTriggers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, testTables[0])
	f.prepare(t)
	f.opt.Site = 3
	plan := f.inspect(t)
	// Heartbeat, probe and accounts have 4 triggers each.
	if len(plan.Steps) != 3*4 {
		t.Errorf("site change plans %d steps; want 12 trigger replacements:\n%s", len(plan.Steps), plan)
	}
	for _, s := range plan.Steps {
		if !strings.HasPrefix(s.Object, "trigger ") || !strings.Contains(s.Why, "installed for site 2; this site is 3") {
			t.Errorf("unexpected step %s: %s", s.Object, s.Why)
		}
	}
	problems, err := Check(context.Background(), f.db, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != len(plan.Steps) || !strings.Contains(problems[0].Fix, "belongs to site 3") {
		t.Errorf("Check reports %d problems, first %v", len(problems), problems[0])
	}
	if err := plan.Apply(context.Background(), f.db); err != nil {
		t.Fatal(err)
	}
	if p := f.inspect(t); !p.Empty() {
		t.Fatalf("after re-prepare for site 3, Inspect plans:\n%s", p)
	}
}

func TestOutdatedObjectsAreRepaired(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, testTables[0])
	f.prepare(t)
	q := QuoteIdent(f.data)
	// Someone edits a trigger, adds a stale Tandem trigger and drops a
	// bookkeeping column.
	f.exec(t, "CREATE OR REPLACE TRIGGER "+q+".`_tandem_bd_accounts` BEFORE DELETE ON "+q+".accounts FOR EACH ROW SET @x = 1")
	f.exec(t, "CREATE TRIGGER "+q+".`_tandem_au_accounts` AFTER UPDATE ON "+q+".accounts FOR EACH ROW SET @x = 2")
	f.exec(t, "ALTER TABLE "+QuoteIdent(f.meta)+".`_tandem_offsets` DROP COLUMN epoch")
	f.exec(t, "ALTER TABLE "+QuoteIdent(f.meta)+".`_tandem_conflicts` DROP KEY `at`")
	// A tombstone table from before the version index.
	f.exec(t, "ALTER TABLE "+q+"."+QuoteIdent(TombTable("accounts"))+" DROP KEY "+QuoteIdent(TombVersionIndex))
	plan := f.inspect(t)
	var whys []string
	for _, s := range plan.Steps {
		whys = append(whys, s.Object+": "+s.Why)
	}
	want := []string{
		f.meta + "._tandem_offsets: column epoch is missing (table from an older Tandem)",
		f.meta + "._tandem_conflicts: index at is missing (table from an older Tandem)",
		f.data + "._tandem_tomb_accounts: tombstone table has no index on _tandem_hlc (tables prepared by an earlier release)",
		"trigger " + f.data + "._tandem_bd_accounts: trigger has a definition Tandem did not write",
		"trigger " + f.data + "._tandem_au_accounts: trigger is not part of this Tandem version",
	}
	if !slices.Equal(whys, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(whys, "\n"), strings.Join(want, "\n"))
	}
	if err := plan.Apply(context.Background(), f.db); err != nil {
		t.Fatal(err)
	}
	if p := f.inspect(t); !p.Empty() {
		t.Fatalf("after repair, Inspect plans:\n%s", p)
	}
}

func TestTablesPrepareRefuses(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, testTables[0])
	long := strings.Repeat("l", MaxTableName+1)
	f.exec(t, "CREATE TABLE nopk (a INT, b INT) ENGINE=InnoDB")
	f.exec(t, "CREATE TABLE "+long+" (id INT PRIMARY KEY) ENGINE=InnoDB")
	f.exec(t, "CREATE TABLE myisam (id INT PRIMARY KEY) ENGINE=MyISAM")
	f.exec(t, "CREATE VIEW v AS SELECT id FROM accounts")
	f.exec(t, "CREATE TABLE badversion (id INT PRIMARY KEY, _tandem_hlc INT NULL) ENGINE=InnoDB")
	for _, name := range []string{"nopk", long, "myisam", "v", "missing", "badversion", "_tandem_tomb_accounts"} {
		f.opt.Tables = append(f.opt.Tables, TableRef{f.data, name})
	}
	before := f.snapshot(t)
	_, err := Inspect(context.Background(), f.db, f.opt)
	var blocked *BlockedError
	if !errors.As(err, &blocked) {
		t.Fatalf("Inspect error %v; want a *BlockedError", err)
	}
	got := map[string]string{}
	for _, p := range blocked.Problems {
		got[strings.TrimPrefix(p.Object, f.data+".")] = p.Problem + " | " + p.Fix
	}
	for name, want := range map[string]string{
		"nopk":                  "has no PRIMARY KEY",
		long:                    fmt.Sprintf("table name has %d characters; replicated tables may have at most %d", MaxTableName+1, MaxTableName),
		"myisam":                "uses the MyISAM engine; Tandem needs InnoDB",
		"v":                     "is a VIEW, not a base table",
		"missing":               "table does not exist",
		"badversion":            "column _tandem_hlc is int(11) NULL; Tandem needs it to be BIGINT UNSIGNED NOT NULL",
		"_tandem_tomb_accounts": "is a Tandem table",
	} {
		if !strings.Contains(got[name], want) {
			t.Errorf("problem for %s = %q; want it to contain %q", name, got[name], want)
		}
	}
	if len(blocked.Problems) != 7 {
		t.Errorf("got %d problems; want 7:\n%v", len(blocked.Problems), err)
	}
	if !strings.Contains(err.Error(), "has no PRIMARY KEY") {
		t.Errorf("error text does not name the problem: %v", err)
	}
	problems, err := Check(context.Background(), f.db, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range problems {
		if strings.Contains(p.Problem, "has no PRIMARY KEY") && strings.Contains(p.Fix, "ADD PRIMARY KEY") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("Check reports the missing primary key %d times; want once: %v", n, problems)
	}
	if after := f.snapshot(t); after != before {
		t.Error("a refused Inspect changed the database")
	}
}

func TestCheckWarnsAboutForeignTriggersAndCascades(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, testTables[0],
		`CREATE TABLE entries (id INT PRIMARY KEY, account BIGINT,
			CONSTRAINT fk_account FOREIGN KEY (account) REFERENCES accounts (id) ON DELETE CASCADE) ENGINE=InnoDB`)
	f.exec(t, "CREATE TABLE audit (n INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(20))")
	f.exec(t, "CREATE TRIGGER audit_accounts AFTER INSERT ON accounts FOR EACH ROW INSERT INTO audit (what) VALUES ('insert')")
	f.prepare(t) // warnings do not block
	problems, err := Check(context.Background(), f.db, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, p := range problems {
		if !p.Warning {
			t.Errorf("unexpected problem %s", p)
		}
		texts = append(texts, p.String())
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"triggers Tandem does not manage (audit_accounts)", "foreign key fk_account has ON UPDATE RESTRICT ON DELETE CASCADE"} {
		if !strings.Contains(all, want) {
			t.Errorf("Check does not report %q:\n%s", want, all)
		}
	}
	// Tandem's triggers coexist with the application's.
	f.exec(t, "INSERT INTO accounts (name) VALUES ('a')")
	var audits int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM audit").Scan(&audits); err != nil || audits != 1 {
		t.Errorf("application trigger ran %d times (%v); want 1", audits, err)
	}
}

func TestCheckServerSettings(t *testing.T) {
	t.Parallel()
	m := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 4, BinlogFormat: "STATEMENT", RowMetadata: "MINIMAL"})
	db := m.DB(t, "")
	problems, err := Check(context.Background(), db, Options{Site: 4})
	if err != nil {
		t.Fatal(err)
	}
	var server []string
	for _, p := range problems {
		if p.Object == "server" {
			server = append(server, p.Problem+" | "+p.Fix)
		}
	}
	if len(server) != 2 {
		t.Fatalf("got %d server problems; want 2 (binlog_format, binlog_row_metadata):\n%s", len(server), strings.Join(server, "\n"))
	}
	for i, want := range [][]string{
		{"binlog_format is STATEMENT; the reader needs ROW", "SET GLOBAL binlog_format = 'ROW'", "`binlog_format = ROW` under [mariadbd] in my.cnf"},
		{"binlog_row_metadata is MINIMAL; the reader needs FULL", "SET GLOBAL binlog_row_metadata = 'FULL'", "`binlog_row_metadata = FULL` under [mariadbd]"},
	} {
		for _, w := range want {
			if !strings.Contains(server[i], w) {
				t.Errorf("server problem %d %q lacks %q", i, server[i], w)
			}
		}
	}
	// The fix works.
	m.Exec(t, "SET GLOBAL binlog_format = 'ROW'")
	m.Exec(t, "SET GLOBAL binlog_row_metadata = 'FULL'")
	problems, err = Check(context.Background(), db, Options{Site: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if p.Object == "server" {
			t.Errorf("after the fix: %s", p)
		}
	}
}

func TestIntrospection(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, testTables...)
	ctx := context.Background()
	pk, err := PKColumns(ctx, f.db, f.data, "items")
	if err != nil || !slices.Equal(pk, []string{"sku", "n"}) {
		t.Errorf("PKColumns(items) = %v, %v", pk, err)
	}
	keys, err := UniqueKeys(ctx, f.db, f.data, "kinds")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keys[0].Primary || !slices.Equal(keys[0].Columns, []string{"u", "e"}) ||
		keys[1].Name != "vc" || !slices.Equal(keys[1].Columns, []string{"vc"}) || !keys[1].Nullable {
		t.Errorf("UniqueKeys(kinds) = %+v", keys)
	}
	cols, err := TableColumns(ctx, f.db, f.data, "kinds")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Column{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	if c := byName["e"]; c.ColumnType != "enum('red','green')" || c.Charset != "latin1" || c.Nullable {
		t.Errorf("column e = %+v", c)
	}
	if c := byName["gen"]; !c.Generated {
		t.Errorf("column gen = %+v; want Generated", c)
	}
	if c := byName["bi"]; c.ColumnType != "bigint(20) unsigned" || !c.Nullable || c.Position != 6 {
		t.Errorf("column bi = %+v", c)
	}
	if _, err := PKColumns(ctx, f.db, f.data, "missing"); !errors.Is(err, ErrNoTable) {
		t.Errorf("PKColumns(missing) error %v; want ErrNoTable", err)
	}
	f.exec(t, "CREATE TABLE nopk (a INT)")
	if _, err := PKColumns(ctx, f.db, f.data, "nopk"); !errors.Is(err, ErrNoPrimaryKey) {
		t.Errorf("PKColumns(nopk) error %v; want ErrNoPrimaryKey", err)
	}
	f.prepare(t)
	tables, err := ListTables(ctx, f.db, []string{f.data})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tr := range tables {
		names = append(names, tr.Table)
	}
	if want := []string{"accounts", "items", "kinds", "nopk"}; !slices.Equal(names, want) {
		t.Errorf("ListTables = %v; want %v (no views, no Tandem tables)", names, want)
	}
}

// A table the server cannot extend instantly gets its version column with
// an online (in-place, no lock) ALTER instead.
func TestVersionColumnFallsBackToOnlineAlter(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, `CREATE TABLE packed (id INT PRIMARY KEY, b VARCHAR(20)) ENGINE=InnoDB ROW_FORMAT=COMPRESSED`)
	if _, err := f.db.Exec("ALTER TABLE packed ADD COLUMN probe INT, ALGORITHM=INSTANT"); err == nil {
		t.Skip("this server adds columns to compressed tables instantly; nothing to fall back from")
	}
	plan := f.inspect(t)
	var step *Step
	for i, s := range plan.Steps {
		if len(s.Fallback) > 0 {
			step = &plan.Steps[i]
		}
	}
	if step == nil || !strings.Contains(step.Fallback[0], "ALGORITHM=INPLACE, LOCK=NONE") {
		t.Fatalf("no fallback step in plan:\n%s", plan)
	}
	if err := plan.Apply(context.Background(), f.db); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if p := f.inspect(t); !p.Empty() {
		t.Fatalf("after the fallback, Inspect plans:\n%s", p)
	}
}
