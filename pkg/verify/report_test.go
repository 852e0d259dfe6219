package verify

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// writeRun records a synthetic two-site run: a→b stalls from 10 s to 20 s,
// b→a is healthy; both directions heartbeat.
func writeRun(t *testing.T, ended bool) string {
	t.Helper()
	dir := t.TempDir()
	info := RunInfo{Format: RunFormat, Started: t0, Sites: []SiteRef{{"a", 1}, {"b", 2}}, Rate: 10,
		SLOs: SLOs{Default: SLO{LagP99: Duration(time.Second), RTOMax: Duration(12 * time.Second), RecoverySamples: 10, RPOMaxWindow: Duration(5 * time.Second)}}}
	if ended {
		info.Ended, info.Drained = at(40), true
	}
	if err := WriteRunInfo(dir, info); err != nil {
		t.Fatal(err)
	}
	rec, err := newRecorder(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		a := float64(i) * 0.1
		for _, o := range []string{"a", "b"} {
			seq := uint64(1000 + i)
			rec.append(ProbesFile, Record{Kind: KindWrite, Origin: o, Seq: seq, At: micros(at(a)), Ack: micros(at(a + 0.001))})
			seen := a + 0.03
			if o == "a" && a >= 10 && a < 20 {
				seen = 20.05
			}
			target := map[string]string{"a": "b", "b": "a"}[o]
			rec.append(ProbesFile, Record{Kind: KindSeen, Origin: o, Target: target, Seq: seq, At: micros(at(seen))})
			if i%5 == 0 {
				rec.append(HeartbeatsFile, Record{Kind: KindHeartbeat, Origin: o, Target: target, At: micros(at(a)), Lag: 40_000})
			}
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	// A cut last line (a killed writer) is skipped.
	f, err := os.OpenFile(filepath.Join(dir, ProbesFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"k":"w","o":"a","q":99`)
	f.Close()
	if err := AppendEvent(dir, Event{At: at(10), Text: "pause b's appliers"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReport(t *testing.T) {
	dir := writeRun(t, true)
	run, err := ReadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := BuildReport(run, nil, at(50))
	if len(r.Directions) != 2 || !r.Final {
		t.Fatalf("%+v", r.Directions)
	}
	ab, ba := r.Directions[0], r.Directions[1]
	if ab.From != "a" || len(ab.Faults) != 1 || ab.Pass || !ba.Pass || r.Pass {
		t.Fatalf("a→b %+v\nb→a %+v", ab, ba)
	}
	// RTO 10.05 s is within the 12 s SLO; the 10 s RPO window is not.
	if len(ab.Failures) != 1 || !strings.Contains(ab.Failures[0], "RPO window") {
		t.Fatalf("failures %q", ab.Failures)
	}
	near(t, "RTO", ab.Faults[0].RTO.D(), 10050*time.Millisecond, 2*time.Millisecond)

	// A stricter RTO given at report time fails too.
	slos := run.Info.SLOs
	slos.Default.RTOMax = Duration(5 * time.Second)
	if r2 := BuildReport(run, &slos, at(50)); len(r2.Directions[0].Failures) != 2 {
		t.Fatalf("with RTO 5s: %q", r2.Directions[0].Failures)
	}

	var js, md, page bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Directions[0].Faults[0].RTO != ab.Faults[0].RTO.truncMicros() || back.Run.SLOs.Default.RTOMax != run.Info.SLOs.Default.RTOMax {
		t.Fatalf("JSON round trip: %+v", back.Directions[0].Faults[0])
	}
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"# Tandem SLA report — FAIL", "| a→b | (global) | default | 400 |", "RPO window 10.05s exceeds the SLO 5s", "pause b's appliers"} {
		if !strings.Contains(md.String(), w) {
			t.Errorf("markdown lacks %q:\n%s", w, md.String())
		}
	}
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	h := page.String()
	// Viewable offline: no script, no fetched resource of any kind.
	if regexp.MustCompile(`(?i)<script|<link|src=|url\(|@import|href="http`).MatchString(h) {
		t.Errorf("HTML page references something external")
	}
	if n := strings.Count(h, "<svg"); n != 2 {
		t.Errorf("%d charts, want 2", n)
	}
	if !strings.Contains(h, `fill="#e4572e" fill-opacity="0.18"`) {
		t.Error("no shaded fault window")
	}
}

func TestReportOfUnfinishedRun(t *testing.T) {
	run, err := ReadRun(writeRun(t, false))
	if err != nil {
		t.Fatal(err)
	}
	r := BuildReport(run, nil, at(100))
	if r.Final || !r.Until.Equal(at(39.9+0.05)) && !r.Until.After(at(39)) {
		t.Fatalf("final %v until %s", r.Final, r.Until)
	}
	if _, err := ReadRun(t.TempDir()); err == nil || !strings.Contains(err.Error(), "verifier probe --run") {
		t.Fatalf("empty dir: %v", err)
	}
}

func (m Millis) truncMicros() Millis { return Millis(m.D().Truncate(time.Microsecond)) }
