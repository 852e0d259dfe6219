package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Queryer is what the introspection helpers need: *sql.DB, *sql.Conn and
// *sql.Tx all satisfy it.
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ErrNoTable is wrapped by errors about a table that does not exist.
var ErrNoTable = errors.New("table does not exist")

// ErrNoPrimaryKey is wrapped by errors about a table without a primary key.
var ErrNoPrimaryKey = errors.New("table has no PRIMARY KEY")

// Column describes one column, from information_schema.COLUMNS.
type Column struct {
	Name string
	// Position is the 1-based ordinal position.
	Position int
	// DataType is the bare type ("varchar", "bigint"); ColumnType the full
	// one ("varchar(64)", "bigint(20) unsigned", "enum('a','b')").
	DataType   string
	ColumnType string
	// Charset and Collation are empty for non-text columns.
	Charset   string
	Collation string
	Nullable  bool
	// Extra is information_schema's EXTRA ("auto_increment",
	// "INVISIBLE", "STORED GENERATED", …).
	Extra string
	// Generated is set for virtual and stored generated columns, whose
	// values a sink must not write.
	Generated bool
	// Invisible columns (MariaDB ≥10.3, MySQL ≥8.0.23) are left out of
	// SELECT * and of INSERT without a column list.
	Invisible bool
}

// Key is a unique index.
type Key struct {
	Name    string // "PRIMARY" for the primary key
	Primary bool
	Columns []string
	// Prefix is the indexed prefix length of each column in characters,
	// 0 for the whole column.
	Prefix []int
	// Nullable is set when some column of the key allows NULL; such a key
	// does not stop two rows that both hold NULL there.
	Nullable bool
}

// TableColumns returns the columns of schema.table in table order. It
// wraps ErrNoTable when the table does not exist.
func TableColumns(ctx context.Context, q Queryer, schema, table string) ([]Column, error) {
	rows, err := q.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, COLUMN_TYPE,
		COALESCE(CHARACTER_SET_NAME, ''), COALESCE(COLLATION_NAME, ''), IS_NULLABLE, EXTRA,
		COALESCE(GENERATION_EXPRESSION, '')
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
		ORDER BY ORDINAL_POSITION`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("schema: read columns of %s.%s: %w", schema, table, err)
	}
	defer rows.Close()
	var cols []Column
	for rows.Next() {
		var (
			c         Column
			nullable  string
			generated string
		)
		var schemaName, tableName string
		if err := rows.Scan(&schemaName, &tableName, &c.Name, &c.Position, &c.DataType, &c.ColumnType, &c.Charset, &c.Collation,
			&nullable, &c.Extra, &generated); err != nil {
			return nil, fmt.Errorf("schema: read columns of %s.%s: %w", schema, table, err)
		}
		if schemaName != schema || tableName != table {
			// information_schema may compare names case-insensitively; a
			// server with case-sensitive names can hold `T` and `t`.
			continue
		}
		c.DataType = strings.ToLower(c.DataType)
		c.Nullable = nullable == "YES"
		extra := strings.ToUpper(c.Extra)
		c.Generated = generated != "" || strings.Contains(extra, "GENERATED")
		c.Invisible = strings.Contains(extra, "INVISIBLE")
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: read columns of %s.%s: %w", schema, table, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("schema: %s.%s: %w", schema, table, ErrNoTable)
	}
	return cols, nil
}

// PKColumns returns the primary key columns of schema.table in key order.
// It wraps ErrNoTable or ErrNoPrimaryKey when there is none.
func PKColumns(ctx context.Context, q Queryer, schema, table string) ([]string, error) {
	keys, err := UniqueKeys(ctx, q, schema, table)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 || !keys[0].Primary {
		if _, err := TableColumns(ctx, q, schema, table); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("schema: %s.%s: %w", schema, table, ErrNoPrimaryKey)
	}
	return keys[0].Columns, nil
}

// Indexes returns the indexes of schema.table: name → columns in index
// order.
func Indexes(ctx context.Context, q Queryer, schema, table string) (map[string][]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("schema: read indexes of %s.%s: %w", schema, table, err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var s, t, name string
		var col sql.NullString // NULL for an expression part
		if err := rows.Scan(&s, &t, &name, &col); err != nil {
			return nil, fmt.Errorf("schema: read indexes of %s.%s: %w", schema, table, err)
		}
		if s == schema && t == table { // matched case-insensitively
			out[name] = append(out[name], col.String)
		}
	}
	return out, rows.Err()
}

// IsBinaryType reports whether a column of information_schema DATA_TYPE
// dataType holds bytes rather than text: _tandem_conflicts.pk_json shows
// such key values as 0x-prefixed hex.
func IsBinaryType(dataType string) bool {
	switch dataType {
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return true
	}
	return false
}

// UniqueKeys returns the primary key (first, when there is one) and the
// unique secondary keys of schema.table, the latter ordered by name. Keys
// on expressions (MySQL functional indexes) are left out: they cannot be
// matched against row images by column. A missing table yields no keys.
func UniqueKeys(ctx context.Context, q Queryer, schema, table string) ([]Key, error) {
	// STATISTICS alone: joining COLUMNS for nullability materialises both
	// tables and costs ~6 ms a call instead of well under one.
	rows, err := q.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, COLUMN_NAME,
		COALESCE(SUB_PART, 0), NULLABLE
		FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0
		ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("schema: read unique keys of %s.%s: %w", schema, table, err)
	}
	defer rows.Close()
	var (
		keys []Key
		skip = map[string]bool{}
	)
	for rows.Next() {
		var (
			schemaName, tableName, name string
			col                         sql.NullString
			prefix                      int
			nullable                    sql.NullString
		)
		if err := rows.Scan(&schemaName, &tableName, &name, &col, &prefix, &nullable); err != nil {
			return nil, fmt.Errorf("schema: read unique keys of %s.%s: %w", schema, table, err)
		}
		if schemaName != schema || tableName != table {
			continue // matched case-insensitively
		}
		if !col.Valid {
			skip[name] = true
			continue
		}
		if len(keys) == 0 || keys[len(keys)-1].Name != name {
			keys = append(keys, Key{Name: name, Primary: name == "PRIMARY"})
		}
		k := &keys[len(keys)-1]
		k.Columns = append(k.Columns, col.String)
		k.Prefix = append(k.Prefix, prefix)
		k.Nullable = k.Nullable || nullable.String == "YES"
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: read unique keys of %s.%s: %w", schema, table, err)
	}
	return slices.DeleteFunc(keys, func(k Key) bool { return skip[k.Name] }), nil
}

// systemSchemas are never replicated.
var systemSchemas = []string{"mysql", "information_schema", "performance_schema", "sys"}

// ListTables returns the base tables of the given schemas, or of every
// schema but the system ones when includeSchemas is empty, ordered by
// schema and name. Tandem's own tables (names starting with Prefix) are
// left out; Options.tables adds the replicated ones back.
func ListTables(ctx context.Context, q Queryer, includeSchemas []string) ([]TableRef, error) {
	query := `SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'`
	var args []any
	list := includeSchemas
	not := ""
	if len(list) == 0 {
		list, not = systemSchemas, "NOT "
	}
	query += " AND TABLE_SCHEMA " + not + "IN (" + strings.TrimSuffix(strings.Repeat("?, ", len(list)), ", ") + ")"
	for _, s := range list {
		args = append(args, s)
	}
	rows, err := q.QueryContext(ctx, query+" ORDER BY TABLE_SCHEMA, TABLE_NAME", args...)
	if err != nil {
		return nil, fmt.Errorf("schema: list tables: %w", err)
	}
	defer rows.Close()
	var out []TableRef
	for rows.Next() {
		var t TableRef
		if err := rows.Scan(&t.Schema, &t.Table); err != nil {
			return nil, fmt.Errorf("schema: list tables: %w", err)
		}
		if IsInternal(t.Table) {
			continue
		}
		if len(includeSchemas) > 0 && !slices.Contains(includeSchemas, t.Schema) {
			continue // information_schema matched the name case-insensitively
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: list tables: %w", err)
	}
	return out, nil
}

// server is what this package needs to know about the server's flavour.
type server struct {
	version string // SELECT VERSION()
	mariaDB bool
	major   int
	minor   int
	patch   int
}

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`)

func parseServer(version string) server {
	s := server{version: version, mariaDB: strings.Contains(strings.ToLower(version), "mariadb")}
	if m := versionRE.FindStringSubmatch(version); m != nil {
		s.major, _ = strconv.Atoi(m[1])
		s.minor, _ = strconv.Atoi(m[2])
		s.patch, _ = strconv.Atoi(m[3])
	}
	return s
}

func readServer(ctx context.Context, q Queryer) (server, error) {
	var v string
	if err := queryRow(ctx, q, "SELECT VERSION()", nil, &v); err != nil {
		return server{}, fmt.Errorf("schema: read server version: %w", err)
	}
	return parseServer(v), nil
}

func (s server) atLeast(major, minor, patch int) bool {
	return [3]int{s.major, s.minor, s.patch} == [3]int{major, minor, patch} ||
		s.major > major || s.major == major && (s.minor > minor || s.minor == minor && s.patch >= patch)
}

// invisibleColumns: MariaDB 10.3, MySQL 8.0.23.
func (s server) invisibleColumns() bool {
	if s.mariaDB {
		return s.atLeast(10, 3, 0)
	}
	return s.atLeast(8, 0, 23)
}

// rowMetadata: binlog_row_metadata exists from MariaDB 10.5 and MySQL 8.0.1.
func (s server) rowMetadata() bool {
	if s.mariaDB {
		return s.atLeast(10, 5, 0)
	}
	return s.atLeast(8, 0, 1)
}

// configSection is the my.cnf section the server reads.
func (s server) configSection() string {
	if s.mariaDB {
		return "[mariadbd]"
	}
	return "[mysqld]"
}

// queryRow runs a one-row query; sql.ErrNoRows is returned as is.
func queryRow(ctx context.Context, q Queryer, query string, args []any, dest ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}
