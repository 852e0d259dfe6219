// Package compare checks that sites hold byte-identical rows, by streaming
// each table in primary-key order from every site and merging. It is the
// exact, slow reference the tests and the demo use; the verifier's chunked
// checksum (issue 5) is the fast form.
package compare

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/tandemdb/tandem/pkg/schema"
)

// Diff is one primary key whose rows differ between two sites.
type Diff struct {
	Table string
	Key   string // the key values, rendered
	A, B  string // the rows ("<missing>" when absent)
}

func (d Diff) String() string {
	return fmt.Sprintf("%s key %s:\n  a: %s\n  b: %s", d.Table, d.Key, d.A, d.B)
}

// Result of comparing one pair of sites.
type Result struct {
	Rows  map[string]int // rows per table at site a
	Diffs []Diff         // first MaxDiffs differences
	More  int            // differences beyond MaxDiffs
}

// Equal reports whether no difference was found.
func (r Result) Equal() bool { return len(r.Diffs) == 0 }

// MaxDiffs bounds the differences kept per comparison.
const MaxDiffs = 50

// Tables compares the given tables (schema.table) between a and b.
func Tables(ctx context.Context, a, b *sql.DB, tables []string) (Result, error) {
	res := Result{Rows: map[string]int{}}
	for _, t := range tables {
		s, tb, ok := strings.Cut(t, ".")
		if !ok {
			return res, fmt.Errorf("compare: %q is not schema.table", t)
		}
		pk, err := schema.PKColumns(ctx, a, s, tb)
		if err != nil {
			return res, err
		}
		if len(pk) == 0 {
			return res, fmt.Errorf("compare: %s has no primary key", t)
		}
		cols, err := schema.TableColumns(ctx, a, s, tb)
		if err != nil {
			return res, err
		}
		names := make([]string, len(cols))
		for i, c := range cols {
			names[i] = c.Name
		}
		if err := table(ctx, a, b, s, tb, pk, names, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

func table(ctx context.Context, a, b *sql.DB, s, t string, pk, cols []string, res *Result) error {
	order := make([]string, len(pk))
	for i, c := range pk {
		order[i] = "`" + c + "`"
	}
	all := make([]string, len(cols))
	for i, c := range cols {
		all[i] = "`" + c + "`"
	}
	// The key columns first, then every column by name (the version
	// column is INVISIBLE, so * would skip it), as text: a byte-wise
	// comparison of the rendered row is a byte-wise comparison of the data.
	q := fmt.Sprintf("SELECT %s, %s FROM `%s`.`%s` ORDER BY %s", strings.Join(order, ", "), strings.Join(all, ", "), s, t, strings.Join(order, ", "))
	ra, err := a.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("compare: site a %s.%s: %w", s, t, err)
	}
	defer ra.Close()
	rb, err := b.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("compare: site b %s.%s: %w", s, t, err)
	}
	defer rb.Close()
	name := s + "." + t
	ca, _ := ra.Columns()
	na := newCursor(ra, len(ca), len(pk))
	nb := newCursor(rb, len(ca), len(pk))
	na.next()
	nb.next()
	add := func(d Diff) {
		if len(res.Diffs) < MaxDiffs {
			res.Diffs = append(res.Diffs, d)
		} else {
			res.More++
		}
	}
	for na.ok || nb.ok {
		switch c := cmpKeys(na, nb); {
		case c == 0:
			res.Rows[name]++
			if !bytes.Equal(na.row, nb.row) {
				add(Diff{Table: name, Key: na.key, A: na.text(ca), B: nb.text(ca)})
			}
			na.next()
			nb.next()
		case c < 0:
			res.Rows[name]++
			add(Diff{Table: name, Key: na.key, A: na.text(ca), B: "<missing>"})
			na.next()
		default:
			add(Diff{Table: name, Key: nb.key, A: "<missing>", B: nb.text(ca)})
			nb.next()
		}
	}
	if na.err != nil {
		return fmt.Errorf("compare: site a %s: %w", name, na.err)
	}
	if nb.err != nil {
		return fmt.Errorf("compare: site b %s: %w", name, nb.err)
	}
	return nil
}

type cursor struct {
	rows   *sql.Rows
	vals   []sql.RawBytes
	ptrs   []any
	npk    int
	ok     bool
	err    error
	keyRaw [][]byte
	key    string
	row    []byte
	fields [][]byte
}

func newCursor(r *sql.Rows, n, npk int) *cursor {
	c := &cursor{rows: r, vals: make([]sql.RawBytes, n), ptrs: make([]any, n), npk: npk}
	for i := range c.vals {
		c.ptrs[i] = &c.vals[i]
	}
	return c
}

func (c *cursor) next() {
	c.ok = false
	if !c.rows.Next() {
		c.err = c.rows.Err()
		return
	}
	if c.err = c.rows.Scan(c.ptrs...); c.err != nil {
		return
	}
	c.ok = true
	c.keyRaw = c.keyRaw[:0]
	for i := 0; i < c.npk; i++ {
		c.keyRaw = append(c.keyRaw, append([]byte(nil), c.vals[i]...))
	}
	c.key = fmt.Sprintf("%q", c.keyRaw)
	c.row = c.row[:0]
	c.fields = c.fields[:0]
	for _, v := range c.vals[c.npk:] {
		if v == nil {
			c.row = append(c.row, 0xff, 0) // NULL differs from every value
		} else {
			c.row = append(c.row, 1)
			c.row = fmt.Appendf(c.row, "%d:", len(v))
			c.row = append(c.row, v...)
		}
		c.fields = append(c.fields, append([]byte(nil), v...))
	}
}

func (c *cursor) text(cols []string) string {
	var sb strings.Builder
	for i, f := range c.fields {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s=%q", cols[c.npk+i], f)
	}
	return sb.String()
}

// cmpKeys orders cursors by key, with exhausted cursors last. Keys are
// compared as the server sorted them: numerically for numbers, else as
// bytes. Both sites sort with the same collation, so the merge only needs a
// consistent order, which comparing numbers by value and the rest
// byte-wise gives for the key types Tandem tests use.
func cmpKeys(a, b *cursor) int {
	switch {
	case !a.ok:
		return 1
	case !b.ok:
		return -1
	}
	for i := range a.keyRaw {
		if c := cmpValue(a.keyRaw[i], b.keyRaw[i]); c != 0 {
			return c
		}
	}
	return 0
}

func cmpValue(x, y []byte) int {
	if isNum(x) && isNum(y) {
		nx, ny := x[0] == '-', y[0] == '-'
		switch {
		case nx && !ny:
			return -1
		case !nx && ny:
			return 1
		}
		c := 0
		if len(x) != len(y) {
			c = len(x) - len(y)
		} else {
			c = bytes.Compare(x, y)
		}
		if nx {
			c = -c
		}
		if c < 0 {
			return -1
		} else if c > 0 {
			return 1
		}
		return 0
	}
	return bytes.Compare(x, y)
}

func isNum(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for i, c := range b {
		if c == '-' && i == 0 && len(b) > 1 {
			continue
		}
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
