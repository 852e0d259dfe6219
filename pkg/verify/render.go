package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// WriteJSON writes the report for machines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func fmtMillis(m Millis) string { return fmtDur(m.D()) }

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func tenantLabel(t string) string {
	if t == "" {
		return "(global)"
	}
	return t
}

// worst returns the direction's largest RTO, RPO writes and RPO window.
func (d *DirectionReport) worst() (rto Millis, writes int, window Millis) {
	for _, f := range d.Faults {
		rto, writes, window = max(rto, f.RTO), max(writes, f.RPOWrites), max(window, f.RPOWindow)
	}
	return
}

func sloDur(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return d.String()
}

func sloInt(n int) string {
	if n == 0 {
		return "—"
	}
	return fmt.Sprint(n)
}

// WriteMarkdown writes the report for humans (and for a CI summary).
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Tandem SLA report — %s\n\n", verdict(r.Pass))
	r.writeRunLine(&b)
	if len(r.Failures) > 0 {
		b.WriteString("\n## SLO misses\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "* %s\n", f)
		}
	}
	b.WriteString("\n## Directions\n\n")
	b.WriteString("| direction | tenant | class | probes | lag p50 | lag p99 (steady) | SLO p99 | max lag | faults | worst RTO | SLO RTO | worst RPO | SLO RPO | lost | verdict |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for i := range r.Directions {
		d := &r.Directions[i]
		rto, writes, window := d.worst()
		fmt.Fprintf(&b, "| %s→%s | %s | %s | %d | %s | %s | %s | %s | %d | %s | %s | %d writes / %s | %s / %s | %d | %s |\n",
			d.From, d.To, tenantLabel(d.Tenant), d.Class, d.Probes, fmtMillis(d.Lag.P50), fmtMillis(d.SteadyLag.P99),
			d.SLO.LagP99, fmtMillis(d.Lag.Max), len(d.Faults), fmtMillis(rto), sloDur(d.SLO.RTOMax.Duration()),
			writes, fmtMillis(window), sloInt(d.SLO.RPOMaxWrites), sloDur(d.SLO.RPOMaxWindow.Duration()), d.Lost, verdict(d.Pass))
	}
	for i := range r.Directions {
		d := &r.Directions[i]
		if len(d.Faults) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n### Faults %s→%s %s\n\n", d.From, d.To, tenantLabel(d.Tenant))
		b.WriteString("| start | end | recovered | RTO | RPO writes | RPO window | write failures | slow probes | max lag | lost |\n")
		b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, f := range d.Faults {
			fmt.Fprintf(&b, "| %s | %s | %v | %s | %d | %s | %d | %d | %s | %d |\n",
				f.Start.Format("15:04:05.000"), f.End.Format("15:04:05.000"), f.Recovered, fmtMillis(f.RTO),
				f.RPOWrites, fmtMillis(f.RPOWindow), f.WriteFailures, f.SlowProbes, fmtMillis(f.MaxLag), f.Lost)
		}
	}
	if len(r.Heartbeats) > 0 {
		b.WriteString("\n## Heartbeat lag (replicators' heartbeats, site clocks)\n\n| direction | samples | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n")
		for _, h := range r.Heartbeats {
			fmt.Fprintf(&b, "| %s→%s | %d | %s | %s | %s |\n", h.From, h.To, h.Lag.N, fmtMillis(h.Lag.P50), fmtMillis(h.Lag.P99), fmtMillis(h.Lag.Max))
		}
	}
	if len(r.Checks) > 0 {
		b.WriteString("\n## Consistency checks\n\n| started | sites | mode | rows | rows/s | in flight (settled) | in flight | diverged | missing | resurrected | verdict |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, c := range r.Checks {
			fmt.Fprintf(&b, "| %s | %s | %s | %d | %.0f | %d | %d | %d | %d | %d | %s |\n",
				c.Started.Format(time.RFC3339), strings.Join(c.Sites, ", "), c.Mode, c.Rows, c.RowsPerSec,
				c.Settled, c.InFlight, c.Diverged, c.Missing, c.Resurrected, verdict(c.Pass))
		}
	}
	if len(r.Events) > 0 {
		b.WriteString("\n## Events\n\n")
		for _, e := range r.Events {
			fmt.Fprintf(&b, "* %s %s\n", e.At.Format("15:04:05.000"), e.Text)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func (r *Report) writeRunLine(b *bytes.Buffer) {
	names := make([]string, len(r.Run.Sites))
	for i, s := range r.Run.Sites {
		names[i] = fmt.Sprintf("%s (id %d)", s.Name, s.ID)
	}
	state := "ended and drained"
	switch {
	case r.Run.Ended.IsZero():
		state = "still running or killed; judged up to its last record, unseen probes count as pending"
	case !r.Run.Drained:
		state = "ended before every probe arrived"
	}
	fmt.Fprintf(b, "Run %s, %s → %s (%s), sites %s, %g probes/s per site and tenant; %s.\n",
		r.Dir, r.Run.Started.Format(time.RFC3339), r.Until.Format(time.RFC3339),
		r.Until.Sub(r.Run.Started).Round(time.Second), strings.Join(names, ", "), r.Run.Rate, state)
}

// chart geometry, in SVG user units.
const (
	chartW, chartH                       = 960, 250
	padL, padR, padT, padB               = 64, 16, 16, 36
	plotW                                = chartW - padL - padR
	plotH                                = chartH - padT - padB
	minLagAxis             time.Duration = time.Millisecond
)

// chartSVG draws one direction's lag over time on a log axis: the lag of
// each pixel column's slowest probe, the replicators' heartbeat lag, the
// fault windows shaded, the fault_lag threshold, failed writes as ticks at
// the bottom and lost probes at the top. Self-contained: no script, no
// external resource.
func (r *Report) chartSVG(d *DirectionReport) string {
	start, end := r.Run.Started, r.Until
	if !end.After(start) {
		end = start.Add(time.Second)
	}
	span := end.Sub(start)
	x := func(t time.Time) float64 {
		f := float64(t.Sub(start)) / float64(span)
		return padL + math.Max(0, math.Min(1, f))*plotW
	}
	samples := r.samples[d.Direction]
	hbs := r.hbs[[2]string{d.From, d.To}]
	top := max(d.Lag.Max.D(), 2*d.SLO.FaultLag.Duration(), 10*time.Millisecond)
	for _, h := range hbs {
		top = max(top, time.Duration(h.Lag)*time.Microsecond)
	}
	lo, hi := math.Log10(float64(minLagAxis)), math.Ceil(math.Log10(float64(top)))
	y := func(v time.Duration) float64 {
		l := math.Log10(math.Max(float64(v), float64(minLagAxis)))
		return padT + plotH*(1-(l-lo)/(hi-lo))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		chartW, chartH, chartW, chartH, html.EscapeString("lag "+d.Direction.String()))
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="#bbb"/>`, padL, padT, plotW, plotH)
	for _, f := range d.Faults {
		x0, x1 := x(f.Start), x(f.End)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#e4572e" fill-opacity="0.18"><title>%s</title></rect>`,
			x0, padT, math.Max(x1-x0, 1), plotH, html.EscapeString(fmt.Sprintf("fault %s → %s, RTO %s, RPO %d writes / %s",
				f.Start.Format("15:04:05.000"), f.End.Format("15:04:05.000"), fmtMillis(f.RTO), f.RPOWrites, fmtMillis(f.RPOWindow))))
	}
	// Y grid: powers of ten.
	for e := lo; e <= hi; e++ {
		v := time.Duration(math.Pow(10, e))
		yy := y(v)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" font-size="11" text-anchor="end" dominant-baseline="middle" fill="#555">%s</text>`,
			padL, padL+plotW, yy, yy, padL-6, yy, fmtAxis(v))
	}
	// X ticks.
	step := tickStep(span)
	for t := time.Duration(0); t <= span; t += step {
		xx := x(start.Add(t))
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" font-size="11" text-anchor="middle" fill="#555">+%s</text>`,
			xx, xx, padT, padT+plotH, xx, padT+plotH+14, fmtTick(t))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="middle" fill="#555">time since %s UTC</text>`,
		padL+plotW/2, chartH-4, start.Format("2006-01-02 15:04:05"))
	// Heartbeat lag (grey) under the probe lag (blue).
	if len(hbs) > 0 {
		pts := make([]point, 0, len(hbs))
		for _, h := range hbs {
			pts = append(pts, point{fromMicros(h.At), time.Duration(h.Lag) * time.Microsecond})
		}
		b.WriteString(bucketPath(pts, x, y, "#999", "heartbeat lag"))
	}
	pts := make([]point, 0, len(samples))
	for i := range samples {
		s := &samples[i]
		if !s.Seen.IsZero() && !s.Failed() {
			pts = append(pts, point{s.Ack, s.Lag()})
		}
	}
	b.WriteString(bucketPath(pts, x, y, "#1f6fb2", "probe lag (slowest per pixel)"))
	// Threshold.
	ty := y(d.SLO.FaultLag.Duration())
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e08a00" stroke-dasharray="6 4"><title>%s</title></line>`,
		padL, padL+plotW, ty, ty, html.EscapeString("fault threshold "+d.SLO.FaultLag.String()+", SLO lag p99 "+d.SLO.LagP99.String()))
	for i := range samples {
		s := &samples[i]
		switch {
		case s.Failed():
			xx := x(s.At)
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#c0392b" stroke-width="1.5"/>`, xx, xx, padT+plotH-8, padT+plotH)
		case s.Seen.IsZero():
			xx := x(s.Ack)
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%d" r="2.5" fill="#c0392b"/>`, xx, padT+4)
		}
	}
	for _, e := range r.Events {
		xx := x(e.At)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#444" stroke-dasharray="2 3"/><text x="%.1f" y="%d" font-size="10" fill="#444">%s</text>`,
			xx, xx, padT, padT+plotH, xx+3, padT+11, html.EscapeString(e.Text))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

type point struct {
	t   time.Time
	lag time.Duration
}

// bucketPath draws the largest lag per pixel column as one path, broken
// where no point falls for much longer than points usually come (probes
// stopped arriving or being written).
func bucketPath(pts []point, x func(time.Time) float64, y func(time.Duration) float64, color, title string) string {
	if len(pts) == 0 {
		return ""
	}
	slices.SortFunc(pts, func(a, b point) int { return a.t.Compare(b.t) })
	gaps := make([]time.Duration, 0, len(pts))
	for i := 1; i < len(pts); i++ {
		gaps = append(gaps, pts[i].t.Sub(pts[i-1].t))
	}
	limit := time.Second
	if len(gaps) > 0 {
		slices.Sort(gaps)
		limit = max(limit, 5*gaps[len(gaps)/2])
	}
	cols := make([]time.Duration, plotW+1)
	last := make([]time.Time, plotW+1)
	has := make([]bool, plotW+1)
	for _, p := range pts {
		c := int(math.Round(x(p.t) - padL))
		c = max(0, min(c, plotW))
		if !has[c] || p.lag > cols[c] {
			cols[c] = p.lag
		}
		has[c] = true
		last[c] = p.t
	}
	var b strings.Builder
	var prev time.Time
	for c := range cols {
		if !has[c] {
			continue
		}
		cmd := 'L'
		if prev.IsZero() || last[c].Sub(prev) > limit {
			cmd = 'M'
		}
		fmt.Fprintf(&b, "%c%d %.1f", cmd, padL+c, y(cols[c]))
		prev = last[c]
	}
	return fmt.Sprintf(`<path d="%s" fill="none" stroke="%s" stroke-width="1.2" stroke-linejoin="round"><title>%s</title></path>`, b.String(), color, html.EscapeString(title))
}

func fmtAxis(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%gs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%gms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%gµs", float64(d)/float64(time.Microsecond))
}

func fmtTick(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	if d >= time.Minute {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

func tickStep(span time.Duration) time.Duration {
	for _, s := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second,
		30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute,
		30 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour} {
		if span/s <= 12 {
			return s
		}
	}
	return span / 10
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms":      fmtMillis,
	"verdict": verdict,
	"tenant":  tenantLabel,
	"clock":   func(t time.Time) string { return t.Format("15:04:05.000") },
	"rfc":     func(t time.Time) string { return t.Format(time.RFC3339) },
	"sloDur":  func(d interface{ Duration() time.Duration }) string { return sloDur(d.Duration()) },
	"sloInt":  sloInt,
	"join":    strings.Join,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tandem SLA report — {{verdict .R.Pass}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 12px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.PASS{color:#fff;background:#2e7d32;padding:2px 8px;border-radius:4px}.FAIL{color:#fff;background:#c0392b;padding:2px 8px;border-radius:4px}
.miss{color:#c0392b}.muted{color:#666}.legend span{margin-right:16px}
svg{max-width:100%;height:auto;display:block}
</style></head><body>
<h1>Tandem SLA report <span class="{{verdict .R.Pass}}">{{verdict .R.Pass}}</span></h1>
<p>{{.RunLine}}</p>
{{if .R.Failures}}<h2>SLO misses</h2><ul>{{range .R.Failures}}<li class="miss">{{.}}</li>{{end}}</ul>{{end}}
<h2>Directions</h2>
<table><tr><th class="l">direction</th><th class="l">tenant</th><th class="l">class</th><th>probes</th><th>lag p50</th><th>lag p99 (steady)</th><th>SLO p99</th><th>max lag</th><th>faults</th><th>worst RTO</th><th>SLO RTO</th><th>worst RPO</th><th>SLO RPO</th><th>lost</th><th class="l">verdict</th></tr>
{{range .Rows}}<tr><td class="l">{{.D.From}}→{{.D.To}}</td><td class="l">{{tenant .D.Tenant}}</td><td class="l">{{.D.Class}}</td><td>{{.D.Probes}}</td><td>{{ms .D.Lag.P50}}</td><td>{{ms .D.SteadyLag.P99}}</td><td>{{.D.SLO.LagP99}}</td><td>{{ms .D.Lag.Max}}</td><td>{{len .D.Faults}}</td><td>{{ms .RTO}}</td><td>{{sloDur .D.SLO.RTOMax}}</td><td>{{.Writes}} writes / {{ms .Window}}</td><td>{{sloInt .D.SLO.RPOMaxWrites}} / {{sloDur .D.SLO.RPOMaxWindow}}</td><td>{{.D.Lost}}</td><td class="l"><span class="{{verdict .D.Pass}}">{{verdict .D.Pass}}</span></td></tr>
{{end}}</table>
<h2>Lag over time</h2>
<p class="legend muted"><span style="color:#1f6fb2">━ probe lag (slowest per pixel)</span><span style="color:#999">━ heartbeat lag</span><span style="color:#e08a00">┅ fault threshold</span><span style="color:#e4572e">▮ fault window</span><span style="color:#c0392b">| failed write ● probe never applied</span></p>
{{range .Rows}}<h3>{{.D.From}} → {{.D.To}}, tenant {{tenant .D.Tenant}} <span class="{{verdict .D.Pass}}">{{verdict .D.Pass}}</span></h3>
{{.SVG}}
{{if .D.Failures}}<ul>{{range .D.Failures}}<li class="miss">{{.}}</li>{{end}}</ul>{{end}}
{{if .D.Faults}}<table><tr><th class="l">fault start</th><th class="l">end</th><th class="l">recovered</th><th>RTO</th><th>RPO writes</th><th>RPO window</th><th>write failures</th><th>slow probes</th><th>max lag</th><th>lost</th></tr>
{{range .D.Faults}}<tr><td class="l">{{clock .Start}}</td><td class="l">{{clock .End}}</td><td class="l">{{.Recovered}}</td><td>{{ms .RTO}}</td><td>{{.RPOWrites}}</td><td>{{ms .RPOWindow}}</td><td>{{.WriteFailures}}</td><td>{{.SlowProbes}}</td><td>{{ms .MaxLag}}</td><td>{{.Lost}}</td></tr>
{{end}}</table>{{end}}
{{end}}
{{if .R.Heartbeats}}<h2>Heartbeat lag</h2><p class="muted">From the replicators' heartbeat rows; includes the sites' clock offsets and up to one heartbeat interval of staleness.</p>
<table><tr><th class="l">direction</th><th>samples</th><th>p50</th><th>p99</th><th>max</th></tr>
{{range .R.Heartbeats}}<tr><td class="l">{{.From}}→{{.To}}</td><td>{{.Lag.N}}</td><td>{{ms .Lag.P50}}</td><td>{{ms .Lag.P99}}</td><td>{{ms .Lag.Max}}</td></tr>{{end}}</table>{{end}}
{{if .R.Checks}}<h2>Consistency checks</h2>
<table><tr><th class="l">started</th><th class="l">sites</th><th class="l">mode</th><th>rows</th><th>rows/s</th><th>in flight (settled)</th><th>in flight</th><th>diverged</th><th>missing</th><th>resurrected</th><th class="l">verdict</th></tr>
{{range .R.Checks}}<tr><td class="l">{{rfc .Started}}</td><td class="l">{{join .Sites ", "}}</td><td class="l">{{.Mode}}</td><td>{{.Rows}}</td><td>{{printf "%.0f" .RowsPerSec}}</td><td>{{.Settled}}</td><td>{{.InFlight}}</td><td>{{.Diverged}}</td><td>{{.Missing}}</td><td>{{.Resurrected}}</td><td class="l"><span class="{{verdict .Pass}}">{{verdict .Pass}}</span></td></tr>{{end}}</table>{{end}}
{{if .R.Events}}<h2>Events</h2><ul>{{range .R.Events}}<li>{{clock .At}} {{.Text}}</li>{{end}}</ul>{{end}}
<p class="muted">Generated {{rfc .R.Generated}} by <code>verifier report</code>. Lag is measured on the verifier's clock from a probe's acknowledgement at its origin to its first sighting at the target (polled).</p>
</body></html>
`))

type pageRow struct {
	D      *DirectionReport
	SVG    template.HTML
	RTO    Millis
	Writes int
	Window Millis
}

// WriteHTML writes a self-contained page: inline CSS and SVG, no script,
// no network access needed to view it.
func (r *Report) WriteHTML(w io.Writer) error {
	var line bytes.Buffer
	r.writeRunLine(&line)
	data := struct {
		R       *Report
		RunLine string
		Rows    []pageRow
	}{R: r, RunLine: strings.TrimSpace(line.String())}
	for i := range r.Directions {
		d := &r.Directions[i]
		rto, writes, window := d.worst()
		// The SVG is built from numbers and html.EscapeString'd labels.
		data.Rows = append(data.Rows, pageRow{D: d, SVG: template.HTML(r.chartSVG(d)), RTO: rto, Writes: writes, Window: window}) //nolint:gosec // escaped above
	}
	return pageTmpl.Execute(w, data)
}
