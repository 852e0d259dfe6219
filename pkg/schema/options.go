package schema

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// TableRef names one table.
type TableRef struct {
	Schema string
	Table  string
}

func (r TableRef) String() string { return r.Schema + "." + r.Table }

// Quoted is the table's name as a SQL identifier: `schema`.`table`.
func (r TableRef) Quoted() string { return QuoteIdent(r.Schema) + "." + QuoteIdent(r.Table) }

// Options say which objects a site needs.
type Options struct {
	// Site is this site's id, 1..255. It is baked into the triggers, so
	// every version a local write gets carries it in its low byte.
	Site uint8
	// MetaSchema holds the bookkeeping tables; default DefaultMetaSchema.
	MetaSchema string
	// VersionColumn is the per-row version column; default
	// DefaultVersionColumn.
	VersionColumn string
	// Tables are the replicated tables. The Heartbeat and Probe tables of
	// the meta schema are always added: they replicate like data.
	Tables []TableRef
	// LockWait bounds how long each DDL statement waits for the metadata
	// lock of a busy table (lock_wait_timeout); default 10s. A waiting
	// ALTER blocks every later query on its table, so a short wait that
	// fails and is retried later is kinder to the application than a
	// long one.
	LockWait time.Duration
}

// withDefaults returns o with defaults filled in and checked.
func (o Options) withDefaults() (Options, error) {
	if o.MetaSchema == "" {
		o.MetaSchema = DefaultMetaSchema
	}
	if o.VersionColumn == "" {
		o.VersionColumn = DefaultVersionColumn
	}
	if o.LockWait == 0 {
		o.LockWait = 10 * time.Second
	}
	if o.Site == 0 {
		return o, fmt.Errorf("schema: site id 0 is reserved; use 1..255")
	}
	if err := checkIdent("meta schema", o.MetaSchema); err != nil {
		return o, err
	}
	if err := checkIdent("version column", o.VersionColumn); err != nil {
		return o, err
	}
	if o.LockWait < time.Second {
		return o, fmt.Errorf("schema: lock wait %s is below the server's minimum of 1s", o.LockWait)
	}
	for _, t := range o.Tables {
		if t.Schema == "" || t.Table == "" {
			return o, fmt.Errorf("schema: table %q: want schema and table name", t.String())
		}
	}
	return o, nil
}

// checkIdent rejects names MariaDB cannot hold as an identifier.
func checkIdent(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("schema: %s name is empty", what)
	case utf8.RuneCountInString(name) > MaxIdentifier:
		return fmt.Errorf("schema: %s name %q has %d characters; at most %d are allowed",
			what, name, utf8.RuneCountInString(name), MaxIdentifier)
	case !utf8.ValidString(name) || strings.ContainsRune(name, 0):
		return fmt.Errorf("schema: %s name %q is not valid UTF-8 without NUL", what, name)
	case strings.TrimRight(name, " ") != name:
		return fmt.Errorf("schema: %s name %q ends in a space, which MariaDB does not allow", what, name)
	}
	return nil
}

// tables returns the replicated tables: the meta schema's replicated
// tables first, then opt.Tables without duplicates, in the given order.
func (o Options) tables() []TableRef {
	out := []TableRef{{o.MetaSchema, Heartbeat}, {o.MetaSchema, Probe}}
	seen := map[TableRef]bool{out[0]: true, out[1]: true}
	for _, t := range o.Tables {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// QuoteIdent quotes name as a MariaDB/MySQL identifier.
func QuoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// quoteString quotes s as a string literal that means the same with and
// without NO_BACKSLASH_ESCAPES.
func quoteString(s string) string {
	if strings.Contains(s, `\`) {
		// Backslashes mean different things under the two modes; they are
		// never needed in the comments this package writes.
		s = strings.ReplaceAll(s, `\`, "/")
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
