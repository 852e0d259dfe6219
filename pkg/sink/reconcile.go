package sink

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// kindLateInsert marks a row Reconcile removed (see there).
const kindLateInsert = "late_insert"

// Reconcile removes the rows of one table that lost to a delete at this
// very site: rows whose version is at or below their own key's tombstone,
// for tombstones with versions in [from, to). It returns how many it
// removed.
//
// Why such rows exist. A local INSERT computes its version in the BEFORE
// INSERT trigger from the statement's start time and from what its
// snapshot shows of the key's tombstone. When a concurrent transaction
// deletes the key (locally, or a sink applying a remote delete) after that
// snapshot and commits while the INSERT waits for the key's row lock, the
// insert goes ahead with a version below the delete's tombstone. Every
// other site applies the delete first and then refuses the older insert,
// as the rule says (the greatest version wins: the delete). Only this site
// keeps the row. Locking reads in the trigger would avoid it but take gap
// locks that deadlock ordinary concurrent inserts and deletes (see
// pkg/schema TestTriggersDoNotDeadlockWriters), so the repair is here,
// after the fact: delete the row, as the rule says every site must.
//
// The repair runs in a sink session: the triggers leave it alone (the
// tombstone already has the delete's version), and its first row change
// is the _tandem_conflicts record of what was removed, which makes the
// local binlog reader drop the transaction — the other sites hold no such
// row, so there is nothing to send them. The delete compares versions
// again under the row lock, so a row rewritten meanwhile with a newer
// version stays.
//
// Under a home policy (home-only mode, home-wins) the rule ranks a version
// of the tenant's home site above every other site's, whatever their HLCs,
// so "at or below the tombstone" is not enough: a home row beats a
// numerically greater tombstone of another site, and every other site keeps
// it (their sinks apply the home insert over the tombstone). homes names
// the rows of such tenants and their home sites; such a row is removed
// only when the rule ranks the tombstone first, i.e. unless the row is the
// home site's and the tombstone is not. A row above its tombstone is never
// removed here, even where a home tombstone beats it: that is a non-home
// write after the home version, which the home site re-asserts
// (internal/replicator/reassert.go).
func (s *MySQL) Reconcile(ctx context.Context, schemaName, table string, from, to hlc.Timestamp, homes HomeRows) (removed int64, err error) {
	m, _, err := s.meta.get(ctx, schemaName, table)
	if err != nil {
		return 0, err
	}
	// The table goes by its qualified name, not an alias: MariaDB resolves
	// the target of a multi-table DELETE in the default database, and sink
	// sessions have none.
	t := m.qTable + "."
	on := make([]string, len(m.pk))
	keys := make([]string, len(m.pk))
	for i, name := range m.pk {
		q := quoteIdent(name)
		on[i] = t + q + " = tb." + q
		keys[i] = keyText(t+q, m.cols[name])
	}
	v := m.qVersion
	from64, to64 := strconv.FormatUint(uint64(from), 10), strconv.FormatUint(uint64(to), 10)
	lost := " AND " + t + v + " <= tb." + v + homes.condition(m, t+v+" & 255", "tb."+v+" & 255")
	tables := " FROM " + m.qTomb + " AS tb JOIN " + m.qTable + " ON " + strings.Join(on, " AND ")
	window := tables + " WHERE tb." + v + " >= " + from64 + " AND tb." + v + " < " + to64 + lost

	conn, tx, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	committed := false
	defer func() {
		healthy := committed
		if !committed {
			healthy = tx.Rollback() == nil && (err == nil || sqlErrorNumber(err) != 0)
		}
		s.release(conn, healthy)
	}()

	// The cheap, common case first: a consistent read over the window
	// takes no locks, writes nothing, and usually finds nothing. What it
	// finds is named by the versions of the tombstones involved, so the
	// locking statements below read (and lock) only those tombstones and
	// rows through the version index, not every tombstone of the window:
	// locking the window held up the sink's tombstone writes and made it
	// deadlock, again and again, under a busy workload (live-lag bench).
	found, err := tx.QueryContext(ctx, "SELECT DISTINCT tb."+v+window+" LIMIT "+strconv.Itoa(reconcileMaxKeys))
	if err != nil {
		return 0, fmt.Errorf("sink: look for late inserts in %s: %w", m.name, err)
	}
	var versions []string
	for found.Next() {
		var tv uint64
		if err := found.Scan(&tv); err != nil {
			found.Close()
			return 0, fmt.Errorf("sink: look for late inserts in %s: %w", m.name, err)
		}
		versions = append(versions, strconv.FormatUint(tv, 10))
	}
	found.Close()
	if err := found.Err(); err != nil {
		return 0, fmt.Errorf("sink: look for late inserts in %s: %w", m.name, err)
	}
	if len(versions) == 0 {
		return 0, nil
	}
	join := tables + " WHERE tb." + v + " IN (" + strings.Join(versions, ", ") + ")" + lost
	// Lock what was found, so the record below describes what the delete
	// removes (READ COMMITTED: rows that no longer match are unlocked).
	rows, err := tx.QueryContext(ctx, "SELECT "+t+v+join+" FOR UPDATE")
	if err != nil {
		return 0, fmt.Errorf("sink: lock late inserts in %s: %w", m.name, err)
	}
	rows.Close()
	// INVARIANT: the first row change of the transaction is in a sink
	// bookkeeping table (loop prevention, see claimOffsets).
	q := "INSERT INTO " + s.qConflicts +
		" (schema_name, table_name, pk_json, kind, local_version, incoming_version, local_site, incoming_site, detail) SELECT " +
		sqlString(m.schema) + ", " + sqlString(m.table) + ", JSON_ARRAY(" + strings.Join(keys, ", ") + "), " +
		sqlString(kindLateInsert) + ", " + t + v + ", tb." + v + ", " + t + v + " & 255, tb." + v + " & 255, " +
		sqlString("a local insert committed after a concurrent delete of the key with a greater version; "+
			"removed here as at every other site (the delete wins)") + join
	res, err := tx.ExecContext(ctx, q)
	if err != nil {
		return 0, bookkeepingError("log late inserts in", s.qConflicts, err)
	}
	if logged, _ := res.RowsAffected(); logged == 0 {
		return 0, nil // rewritten since the count
	}
	res, err = tx.ExecContext(ctx, "DELETE "+m.qTable+join)
	if err != nil {
		return 0, fmt.Errorf("sink: remove late inserts from %s: %w", m.name, err)
	}
	removed, _ = res.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sink: commit removal of late inserts from %s: %w", m.name, err)
	}
	committed = true
	return removed, nil
}

// HomeRows names the rows whose tenants rank versions under a home policy,
// and the home site of each, for Reconcile. The zero value names none
// (every tenant, or no registry: versions rank by the rule alone).
type HomeRows struct {
	// Site, when non-zero, names every row: the table's tenant (a table
	// mapped to a tenant by its schema name) has this home site.
	Site uint8
	// Column and Tenants name, for a table mapped to tenants by a column,
	// the rows whose Column holds one of Tenants[h], whose home site is h.
	Column  string
	Tenants map[uint8][]string
}

// condition is the SQL condition (" AND …", or "" for none) under which a
// row of m, named by its qualified columns, may lose to its tombstone as
// a late insert: not a home row against another site's tombstone. rowSite
// and tombSite are SQL expressions for the sites that stamped the row's
// and the tombstone's versions.
//
// Rows are named by the tenant column's bytes, exactly as the replicator
// names a row's tenant (tenant.ValueString: the bytes of a string, the
// decimal digits of an integer, the text of a date, a float's shortest
// digits, …; tenant.SQLMatch finds them in SQL), whatever the column's
// collation or character set. For a column of another type (JSON, a
// geometry) or one the table lacks, a row's tenant is not known here, so
// no row stamped by any of the home sites is compared with another site's
// tombstone: such a late insert may stay (docs/known-issues.md), but no
// row that its rule keeps is removed.
// Every other row loses to its tombstone under every policy: a row of a
// non-home site against a home tombstone, or two versions of one class,
// ranked by the HLC order.
func (h HomeRows) condition(m *tableMeta, rowSite, tombSite string) string {
	homeRow := func(site uint8) string {
		s := strconv.Itoa(int(site))
		return rowSite + " = " + s + " AND " + tombSite + " <> " + s
	}
	if h.Site != 0 {
		return " AND NOT (" + homeRow(h.Site) + ")"
	}
	if h.Column == "" || len(h.Tenants) == 0 {
		return ""
	}
	sites := make([]int, 0, len(h.Tenants))
	for site, ids := range h.Tenants {
		if len(ids) > 0 {
			sites = append(sites, int(site))
		}
	}
	if len(sites) == 0 {
		return ""
	}
	slices.Sort(sites) // a stable statement text for the same snapshot
	c := m.cols[h.Column]
	kept := make([]string, len(sites))
	for i, site := range sites {
		match, ok := "", false
		if c != nil {
			match, ok = tenant.SQLMatch(m.qTable+"."+quoteIdent(h.Column), c.dataType, h.Tenants[uint8(site)], sqlString)
		}
		if !ok {
			// The column's type decides; no site's tenants can be told.
			list := make([]string, len(sites))
			for j, s := range sites {
				list[j] = strconv.Itoa(s)
			}
			return " AND NOT (" + rowSite + " IN (" + strings.Join(list, ", ") + ") AND " + rowSite + " <> " + tombSite + ")"
		}
		kept[i] = "(COALESCE(" + match + ", FALSE) AND " + homeRow(uint8(site)) + ")"
	}
	return " AND NOT (" + strings.Join(kept, " OR ") + ")"
}

// reconcileMaxKeys bounds the late inserts one Reconcile call removes per
// table; the next pass takes the rest.
const reconcileMaxKeys = 1000

// keyText is a SQL expression rendering key column expr as text for
// _tandem_conflicts.pk_json, the way keyJSON does for applied changes.
func keyText(expr string, c *column) string {
	switch {
	case c == nil:
	case schema.IsBinaryType(c.dataType):
		return "CONCAT('0x', LOWER(HEX(" + expr + ")))"
	case c.dataType == "bit":
		return "CAST(" + expr + " + 0 AS CHAR)"
	}
	return "CAST(" + expr + " AS CHAR)"
}

// sqlString is s as a SQL string literal.
func sqlString(s string) string { return string(appendTextString(nil, s)) }
