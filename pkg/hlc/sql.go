package hlc

import "fmt"

// SQLNowTick is a MariaDB/MySQL expression for the current wall time as a
// tick (milliseconds shifted above the logical counter). UTC_TIMESTAMP(3) is
// the statement's start time in the server's (possibly faked) clock, in UTC;
// TIMESTAMPDIFF between two DATETIME values is plain calendar arithmetic, so
// the result does not depend on the session time zone.
//
// (UNIX_TIMESTAMP(NOW(3)) is not equivalent: it converts the session-zone
// local time back to UTC, which is ambiguous in the hour repeated when
// daylight saving time ends, and yields a value one hour too small there.)
const SQLNowTick = "((TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(3)) DIV 1000) << 12)"

// SQLNext returns a SQL expression for the next version a row written at
// site gets, given SQL expressions for versions the new one must be
// causally after (for example "OLD._tandem_hlc" or a tombstone lookup; NULL
// values are ignored). The result is
//
//	(GREATEST(now tick, after1 tick + 1, …) << 8) | site
//
// i.e. exactly what Clock.Now computes, so versions from triggers and from
// Go sort the same way.
func SQLNext(site uint8, after ...string) string {
	expr := SQLNowTick
	for _, a := range after {
		// COALESCE keeps a NULL (no previous version) from nulling the
		// whole GREATEST.
		expr = fmt.Sprintf("GREATEST(%s, COALESCE((%s) >> %d, 0) + 1)", expr, a, SiteBits)
	}
	return fmt.Sprintf("((%s << %d) | %d)", expr, SiteBits, site)
}

// SQLNextInsert returns a SQL expression for the version of a row a
// BEFORE INSERT trigger at site stamps, given SQL expressions for the
// key's tombstone version (tomb) and for the version of the row the
// statement may replace (prev); either may be NULL. Without a row it is
// SQLNext(site, tomb). With one the statement is a REPLACE, which deletes
// that row first and so writes a tombstone versioned SQLNext(site, prev,
// tomb); the new row comes one tick after it, i.e.
//
//	SQLNext(site, tomb, SQLNext(site, prev, tomb))
//
// computed flat, as
//
//	((GREATEST(now tick, tomb tick + 1, prev tick + 1) + (prev IS NOT NULL)) << 8) | site
//
// MariaDB re-resolves a trigger's expressions on every row, so the
// expression's size is paid per inserted row: the nested form cost about
// 6 % more time per row of a bulk insert (docs/operations.md, generation 5).
func SQLNextInsert(site uint8, tomb, prev string) string {
	return fmt.Sprintf("(((GREATEST(%s, COALESCE(((%s) >> %d) + 1, 0), COALESCE(((%s) >> %d) + 1, 0)) + ((%s) IS NOT NULL)) << %d) | %d)",
		SQLNowTick, tomb, SiteBits, prev, SiteBits, prev, SiteBits, site)
}
