package sink

import (
	"strconv"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// winsFunc returns a SQL condition that is true when the version expression
// a beats b under the sink's policy: the compare-and-set guard of every
// statement, so that SQL and conflict.Policy cannot disagree.
type winsFunc func(a, b string) string

func winsSQL(p conflict.Policy) winsFunc {
	if p.HomeSite == 0 {
		return func(a, b string) string { return a + " > " + b }
	}
	// Home-only: a home version beats every other; within a class the
	// greater integer wins (conflict.Policy.Compare). Comparisons are 0/1
	// in SQL, so "home(a) > home(b)" reads "a is home and b is not".
	mask := strconv.Itoa(hlc.MaxSite)
	home := strconv.Itoa(int(p.HomeSite))
	isHome := func(x string) string { return "((" + x + " & " + mask + ") = " + home + ")" }
	return func(a, b string) string {
		ha, hb := isHome(a), isHome(b)
		return "(" + ha + " > " + hb + " OR (" + ha + " = " + hb + " AND " + a + " > " + b + "))"
	}
}
