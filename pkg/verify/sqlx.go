package verify

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/pkg/schema"
)

// Statements are sent as text with values written as SQL literals (as the
// sink does, see pkg/sink/literal.go): one round trip each, and string
// values as _binary'…' literals reach or match a column byte for byte
// whatever its character set. Every session uses utf8mb4 and an sql_mode
// without NO_BACKSLASH_ESCAPES (pkg/config's DSN), which makes the
// escaping below safe.

func quoteIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

func qualified(schemaName, table string) string {
	return quoteIdent(schemaName) + "." + quoteIdent(table)
}

// colKind is what the verifier must know about a column to hash it, to
// compare a key with it and to write it back.
type colKind uint8

const (
	kInt colKind = iota
	kDecimal
	kFloat
	kDouble
	kBit
	kTemporal
	kText
	kBinary
	kJSON // MySQL's binary JSON type; MariaDB's JSON is a LONGTEXT
)

func kindOf(c schema.Column) colKind {
	switch c.DataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year":
		return kInt
	case "decimal", "numeric":
		return kDecimal
	case "float":
		return kFloat
	case "double", "real", "double precision":
		return kDouble
	case "bit":
		return kBit
	case "date", "datetime", "timestamp", "time":
		return kTemporal
	case "json":
		return kJSON
	}
	if c.Charset != "" {
		return kText
	}
	return kBinary
}

// column is a table column with its kind.
type column struct {
	schema.Column
	kind colKind
}

// tableModel is what the checker knows about one table.
type tableModel struct {
	schema, name string
	cols         []column // every column, table order, version included
	pk           []column
	pkIdx        []int // positions of pk columns in cols
	version      string
	tenantCol    string // "" when the check is not tenant-scoped
	tenantVal    string
	hasTomb      bool
}

func (t *tableModel) String() string { return t.schema + "." + t.name }

func (t *tableModel) quoted() string { return qualified(t.schema, t.name) }

func (t *tableModel) tombQuoted() string { return qualified(t.schema, schema.TombTable(t.name)) }

// loadTable reads t's definition at one site.
func loadTable(ctx context.Context, db *sql.DB, schemaName, table, version string) (*tableModel, error) {
	cols, err := schema.TableColumns(ctx, db, schemaName, table)
	if err != nil {
		return nil, err
	}
	pk, err := schema.PKColumns(ctx, db, schemaName, table)
	if err != nil {
		return nil, err
	}
	t := &tableModel{schema: schemaName, name: table, version: version}
	hasVersion := false
	for _, c := range cols {
		if c.Generated {
			// Generated columns follow from the others; they are neither
			// hashed nor written back.
			continue
		}
		t.cols = append(t.cols, column{Column: c, kind: kindOf(c)})
		if c.Name == version {
			hasVersion = true
		}
	}
	if !hasVersion {
		return nil, fmt.Errorf("table %s.%s has no version column %q; run `replicator schema prepare` (or set version_column)", schemaName, table, version)
	}
	for _, name := range pk {
		for i, c := range t.cols {
			if c.Name == name {
				if c.kind == kFloat {
					return nil, fmt.Errorf("table %s.%s: primary key column %s is FLOAT, whose values cannot be compared exactly; allowed: any other type", schemaName, table, name)
				}
				t.pk = append(t.pk, c)
				t.pkIdx = append(t.pkIdx, i)
			}
		}
	}
	if len(t.pk) != len(pk) {
		return nil, fmt.Errorf("table %s.%s: a primary key column is generated; allowed: stored columns only", schemaName, table)
	}
	var n int
	err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
		schemaName, schema.TombTable(table)).Scan(&n)
	if err != nil {
		return nil, fmt.Errorf("table %s.%s: look for its tombstone table: %w", schemaName, table, err)
	}
	t.hasTomb = n > 0
	return t, nil
}

// sameShape reports how u differs from t, or "" when they have the same
// columns of the same types in the same order.
func (t *tableModel) sameShape(u *tableModel) string {
	if len(t.cols) != len(u.cols) {
		return fmt.Sprintf("%d columns here, %d there", len(t.cols), len(u.cols))
	}
	for i := range t.cols {
		a, b := t.cols[i], u.cols[i]
		if a.Name != b.Name || a.ColumnType != b.ColumnType {
			return fmt.Sprintf("column %d is %s %s here, %s %s there", i+1, a.Name, a.ColumnType, b.Name, b.ColumnType)
		}
	}
	if len(t.pk) != len(u.pk) {
		return "primary keys differ"
	}
	for i := range t.pk {
		if t.pk[i].Name != u.pk[i].Name {
			return "primary keys differ"
		}
	}
	return ""
}

// HashMD5 names how a row becomes a 64-bit hash in SQL: the first 64 bits
// of the MD5 of its normalised text, XOR-aggregated per chunk.
//
// Not CRC32 (pt-table-checksum's default) nor CRC32 paired with CRC32C:
// a CRC is affine over GF(2), so when two rows of a chunk change by the
// same bytes at the same offsets (one UPDATE setting status = 'x' on two
// rows of equal length, say) their CRC changes are equal and cancel in
// the XOR, and the chunk checksum misses the divergence. MD5 has no such
// structure; in MariaDB it costs about what two CRCs of the row cost.
const HashMD5 = "md5"

// rowText is the per-row string that is hashed: every column, NULL-safe
// (a NULL bitmap, since CONCAT_WS skips NULLs) and type-normalised (FLOAT
// widened to DOUBLE, whose text round-trips; TIMESTAMP in the session's
// UTC; strings length-prefixed so that a separator inside a value cannot
// shift the others, and compared as bytes when the table mixes collations,
// which CONCAT_WS would otherwise refuse to concatenate).
func (t *tableModel) rowText() string {
	collations := map[string]bool{}
	for _, c := range t.cols {
		if c.kind == kText {
			collations[c.Collation] = true
		}
	}
	asBytes := len(collations) > 1
	parts := make([]string, 0, 2*len(t.cols)+1)
	var nulls []string
	for _, c := range t.cols {
		q := quoteIdent(c.Name)
		switch c.kind {
		case kFloat:
			parts = append(parts, "CAST("+q+" AS DOUBLE)")
		case kText:
			if asBytes {
				parts = append(parts, "LENGTH("+q+")", "CAST("+q+" AS BINARY)")
			} else {
				parts = append(parts, "LENGTH("+q+")", q)
			}
		case kBinary:
			parts = append(parts, "LENGTH("+q+")", q)
		case kJSON:
			parts = append(parts, "CAST(CAST("+q+" AS CHAR) AS BINARY)")
		default:
			parts = append(parts, q)
		}
		if c.Nullable {
			nulls = append(nulls, "ISNULL("+q+")")
		}
	}
	if len(nulls) > 0 {
		parts = append(parts, "CONCAT("+strings.Join(nulls, ", ")+")")
	}
	return "CONCAT_WS('#', " + strings.Join(parts, ", ") + ")"
}

// rowHash is the row's 64-bit hash.
func (t *tableModel) rowHash() string {
	return "CAST(CONV(LEFT(MD5(" + t.rowText() + "), 16), 16, 10) AS UNSIGNED)"
}

func (t *tableModel) pkList() string {
	q := make([]string, len(t.pk))
	for i, c := range t.pk {
		q[i] = quoteIdent(c.Name)
	}
	return strings.Join(q, ", ")
}

// bound is a primary key value as the text protocol renders it; nil is
// unbounded.
type bound []string

// keyLiteral renders one key column's value for a WHERE clause.
func keyLiteral(c column, v string) (string, error) {
	switch c.kind {
	case kInt, kDecimal, kDouble:
		// A DECIMAL rendered by the server has at most 65 digits, so its
		// unquoted literal is an exact DECIMAL, compared exactly.
		if !numeric(v) {
			return "", fmt.Errorf("column %s: %q is not a number", c.Name, v)
		}
		return v, nil
	case kBit:
		return bitLiteral(v), nil
	case kTemporal:
		if !temporal(v) {
			return "", fmt.Errorf("column %s: %q is not a date or time", c.Name, v)
		}
		return "'" + v + "'", nil
	}
	return binaryLiteral(v), nil
}

// valueLiteral renders a value read back (NULL when null) for an INSERT.
func valueLiteral(c column, v []byte, null bool) (string, error) {
	if null {
		return "NULL", nil
	}
	switch c.kind {
	case kFloat, kDouble:
		if !numeric(string(v)) {
			return "", fmt.Errorf("column %s: %q is not a number", c.Name, v)
		}
		return string(v), nil
	case kJSON:
		return "CONVERT(" + binaryLiteral(string(v)) + " USING utf8mb4)", nil
	case kDecimal:
		// Quoted: a string converts to DECIMAL exactly at any precision.
		if !numeric(string(v)) {
			return "", fmt.Errorf("column %s: %q is not a number", c.Name, v)
		}
		return "'" + string(v) + "'", nil
	}
	return keyLiteral(c, string(v))
}

func numeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}

func temporal(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c == '-' || c == ':' || c == '.' || c == ' ') {
			return false
		}
	}
	return true
}

// bitLiteral renders BIT bytes (big-endian, as the text protocol sends
// them) as a number.
func bitLiteral(v string) string {
	var buf [8]byte
	b := []byte(v)
	if len(b) > 8 {
		b = b[len(b)-8:]
	}
	copy(buf[8-len(b):], b)
	return strconv.FormatUint(binary.BigEndian.Uint64(buf[:]), 10)
}

// binaryLiteral renders bytes as a binary string literal: _binary'…' when
// they are printable UTF-8 (readable in repair SQL), X'…' otherwise.
func binaryLiteral(v string) string {
	if !printable(v) {
		return "X'" + hex.EncodeToString([]byte(v)) + "'"
	}
	var b strings.Builder
	b.Grow(len(v) + 10)
	b.WriteString("_binary'")
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case 0:
			b.WriteString(`\0`)
		case '\'':
			b.WriteString(`\'`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case 0x1a:
			b.WriteString(`\Z`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

func printable(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if r < 0x20 && r != '\t' && r != '\n' || r == 0x7f {
			return false
		}
	}
	return true
}

// cmpBound is "key > lo" for a composite key: (a > x) OR (a = x AND b > y)…,
// a form the range optimizer uses (MariaDB does not optimise row
// constructor inequalities).
func (t *tableModel) cmpBound(b bound, strict bool, greater bool) (string, error) {
	lits := make([]string, len(t.pk))
	for i, c := range t.pk {
		l, err := keyLiteral(c, b[i])
		if err != nil {
			return "", err
		}
		lits[i] = l
	}
	op := "<"
	if greater {
		op = ">"
	}
	var ors []string
	for i := range t.pk {
		var ands []string
		for j := 0; j < i; j++ {
			ands = append(ands, quoteIdent(t.pk[j].Name)+" = "+lits[j])
		}
		o := op
		if i == len(t.pk)-1 && !strict {
			o += "="
		}
		ands = append(ands, quoteIdent(t.pk[i].Name)+" "+o+" "+lits[i])
		ors = append(ors, strings.Join(ands, " AND "))
	}
	if len(ors) == 1 {
		return ors[0], nil
	}
	return "(" + strings.Join(ors, " OR ") + ")", nil
}

// rangeWhere is the WHERE clause of the range (lo, hi] plus the tenant
// filter; nil bounds are open.
func (t *tableModel) rangeWhere(lo, hi bound) (string, error) {
	var conds []string
	if lo != nil {
		c, err := t.cmpBound(lo, true, true)
		if err != nil {
			return "", err
		}
		conds = append(conds, c)
	}
	if hi != nil {
		c, err := t.cmpBound(hi, false, false)
		if err != nil {
			return "", err
		}
		conds = append(conds, c)
	}
	if t.tenantCol != "" {
		conds = append(conds, quoteIdent(t.tenantCol)+" = "+binaryLiteral(t.tenantVal))
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), nil
}

// keyWhere matches exactly the given keys.
func (t *tableModel) keyWhere(keys []bound) (string, error) {
	if len(t.pk) == 1 {
		lits := make([]string, len(keys))
		for i, k := range keys {
			l, err := keyLiteral(t.pk[0], k[0])
			if err != nil {
				return "", err
			}
			lits[i] = l
		}
		return quoteIdent(t.pk[0].Name) + " IN (" + strings.Join(lits, ", ") + ")", nil
	}
	ors := make([]string, len(keys))
	for i, k := range keys {
		ands := make([]string, len(t.pk))
		for j, c := range t.pk {
			l, err := keyLiteral(c, k[j])
			if err != nil {
				return "", err
			}
			ands[j] = quoteIdent(c.Name) + " = " + l
		}
		ors[i] = "(" + strings.Join(ands, " AND ") + ")"
	}
	return strings.Join(ors, " OR "), nil
}

// keyString encodes a key for maps: length-prefixed parts.
func keyString(k bound) string {
	var b []byte
	for _, p := range k {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return string(b)
}

// isNoTable reports MySQL error 1146 (table doesn't exist).
func isNoTable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1146
}
