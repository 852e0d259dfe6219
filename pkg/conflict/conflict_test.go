package conflict_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/hlc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const w = 1732170000000

func ts(wall uint64, logical uint16, site uint8) hlc.Timestamp { return hlc.New(wall, logical, site) }

func TestResolve(t *testing.T) {
	tests := []struct {
		name              string
		current, incoming hlc.Timestamp
		want              conflict.Decision
	}{
		{"no row, no tombstone", 0, ts(w, 0, 1), conflict.Apply},
		{"newer wall", ts(w, 5, 2), ts(w+1, 0, 1), conflict.Apply},
		{"older wall", ts(w+1, 0, 1), ts(w, 5, 2), conflict.Lose},
		{"newer logical", ts(w, 1, 2), ts(w, 2, 1), conflict.Apply},
		{"older logical", ts(w, 2, 1), ts(w, 1, 2), conflict.Lose},
		{"same tick, higher site wins", ts(w, 3, 1), ts(w, 3, 2), conflict.Apply},
		{"same tick, lower site loses", ts(w, 3, 2), ts(w, 3, 1), conflict.Lose},
		{"replay", ts(w, 3, 2), ts(w, 3, 2), conflict.Duplicate},
		{"zero against zero", 0, 0, conflict.Duplicate},
		{"older than the tombstone (no resurrection)", ts(w+10, 0, 3), ts(w+5, 0, 1), conflict.Lose},
		{"max version", ts(w, 0, 1), hlc.Timestamp(1<<64 - 1), conflict.Apply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := conflict.Resolve(tt.current, tt.incoming); got != tt.want {
				t.Errorf("Resolve(%s, %s) = %s, want %s", tt.current, tt.incoming, got, tt.want)
			}
			if got := (conflict.Policy{}).Resolve(tt.current, tt.incoming); got != tt.want {
				t.Errorf("Policy{}.Resolve(%s, %s) = %s, want %s", tt.current, tt.incoming, got, tt.want)
			}
		})
	}
}

func TestHomePolicy(t *testing.T) {
	home := conflict.Policy{HomeSite: 2}
	tests := []struct {
		name              string
		current, incoming hlc.Timestamp
		want              conflict.Decision
	}{
		{"home beats newer non-home", ts(w+100, 0, 1), ts(w, 0, 2), conflict.Apply},
		{"non-home loses to older home", ts(w, 0, 2), ts(w+100, 0, 3), conflict.Lose},
		{"home vs home: newer wins", ts(w, 0, 2), ts(w+1, 0, 2), conflict.Apply},
		{"home vs home: older loses", ts(w+1, 0, 2), ts(w, 0, 2), conflict.Lose},
		{"non-home vs non-home: newer wins", ts(w, 0, 1), ts(w, 1, 3), conflict.Apply},
		{"non-home vs non-home: same tick, higher site", ts(w, 1, 3), ts(w, 1, 1), conflict.Lose},
		{"non-home on an empty row", 0, ts(w, 0, 1), conflict.Apply},
		{"home on an empty row", 0, ts(w, 0, 2), conflict.Apply},
		{"home replay", ts(w, 0, 2), ts(w, 0, 2), conflict.Duplicate},
		{"non-home replay", ts(w, 0, 3), ts(w, 0, 3), conflict.Duplicate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := home.Resolve(tt.current, tt.incoming); got != tt.want {
				t.Errorf("home-only(2).Resolve(%s, %s) = %s, want %s", tt.current, tt.incoming, got, tt.want)
			}
		})
	}
	if got := home.Max(ts(w+100, 0, 1), ts(w, 0, 2)); got != ts(w, 0, 2) {
		t.Errorf("Max picked %s, want the home version", got)
	}
	if got := (conflict.Policy{}).Max(ts(w+100, 0, 1), ts(w, 0, 2)); got != ts(w+100, 0, 1) {
		t.Errorf("active-active Max picked %s, want the newer version", got)
	}
}

func TestDecisionString(t *testing.T) {
	for d, want := range map[conflict.Decision]string{
		conflict.Apply: "apply", conflict.Duplicate: "duplicate", conflict.Lose: "lose", 0: "decision(0)", 9: "decision(9)",
	} {
		if d.String() != want {
			t.Errorf("Decision(%d).String() = %q, want %q", uint8(d), d.String(), want)
		}
	}
}

// randVersion draws versions that collide often: few walls, few logicals,
// few sites, some zeros.
func randVersion(r *rand.Rand) hlc.Timestamp {
	if r.IntN(20) == 0 {
		return 0
	}
	return ts(w+uint64(r.IntN(3)), uint16(r.IntN(3)), uint8(1+r.IntN(4)))
}

var policies = []conflict.Policy{{}, {HomeSite: 1}, {HomeSite: 3}, {HomeSite: 200}}

func TestResolveProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range policies {
		t.Run(fmt.Sprintf("home=%d", p.HomeSite), func(t *testing.T) {
			for range 20_000 {
				a, b, c := randVersion(r), randVersion(r), randVersion(r)
				if r.IntN(2) == 0 {
					a, b = hlc.Timestamp(r.Uint64()), hlc.Timestamp(r.Uint64())
				}
				ab, ba := p.Resolve(a, b), p.Resolve(b, a)
				// Deterministic.
				if p.Resolve(a, b) != ab {
					t.Fatalf("Resolve(%s, %s) not deterministic", a, b)
				}
				// Exactly one direction applies, unless equal.
				if a == b {
					if ab != conflict.Duplicate || ba != conflict.Duplicate {
						t.Fatalf("Resolve of equal %s: %s, %s; want duplicate", a, ab, ba)
					}
				} else if (ab == conflict.Apply) == (ba == conflict.Apply) || ab == conflict.Duplicate || ba == conflict.Duplicate {
					t.Fatalf("Resolve(%s, %s) = %s, Resolve(%s, %s) = %s: want exactly one apply, the other lose", a, b, ab, b, a, ba)
				}
				// The policy agrees with Compare and Max.
				if want := map[int]conflict.Decision{1: conflict.Apply, 0: conflict.Duplicate, -1: conflict.Lose}[p.Compare(b, a)]; ab != want {
					t.Fatalf("Resolve(%s, %s) = %s but Compare = %d", a, b, ab, p.Compare(b, a))
				}
				if m := p.Max(a, b); m != p.Max(b, a) || p.Resolve(m, a) == conflict.Apply || p.Resolve(m, b) == conflict.Apply {
					t.Fatalf("Max(%s, %s) = %s is not the winner", a, b, m)
				}
				// Transitive: c beats b and b beats a ⇒ c beats a.
				if p.Resolve(a, b) == conflict.Apply && p.Resolve(b, c) == conflict.Apply && p.Resolve(a, c) != conflict.Apply {
					t.Fatalf("not transitive: %s < %s < %s but Resolve(%s, %s) = %s", a, b, c, a, c, p.Resolve(a, c))
				}
			}
		})
	}
}

// TestConvergesInAnyOrder delivers the same versions to several replicas of
// one row in different orders (with duplicates) and checks that all end on
// the same winner, the policy's maximum.
func TestConvergesInAnyOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, p := range policies {
		for range 2000 {
			versions := make([]hlc.Timestamp, 1+r.IntN(8))
			for i := range versions {
				versions[i] = randVersion(r)
			}
			var want hlc.Timestamp
			for _, v := range versions {
				want = p.Max(want, v)
			}
			for replica := range 4 {
				order := append([]hlc.Timestamp(nil), versions...)
				order = append(order, order[r.IntN(len(order))]) // a replay
				r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				var cur hlc.Timestamp
				for _, v := range order {
					if p.Resolve(cur, v) == conflict.Apply {
						cur = v
					}
				}
				if cur != want {
					t.Fatalf("policy %+v, replica %d: order %v ends at %s, want %s", p, replica, order, cur, want)
				}
			}
		}
	}
}
