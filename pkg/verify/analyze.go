package verify

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// Sample is one probe of one direction: written at the origin, watched for
// at the target.
type Sample struct {
	Seq    uint64
	Tenant string
	// At is when the write was attempted; Ack when it was acknowledged
	// (zero: the write failed); Seen when the target first showed the row
	// (zero: not seen).
	At, Ack, Seen time.Time
}

// Failed reports whether the probe write failed.
func (s *Sample) Failed() bool { return s.Ack.IsZero() }

// Lag is Seen − Ack, for a seen sample.
func (s *Sample) Lag() time.Duration { return s.Seen.Sub(s.Ack) }

// Direction names one replication direction of one tenant.
type Direction struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Tenant string `json:"tenant"`
}

func (d Direction) String() string {
	s := d.From + "→" + d.To
	if d.Tenant != "" {
		s += " tenant " + d.Tenant
	}
	return s
}

// Fault is a window during which probes of one direction failed or lagged
// beyond the SLO's fault_lag.
type Fault struct {
	// Start is the first bad probe's acknowledgement (or, for a failed
	// write, its attempt); End is sustained recovery: when everything
	// written up to the first of RecoverySamples consecutive good probes
	// had been applied. End is the analysis time when not Recovered.
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Recovered bool      `json:"recovered"`
	// RTO is End − Start.
	RTO Millis `json:"rto_ms"`
	// RPOWrites is the largest number of acknowledged probes the target
	// had not applied at any instant of the window; RPOWindow the largest
	// age of such a probe. They are what losing the origin at the worst
	// moment of the fault would have lost.
	RPOWrites int    `json:"rpo_writes"`
	RPOWindow Millis `json:"rpo_window_ms"`
	// Lost counts acknowledged probes of the window never applied at the
	// target (known only once the run drained).
	Lost          int `json:"lost"`
	WriteFailures int `json:"write_failures"`
	SlowProbes    int `json:"slow_probes"`
	// MaxLag is the largest lag of a probe of the window.
	MaxLag Millis `json:"max_lag_ms"`
}

// Millis is a duration that JSON renders as float milliseconds.
type Millis time.Duration

// MarshalJSON writes milliseconds with microsecond precision.
func (m Millis) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%.3f", float64(m)/float64(time.Millisecond)), nil
}

// UnmarshalJSON reads milliseconds.
func (m *Millis) UnmarshalJSON(b []byte) error {
	var f float64
	if _, err := fmt.Sscanf(string(b), "%g", &f); err != nil {
		return fmt.Errorf("milliseconds: %w", err)
	}
	*m = Millis(f * float64(time.Millisecond))
	return nil
}

// D is m as a time.Duration.
func (m Millis) D() time.Duration { return time.Duration(m) }

// LagStats summarises lags.
type LagStats struct {
	N    int    `json:"n"`
	P50  Millis `json:"p50_ms"`
	P90  Millis `json:"p90_ms"`
	P99  Millis `json:"p99_ms"`
	P999 Millis `json:"p999_ms"`
	Max  Millis `json:"max_ms"`
	Mean Millis `json:"mean_ms"`
}

// lagStats computes exact percentiles (nearest rank) of ds; ds is sorted
// in place.
func lagStats(ds []time.Duration) LagStats {
	if len(ds) == 0 {
		return LagStats{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	rank := func(p float64) Millis {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return Millis(ds[max(0, min(i, len(ds)-1))])
	}
	return LagStats{
		N: len(ds), P50: rank(.50), P90: rank(.90), P99: rank(.99), P999: rank(.999),
		Max: Millis(ds[len(ds)-1]), Mean: Millis(sum / time.Duration(len(ds))),
	}
}

// Analysis is what one direction's samples say.
type Analysis struct {
	Probes        int `json:"probes"` // acknowledged writes
	WriteFailures int `json:"write_failures"`
	Seen          int `json:"seen"`
	// Pending counts acknowledged probes not seen yet (a live run), Lost
	// those never seen (a drained run).
	Pending int      `json:"pending"`
	Lost    int      `json:"lost"`
	Lag     LagStats `json:"lag"`
	// SteadyLag is the lag of probes acknowledged outside fault windows;
	// the lag_p99 SLO applies to it.
	SteadyLag LagStats `json:"steady_lag"`
	Faults    []Fault  `json:"faults"`
}

// Analyze finds fault windows, RTO and RPO in one direction's samples as
// of now. final says the run drained: a probe still unseen is lost rather
// than pending. Samples are sorted by At in place.
//
// A probe is bad when its write failed or its lag exceeded slo.FaultLag
// (an unseen probe older than FaultLag is bad already). The first bad
// probe opens a fault window; the window closes once RecoverySamples
// consecutive probes are good, at the moment the first of them — and
// every probe before it — had been applied.
func Analyze(samples []Sample, slo SLO, now time.Time, final bool) Analysis {
	slices.SortStableFunc(samples, func(a, b Sample) int { return a.At.Compare(b.At) })
	var a Analysis
	var lags, steady []time.Duration
	n := max(slo.RecoverySamples, 1)
	faultLag := slo.FaultLag.Duration()
	if faultLag <= 0 {
		faultLag = slo.LagP99.Duration()
	}

	inFault := false
	var cur Fault
	startIdx, good, runStart := 0, 0, 0
	closeFault := func(end int, recovered bool) {
		// End: everything up to and including sample end was applied.
		var last time.Time
		for i := startIdx; i <= end && i < len(samples); i++ {
			if s := &samples[i]; !s.Seen.IsZero() && s.Seen.After(last) {
				last = s.Seen
			}
		}
		if !recovered || last.IsZero() {
			last = now
		}
		cur.End, cur.Recovered = last, recovered
		cur.RTO = Millis(cur.End.Sub(cur.Start))
		cur.RPOWrites, cur.RPOWindow, cur.Lost = exposure(samples, cur.Start, cur.End, final)
		a.Faults = append(a.Faults, cur)
		inFault = false
	}
	undetermined := false
	for i := range samples {
		s := &samples[i]
		var bad, slow bool
		switch {
		case s.Failed():
			a.WriteFailures++
			bad = true
		case !s.Seen.IsZero():
			a.Probes++
			a.Seen++
			lag := s.Lag()
			lags = append(lags, lag)
			slow = lag > faultLag
			bad = slow
		default:
			a.Probes++
			if final {
				a.Lost++
				bad = true
			} else {
				a.Pending++
				if now.Sub(s.Ack) > faultLag {
					bad, slow = true, true
				} else {
					// Not known yet whether this one is good; the
					// window cannot be judged past it.
					undetermined = true
				}
			}
		}
		if undetermined {
			continue // count the rest, judge nothing after
		}
		if bad {
			if !inFault {
				inFault, startIdx = true, i
				cur = Fault{Start: s.Ack}
				if s.Failed() {
					cur.Start = s.At
				}
			}
			good = 0
			if s.Failed() {
				cur.WriteFailures++
			} else if slow {
				cur.SlowProbes++
			}
			continue
		}
		if !inFault {
			continue
		}
		if good == 0 {
			runStart = i
		}
		good++
		if good >= n {
			closeFault(runStart, true)
		}
	}
	if inFault {
		closeFault(len(samples)-1, false)
	}
	for i := range a.Faults {
		f := &a.Faults[i]
		for j := range samples {
			s := &samples[j]
			if !s.Seen.IsZero() && !s.Ack.Before(f.Start) && !s.Ack.After(f.End) {
				f.MaxLag = max(f.MaxLag, Millis(s.Lag()))
			}
		}
	}
	// Steady lag: probes acknowledged outside every fault window.
	for i := range samples {
		s := &samples[i]
		if s.Seen.IsZero() || s.Failed() {
			continue
		}
		in := false
		for _, f := range a.Faults {
			if !s.Ack.Before(f.Start) && !s.Ack.After(f.End) {
				in = true
				break
			}
		}
		if !in {
			steady = append(steady, s.Lag())
		}
	}
	a.Lag = lagStats(lags)
	a.SteadyLag = lagStats(steady)
	return a
}

// exposure computes a window's RPO: the most acknowledged probes not yet
// applied at one instant of [start, end], the largest age such a probe
// reached within the window, and how many acknowledged in the window were
// never applied (final runs only).
func exposure(samples []Sample, start, end time.Time, final bool) (writes int, window Millis, lost int) {
	type ev struct {
		t time.Time
		d int
	}
	var evs []ev
	for i := range samples {
		s := &samples[i]
		if s.Failed() || s.Ack.After(end) {
			continue
		}
		if !s.Seen.IsZero() && !s.Seen.After(start) {
			continue // applied before the window began
		}
		applied := s.Seen
		if applied.IsZero() || applied.After(end) {
			applied = end
			if s.Seen.IsZero() && final && !s.Ack.Before(start) {
				lost++
			}
		}
		window = max(window, Millis(applied.Sub(s.Ack)))
		from := s.Ack
		if from.Before(start) {
			from = start
		}
		evs = append(evs, ev{from, +1})
		if !s.Seen.IsZero() && !s.Seen.After(end) {
			evs = append(evs, ev{s.Seen, -1})
		}
	}
	// At equal times apply first the arrivals, then the departures: a
	// probe acknowledged and applied in the same microsecond was pending.
	slices.SortFunc(evs, func(a, b ev) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return cmp.Compare(b.d, a.d)
	})
	cur := 0
	for _, e := range evs {
		cur += e.d
		writes = max(writes, cur)
	}
	return writes, window, lost
}
