package promtext

import (
	"math"
	"testing"
)

const body = `# HELP x_seconds lag
x_seconds_bucket{origin="a",le="0.1"} 50
x_seconds_bucket{origin="a",le="0.2"} 90
x_seconds_bucket{origin="a",le="+Inf"} 100
x_seconds_count{origin="a"} 100
y_total{k="1"} 2
y_total{k="2"} 3
`

func TestQuantileAndSum(t *testing.T) {
	m := Parse(body)
	if got := m.Sum("y_total"); got != 5 {
		t.Fatalf("sum = %v", got)
	}
	if got := m.Sum("y_total", `k="2"`); got != 3 {
		t.Fatalf("filtered sum = %v", got)
	}
	b := m.Buckets("x_seconds", `origin="a"`)
	if q := Quantile(b, 0.5); math.Abs(q-0.1) > 1e-9 {
		t.Fatalf("p50 = %v, want 0.1", q)
	}
	if q := Quantile(b, 0.7); math.Abs(q-0.15) > 1e-9 {
		t.Fatalf("p70 = %v, want 0.15 (linear inside the bucket)", q)
	}
	if q := Quantile(b, 0.99); !math.IsInf(q, 1) {
		t.Fatalf("p99 = %v, want +Inf", q)
	}
	if q := Quantile(Sub(b, b), 0.5); !math.IsNaN(q) {
		t.Fatalf("empty = %v, want NaN", q)
	}
}
