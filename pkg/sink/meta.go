package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/tandemdb/tandem/pkg/schema"
)

// column is what the sink knows about one target column.
type column struct {
	name      string
	kind      colKind
	generated bool   // computed by the server; never written
	dataType  string // information_schema DATA_TYPE ("varbinary", "int", …)
}

// tableMeta is the target side of one replicated table: its columns, keys
// and tombstone table, read from information_schema. Source rows are
// mapped onto it by column name (the names come from the source's binlog
// metadata), so the two tables may differ in column order.
type tableMeta struct {
	schema, table string
	name          string // schema.table, for messages
	qTable, qTomb string // quoted `schema`.`table` names
	qVersion      string
	wins          winsFunc
	cols          map[string]*column
	pk            []string // primary key columns in key order
	// unique is set when the table has a unique secondary key: INSERT … ON
	// DUPLICATE KEY UPDATE could then update a row other than the one with
	// the incoming primary key, so new rows take a plain INSERT.
	unique bool

	mu      sync.Mutex
	layouts map[string]*layout
}

// layout maps one source column list (a table map of the source) onto the
// target table, with the SQL fragments that depend only on it.
type layout struct {
	write []int     // source index of each written column, in statement order
	kinds []colKind // per written column
	qcols []string  // quoted target name per written column
	pk    []int     // source index of each primary key column, in key order

	insertHead string // INSERT INTO t (cols…, v) VALUES
	odku       string // ON DUPLICATE KEY UPDATE … compare-and-set
}

// schemaError is a problem with the target's schema: applying the change
// again fails the same way until someone changes the schema.
type schemaError struct{ msg string }

func (e *schemaError) Error() string { return e.msg }

func schemaErrorf(format string, args ...any) error {
	return &schemaError{msg: fmt.Sprintf(format, args...)}
}

// metaCache caches tableMeta per table. An entry is dropped when a
// statement on the table fails in a way a schema change could explain, and
// read again on next use. Failed loads are not cached, so running
// `replicator schema prepare` takes effect on the next batch.
type metaCache struct {
	q       schema.Queryer
	version string // version column name
	wins    winsFunc

	mu     sync.Mutex
	tables map[[2]string]*tableMeta
}

func newMetaCache(q schema.Queryer, versionColumn string, wins winsFunc) *metaCache {
	return &metaCache{q: q, version: versionColumn, wins: wins, tables: map[[2]string]*tableMeta{}}
}

// get returns the metadata of schemaName.table, loading it on first use.
// fresh reports whether it was loaded by this call.
func (c *metaCache) get(ctx context.Context, schemaName, table string) (m *tableMeta, fresh bool, err error) {
	key := [2]string{schemaName, table}
	c.mu.Lock()
	m = c.tables[key]
	c.mu.Unlock()
	if m != nil {
		return m, false, nil
	}
	m, err = c.load(ctx, schemaName, table)
	if err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	c.tables[key] = m
	c.mu.Unlock()
	return m, true, nil
}

func (c *metaCache) invalidate(schemaName, table string) {
	c.mu.Lock()
	delete(c.tables, [2]string{schemaName, table})
	c.mu.Unlock()
}

func (c *metaCache) load(ctx context.Context, schemaName, table string) (*tableMeta, error) {
	name := schemaName + "." + table
	if len(table) > schema.MaxTableName {
		return nil, schemaErrorf("table name %s is longer than %d characters, too long for its tombstone table %s%s",
			name, schema.MaxTableName, schema.TombPrefix, table)
	}
	cols, err := schema.TableColumns(ctx, c.q, schemaName, table)
	if errors.Is(err, schema.ErrNoTable) {
		return nil, schemaErrorf("table %s does not exist at the target", name)
	}
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	m := &tableMeta{
		schema:   schemaName,
		table:    table,
		name:     name,
		qTable:   quoteIdent(schemaName) + "." + quoteIdent(table),
		qTomb:    quoteIdent(schemaName) + "." + quoteIdent(schema.TombTable(table)),
		qVersion: quoteIdent(c.version),
		wins:     c.wins,
		cols:     make(map[string]*column, len(cols)),
		layouts:  map[string]*layout{},
	}
	for _, col := range cols {
		k := colPlain
		if col.DataType == "json" {
			k = colJSON
		}
		m.cols[col.Name] = &column{name: col.Name, kind: k, generated: col.Generated, dataType: col.DataType}
	}
	if v, ok := m.cols[c.version]; !ok || v.generated {
		return nil, schemaErrorf("table %s has no version column %s: run `replicator schema prepare`", name, c.version)
	}
	keys, err := schema.UniqueKeys(ctx, c.q, schemaName, table)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	for _, k := range keys {
		if k.Primary {
			m.pk = k.Columns
		} else {
			m.unique = true
		}
	}
	if len(m.pk) == 0 {
		return nil, schemaErrorf("table %s has no PRIMARY KEY; Tandem replicates only tables with one", name)
	}
	tomb, err := schema.TableColumns(ctx, c.q, schemaName, schema.TombTable(table))
	if errors.Is(err, schema.ErrNoTable) {
		return nil, schemaErrorf("table %s has no tombstone table %s.%s: run `replicator schema prepare`",
			name, schemaName, schema.TombTable(table))
	}
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	have := map[string]bool{}
	for _, col := range tomb {
		have[col.Name] = true
	}
	for _, want := range append(append([]string(nil), m.pk...), c.version) {
		if !have[want] {
			return nil, schemaErrorf("tombstone table %s.%s lacks column %s: run `replicator schema prepare`",
				schemaName, schema.TombTable(table), want)
		}
	}
	return m, nil
}

// layoutFor returns the mapping of the source column list cols, building it
// on first use. A source column the target lacks is an error naming it.
func (m *tableMeta) layoutFor(cols []string, versionColumn string) (*layout, error) {
	key := strings.Join(cols, "\x00")
	m.mu.Lock()
	l := m.layouts[key]
	m.mu.Unlock()
	if l != nil {
		return l, nil
	}
	l = &layout{}
	pos := make(map[string]int, len(cols))
	for i, name := range cols {
		if _, dup := pos[name]; dup {
			return nil, schemaErrorf("source rows of %s name column %s twice", m.name, name)
		}
		pos[name] = i
		if name == versionColumn {
			continue // written from Change.Version
		}
		col := m.cols[name]
		if col == nil {
			return nil, schemaErrorf("column %s of %s does not exist at the target", name, m.name)
		}
		if col.generated {
			continue // the target computes it
		}
		l.write = append(l.write, i)
		l.kinds = append(l.kinds, col.kind)
		l.qcols = append(l.qcols, quoteIdent(name))
	}
	for _, name := range m.pk {
		i, ok := pos[name]
		if !ok {
			return nil, schemaErrorf("source rows of %s lack primary key column %s of the target", m.name, name)
		}
		l.pk = append(l.pk, i)
	}

	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(m.qTable)
	b.WriteString(" (")
	for _, q := range l.qcols {
		b.WriteString(q)
		b.WriteByte(',')
	}
	b.WriteString(m.qVersion)
	b.WriteString(") VALUES ")
	l.insertHead = b.String()

	// Compare-and-set in SQL, even though the sink holds the rows' locks
	// and already decided: defence in depth against a decision made on a
	// stale read. Every column keeps its value unless the incoming version
	// wins over the row's. The version column must come LAST: MariaDB (and
	// MySQL) evaluate the assignments left to right and later ones see
	// earlier results, so updating the version first would make every
	// following IF compare the incoming version with itself.
	b.Reset()
	b.WriteString(" ON DUPLICATE KEY UPDATE ")
	cond := "IF(" + m.wins("VALUES("+m.qVersion+")", m.qVersion) + ", VALUES("
	for _, q := range l.qcols {
		// Primary key columns are assigned too: under a case-insensitive
		// collation 'a' and 'A' are the same key, and the winner's
		// spelling must win for the sites to hold identical bytes.
		b.WriteString(q)
		b.WriteString(" = ")
		b.WriteString(cond)
		b.WriteString(q)
		b.WriteString("), ")
		b.WriteString(q)
		b.WriteString("), ")
	}
	b.WriteString(m.qVersion)
	b.WriteString(" = ")
	b.WriteString(cond)
	b.WriteString(m.qVersion)
	b.WriteString("), ")
	b.WriteString(m.qVersion)
	b.WriteString(")")
	l.odku = b.String()

	m.mu.Lock()
	if prev := m.layouts[key]; prev != nil {
		l = prev
	} else {
		m.layouts[key] = l
	}
	m.mu.Unlock()
	return l, nil
}
