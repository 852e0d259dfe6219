package hlc_test

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/tandemdb/tandem/pkg/hlc"
)

// FuzzNowMonotonic drives one site's clock with a random program of Now,
// Update, wall-clock jumps and restarts (a new Clock on the same store) and
// asserts that every timestamp Now returns is strictly greater than every
// timestamp issued or accepted before, across restarts.
//
// Program bytes: the first selects MaxOffset (0 = disabled) and the persist
// window; then each op is one byte, op%5:
//
//	0 Now
//	1 Update(next 8 bytes, big-endian)
//	2 Update(a remote near the wall clock: next 2 bytes as signed ms delta)
//	3 jump the wall clock by the next 4 bytes as signed ms
//	4 restart
func FuzzNowMonotonic(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 3, 0xff, 0xff, 0xf0, 0x00, 0, 0, 4, 0, 0})
	f.Add([]byte{2, 0, 2, 0x10, 0x00, 0, 3, 0x80, 0, 0, 0, 4, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0})
	f.Add([]byte{3, 1, 0x7f, 0xff, 0, 3, 0xff, 0xff, 0xff, 0, 0, 0, 4, 0, 2, 0x12, 0x34, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) == 0 {
			return
		}
		offsets := []time.Duration{0, time.Millisecond, 500 * time.Millisecond, time.Hour}
		windows := []time.Duration{0, time.Microsecond, time.Millisecond, time.Second}
		opts := hlc.Options{
			MaxOffset:     offsets[prog[0]%4],
			PersistWindow: windows[prog[0]/4%4],
			Store:         &memStore{},
		}
		prog = prog[1:]
		wall := newManual(t0)
		c := mustClock(t, 5, wall, opts)

		// floor is the greatest tick issued or accepted so far.
		var floor uint64
		next := func(n int) []byte {
			if len(prog) < n {
				b := make([]byte, n)
				copy(b, prog)
				prog = nil
				return b
			}
			b := prog[:n]
			prog = prog[n:]
			return b
		}
		for len(prog) > 0 {
			switch op := next(1)[0] % 5; op {
			case 0:
				ts, err := c.Now()
				if errors.Is(err, hlc.ErrExhausted) {
					if floor < 1<<(hlc.WallBits+hlc.LogicalBits)-1 {
						t.Fatalf("ErrExhausted with tick %#x below the maximum", floor)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Now: %v", err)
				}
				if ts.Tick() <= floor {
					t.Fatalf("Now = %s (tick %#x), not after tick %#x", ts, ts.Tick(), floor)
				}
				if ts.Site() != 5 {
					t.Fatalf("Now = %s, wrong site", ts)
				}
				floor = ts.Tick()
			case 1, 2:
				var remote hlc.Timestamp
				if op == 1 {
					remote = hlc.Timestamp(binary.BigEndian.Uint64(next(8)))
				} else {
					d := int64(int16(binary.BigEndian.Uint16(next(2))))
					remote = hlc.New(uint64(max(wall.Now().UnixMilli()+d, 0)), uint16(d), uint8(d))
				}
				err := c.Update(remote)
				switch {
				case errors.Is(err, hlc.ErrClockOffset):
					if opts.MaxOffset == 0 {
						t.Fatalf("Update(%s) refused with the check disabled", remote)
					}
					if lim := wall.Now().Add(opts.MaxOffset).UnixMilli(); lim >= 0 && remote.WallMillis() <= uint64(lim) {
						t.Fatalf("Update(%s) refused though within %s of %d", remote, opts.MaxOffset, wall.Now().UnixMilli())
					}
				case err != nil:
					t.Fatalf("Update(%s): %v", remote, err)
				default:
					floor = max(floor, remote.Tick())
				}
				if c.Last().Tick() < floor {
					t.Fatalf("Last() = %s below floor tick %#x", c.Last(), floor)
				}
			case 3:
				wall.Add(int64(int32(binary.BigEndian.Uint32(next(4)))))
			case 4:
				c = mustClock(t, 5, wall, opts)
			}
		}
	})
}

// FuzzEncodingOrder checks that the integer order and the big-endian byte
// order of timestamps are exactly the lexicographic (wall, logical, site)
// order, and that the fields and the binary form round-trip.
func FuzzEncodingOrder(f *testing.F) {
	f.Add(uint64(0), uint16(0), uint8(0), uint64(0), uint16(0), uint8(1))
	f.Add(uint64(t0), uint16(hlc.MaxLogical), uint8(1), uint64(t0)+1, uint16(0), uint8(0))
	f.Add(uint64(t0), uint16(7), uint8(255), uint64(t0), uint16(8), uint8(1))
	f.Add(uint64(maxWall), uint16(hlc.MaxLogical), uint8(255), uint64(maxWall), uint16(hlc.MaxLogical), uint8(254))
	f.Fuzz(func(t *testing.T, w1 uint64, l1 uint16, s1 uint8, w2 uint64, l2 uint16, s2 uint8) {
		w1, w2 = w1&maxWall, w2&maxWall
		l1, l2 = l1&hlc.MaxLogical, l2&hlc.MaxLogical
		a, b := hlc.New(w1, l1, s1), hlc.New(w2, l2, s2)
		for _, x := range []struct {
			ts hlc.Timestamp
			w  uint64
			l  uint16
			s  uint8
		}{{a, w1, l1, s1}, {b, w2, l2, s2}} {
			if x.ts.WallMillis() != x.w || x.ts.Logical() != x.l || x.ts.Site() != x.s {
				t.Fatalf("%#x decodes to (%d, %d, %d), want (%d, %d, %d)", uint64(x.ts),
					x.ts.WallMillis(), x.ts.Logical(), x.ts.Site(), x.w, x.l, x.s)
			}
			if hlc.FromTick(x.ts.Tick(), x.s) != x.ts {
				t.Fatalf("FromTick round trip of %s", x.ts)
			}
		}

		want := cmp.Or(cmp.Compare(w1, w2), cmp.Compare(l1, l2), cmp.Compare(s1, s2))
		if got := cmp.Compare(a, b); got != want {
			t.Fatalf("uint64 order of %s vs %s = %d, want %d", a, b, got, want)
		}
		ab, _ := a.AppendBinary(nil)
		bb, _ := b.AppendBinary(nil)
		if got := bytes.Compare(ab, bb); got != want {
			t.Fatalf("byte order of %x vs %x = %d, want %d", ab, bb, got, want)
		}
		if got, err := hlc.TimestampFromBytes(ab); err != nil || got != a {
			t.Fatalf("TimestampFromBytes(%x) = %s, %v; want %s", ab, got, err, a)
		}
		// Ticks order like the (wall, logical) prefix.
		if got := cmp.Compare(a.Tick(), b.Tick()); got != cmp.Or(cmp.Compare(w1, w2), cmp.Compare(l1, l2)) {
			t.Fatalf("tick order of %s vs %s = %d", a, b, got)
		}
	})
}
