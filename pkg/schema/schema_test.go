package schema

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestTriggerName(t *testing.T) {
	short := TriggerName(TriggerBeforeInsert, "orders")
	if short != "_tandem_bi_orders" {
		t.Errorf("TriggerName(bi, orders) = %q", short)
	}
	// Longest replicated name fits without hashing.
	maxName := strings.Repeat("x", MaxTableName)
	if got := TriggerName(TriggerBeforeUpdate, maxName); got != "_tandem_bu_"+maxName {
		t.Errorf("TriggerName of a %d-character table = %q; want no hash", MaxTableName, got)
	}
	long1 := strings.Repeat("é", 60) + "a"
	long2 := strings.Repeat("é", 60) + "b"
	n1, n2 := TriggerName(TriggerBeforeDelete, long1), TriggerName(TriggerBeforeDelete, long2)
	for _, n := range []string{n1, n2} {
		if c := utf8.RuneCountInString(n); c != MaxIdentifier {
			t.Errorf("TriggerName(%q) has %d characters; want %d", n, c, MaxIdentifier)
		}
		if !utf8.ValidString(n) {
			t.Errorf("TriggerName(%q) is not valid UTF-8", n)
		}
	}
	if n1 == n2 {
		t.Errorf("two long names shortened to the same trigger name %q", n1)
	}
	if TriggerName(TriggerBeforeDelete, long1) != n1 {
		t.Error("TriggerName is not stable")
	}
}

func TestHasBareSemicolon(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"CREATE TABLE t (a INT)", false},
		{"CREATE TABLE t (a INT) COMMENT 'x; y'", false},
		{"CREATE TABLE `a;b` (a INT)", false},
		{"CREATE TABLE t (a INT) COMMENT 'it''s; fine'", false},
		{"BEGIN SET x = 1; END", true},
		{`SELECT "a;" ; SELECT 1`, true},
	} {
		if got := hasBareSemicolon(tc.sql); got != tc.want {
			t.Errorf("hasBareSemicolon(%q) = %v; want %v", tc.sql, got, tc.want)
		}
	}
}

func TestParseServer(t *testing.T) {
	for _, tc := range []struct {
		version              string
		mariaDB              bool
		invisible, rowMeta   bool
		major, minor, patchV int
	}{
		{"10.11.19-MariaDB-0+deb12u1-log", true, true, true, 10, 11, 19},
		{"10.4.30-MariaDB", true, true, false, 10, 4, 30},
		{"10.2.44-MariaDB", true, false, false, 10, 2, 44},
		{"8.0.36", false, true, true, 8, 0, 36},
		{"8.0.22-log", false, false, true, 8, 0, 22},
		{"5.7.44", false, false, false, 5, 7, 44},
	} {
		s := parseServer(tc.version)
		if s.mariaDB != tc.mariaDB || s.invisibleColumns() != tc.invisible || s.rowMetadata() != tc.rowMeta ||
			s.major != tc.major || s.minor != tc.minor || s.patch != tc.patchV {
			t.Errorf("parseServer(%q) = %+v invisible=%v rowMetadata=%v", tc.version, s, s.invisibleColumns(), s.rowMetadata())
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  Options
		want string
	}{
		{"site 0", Options{}, "site id 0 is reserved"},
		{"long meta schema", Options{Site: 1, MetaSchema: strings.Repeat("m", 65)}, "at most 64"},
		{"table without schema", Options{Site: 1, Tables: []TableRef{{"", "t"}}}, "want schema and table"},
		{"trailing space", Options{Site: 1, VersionColumn: "v "}, "ends in a space"},
	} {
		_, err := tc.opt.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want one containing %q", tc.name, err, tc.want)
		}
	}
	o, err := Options{Site: 3}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.MetaSchema != DefaultMetaSchema || o.VersionColumn != DefaultVersionColumn || o.LockWait <= 0 {
		t.Errorf("defaults not applied: %+v", o)
	}
}

func TestLabel(t *testing.T) {
	g := gen{site: 42}
	version, site, ok := parseLabel(g.label() + ": BEGIN END " + g.label())
	if !ok || version != triggerVersion || site != 42 {
		t.Errorf("parseLabel(%q) = %d, %d, %v", g.label(), version, site, ok)
	}
	if _, _, ok := parseLabel("BEGIN SET NEW.a = 1; END"); ok {
		t.Error("parseLabel accepted a body without label")
	}
}

func TestPlanStringEmpty(t *testing.T) {
	p := &Plan{site: 2}
	if s := p.String(); !strings.Contains(s, "Nothing to do") {
		t.Errorf("empty plan renders as %q", s)
	}
}

func TestMySQLTriggerDDL(t *testing.T) {
	g := gen{site: 1, v: DefaultVersionColumn, srv: parseServer("8.0.36")}
	ref := TableRef{"s", "t"}
	model := tableModel{ref: ref, pk: []Column{{Name: "id", ColumnType: "int"}}}
	stmts := g.createTriggerSQL(ref, g.triggers(model)[0])
	if len(stmts) != 2 || stmts[0] != "DROP TRIGGER IF EXISTS `s`.`_tandem_bi_t`" ||
		!strings.HasPrefix(stmts[1], "CREATE TRIGGER `s`.`_tandem_bi_t` BEFORE INSERT ON `s`.`t` FOR EACH ROW\n") {
		t.Errorf("MySQL trigger DDL: %q", stmts)
	}
	if sql := g.versionColumnSQL(ref, algorithmInstant); strings.Contains(sql, "IF NOT EXISTS") || !strings.Contains(sql, "INVISIBLE") {
		t.Errorf("MySQL 8.0.36 version column DDL: %s", sql)
	}
}
