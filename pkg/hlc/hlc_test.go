package hlc_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemdb/tandem/pkg/hlc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	maxWall = 1<<hlc.WallBits - 1
	// t0 is an arbitrary, realistic wall time (2024-11-21) in milliseconds.
	t0 = int64(1732170000000)
)

// manualClock is a WallClock that only moves when told, forwards or
// backwards.
type manualClock struct {
	mu sync.Mutex
	ms int64
}

func newManual(ms int64) *manualClock { return &manualClock{ms: ms} }

func (m *manualClock) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.UnixMilli(m.ms)
}

// Set moves the clock to ms, which may be in the past.
func (m *manualClock) Set(ms int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ms = ms
}

// Add moves the clock by d milliseconds, which may be negative.
func (m *manualClock) Add(d int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ms += d
}

// memStore is an in-memory UpperBoundStore that outlives the clocks using
// it, like Pebble outlives a replicator process.
type memStore struct {
	mu      sync.Mutex
	bound   uint64
	saves   int
	loadErr error
	saveErr error
}

func (s *memStore) LoadUpperBound() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bound, s.loadErr
}

func (s *memStore) SaveUpperBound(ms uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveErr != nil {
		return s.saveErr
	}
	if ms < s.bound {
		return fmt.Errorf("memStore: bound would go back from %d to %d", s.bound, ms)
	}
	s.bound = ms
	s.saves++
	return nil
}

func mustClock(t testing.TB, site uint8, wall hlc.WallClock, opts hlc.Options) *hlc.Clock {
	t.Helper()
	c, err := hlc.NewClock(site, wall, opts)
	if err != nil {
		t.Fatalf("NewClock(%d): %v", site, err)
	}
	return c
}

func mustNow(t testing.TB, c *hlc.Clock) hlc.Timestamp {
	t.Helper()
	ts, err := c.Now()
	if err != nil {
		t.Fatalf("site %d: Now: %v", c.Site(), err)
	}
	return ts
}

func TestLayoutRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		wall    uint64
		logical uint16
		site    uint8
		want    uint64
	}{
		{"zero", 0, 0, 0, 0},
		{"site only", 0, 0, 7, 7},
		{"logical only", 0, 1, 0, 1 << 8},
		{"wall only", 1, 0, 0, 1 << 20},
		{"realistic", uint64(t0), 42, 3, uint64(t0)<<20 | 42<<8 | 3},
		{"all max", maxWall, hlc.MaxLogical, hlc.MaxSite, 1<<64 - 1},
		{"max logical carries nothing", 5, hlc.MaxLogical, 1, 5<<20 | 0xfff<<8 | 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := hlc.New(tt.wall, tt.logical, tt.site)
			if uint64(ts) != tt.want {
				t.Fatalf("New(%d, %d, %d) = %#x, want %#x", tt.wall, tt.logical, tt.site, uint64(ts), tt.want)
			}
			if ts.WallMillis() != tt.wall || ts.Logical() != tt.logical || ts.Site() != tt.site {
				t.Errorf("%#x decodes to (%d, %d, %d), want (%d, %d, %d)", uint64(ts),
					ts.WallMillis(), ts.Logical(), ts.Site(), tt.wall, tt.logical, tt.site)
			}
			if tick := tt.wall<<hlc.LogicalBits | uint64(tt.logical); ts.Tick() != tick {
				t.Errorf("Tick() = %#x, want %#x", ts.Tick(), tick)
			}
			if back := hlc.FromTick(ts.Tick(), ts.Site()); back != ts {
				t.Errorf("FromTick(Tick(), Site()) = %#x, want %#x", uint64(back), uint64(ts))
			}
			if got := ts.Time(); !got.Equal(time.UnixMilli(int64(tt.wall))) || got.Location() != time.UTC {
				t.Errorf("Time() = %v, want %v in UTC", got, time.UnixMilli(int64(tt.wall)).UTC())
			}
			if want := fmt.Sprintf("%d.%d@%d", tt.wall, tt.logical, tt.site); ts.String() != want {
				t.Errorf("String() = %q, want %q", ts.String(), want)
			}
			if ts.IsZero() != (tt.want == 0) {
				t.Errorf("IsZero() = %v for %#x", ts.IsZero(), tt.want)
			}
		})
	}
}

func TestNewTruncates(t *testing.T) {
	if got, want := hlc.New(1, hlc.MaxLogical+1, 2), hlc.New(1, 0, 2); got != want {
		t.Errorf("logical MaxLogical+1: got %s, want %s", got, want)
	}
	if got, want := hlc.New(maxWall+1, 3, 2), hlc.New(0, 3, 2); got != want {
		t.Errorf("wall 1<<WallBits: got %s, want %s", got, want)
	}
}

func TestLogicalOverflowCarriesIntoWall(t *testing.T) {
	full := hlc.New(uint64(t0), hlc.MaxLogical, 9)
	if got, want := hlc.FromTick(full.Tick()+1, 9), hlc.New(uint64(t0)+1, 0, 9); got != want {
		t.Fatalf("tick arithmetic: %s + 1 tick = %s, want %s", full, got, want)
	}

	// The same through a clock whose wall clock is stalled at t0.
	wall := newManual(t0)
	c := mustClock(t, 1, wall, hlc.Options{})
	if err := c.Update(full); err != nil {
		t.Fatalf("Update(%s): %v", full, err)
	}
	got := mustNow(t, c)
	if want := hlc.New(uint64(t0)+1, 0, 1); got != want {
		t.Fatalf("Now after %s = %s, want %s", full, got, want)
	}
	if got <= full {
		t.Fatalf("Now %s not after %s", got, full)
	}
}

func TestNowMonotonic(t *testing.T) {
	w := uint64(t0)
	tests := []struct {
		name  string
		walls []int64 // wall clock (ms relative to t0) before each Now
		want  []hlc.Timestamp
	}{
		{
			name:  "advancing",
			walls: []int64{0, 1, 5},
			want:  []hlc.Timestamp{hlc.New(w, 0, 1), hlc.New(w+1, 0, 1), hlc.New(w+5, 0, 1)},
		},
		{
			name:  "stalled",
			walls: []int64{0, 0, 0, 0},
			want:  []hlc.Timestamp{hlc.New(w, 0, 1), hlc.New(w, 1, 1), hlc.New(w, 2, 1), hlc.New(w, 3, 1)},
		},
		{
			name:  "backwards",
			walls: []int64{10, -1000, -5000, 10, 11},
			want: []hlc.Timestamp{hlc.New(w+10, 0, 1), hlc.New(w+10, 1, 1), hlc.New(w+10, 2, 1),
				hlc.New(w+10, 3, 1), hlc.New(w+11, 0, 1)},
		},
		{
			name:  "back then far forward",
			walls: []int64{0, -60000, 60000},
			want:  []hlc.Timestamp{hlc.New(w, 0, 1), hlc.New(w, 1, 1), hlc.New(w+60000, 0, 1)},
		},
		{
			// Tick 0 is never issued: the first tick is last (0) + 1.
			name:  "before the epoch reads as zero",
			walls: []int64{-t0 - 5, -t0 - 5},
			want:  []hlc.Timestamp{hlc.New(0, 1, 1), hlc.New(0, 2, 1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wall := newManual(t0)
			c := mustClock(t, 1, wall, hlc.Options{})
			var prev hlc.Timestamp
			for i, rel := range tt.walls {
				wall.Set(t0 + rel)
				got := mustNow(t, c)
				if got != tt.want[i] {
					t.Errorf("Now #%d (wall %+d ms) = %s, want %s", i, rel, got, tt.want[i])
				}
				if got <= prev {
					t.Errorf("Now #%d = %s, not after previous %s", i, got, prev)
				}
				if c.Last() != got {
					t.Errorf("Last() = %s after Now returned %s", c.Last(), got)
				}
				prev = got
			}
		})
	}
}

func TestStalledClockExhaustsLogicalIntoWall(t *testing.T) {
	wall := newManual(t0)
	c := mustClock(t, 2, wall, hlc.Options{})
	var prev hlc.Timestamp
	for i := range 3 * (hlc.MaxLogical + 1) {
		ts := mustNow(t, c)
		if ts <= prev {
			t.Fatalf("Now #%d = %s, not after %s", i, ts, prev)
		}
		prev = ts
	}
	// 3*4096 ticks from (t0, 0): the last one is (t0+2, 4095).
	if want := hlc.New(uint64(t0)+2, hlc.MaxLogical, 2); prev != want {
		t.Fatalf("last = %s, want %s", prev, want)
	}
}

func TestUpdate(t *testing.T) {
	w := uint64(t0)
	const maxOffset = 500 * time.Millisecond
	tests := []struct {
		name      string
		maxOffset time.Duration
		remote    hlc.Timestamp
		wantErr   bool
		// wantNow is the Now after the Update, with the wall clock at t0
		// and the clock having issued (t0, 0) before.
		wantNow hlc.Timestamp
	}{
		{"older remote", maxOffset, hlc.New(w-100, 7, 2), false, hlc.New(w, 1, 1)},
		{"same tick, other site", maxOffset, hlc.New(w, 0, 2), false, hlc.New(w, 1, 1)},
		{"remote ahead within offset", maxOffset, hlc.New(w+100, 7, 2), false, hlc.New(w+100, 8, 1)},
		{"remote at exactly max offset, full logical", maxOffset, hlc.New(w+500, hlc.MaxLogical, 2), false, hlc.New(w+501, 0, 1)},
		{"remote 1 ms beyond max offset", maxOffset, hlc.New(w+501, 0, 2), true, hlc.New(w, 1, 1)},
		{"remote an hour ahead", maxOffset, hlc.New(w+3600_000, 0, 2), true, hlc.New(w, 1, 1)},
		{"offset check disabled", 0, hlc.New(w+3600_000, 0, 2), false, hlc.New(w+3600_000, 1, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wall := newManual(t0)
			c := mustClock(t, 1, wall, hlc.Options{MaxOffset: tt.maxOffset})
			first := mustNow(t, c)
			before := c.Last()
			err := c.Update(tt.remote)
			if tt.wantErr {
				if !errors.Is(err, hlc.ErrClockOffset) {
					t.Fatalf("Update(%s) = %v, want ErrClockOffset", tt.remote, err)
				}
				if c.Last() != before {
					t.Errorf("refused Update moved the clock from %s to %s", before, c.Last())
				}
				if c.Skewed() != 1 {
					t.Errorf("Skewed() = %d, want 1", c.Skewed())
				}
			} else {
				if err != nil {
					t.Fatalf("Update(%s): %v", tt.remote, err)
				}
				if c.Skewed() != 0 {
					t.Errorf("Skewed() = %d, want 0", c.Skewed())
				}
			}
			got := mustNow(t, c)
			if got != tt.wantNow {
				t.Errorf("Now after Update(%s) = %s, want %s", tt.remote, got, tt.wantNow)
			}
			if got <= first {
				t.Errorf("Now %s not after earlier %s", got, first)
			}
			if !tt.wantErr && got.Tick() <= tt.remote.Tick() {
				t.Errorf("Now %s not causally after accepted remote %s", got, tt.remote)
			}
		})
	}
}

func TestUpdateOffsetErrorMessage(t *testing.T) {
	c := mustClock(t, 1, newManual(t0), hlc.Options{MaxOffset: time.Second})
	err := c.Update(hlc.New(uint64(t0)+90_000, 0, 4))
	want := fmt.Sprintf("hlc: remote timestamp exceeds max clock offset: remote %d.0@4 is 1m30s ahead of the local wall clock (max 1s)", t0+90_000)
	if err == nil || err.Error() != want {
		t.Fatalf("Update error = %v\nwant %s", err, want)
	}
}

func TestUpdateRefusalsAreCounted(t *testing.T) {
	wall := newManual(t0)
	c := mustClock(t, 1, wall, hlc.Options{MaxOffset: time.Second})
	for i := range 5 {
		if err := c.Update(hlc.New(uint64(t0)+2000+uint64(i), 0, 2)); !errors.Is(err, hlc.ErrClockOffset) {
			t.Fatalf("Update #%d: %v, want ErrClockOffset", i, err)
		}
	}
	// Once the local wall clock catches up, the same remote is accepted.
	wall.Add(1500)
	if err := c.Update(hlc.New(uint64(t0)+2000, 0, 2)); err != nil {
		t.Fatalf("Update after the wall clock caught up: %v", err)
	}
	if c.Skewed() != 5 {
		t.Fatalf("Skewed() = %d, want 5", c.Skewed())
	}
}

func TestPersistedUpperBound(t *testing.T) {
	tests := []struct {
		name   string
		window time.Duration
		// back is how far the wall clock goes back across the restart.
		back int64
	}{
		{"default window, back an hour", 0, 3600_000},
		{"default window, back 1 ms", 0, 1},
		{"default window, clock stays", 0, 0},
		{"10 s window, back 5 s", 10 * time.Second, 5000},
		{"1 ms window, back 1 ms", time.Millisecond, 1},
		// A window below the bound's resolution must still leave the
		// bound strictly above every issued wall value.
		{"sub-millisecond window", 500 * time.Microsecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &memStore{}
			wall := newManual(t0)
			opts := hlc.Options{Store: store, PersistWindow: tt.window, MaxOffset: time.Minute}
			c := mustClock(t, 1, wall, opts)

			var issued hlc.Timestamp
			for i := range 2000 {
				if i%100 == 0 {
					wall.Add(7)
				}
				issued = mustNow(t, c)
			}
			// An observed remote counts too: it may already be written to
			// a row, so nothing issued after a restart may sort below it.
			remote := hlc.New(issued.WallMillis()+3, 17, 200)
			if err := c.Update(remote); err != nil {
				t.Fatal(err)
			}

			// Restart: a new clock with the same store, wall clock back.
			wall.Add(-tt.back)
			c2 := mustClock(t, 1, wall, opts)
			if c2.Last().Tick() < remote.Tick() {
				t.Errorf("restarted Last() = %s, below observed %s", c2.Last(), remote)
			}
			for i := range 100 {
				ts := mustNow(t, c2)
				if ts <= issued || ts.Tick() <= remote.Tick() {
					t.Fatalf("restarted Now #%d = %s, not after issued %s and observed %s", i, ts, issued, remote)
				}
			}
		})
	}
}

func TestPersistOncePerWindow(t *testing.T) {
	store := &memStore{}
	wall := newManual(t0)
	c := mustClock(t, 1, wall, hlc.Options{Store: store, PersistWindow: time.Second})
	for range 10_000 {
		wall.Add(1) // 10 s in 1 ms steps
		mustNow(t, c)
	}
	// One save per elapsed second, plus the first one.
	if store.saves < 10 || store.saves > 11 {
		t.Fatalf("%d saves for 10 s of 1 ms steps with a 1 s window, want 10 or 11", store.saves)
	}
	if got := store.bound; got <= mustNow(t, c).WallMillis() {
		t.Fatalf("stored bound %d not above the last issued wall", got)
	}
}

func TestStoreErrors(t *testing.T) {
	t.Run("load", func(t *testing.T) {
		boom := errors.New("pebble: closed")
		_, err := hlc.NewClock(1, newManual(t0), hlc.Options{Store: &memStore{loadErr: boom}})
		if !errors.Is(err, boom) {
			t.Fatalf("NewClock with failing store: %v, want wrapped %v", err, boom)
		}
	})
	t.Run("save", func(t *testing.T) {
		store := &memStore{}
		wall := newManual(t0)
		c := mustClock(t, 1, wall, hlc.Options{Store: store})
		first := mustNow(t, c)

		boom := errors.New("pebble: disk full")
		store.saveErr = boom
		wall.Add(5000) // beyond the 1 s window: Now must persist
		if ts, err := c.Now(); !errors.Is(err, boom) {
			t.Fatalf("Now with failing store = %s, %v; want wrapped %v", ts, err, boom)
		}
		if c.Last() != first {
			t.Fatalf("failed Now moved the clock from %s to %s", first, c.Last())
		}
		if err := c.Update(hlc.New(uint64(t0)+6000, 0, 2)); !errors.Is(err, boom) {
			t.Fatalf("Update with failing store: %v, want wrapped %v", err, boom)
		}
		if c.Last() != first {
			t.Fatalf("failed Update moved the clock from %s to %s", first, c.Last())
		}

		store.saveErr = nil
		if ts := mustNow(t, c); ts <= first {
			t.Fatalf("Now after the store recovered = %s, not after %s", ts, first)
		}
	})
}

func TestNewClockValidates(t *testing.T) {
	wall := newManual(t0)
	tests := []struct {
		name string
		site uint8
		wall hlc.WallClock
		opts hlc.Options
	}{
		{"site 0", 0, wall, hlc.Options{}},
		{"nil wall", 1, nil, hlc.Options{}},
		{"negative offset", 1, wall, hlc.Options{MaxOffset: -time.Second}},
		{"bound beyond layout", 1, wall, hlc.Options{Store: &memStore{bound: maxWall + 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := hlc.NewClock(tt.site, tt.wall, tt.opts); err == nil {
				t.Fatalf("NewClock = %v, want an error", c)
			}
		})
	}
	if c := mustClock(t, hlc.MaxSite, wall, hlc.Options{}); c.Site() != hlc.MaxSite {
		t.Fatalf("Site() = %d", c.Site())
	}
}

func TestExhausted(t *testing.T) {
	t.Run("remote at the end of time", func(t *testing.T) {
		c := mustClock(t, 1, newManual(t0), hlc.Options{})
		if err := c.Update(hlc.New(maxWall, hlc.MaxLogical, 3)); err != nil {
			t.Fatal(err)
		}
		if ts, err := c.Now(); !errors.Is(err, hlc.ErrExhausted) {
			t.Fatalf("Now = %s, %v; want ErrExhausted rather than wrapping around", ts, err)
		}
	})
	t.Run("one tick left", func(t *testing.T) {
		c := mustClock(t, 1, newManual(t0), hlc.Options{})
		if err := c.Update(hlc.New(maxWall, hlc.MaxLogical-1, 3)); err != nil {
			t.Fatal(err)
		}
		if ts := mustNow(t, c); ts != hlc.New(maxWall, hlc.MaxLogical, 1) {
			t.Fatalf("Now = %s", ts)
		}
		if _, err := c.Now(); !errors.Is(err, hlc.ErrExhausted) {
			t.Fatalf("second Now: %v, want ErrExhausted", err)
		}
	})
	t.Run("wall clock beyond the layout", func(t *testing.T) {
		wall := newManual(maxWall + 1000)
		c := mustClock(t, 1, wall, hlc.Options{})
		if ts := mustNow(t, c); ts != hlc.New(maxWall, 0, 1) {
			t.Fatalf("Now = %s, want the clamped maximum wall", ts)
		}
	})
	t.Run("restart after persisting the last wall", func(t *testing.T) {
		store := &memStore{}
		c := mustClock(t, 1, newManual(maxWall), hlc.Options{Store: store})
		mustNow(t, c)
		c2 := mustClock(t, 1, newManual(t0), hlc.Options{Store: store})
		if _, err := c2.Now(); !errors.Is(err, hlc.ErrExhausted) {
			t.Fatalf("restarted Now: %v, want ErrExhausted", err)
		}
	})
}

func TestConcurrentNowUnique(t *testing.T) {
	wall := newManual(t0)
	c := mustClock(t, 1, wall, hlc.Options{Store: &memStore{}})
	const goroutines, each = 8, 500
	got := make([][]hlc.Timestamp, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if i%50 == 0 {
					wall.Add(int64(i%3) - 1) // jitter back and forth
				}
				ts, err := c.Now()
				if err != nil {
					t.Errorf("Now: %v", err)
					return
				}
				if n := len(got[g]); n > 0 && ts <= got[g][n-1] {
					t.Errorf("goroutine %d: %s not after %s", g, ts, got[g][n-1])
				}
				got[g] = append(got[g], ts)
			}
		})
	}
	wg.Wait()
	seen := make(map[hlc.Timestamp]bool, goroutines*each)
	for _, l := range got {
		for _, ts := range l {
			if seen[ts] {
				t.Fatalf("timestamp %s issued twice", ts)
			}
			seen[ts] = true
		}
	}
}

// TestHappenedBeforeHistory runs sites with skewed, jumping wall clocks that
// exchange messages, records the history with vector clocks, and checks the
// HLC property for every pair of events: a happened before b ⇒ ts(a) < ts(b).
func TestHappenedBeforeHistory(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			checkHistory(t, seed, 4, 1500)
		})
	}
}

type histEvent struct {
	site int
	kind string // "local", "send", "recv"
	ts   hlc.Timestamp
	vc   []int
	from int // for recv: index of the send event in the history
}

type message struct {
	to   int
	ts   hlc.Timestamp
	send int // index of the send event
}

func checkHistory(t *testing.T, seed uint64, sites, steps int) {
	rng := rand.New(rand.NewPCG(seed, 0x7a4d))
	const maxOffset = time.Hour
	walls := make([]*manualClock, sites)
	clocks := make([]*hlc.Clock, sites)
	vcs := make([][]int, sites)
	for i := range sites {
		// Skews of up to ±5 minutes, well within MaxOffset.
		walls[i] = newManual(t0 + rng.Int64N(600_000) - 300_000)
		clocks[i] = mustClock(t, uint8(i+1), walls[i], hlc.Options{MaxOffset: maxOffset, Store: &memStore{}})
		vcs[i] = make([]int, sites)
	}
	var hist []histEvent
	var inflight []message
	record := func(site int, kind string, ts hlc.Timestamp, from int) int {
		vcs[site][site]++
		hist = append(hist, histEvent{site: site, kind: kind, ts: ts, vc: append([]int(nil), vcs[site]...), from: from})
		return len(hist) - 1
	}
	for range steps {
		s := rng.IntN(sites)
		// Real time passes everywhere; site s's clock may also jump.
		for _, w := range walls {
			w.Add(rng.Int64N(3))
		}
		switch rng.IntN(10) {
		case 0:
			walls[s].Add(-rng.Int64N(120_000)) // NTP step backwards
		case 1:
			walls[s].Add(rng.Int64N(60_000))
		}
		switch op := rng.IntN(3); {
		case op == 0:
			record(s, "local", mustNow(t, clocks[s]), -1)
		case op == 1:
			to := rng.IntN(sites - 1)
			if to >= s {
				to++
			}
			ts := mustNow(t, clocks[s])
			i := record(s, "send", ts, -1)
			inflight = append(inflight, message{to: to, ts: ts, send: i})
		default:
			// Deliver a random in-flight message to its site (any order:
			// Kafka partitions of different origins interleave freely).
			if len(inflight) == 0 {
				continue
			}
			k := rng.IntN(len(inflight))
			m := inflight[k]
			inflight = append(inflight[:k], inflight[k+1:]...)
			if err := clocks[m.to].Update(m.ts); err != nil {
				t.Fatalf("site %d: Update(%s): %v", m.to+1, m.ts, err)
			}
			for j, v := range hist[m.send].vc {
				vcs[m.to][j] = max(vcs[m.to][j], v)
			}
			record(m.to, "recv", mustNow(t, clocks[m.to]), m.send)
		}
	}
	for i, c := range clocks {
		if c.Skewed() != 0 {
			t.Errorf("site %d refused %d timestamps; skews were within MaxOffset", i+1, c.Skewed())
		}
	}

	pairs := 0
	for _, e := range hist {
		if e.kind == "recv" {
			pairs++
			if s := hist[e.from]; s.ts >= e.ts {
				t.Errorf("send %s at site %d ≥ its receive %s at site %d", s.ts, s.site+1, e.ts, e.site+1)
			}
		}
	}
	if pairs == 0 {
		t.Fatal("history has no send→receive pair")
	}
	// Every causally ordered pair, not only direct messages.
	for i := range hist {
		for j := range hist {
			if i != j && happenedBefore(hist[i].vc, hist[j].vc) && hist[i].ts >= hist[j].ts {
				t.Fatalf("%s %s@site %d happened before %s %s@site %d but is not smaller",
					hist[i].kind, hist[i].ts, hist[i].site+1, hist[j].kind, hist[j].ts, hist[j].site+1)
			}
		}
	}
}

// happenedBefore reports a < b for vector clocks.
func happenedBefore(a, b []int) bool {
	less := false
	for i := range a {
		if a[i] > b[i] {
			return false
		}
		if a[i] < b[i] {
			less = true
		}
	}
	return less
}

func TestBinaryEncoding(t *testing.T) {
	ts := hlc.New(uint64(t0), 42, 3)
	b, err := ts.AppendBinary([]byte{0xff})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xff, 0, 0, 0, 0, 0, 0, 0, 0}
	for i := range 8 {
		want[1+i] = byte(uint64(ts) >> (56 - 8*i))
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("AppendBinary = %x, want %x", b, want)
	}
	back, err := hlc.TimestampFromBytes(b[1:])
	if err != nil || back != ts {
		t.Fatalf("TimestampFromBytes = %s, %v; want %s", back, err, ts)
	}
	for _, n := range []int{0, 7, 9} {
		if _, err := hlc.TimestampFromBytes(make([]byte, n)); err == nil {
			t.Errorf("TimestampFromBytes(%d bytes) succeeded", n)
		}
	}
}

func TestSQLNext(t *testing.T) {
	const now = "((TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(3)) DIV 1000) << 12)"
	if hlc.SQLNowTick != now {
		t.Fatalf("SQLNowTick = %s", hlc.SQLNowTick)
	}
	tests := []struct {
		site  uint8
		after []string
		want  string
	}{
		{1, nil, "((" + now + " << 8) | 1)"},
		{2, []string{"OLD._tandem_hlc"},
			"((GREATEST(" + now + ", COALESCE((OLD._tandem_hlc) >> 8, 0) + 1) << 8) | 2)"},
		{255, []string{"OLD.v", "(SELECT version FROM _tandem_tombstones WHERE pk = NEW.id)"},
			"((GREATEST(GREATEST(" + now + ", COALESCE((OLD.v) >> 8, 0) + 1), " +
				"COALESCE(((SELECT version FROM _tandem_tombstones WHERE pk = NEW.id)) >> 8, 0) + 1) << 8) | 255)"},
	}
	for _, tt := range tests {
		if got := hlc.SQLNext(tt.site, tt.after...); got != tt.want {
			t.Errorf("SQLNext(%d, %q) =\n%s\nwant\n%s", tt.site, tt.after, got, tt.want)
		}
	}
	// The shifts in the SQL must be the layout's.
	if hlc.LogicalBits != 12 || hlc.SiteBits != 8 {
		t.Fatalf("layout changed (LogicalBits=%d, SiteBits=%d): update the expected SQL", hlc.LogicalBits, hlc.SiteBits)
	}
}

func ExampleSQLNext() {
	// The version a BEFORE UPDATE trigger at site 2 stamps: after the row's
	// previous version and not before the server's clock.
	fmt.Println(hlc.SQLNext(2, "OLD._tandem_hlc"))
	// Output:
	// ((GREATEST(((TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(3)) DIV 1000) << 12), COALESCE((OLD._tandem_hlc) >> 8, 0) + 1) << 8) | 2)
}
