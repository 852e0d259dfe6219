// Package promtext reads Prometheus text exposition for the demo, the
// end-to-end tests and the benchmarks: sums of counters and quantiles of
// histograms, the way histogram_quantile computes them.
package promtext

import (
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sample is one line: its label text and value.
type Sample struct {
	Labels string
	Value  float64
}

// Metrics maps metric names to their samples.
type Metrics map[string][]Sample

// Parse reads text exposition; comment and malformed lines are skipped.
func Parse(body string) Metrics {
	m := Metrics{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		m[name] = append(m[name], Sample{Labels: rest, Value: v})
	}
	return m
}

// Sum adds the samples of name whose labels contain every one of match.
func (m Metrics) Sum(name string, match ...string) float64 {
	var s float64
next:
	for _, x := range m[name] {
		for _, w := range match {
			if !strings.Contains(x.Labels, w) {
				continue next
			}
		}
		s += x.Value
	}
	return s
}

// Buckets returns histogram name's cumulative bucket counts by upper bound,
// summed over the series whose labels contain every one of match.
func (m Metrics) Buckets(name string, match ...string) map[float64]float64 {
	acc := map[float64]float64{}
next:
	for _, x := range m[name+"_bucket"] {
		for _, w := range match {
			if !strings.Contains(x.Labels, w) {
				continue next
			}
		}
		i := strings.Index(x.Labels, `le="`)
		if i < 0 {
			continue
		}
		s := x.Labels[i+4:]
		s = s[:strings.IndexByte(s, '"')]
		le, err := strconv.ParseFloat(s, 64)
		if err != nil {
			continue
		}
		acc[le] += x.Value
	}
	return acc
}

// Sub returns the bucket counts of b minus those of a (a later scrape minus
// an earlier one: the observations in between).
func Sub(b, a map[float64]float64) map[float64]float64 {
	out := map[float64]float64{}
	for le, n := range b {
		out[le] = n - a[le]
	}
	return out
}

// Quantile estimates quantile q of cumulative buckets with linear
// interpolation inside the bucket, like histogram_quantile. It returns NaN
// without observations and +Inf when q falls in the +Inf bucket.
func Quantile(buckets map[float64]float64, q float64) float64 {
	type bucket struct{ le, n float64 }
	bs := make([]bucket, 0, len(buckets))
	for le, n := range buckets {
		bs = append(bs, bucket{le, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].n
	prevLe, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return math.Inf(1)
			}
			frac := 0.0
			if b.n > prevN {
				frac = (rank - prevN) / (b.n - prevN)
			}
			return prevLe + (b.le-prevLe)*frac
		}
		prevLe, prevN = b.le, b.n
	}
	return math.NaN()
}
