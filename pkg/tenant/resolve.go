package tenant

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/tandemdb/tandem/pkg/event"
)

// Rule maps tables to tenants. Exactly one of Column and SchemaPattern is
// set:
//
//   - Column: tables matching Schema.Table (path.Match globs; Table
//     defaults to "*") belong to the tenant named by that column's value
//     in each row (shared tables, e.g. shop.* with tenant_id);
//   - SchemaPattern: tables whose schema name fully matches the regular
//     expression belong to the tenant its first capture group names
//     (schema-per-tenant, e.g. `tenant_(\w+)`), Table again filtering.
//
// The first matching rule decides; a table no rule matches belongs to the
// global tenant. Every site must hold the same rules: the applier checks
// each change against them (isolation) with the answer the source gave.
type Rule struct {
	Schema        string `yaml:"schema,omitempty" json:"schema,omitempty"`
	Table         string `yaml:"table,omitempty" json:"table,omitempty"`
	Column        string `yaml:"column,omitempty" json:"column,omitempty"`
	SchemaPattern string `yaml:"schema_pattern,omitempty" json:"schema_pattern,omitempty"`
}

// Check explains what is wrong with r, or returns nil.
func (r Rule) Check() error {
	_, err := compileRule(r)
	return err
}

type compiledRule struct {
	Rule
	re *regexp.Regexp
}

func compileRule(r Rule) (compiledRule, error) {
	c := compiledRule{Rule: r}
	if c.Table == "" {
		c.Table = "*"
	}
	if _, err := path.Match(c.Table, ""); err != nil {
		return c, fmt.Errorf("table %q is not a valid glob (%v); allowed e.g. \"orders\", \"*\", \"order_*\"", r.Table, err)
	}
	switch {
	case r.Column != "" && r.SchemaPattern != "":
		return c, fmt.Errorf("both column and schema_pattern are set; allowed one of them")
	case r.Column != "":
		if r.Schema == "" {
			return c, fmt.Errorf("column %q needs schema (a glob such as \"shop\" or \"shop_*\")", r.Column)
		}
		if _, err := path.Match(r.Schema, ""); err != nil {
			return c, fmt.Errorf("schema %q is not a valid glob (%v)", r.Schema, err)
		}
	case r.SchemaPattern != "":
		if r.Schema != "" {
			return c, fmt.Errorf("schema and schema_pattern are both set; allowed one of them")
		}
		re, err := regexp.Compile("^(?:" + r.SchemaPattern + ")$")
		if err != nil {
			return c, fmt.Errorf("schema_pattern %q is not a regular expression: %v", r.SchemaPattern, err)
		}
		if re.NumSubexp() < 1 {
			return c, fmt.Errorf("schema_pattern %q has no capture group; allowed a pattern whose first group names the tenant, e.g. `tenant_(\\w+)`", r.SchemaPattern)
		}
		c.re = re
	default:
		return c, fmt.Errorf("neither column nor schema_pattern is set; allowed one of them")
	}
	return c, nil
}

// Resolver tells which tenant a row change belongs to. It is safe for
// concurrent use and caches its per-table decision.
type Resolver struct {
	rules []compiledRule
	mu    sync.RWMutex
	cache map[tableKey]tableMapping
}

type tableKey struct{ schema, table string }

// tableMapping is the decision for one table.
type tableMapping struct {
	kind   uint8  // mapNone, mapColumn, mapSchema
	column string // mapColumn
	tenant string // mapSchema
}

const (
	mapNone uint8 = iota
	mapColumn
	mapSchema
)

// NewResolver compiles rules; the error names the bad rule.
func NewResolver(rules []Rule) (*Resolver, error) {
	r := &Resolver{cache: map[tableKey]tableMapping{}}
	for i, rule := range rules {
		c, err := compileRule(rule)
		if err != nil {
			return nil, fmt.Errorf("tenant rule %d: %w", i, err)
		}
		r.rules = append(r.rules, c)
	}
	return r, nil
}

// Mapped reports whether any rule exists (nil or empty: everything is
// global).
func (r *Resolver) Mapped() bool { return r != nil && len(r.rules) > 0 }

func (r *Resolver) mapping(schema, table string) tableMapping {
	k := tableKey{schema, table}
	r.mu.RLock()
	m, ok := r.cache[k]
	r.mu.RUnlock()
	if ok {
		return m
	}
	m = tableMapping{}
	for _, rule := range r.rules {
		if ok, _ := path.Match(rule.Table, table); !ok {
			continue
		}
		if rule.re != nil {
			sub := rule.re.FindStringSubmatch(schema)
			if sub == nil {
				continue
			}
			m.kind, m.tenant = mapSchema, sub[1]
			break
		}
		if ok, _ := path.Match(rule.Schema, schema); ok {
			m.kind, m.column = mapColumn, rule.Column
			break
		}
	}
	r.mu.Lock()
	if len(r.cache) > 100_000 {
		clear(r.cache) // schema-per-tenant fleets: bound the cache
	}
	r.cache[k] = m
	r.mu.Unlock()
	return m
}

// Tenant returns the tenant ch belongs to. A mapped table whose tenant
// column is missing from the change or NULL belongs to the global tenant:
// the answer must be a pure function of the change, so that the source and
// every applier agree on it.
func (r *Resolver) Tenant(ch *event.Change) string {
	if !r.Mapped() {
		return Global
	}
	m := r.mapping(ch.Schema, ch.Table)
	switch m.kind {
	case mapSchema:
		return m.tenant
	case mapColumn:
		for j, c := range ch.Columns {
			if c == m.column && j < len(ch.Row) {
				return ValueString(ch.Row[j])
			}
		}
		return Global
	}
	return Global
}

// Column returns the column whose value names the tenant of the rows of
// schema.table, or "" when no column rule maps the table. A change built
// by hand (not read from the binlog) must carry that column for Tenant to
// give its tenant.
func (r *Resolver) Column(schema, table string) string {
	if !r.Mapped() {
		return ""
	}
	if m := r.mapping(schema, table); m.kind == mapColumn {
		return m.column
	}
	return ""
}

// TableTenant returns the tenant of every row of schema.table when no
// column decides it: a schema rule's tenant, or Global for a table no rule
// maps. ok is false when a column rule maps the table (see Column).
func (r *Resolver) TableTenant(schema, table string) (tenant string, ok bool) {
	if !r.Mapped() {
		return Global, true
	}
	switch m := r.mapping(schema, table); m.kind {
	case mapSchema:
		return m.tenant, true
	case mapColumn:
		return "", false
	}
	return Global, true
}

// ValueString renders a tenant column value as the tenant id.
func ValueString(v event.Value) string {
	switch v.Kind {
	case event.KindNull:
		return Global
	case event.KindInt:
		return strconv.FormatInt(v.Int, 10)
	case event.KindUint, event.KindBit:
		return strconv.FormatUint(v.Uint, 10)
	case event.KindFloat32:
		return strconv.FormatFloat(v.Float, 'g', -1, 32)
	case event.KindFloat64:
		return strconv.FormatFloat(v.Float, 'g', -1, 64)
	}
	return string(v.Bytes)
}

// SQLMatch returns a SQL condition that holds for exactly the rows whose
// column col (a column expression of information_schema DATA_TYPE
// dataType) names one of the tenants ids, as ValueString names a row's
// tenant from that column's binlog value (as pkg/binlog decodes it), so
// that SQL can find a tenant's rows as the replicator does. quote renders
// a string as a SQL string literal. ok is false for a type it cannot
// match so. The condition is evaluated in a session with time_zone
// '+00:00', as the sink's are: the reader renders a TIMESTAMP in UTC.
//
// Most types are compared as text: the column rendered as the bytes
// ValueString gives. BIT and YEAR travel as numbers (ValueString: decimal
// digits), so they are rendered through "+ 0": a BIT's bytes and YEAR 0's
// "0000" differ from those digits. FLOAT and DOUBLE have no such
// rendering (Go writes 1e+06 where the server writes 1000000 or 1e6), so
// they are compared as numbers: each id is read back as the value
// ValueString wrote it from (a float32 for FLOAT) and written as an exact
// double literal, which the server compares with the column's value
// widened to a double. An id ValueString cannot have written for such a
// column names no row. (0 and -0 compare equal, so the tenants "0" and
// "-0" of one column are matched together.) pkg/binlog's
// TestTenantSQLMatchesReader checks every type this accepts against the
// reader on a real server.
func SQLMatch(col, dataType string, ids []string, quote func(string) string) (cond string, ok bool) {
	var lits []string
	asText := func() {
		for _, id := range ids {
			lits = append(lits, "CAST("+quote(id)+" AS BINARY)")
		}
	}
	switch dataType {
	case "bit", "year":
		col = "CAST(" + col + " + 0 AS BINARY)"
		asText()
	case "tinyint", "smallint", "mediumint", "int", "bigint",
		"char", "varchar", "tinytext", "text", "mediumtext", "longtext",
		"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
		"enum", "set", "decimal", "date", "datetime", "timestamp", "time":
		col = "CAST(" + col + " AS BINARY)"
		asText()
	case "float", "double":
		bits := 64
		if dataType == "float" {
			bits = 32
		}
		for _, id := range ids {
			f, err := strconv.ParseFloat(id, bits)
			if err != nil || strconv.FormatFloat(f, 'g', -1, bits) != id {
				continue
			}
			// 'e' makes it a DOUBLE literal (a plain 0.1 would be a
			// DECIMAL); the shortest digits that read back as f are
			// exact for a correctly rounding parser such as the server's.
			lits = append(lits, strconv.FormatFloat(f, 'e', -1, 64))
		}
	default:
		return "", false
	}
	if len(lits) == 0 {
		return "FALSE", true
	}
	return col + " IN (" + strings.Join(lits, ", ") + ")", true
}

// Split cuts t into one transaction per tenant, in the order each tenant
// first appears, each keeping its changes in their original order. Every
// part keeps t's identity (origin, GTID, stamp, commit time, fragment
// number, Last, Position); the caller decides which part carries the resume
// position (the last). A transaction whose changes all belong to one tenant
// comes back as itself with Tenant set; one without changes comes back
// unchanged (a position-only marker).
func Split(t event.Txn, r *Resolver) []event.Txn {
	if len(t.Changes) == 0 {
		return []event.Txn{t}
	}
	first := r.Tenant(&t.Changes[0])
	same := true
	for i := 1; i < len(t.Changes) && same; i++ {
		same = r.Tenant(&t.Changes[i]) == first
	}
	if same {
		t.Tenant = first
		return []event.Txn{t}
	}
	idx := map[string]int{}
	var parts []event.Txn
	for i := range t.Changes {
		ten := r.Tenant(&t.Changes[i])
		j, ok := idx[ten]
		if !ok {
			j = len(parts)
			idx[ten] = j
			p := t
			p.Tenant, p.Changes = ten, nil
			parts = append(parts, p)
		}
		parts[j].Changes = append(parts[j].Changes, t.Changes[i])
	}
	return parts
}

// Foreign returns the index of the first change of t that does not belong
// to t.Tenant under r, or -1: the isolation check of an applier.
func Foreign(t *event.Txn, r *Resolver) (int, string) {
	for i := range t.Changes {
		if got := r.Tenant(&t.Changes[i]); got != t.Tenant {
			return i, got
		}
	}
	return -1, ""
}
