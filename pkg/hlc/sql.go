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
