package checkpoint

import (
	"math/rand/v2"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemdb/tandem/pkg/event"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pos(n int) event.Position {
	return event.Position{GTIDSet: "1-101-" + string(rune('0'+n%10)), Offset: uint32(n)}
}

func TestTrackerOutOfOrderAcks(t *testing.T) {
	tr := NewTracker()
	s0 := tr.Add(pos(0), true)
	s1 := tr.Add(event.Position{}, false) // non-final fragment
	s2 := tr.Add(pos(2), true)
	s3 := tr.Add(pos(3), true)

	if _, ok := tr.Safe(); ok {
		t.Fatal("safe position before any ack")
	}
	tr.Ack(s2)
	tr.Ack(s3)
	if _, ok := tr.Safe(); ok {
		t.Fatal("safe position advanced past unacknowledged seq 0")
	}
	tr.Ack(s0)
	if p, _ := tr.Safe(); p != pos(0) {
		t.Fatalf("safe = %v, want %v (seq 1 is still in flight)", p, pos(0))
	}
	tr.Ack(s1)
	if p, _ := tr.Safe(); p != pos(3) {
		t.Fatalf("safe = %v, want %v", p, pos(3))
	}
	if tr.Pending() != 0 {
		t.Fatalf("pending = %d, want 0", tr.Pending())
	}
	tr.Ack(s1) // duplicate ack is harmless
}

// TestTrackerNeverMidTransaction checks, for random ack orders, that the safe
// position is always a transaction boundary whose predecessors are all acked.
func TestTrackerNeverMidTransaction(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 0))
	for round := 0; round < 200; round++ {
		tr := NewTracker()
		n := 1 + r.IntN(50)
		final := make([]bool, n)
		for i := range n {
			final[i] = r.IntN(3) != 0
			tr.Add(event.Position{Offset: uint32(i)}, final[i])
		}
		acked := make([]bool, n)
		for _, i := range r.Perm(n) {
			tr.Ack(uint64(i))
			acked[i] = true
			p, ok := tr.Safe()
			if !ok {
				continue
			}
			k := int(p.Offset)
			if !final[k] {
				t.Fatalf("seed %d: safe position %d is not a transaction boundary", seed, k)
			}
			for j := 0; j <= k; j++ {
				if !acked[j] {
					t.Fatalf("seed %d: safe position %d but seq %d not acked", seed, k, j)
				}
			}
		}
	}
}

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Position(); err != nil || ok {
		t.Fatalf("fresh store: ok=%v err=%v", ok, err)
	}
	want := event.Position{GTIDSet: "1-101-42,2-102-7", File: "mysql-bin.000003", Offset: 1337}
	if err := s.SavePosition(want); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveUpperBound(1732170000123); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, ok, err := s.Position()
	if err != nil || !ok || got != want {
		t.Fatalf("reopened position = %v ok=%v err=%v, want %v", got, ok, err, want)
	}
	b, err := s.LoadUpperBound()
	if err != nil || b != 1732170000123 {
		t.Fatalf("upper bound = %d, %v", b, err)
	}
	if err := s.ResetPosition(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Position(); ok {
		t.Fatal("position survived reset")
	}
}

func TestOpenEmptyDir(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}
