// Package tenant makes tenants first-class (DESIGN.md §6): which tenant a
// row change belongs to (Resolver, Split), what the operator wants done with
// each tenant (Registry: an immutable Snapshot loaded from Redis), and the
// local machinery an applier uses to honour it without letting one tenant
// stop another: durable per-tenant queues in Pebble (Queues) for paused,
// throttled and dead-lettered tenants, and token buckets (Bucket) for rate
// limits.
//
// The package does no applying itself; pkg/pipeline's Applier consults it
// per transaction. See docs/tenants.md for the model and the reasons.
package tenant

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandemdb/tandem/pkg/conflict"
)

// Global is the global tenant: tables without a tenant mapping.
const Global = ""

// Mode is what replication does with a tenant's changes.
type Mode string

// Modes.
const (
	// ModeActiveActive: every site's writes replicate; the greatest
	// (HLC, site) wins conflicts.
	ModeActiveActive Mode = "active-active"
	// ModeHomeOnly: the tenant's home site wins every conflict; writes
	// made elsewhere are applied by that rule and reported as
	// home_only_violation conflicts.
	ModeHomeOnly Mode = "home-only"
	// ModePaused: changes are parked durably, in order, and replayed on
	// resume; other tenants keep flowing.
	ModePaused Mode = "paused"
	// ModeExcluded: changes are skipped (counted), never applied.
	ModeExcluded Mode = "excluded"
)

// Modes lists the valid modes, for error messages.
var Modes = []Mode{ModeActiveActive, ModeHomeOnly, ModePaused, ModeExcluded}

// ParseMode checks s; "" is active-active.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeActiveActive, nil
	}
	m := Mode(s)
	if slices.Contains(Modes, m) {
		return m, nil
	}
	return "", fmt.Errorf("mode %q is not allowed; allowed %s", s, joinModes())
}

func joinModes() string {
	s := make([]string, len(Modes))
	for i, m := range Modes {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

// Conflict policies of Tenant.ConflictPolicy.
const (
	// PolicyLWW: the greatest (HLC, site) wins (default).
	PolicyLWW = "lww"
	// PolicyHomeWins: the home site's versions beat all others, without
	// reporting non-home writes (home-only mode implies it and reports).
	PolicyHomeWins = "home-wins"
)

// MaxIDLen bounds a tenant id: it is a Kafka key, a Redis key suffix, a
// Pebble key part and a metrics label.
const MaxIDLen = 128

// CheckID explains what is wrong with a tenant id, or returns nil.
func CheckID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("tenant id is empty; allowed 1-%d bytes of UTF-8 without control characters (the global tenant is not configurable)", MaxIDLen)
	case len(id) > MaxIDLen:
		return fmt.Errorf("tenant id is %d bytes long; allowed at most %d", len(id), MaxIDLen)
	case !utf8.ValidString(id) || strings.ContainsFunc(id, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return fmt.Errorf("tenant id %q holds invalid UTF-8 or control characters; allowed printable UTF-8", id)
	}
	return nil
}

// Tenant is one tenant's registry entry. The zero value (plus an ID) is
// the default every tenant without an entry gets: active-active, no rate
// limit.
type Tenant struct {
	ID   string `json:"id"`
	Mode Mode   `json:"mode"`
	// HomeSite is the site id whose writes win under home-only mode or the
	// home-wins policy (1..255; 0 = none).
	HomeSite uint8 `json:"home_site,omitempty"`
	// RateLimit caps the rows per second applied for the tenant at each
	// applier (0 = unlimited). Beyond it, the tenant's changes queue
	// durably instead of holding up the partition (see docs/tenants.md).
	RateLimit float64 `json:"rate_limit,omitempty"`
	// Priority orders the replay of queued tenants (higher first).
	Priority int `json:"priority,omitempty"`
	// ConflictPolicy is PolicyLWW (default) or PolicyHomeWins.
	ConflictPolicy string `json:"conflict_policy,omitempty"`
	// UpdatedAt is when the entry was last written (informational).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Validate reports every problem of t at once, naming the field and what
// is allowed.
func (t Tenant) Validate() error {
	var errs []string
	if err := CheckID(t.ID); err != nil {
		errs = append(errs, "id: "+err.Error())
	}
	if _, err := ParseMode(string(t.Mode)); err != nil {
		errs = append(errs, "mode: "+err.Error())
	}
	if math.IsNaN(t.RateLimit) || t.RateLimit < 0 || t.RateLimit > 1e9 {
		errs = append(errs, fmt.Sprintf("rate_limit: %v is out of range; allowed 0 (unlimited) or a positive number of rows per second up to 1e9", t.RateLimit))
	}
	switch t.ConflictPolicy {
	case "", PolicyLWW, PolicyHomeWins:
	default:
		errs = append(errs, fmt.Sprintf("conflict_policy: %q is not allowed; allowed %s or %s", t.ConflictPolicy, PolicyLWW, PolicyHomeWins))
	}
	if (t.Mode == ModeHomeOnly || t.ConflictPolicy == PolicyHomeWins) && t.HomeSite == 0 {
		errs = append(errs, "home_site: required by mode home-only and conflict_policy home-wins; allowed a site id 1..255")
	}
	if len(errs) > 0 {
		return fmt.Errorf("tenant %q: %s", t.ID, strings.Join(errs, "; "))
	}
	return nil
}

// Policy is the conflict rule for t's rows.
func (t Tenant) Policy() conflict.Policy {
	if t.Mode == ModeHomeOnly || t.ConflictPolicy == PolicyHomeWins {
		return conflict.Policy{HomeSite: t.HomeSite}
	}
	return conflict.Policy{}
}

// normalized fills defaults so that equal settings compare equal.
func (t Tenant) normalized() Tenant {
	if t.Mode == "" {
		t.Mode = ModeActiveActive
	}
	if t.ConflictPolicy == "" {
		t.ConflictPolicy = PolicyLWW
	}
	return t
}

// Snapshot is one immutable view of the registry. Readers take it once per
// decision and never see a half-applied change.
type Snapshot struct {
	// Version is the registry's version counter when it was read; it
	// only grows, so an older snapshot is recognisable.
	Version uint64 `json:"version"`
	// Loaded is when it was read from Redis (zero: built locally).
	Loaded  time.Time `json:"loaded"`
	tenants map[string]Tenant
}

// NewSnapshot builds a snapshot from entries (tests, the Pebble cache).
func NewSnapshot(version uint64, loaded time.Time, entries []Tenant) *Snapshot {
	s := &Snapshot{Version: version, Loaded: loaded, tenants: make(map[string]Tenant, len(entries))}
	for _, t := range entries {
		s.tenants[t.ID] = t.normalized()
	}
	return s
}

// Get returns id's entry, or the default one (active-active, unlimited).
func (s *Snapshot) Get(id string) Tenant {
	if s != nil {
		if t, ok := s.tenants[id]; ok {
			return t
		}
	}
	return Tenant{ID: id}.normalized()
}

// Has reports whether id has an entry of its own.
func (s *Snapshot) Has(id string) bool {
	if s == nil {
		return false
	}
	_, ok := s.tenants[id]
	return ok
}

// List returns every entry, sorted by id.
func (s *Snapshot) List() []Tenant {
	if s == nil {
		return nil
	}
	out := make([]Tenant, 0, len(s.tenants))
	for _, t := range s.tenants {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Len is the number of entries.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.tenants)
}
