package schema

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/tandemdb/tandem/pkg/hlc"
)

// triggerVersion is bumped whenever the generated trigger bodies change
// meaning, so that Inspect can say "outdated" rather than just "differs".
// It is part of the label that opens every body.
const triggerVersion = 5

// gen generates the DDL for one site.
type gen struct {
	site uint8
	v    string // version column
	srv  server
}

// tableModel is what the generated objects depend on.
type tableModel struct {
	ref      TableRef
	pk       []Column
	pkPrefix []int // per pk column, 0 = whole column
}

func (t tableModel) tomb() TableRef { return TableRef{t.ref.Schema, TombTable(t.ref.Table)} }

// triggerDef is one trigger to install.
type triggerDef struct {
	name   string
	timing string // BEFORE, AFTER
	event  string // INSERT, UPDATE, DELETE
	body   string
}

// label opens and closes every trigger body. Comments do not survive the
// mariadb client (it strips them before sending), but a block label does,
// so it carries the site and the generation for Inspect and for humans.
func (g gen) label() string { return fmt.Sprintf("tandem_v%d_site_%d", triggerVersion, g.site) }

var labelRE = regexp.MustCompile(`^\s*tandem_v(\d+)_site_(\d+)\s*:`)

// parseLabel returns the generation and site a Tandem trigger body was made
// for.
func parseLabel(body string) (version, site int, ok bool) {
	m := labelRE.FindStringSubmatch(body)
	if m == nil {
		return 0, 0, false
	}
	version, err1 := strconv.Atoi(m[1])
	site, err2 := strconv.Atoi(m[2])
	return version, site, err1 == nil && err2 == nil
}

// versionColumnSQL adds the version column. Existing rows get version 0,
// which every real version beats. INVISIBLE keeps it out of SELECT * and
// of INSERT without a column list, so applications do not notice it.
func (g gen) versionColumnSQL(t TableRef, algorithm string) string {
	invisible := ""
	if g.srv.invisibleColumns() {
		invisible = " INVISIBLE"
	}
	ifNotExists := ""
	if g.srv.mariaDB {
		ifNotExists = "IF NOT EXISTS "
	}
	return fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s%s BIGINT UNSIGNED NOT NULL DEFAULT 0%s COMMENT %s, %s",
		t.Quoted(), ifNotExists, QuoteIdent(g.v), invisible,
		quoteString("Tandem row version (HLC), stamped by triggers and sinks"), algorithm)
}

const (
	algorithmInstant = "ALGORITHM=INSTANT"
	algorithmOnline  = "ALGORITHM=INPLACE, LOCK=NONE"
)

// columnDef is the definition of a tombstone column copied from c.
func columnDef(c Column) string {
	def := QuoteIdent(c.Name) + " " + c.ColumnType
	if c.Charset != "" {
		def += " CHARACTER SET " + c.Charset
	}
	if c.Collation != "" {
		def += " COLLATE " + c.Collation
	}
	return def + " NOT NULL"
}

// tombCreateSQL creates t's tombstone table: t's primary key columns with
// identical types, character sets and collations (so keys compare the same
// way in both tables) plus the version of the delete. The version is
// indexed so the reconciler (pkg/sink Reconcile) reads only recent
// tombstones.
func (g gen) tombCreateSQL(t tableModel) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s (\n", t.tomb().Quoted())
	for _, c := range t.pk {
		fmt.Fprintf(&b, "  %s,\n", columnDef(c))
	}
	fmt.Fprintf(&b, "  %s BIGINT UNSIGNED NOT NULL,\n", QuoteIdent(g.v))
	keys := make([]string, len(t.pk))
	for i, c := range t.pk {
		keys[i] = QuoteIdent(c.Name)
		if i < len(t.pkPrefix) && t.pkPrefix[i] > 0 {
			keys[i] += "(" + strconv.Itoa(t.pkPrefix[i]) + ")"
		}
	}
	fmt.Fprintf(&b, "  PRIMARY KEY (%s),\n  KEY %s (%s)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT=%s",
		strings.Join(keys, ", "), QuoteIdent(TombVersionIndex), QuoteIdent(g.v),
		quoteString("Tandem tombstones of "+t.ref.String()+": deleted keys and the version of the delete"))
	return b.String()
}

// match is "a.`k1` = NEW.`k1` AND a.`k2` = NEW.`k2`". Columns are always
// qualified: a bare name that equals a DECLAREd variable would mean the
// variable inside a trigger.
func match(alias, row string, pk []Column) string {
	parts := make([]string, len(pk))
	for i, c := range pk {
		q := QuoteIdent(c.Name)
		parts[i] = alias + "." + q + " = " + row + "." + q
	}
	return strings.Join(parts, " AND ")
}

// readTomb is a statement that reads the tombstone version of row's key
// into variable into, which keeps its value (NULL as DECLAREd) when there
// is none.
//
// Reads in a trigger must be SELECT … INTO statements: InnoDB reads tables
// without locks only in statements whose own command is SELECT. A
// subquery in SET or IF belongs to the data-changing statement and is a
// locking read, which under REPEATABLE READ locks the gap where a missing
// key would be; with inserts and deletes running concurrently those gap
// locks deadlock almost every transaction. A key without a row is a "no
// data" condition; every trigger that reads with such a statement declares
// a CONTINUE HANDLER FOR NOT FOUND (notFound), so that no server passes a
// warning on to the client (MariaDB 10.11 passes none even without it).
// (A scalar subquery inside a SELECT … INTO, as in the BEFORE INSERT
// trigger, is part of that SELECT: lock-free too, and NULL without a row.)
// Generation 2 read MAX(…) instead, which always yields one row; that
// aggregate per read cost about 6 % more time per row change of the
// live-lag workload and 10 % per row of a bulk insert (BenchmarkTriggers).
func (g gen) readTomb(t tableModel, row, into string) string {
	return fmt.Sprintf("SELECT tb.%s INTO %s FROM %s AS tb WHERE %s;",
		QuoteIdent(g.v), into, t.tomb().Quoted(), match("tb", row, t.pk))
}

// notFound lets a trigger's SELECT … INTO find no row: the variable keeps
// its value (NULL as DECLAREd) and the trigger goes on.
const notFound = "DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;"

// local is the condition under which a trigger acts: not in a sink
// session (see ApplySessionVar).
const local = "COALESCE(" + ApplySessionVar + ", 0) = 0"

// deleteFlag is the session variable the BEFORE DELETE trigger raises and
// the AFTER INSERT trigger lowers (see triggers).
const deleteFlag = "@_tandem_deleted"

// triggers returns the triggers of t. Their bodies compute versions with
// hlc.SQLNext, so they follow the same layout as the Go clock.
func (g gen) triggers(t tableModel) []triggerDef {
	v := QuoteIdent(g.v)
	l := g.label()
	tomb := t.tomb().Quoted()
	pkCols := make([]string, len(t.pk))
	oldPK := make([]string, len(t.pk))
	samePK := make([]string, len(t.pk))
	for i, c := range t.pk {
		q := QuoteIdent(c.Name)
		pkCols[i] = q
		oldPK[i] = "OLD." + q
		samePK[i] = "OLD." + q + " <=> NEW." + q
	}
	tombInsert := fmt.Sprintf("INSERT INTO %s (%s, %s)", tomb, strings.Join(pkCols, ", "), v)
	tombV := QuoteIdent(TombTable(t.ref.Table)) + "." + v // the existing tombstone row in ON DUPLICATE KEY UPDATE

	// BEFORE INSERT: after the key's tombstone, so a re-insert is causally
	// after the delete. It must also be after the tombstone that REPLACE
	// writes when it deletes an existing row with this key: REPLACE runs
	// this trigger first, then the BEFORE DELETE trigger, then inserts, so
	// the version is computed here as "next after next(existing row)".
	//
	// Both reads are scalar subqueries of one SELECT … INTO: still a
	// statement whose own command is SELECT, so lock-free (see readTomb),
	// and it always yields one row, so no NOT FOUND handler is needed.
	// One statement instead of two (generation 3) saves a statement's
	// overhead per inserted row: about 5 % of the time per row change of
	// the live-lag workload and 4 % per row of a bulk insert
	// (BenchmarkTriggers, five alternated pairs). The version is one flat
	// expression (hlc.SQLNextInsert) instead of SQLNext nested in SQLNext
	// (generation 4): MariaDB resolves a trigger's expressions anew for
	// every row, and the smaller one saves about 6 % of this trigger's
	// time per row of a bulk insert.
	bi := fmt.Sprintf(`%[1]s: BEGIN
  DECLARE _tandem_tomb, _tandem_prev BIGINT UNSIGNED;
  IF %[2]s THEN
    SELECT (SELECT tb.%[3]s FROM %[4]s AS tb WHERE %[5]s), (SELECT r.%[3]s FROM %[6]s AS r WHERE %[7]s)
      INTO _tandem_tomb, _tandem_prev;
    SET NEW.%[3]s = %[8]s;
  END IF;
END %[1]s`, l, local, v, tomb, match("tb", "NEW", t.pk), t.ref.Quoted(), match("r", "NEW", t.pk),
		hlc.SQLNextInsert(g.site, "_tandem_tomb", "_tandem_prev"))

	// AFTER INSERT: the BEFORE INSERT trigger reads a snapshot. When a
	// concurrent transaction rewrote the row after that snapshot and before
	// a REPLACE deleted it, the delete's tombstone (written by this very
	// statement, so visible here) is at or above the new row's version and
	// every other site would drop the insert. Fail the statement instead of
	// diverging silently; SQLSTATE 40001 tells clients to retry.
	//
	// Only a tombstone this statement wrote after the BEFORE INSERT
	// trigger's read can be newer than that read (under REPEATABLE READ
	// both reads see one snapshot plus the transaction's own writes), and
	// only a REPLACE writes one in between. The BEFORE DELETE trigger
	// raises deleteFlag, so a plain INSERT skips the read. A flag left
	// raised by a DELETE statement costs the next insert one read, never a
	// missed check.
	ai := fmt.Sprintf(`%[1]s: BEGIN
  DECLARE _tandem_tomb BIGINT UNSIGNED;
  `+notFound+`
  IF %[5]s IS NOT NULL AND %[2]s THEN
    SET %[5]s = NULL;
    %[3]s
    IF _tandem_tomb >= NEW.%[4]s THEN
      SIGNAL SQLSTATE '40001' SET MESSAGE_TEXT = 'Tandem: a concurrent write to this key would move its version backwards; retry the statement';
    END IF;
  END IF;
END %[1]s`, l, local, g.readTomb(t, "NEW", "_tandem_tomb"), v, deleteFlag)

	// BEFORE UPDATE: after the old version. A primary key change deletes
	// the old key: the old key gets a tombstone with the new version, and
	// the new version is also after both keys' tombstones.
	bu := fmt.Sprintf(`%[1]s: BEGIN
  DECLARE _tandem_old, _tandem_new BIGINT UNSIGNED;
  `+notFound+`
  IF %[2]s THEN
    IF %[3]s THEN
      SET NEW.%[4]s = %[5]s;
    ELSE
      %[6]s
      %[7]s
      SET NEW.%[4]s = %[8]s;
      %[9]s VALUES (%[10]s, NEW.%[4]s)
        ON DUPLICATE KEY UPDATE %[4]s = GREATEST(%[11]s, VALUES(%[4]s));
    END IF;
  END IF;
END %[1]s`, l, local, strings.Join(samePK, " AND "), v,
		hlc.SQLNext(g.site, "OLD."+v),
		g.readTomb(t, "OLD", "_tandem_old"), g.readTomb(t, "NEW", "_tandem_new"),
		hlc.SQLNext(g.site, "OLD."+v, "_tandem_old", "_tandem_new"),
		tombInsert, strings.Join(oldPK, ", "), tombV)

	// BEFORE DELETE: the tombstone precedes the row's delete in the binlog
	// and its version is the delete's version. (An INSERT takes only an
	// insert intention lock on the gap, which does not conflict with other
	// inserts.)
	bd := fmt.Sprintf(`%[1]s: BEGIN
  IF %[2]s THEN
    %[3]s VALUES (%[4]s, %[5]s)
      ON DUPLICATE KEY UPDATE %[6]s = %[7]s;
    SET %[8]s = 1;
  END IF;
END %[1]s`, l, local, tombInsert, strings.Join(oldPK, ", "),
		hlc.SQLNext(g.site, "OLD."+v), v, hlc.SQLNext(g.site, "OLD."+v, tombV), deleteFlag)

	name := func(kind string) string { return TriggerName(kind, t.ref.Table) }
	// Installed in this order: when prepare replaces generation 1, the
	// BEFORE DELETE trigger that raises deleteFlag is in place before the
	// AFTER INSERT trigger that relies on it (generation 1 checks always).
	return []triggerDef{
		{name(TriggerBeforeInsert), "BEFORE", "INSERT", bi},
		{name(TriggerBeforeUpdate), "BEFORE", "UPDATE", bu},
		{name(TriggerBeforeDelete), "BEFORE", "DELETE", bd},
		{name(TriggerAfterInsert), "AFTER", "INSERT", ai},
	}
}

// createTriggerSQL installs d on t, replacing a trigger of the same name.
func (g gen) createTriggerSQL(t TableRef, d triggerDef) []string {
	name := QuoteIdent(t.Schema) + "." + QuoteIdent(d.name)
	head := fmt.Sprintf("TRIGGER %s %s %s ON %s FOR EACH ROW\n", name, d.timing, d.event, t.Quoted())
	if g.srv.mariaDB {
		// One statement: the table never runs without the trigger.
		return []string{"CREATE OR REPLACE " + head + d.body}
	}
	return []string{"DROP TRIGGER IF EXISTS " + name, "CREATE " + head + d.body}
}

// normalizeSQL collapses whitespace so that bodies compare equal however a
// client re-indented them.
func normalizeSQL(s string) string { return strings.Join(strings.Fields(s), " ") }
