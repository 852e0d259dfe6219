package binlog

import (
	"fmt"
	"strings"
)

// pattern is one "schema.table" filter pattern. Each half is matched on its
// own, so a * never crosses the dot: "shop*.*" does not match a table whose
// name merely contains "shop".
type pattern struct {
	schema, table string
}

// validPattern checks that p is "schema.table" with * as the only wildcard.
func validPattern(p string) error {
	_, err := parsePattern(p)
	return err
}

func parsePattern(p string) (pattern, error) {
	s, t, ok := strings.Cut(p, ".")
	switch {
	case !ok || strings.Contains(t, "."):
		return pattern{}, fmt.Errorf("pattern %q must be one \"schema.table\" with * as a wildcard, e.g. \"shop.*\" or \"*.audit_log\"", p)
	case s == "" || t == "":
		return pattern{}, fmt.Errorf("pattern %q has an empty schema or table part; use * to match any name, e.g. \"shop.*\"", p)
	case strings.ContainsAny(p, "`?[]\x00"):
		return pattern{}, fmt.Errorf("pattern %q contains a character that is not allowed (` ? [ ] or NUL); only * is a wildcard and names are not quoted", p)
	}
	return pattern{schema: s, table: t}, nil
}

func (p pattern) match(schemaName, table string) bool {
	return globMatch(p.schema, schemaName) && globMatch(p.table, table)
}

// globMatch reports whether name matches pat, where * in pat matches any
// (possibly empty) run of bytes and every other byte matches itself. It is
// the classic linear-time greedy algorithm: on a mismatch, retry from the
// last star with one more byte swallowed by it.
func globMatch(pat, name string) bool {
	px, nx := 0, 0
	starPx, starNx := -1, 0
	for nx < len(name) {
		switch {
		case px < len(pat) && pat[px] == '*':
			starPx, starNx = px, nx
			px++
		case px < len(pat) && pat[px] == name[nx]:
			px++
			nx++
		case starPx >= 0:
			starNx++
			px, nx = starPx+1, starNx
		default:
			return false
		}
	}
	for px < len(pat) && pat[px] == '*' {
		px++
	}
	return px == len(pat)
}

// filter decides which user tables are replicated.
type filter struct {
	include, exclude []pattern
}

func newFilter(include, exclude []string) (filter, error) {
	var f filter
	for _, s := range include {
		p, err := parsePattern(s)
		if err != nil {
			return filter{}, err
		}
		f.include = append(f.include, p)
	}
	for _, s := range exclude {
		p, err := parsePattern(s)
		if err != nil {
			return filter{}, err
		}
		f.exclude = append(f.exclude, p)
	}
	return f, nil
}

// allows reports whether changes to schemaName.table are published: it is
// included (or Include is empty) and not excluded.
func (f filter) allows(schemaName, table string) bool {
	for _, p := range f.exclude {
		if p.match(schemaName, table) {
			return false
		}
	}
	if len(f.include) == 0 {
		return true
	}
	for _, p := range f.include {
		if p.match(schemaName, table) {
			return true
		}
	}
	return false
}
