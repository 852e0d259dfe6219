// Package conflict holds the rule that decides, for one row, whether an
// incoming replicated version replaces the version a site already has. It
// is pure: no I/O, no clocks, no state.
//
// Every site must reach the same decision for the same pair of versions,
// whatever order the versions arrive in; that is what makes last-writer-wins
// converge (DESIGN.md §2.1, §2.2). The rule therefore depends only on the
// two versions and on a Policy that all sites share.
package conflict

import (
	"cmp"
	"fmt"

	"github.com/tandemdb/tandem/pkg/hlc"
)

// Decision is the outcome of comparing an incoming version with the current
// one.
type Decision uint8

const (
	// Apply: the incoming version is newer; write it.
	Apply Decision = iota + 1
	// Duplicate: the incoming version is the current one, a replay of what
	// is already there. A successful no-op, not a conflict.
	Duplicate
	// Lose: the incoming version is older than the current one. A no-op,
	// counted and logged as a conflict with both versions.
	Lose
)

func (d Decision) String() string {
	switch d {
	case Apply:
		return "apply"
	case Duplicate:
		return "duplicate"
	case Lose:
		return "lose"
	}
	return fmt.Sprintf("decision(%d)", uint8(d))
}

// Resolve decides whether an incoming version replaces the current one.
// current is the greater of the row's version and its tombstone's version
// (0 when neither exists), so that a late, older upsert loses to a delete.
//
// Versions are hlc.Timestamps, whose integer order is the (HLC, site) order:
// the greater version wins, and two different sites never issue the same
// version, so every site picks the same winner. Resolve is the zero Policy's
// Resolve (active-active).
func Resolve(current, incoming hlc.Timestamp) Decision {
	return decide(cmp.Compare(incoming, current))
}

func decide(c int) Decision {
	switch {
	case c > 0:
		return Apply
	case c == 0:
		return Duplicate
	}
	return Lose
}

// Policy chooses the order in which versions win. The zero Policy is
// active-active: the greatest (HLC, site) wins, as in Resolve.
//
// All sites must hold the same Policy for a tenant at the same time to
// converge: two sites resolving one conflict under different policies can
// keep opposite winners for ever. Change a tenant's policy only while its
// replication is drained (e.g. paused everywhere), or accept that rows
// written during the change need repair.
type Policy struct {
	// HomeSite, when non-zero, makes the policy home-only: a version
	// written by the home site beats every version written elsewhere,
	// whatever their HLCs; between two versions of the same class (both
	// home or both not) the greater (HLC, site) wins.
	//
	// Home-only is a merge rule, not a write guard. A non-home site whose
	// local write overwrites a home version (its trigger stamps a greater
	// HLC) keeps that write, while every other site rejects it: the sites
	// diverge. The home site therefore re-asserts its version after each
	// such violation (internal/replicator/reassert.go, docs/tenants.md
	// "How home-only converges"); the rule alone does not converge.
	HomeSite uint8
}

// Compare orders two versions under p: -1 if a loses to b, 0 if they are
// the same version, +1 if a beats b. A sink must use it (not integer order)
// to pick the current version as the winner of a row's version and its
// tombstone's version.
func (p Policy) Compare(a, b hlc.Timestamp) int {
	if p.HomeSite != 0 {
		if ah, bh := a.Site() == p.HomeSite, b.Site() == p.HomeSite; ah != bh {
			if ah {
				return 1
			}
			return -1
		}
	}
	return cmp.Compare(a, b)
}

// Max is the winner of a and b under p.
func (p Policy) Max(a, b hlc.Timestamp) hlc.Timestamp {
	if p.Compare(a, b) >= 0 {
		return a
	}
	return b
}

// Resolve decides under p whether an incoming version replaces the current
// one; current is p.Max of the row's version and its tombstone's version, 0
// when neither exists (0 loses to every version, home or not).
func (p Policy) Resolve(current, incoming hlc.Timestamp) Decision {
	return decide(p.Compare(incoming, current))
}
