package verify

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Report is the SLA report of a run: every direction's lag, faults, RPO
// and RTO judged against its SLO, plus the consistency checks recorded in
// the run directory.
type Report struct {
	Generated time.Time `json:"generated"`
	Dir       string    `json:"dir,omitempty"`
	Run       RunInfo   `json:"run"`
	// Final is set when the run ended and drained: probes never seen are
	// lost, not pending.
	Final bool `json:"final"`
	// Until is the analysis time: the run's end, or its last record.
	Until      time.Time         `json:"until"`
	Pass       bool              `json:"pass"`
	Failures   []string          `json:"failures"`
	Directions []DirectionReport `json:"directions"`
	Heartbeats []HeartbeatReport `json:"heartbeats,omitempty"`
	Checks     []CheckSummary    `json:"checks,omitempty"`
	Events     []Event           `json:"events,omitempty"`

	samples map[Direction][]Sample
	hbs     map[[2]string][]Record
}

// DirectionReport is one direction of one tenant.
type DirectionReport struct {
	Direction
	Class string `json:"class"`
	SLO   SLO    `json:"slo"`
	Analysis
	Pass     bool     `json:"pass"`
	Failures []string `json:"failures,omitempty"`
}

// HeartbeatReport is the lag the replicators' heartbeats showed.
type HeartbeatReport struct {
	From string   `json:"from"`
	To   string   `json:"to"`
	Lag  LagStats `json:"lag"`
}

// BuildReport judges a run. slos, when not nil, replaces the SLOs the run
// was recorded with (judging an old run by new objectives).
func BuildReport(run *Run, slos *SLOs, now time.Time) *Report {
	r := &Report{Generated: now.UTC(), Dir: run.Dir, Run: run.Info, Checks: run.Checks, Events: run.Events,
		samples: map[Direction][]Sample{}, hbs: map[[2]string][]Record{}}
	if slos != nil {
		r.Run.SLOs = *slos
	}
	r.Final = !run.Info.Ended.IsZero() && run.Info.Drained
	r.Until = run.Info.Ended
	if r.Until.IsZero() {
		// Still running or killed: judge up to the last thing recorded.
		r.Until = run.Info.Started
		for _, rec := range run.Probes {
			if t := fromMicros(max(rec.At, rec.Ack)); t.After(r.Until) {
				r.Until = t
			}
		}
	}

	type key struct {
		origin string
		seq    uint64
	}
	seen := map[key]map[string]int64{}
	for _, rec := range run.Probes {
		if rec.Kind == KindSeen {
			k := key{rec.Origin, rec.Seq}
			if seen[k] == nil {
				seen[k] = map[string]int64{}
			}
			if prev, ok := seen[k][rec.Target]; !ok || rec.At < prev {
				seen[k][rec.Target] = rec.At
			}
		}
	}
	for _, rec := range run.Probes {
		if rec.Kind != KindWrite {
			continue
		}
		for _, site := range run.Info.Sites {
			if site.Name == rec.Origin {
				continue
			}
			d := Direction{From: rec.Origin, To: site.Name, Tenant: rec.Tenant}
			s := Sample{Seq: rec.Seq, Tenant: rec.Tenant, At: fromMicros(rec.At), Ack: fromMicros(rec.Ack)}
			if rec.Ack != 0 {
				if at, ok := seen[key{rec.Origin, rec.Seq}][site.Name]; ok {
					s.Seen = fromMicros(at)
				}
			}
			r.samples[d] = append(r.samples[d], s)
		}
	}
	// Every direction gets a row, also one that recorded nothing.
	tenants := []string{""}
	if len(run.Info.Tenants) > 0 {
		tenants = tenants[:0]
		for _, t := range run.Info.Tenants {
			tenants = append(tenants, t.Name)
		}
	}
	for _, from := range run.Info.Sites {
		for _, to := range run.Info.Sites {
			if from.Name == to.Name {
				continue
			}
			for _, tn := range tenants {
				d := Direction{From: from.Name, To: to.Name, Tenant: tn}
				if _, ok := r.samples[d]; !ok {
					r.samples[d] = nil
				}
			}
		}
	}
	dirs := make([]Direction, 0, len(r.samples))
	for d := range r.samples {
		dirs = append(dirs, d)
	}
	slices.SortFunc(dirs, func(a, b Direction) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To), cmp.Compare(a.Tenant, b.Tenant))
	})
	r.Pass = true
	for _, d := range dirs {
		class := ""
		for _, t := range run.Info.Tenants {
			if t.Name == d.Tenant {
				class = t.Class
			}
		}
		slo := r.Run.SLOs.Resolve(class)
		if class == "" {
			class = "default"
		}
		samples := r.samples[d]
		dr := DirectionReport{Direction: d, Class: class, SLO: slo, Analysis: Analyze(samples, slo, r.Until, r.Final)}
		r.samples[d] = samples
		dr.judge()
		if !dr.Pass {
			r.Pass = false
			for _, f := range dr.Failures {
				r.Failures = append(r.Failures, d.String()+": "+f)
			}
		}
		r.Directions = append(r.Directions, dr)
	}
	for _, c := range run.Checks {
		if !c.Pass {
			r.Pass = false
			r.Failures = append(r.Failures, fmt.Sprintf("consistency check at %s: %s", c.Started.Format(time.RFC3339), c.Verdict))
		}
	}

	hb := map[[2]string][]time.Duration{}
	for _, rec := range run.Heartbeats {
		k := [2]string{rec.Origin, rec.Target}
		hb[k] = append(hb[k], time.Duration(rec.Lag)*time.Microsecond)
		r.hbs[k] = append(r.hbs[k], rec)
	}
	for k, lags := range hb {
		r.Heartbeats = append(r.Heartbeats, HeartbeatReport{From: k[0], To: k[1], Lag: lagStats(lags)})
	}
	slices.SortFunc(r.Heartbeats, func(a, b HeartbeatReport) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	if r.Failures == nil {
		r.Failures = []string{}
	}
	return r
}

// judge checks one direction against its SLO.
func (d *DirectionReport) judge() {
	fail := func(format string, args ...any) { d.Failures = append(d.Failures, fmt.Sprintf(format, args...)) }
	if d.Probes == 0 {
		fail("no probe write was acknowledged at %s (%d failed)", d.From, d.WriteFailures)
	}
	if d.SteadyLag.N > 0 && d.SteadyLag.P99.D() > d.SLO.LagP99.Duration() {
		fail("lag p99 %s outside faults exceeds the SLO %s", fmtDur(d.SteadyLag.P99.D()), d.SLO.LagP99)
	}
	for _, f := range d.Faults {
		at := f.Start.Format("15:04:05.000")
		switch {
		case !f.Recovered:
			fail("fault from %s not recovered by %s (RTO already %s; SLO %s)", at, f.End.Format("15:04:05.000"), fmtDur(f.RTO.D()), d.SLO.RTOMax)
		case f.RTO.D() > d.SLO.RTOMax.Duration():
			fail("fault from %s: RTO %s exceeds the SLO %s", at, fmtDur(f.RTO.D()), d.SLO.RTOMax)
		}
		if d.SLO.RPOMaxWrites > 0 && f.RPOWrites > d.SLO.RPOMaxWrites {
			fail("fault from %s: RPO %d writes exceeds the SLO %d", at, f.RPOWrites, d.SLO.RPOMaxWrites)
		}
		if d.SLO.RPOMaxWindow > 0 && f.RPOWindow.D() > d.SLO.RPOMaxWindow.Duration() {
			fail("fault from %s: RPO window %s exceeds the SLO %s", at, fmtDur(f.RPOWindow.D()), d.SLO.RPOMaxWindow)
		}
	}
	if d.Lost > 0 {
		fail("%d acknowledged probe(s) never applied at %s", d.Lost, d.To)
	}
	d.Pass = len(d.Failures) == 0
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// Samples returns the samples of direction d (sorted by write time).
func (r *Report) Samples(d Direction) []Sample { return r.samples[d] }
