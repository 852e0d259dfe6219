package verify

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d float64) time.Time { return t0.Add(time.Duration(d * float64(time.Second))) }

// series makes one sample every 100 ms over [0, secs), each acknowledged
// 1 ms after its attempt and seen at seen(ack) (zero: never; a negative
// ack offset: the write failed).
func series(secs float64, seen func(ack float64) (float64, bool), failed func(at float64) bool) []Sample {
	var out []Sample
	for i := 0; float64(i)*0.1 < secs-1e-9; i++ {
		a := float64(i) * 0.1
		s := Sample{Seq: uint64(i + 1), At: at(a)}
		if failed != nil && failed(a) {
			out = append(out, s)
			continue
		}
		s.Ack = at(a + 0.001)
		if v, ok := seen(a + 0.001); ok {
			s.Seen = at(v)
		}
		out = append(out, s)
	}
	return out
}

func slo(faultLag time.Duration, n int) SLO {
	return SLO{LagP99: Duration(faultLag), FaultLag: Duration(faultLag), RTOMax: Duration(time.Minute), RecoverySamples: n}
}

func near(t *testing.T, what string, got, want, tol time.Duration) {
	t.Helper()
	if math.Abs(float64(got-want)) > float64(tol) {
		t.Errorf("%s = %s, want %s ± %s", what, got, want, tol)
	}
}

func TestAnalyzeSteady(t *testing.T) {
	s := series(30, func(ack float64) (float64, bool) { return ack + 0.020, true }, nil)
	a := Analyze(s, slo(time.Second, 10), at(31), true)
	if len(a.Faults) != 0 || a.Probes != 300 || a.Seen != 300 || a.Lost != 0 {
		t.Fatalf("%+v", a)
	}
	near(t, "p99", a.Lag.P99.D(), 20*time.Millisecond, time.Microsecond)
	near(t, "steady p99", a.SteadyLag.P99.D(), 20*time.Millisecond, time.Microsecond)
}

// TestAnalyzeStall: replication stops at 10 s and resumes at 20 s; the
// backlog is applied at 20.05 s. One fault: from the first stuck probe's
// acknowledgement to the backlog's arrival; RPO is every probe written
// meanwhile.
func TestAnalyzeStall(t *testing.T) {
	s := series(40, func(ack float64) (float64, bool) {
		if ack >= 10 && ack < 20 {
			return 20.05, true
		}
		return ack + 0.05, true
	}, nil)
	a := Analyze(s, slo(time.Second, 10), at(41), true)
	if len(a.Faults) != 1 {
		t.Fatalf("faults %+v", a.Faults)
	}
	f := a.Faults[0]
	if !f.Recovered || f.Lost != 0 || f.WriteFailures != 0 {
		t.Fatalf("%+v", f)
	}
	near(t, "start", f.Start.Sub(t0), 10*time.Second, 2*time.Millisecond)
	near(t, "RTO", f.RTO.D(), 10050*time.Millisecond, 2*time.Millisecond)
	// Acknowledged at 10.001 … 20.001 and applied at 20.05: 101 probes.
	if f.RPOWrites != 101 {
		t.Errorf("RPO writes %d, want 101", f.RPOWrites)
	}
	near(t, "RPO window", f.RPOWindow.D(), 10049*time.Millisecond, 2*time.Millisecond)
	if a.SteadyLag.P99.D() > 60*time.Millisecond {
		t.Errorf("steady p99 %s includes the fault", a.SteadyLag.P99.D())
	}
	if a.Lag.P99.D() < 9*time.Second {
		t.Errorf("overall p99 %s misses the fault", a.Lag.P99.D())
	}
}

// TestAnalyzeWriteFailures: the origin refuses writes for 5 s.
func TestAnalyzeWriteFailures(t *testing.T) {
	s := series(20, func(ack float64) (float64, bool) { return ack + 0.01, true },
		func(a float64) bool { return a >= 5 && a < 10 })
	a := Analyze(s, slo(time.Second, 5), at(21), true)
	if len(a.Faults) != 1 || a.WriteFailures != 50 {
		t.Fatalf("%d failures, faults %+v", a.WriteFailures, a.Faults)
	}
	f := a.Faults[0]
	near(t, "start", f.Start.Sub(t0), 5*time.Second, time.Millisecond)
	// Recovered when the first successful probe (written at 10.0) arrived.
	near(t, "RTO", f.RTO.D(), 5011*time.Millisecond, 2*time.Millisecond)
	if f.WriteFailures != 50 || f.RPOWrites > 1 {
		t.Errorf("%+v", f)
	}
}

// TestAnalyzeLost: probes never seen in a drained run are lost, each in a
// fault window; a flapping sample inside the recovery run restarts it.
func TestAnalyzeLost(t *testing.T) {
	s := series(10, func(ack float64) (float64, bool) {
		if ack > 3 && ack < 3.2 {
			return 0, false
		}
		return ack + 0.01, true
	}, nil)
	a := Analyze(s, slo(time.Second, 3), at(11), true)
	if a.Lost != 2 || len(a.Faults) != 1 || a.Faults[0].Lost != 2 || !a.Faults[0].Recovered {
		t.Fatalf("lost %d faults %+v", a.Lost, a.Faults)
	}
	// Not drained: the same probes are pending and, being older than the
	// fault lag, bad.
	b := Analyze(s, slo(time.Second, 3), at(11), false)
	if b.Lost != 0 || b.Pending != 2 || len(b.Faults) != 1 {
		t.Fatalf("live: %+v", b)
	}
}

// TestAnalyzeLiveTail: probes in flight for less than the fault lag are
// not judged yet.
func TestAnalyzeLiveTail(t *testing.T) {
	s := series(5, func(ack float64) (float64, bool) {
		if ack > 4.5 {
			return 0, false
		}
		return ack + 0.01, true
	}, nil)
	a := Analyze(s, slo(time.Second, 3), at(5), false)
	if len(a.Faults) != 0 || a.Pending != 5 {
		t.Fatalf("%+v", a)
	}
	// An open fault stays open at the analysis time.
	s = series(5, func(ack float64) (float64, bool) {
		if ack > 2 {
			return 0, false
		}
		return ack + 0.01, true
	}, nil)
	a = Analyze(s, slo(time.Second, 3), at(5), false)
	if len(a.Faults) != 1 || a.Faults[0].Recovered || a.Faults[0].End != at(5) {
		t.Fatalf("%+v", a.Faults)
	}
}

func TestExposureOrdering(t *testing.T) {
	// Acknowledged and applied at the same instant: pending for a moment.
	s := []Sample{{Seq: 1, At: at(0), Ack: at(1), Seen: at(2)}, {Seq: 2, At: at(0), Ack: at(2), Seen: at(2)}}
	w, win, _ := exposure(s, at(0), at(3), true)
	if w != 2 || win.D() != time.Second {
		t.Fatalf("writes %d window %s", w, win.D())
	}
}

func TestLagStats(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 1000; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	st := lagStats(ds)
	if st.P50.D() != 500*time.Millisecond || st.P99.D() != 990*time.Millisecond || st.P999.D() != 999*time.Millisecond || st.Max.D() != time.Second {
		t.Fatalf("%+v", st)
	}
	if (lagStats(nil) != LagStats{}) {
		t.Fatal("empty")
	}
}
