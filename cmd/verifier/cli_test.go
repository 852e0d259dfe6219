package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/verify"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func runCLI(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, func(string) string { return "" }, &out, &errb)
	return out.String(), errb.String(), code
}

func TestUsageAndExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "usage: verifier"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"help"}, exitOK, "exit status"},
		{[]string{"version"}, exitOK, versionLabel},
		{[]string{"check"}, exitUsage, "no sites"},
		{[]string{"check", "--site", "a=1@h:1", "--site", "b"}, exitUsage, "allowed NAME=ID@HOST:PORT"},
		{[]string{"check", "--site", "a=1@h:1", "--site", "a=1@h:2"}, exitUsage, `sites[1].name: "a" is also sites[0]`},
		{[]string{"probe", "--site", "a=1@h:1"}, exitUsage, "--run DIR is required"},
		{[]string{"report"}, exitUsage, "--run DIR is required"},
		{[]string{"report", "--run", t.TempDir()}, exitFailure, "made by `verifier probe --run DIR`"},
		{[]string{"check", "--config", "/nonexistent.yaml"}, exitUsage, "no such file"},
	} {
		out, errs, code := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(out+errs, tc.want) {
			t.Errorf("verifier %q: exit %d, want %d; output lacks %q:\n%s%s", tc.args, code, tc.code, tc.want, out, errs)
		}
	}
}

// writeRun writes a small run directory: site a's probes reach b in 20 ms
// except one never applied.
func writeRun(t *testing.T, lose bool) string {
	t.Helper()
	dir := t.TempDir()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	info := verify.RunInfo{Format: verify.RunFormat, Started: start, Ended: start.Add(10 * time.Second), Drained: true, Rate: 10,
		Sites: []verify.SiteRef{{Name: "a", ID: 1}, {Name: "b", ID: 2}}, SLOs: verify.DefaultConfig().SLOs}
	if err := verify.WriteRunInfo(dir, info); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for i := range 90 {
		at := start.Add(time.Duration(i) * 100 * time.Millisecond)
		for _, o := range []string{"a", "b"} {
			to := map[string]string{"a": "b", "b": "a"}[o]
			enc.Encode(verify.Record{Kind: verify.KindWrite, Origin: o, Seq: uint64(i + 1), At: at.UnixMicro(), Ack: at.Add(time.Millisecond).UnixMicro()})
			if !lose || i != 40 || o != "a" {
				enc.Encode(verify.Record{Kind: verify.KindSeen, Origin: o, Target: to, Seq: uint64(i + 1), At: at.Add(21 * time.Millisecond).UnixMicro()})
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, verify.ProbesFile), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReportCommand(t *testing.T) {
	dir := writeRun(t, false)
	if _, _, code := runCLI("mark", "--run", dir, "drill", "starts"); code != 0 {
		t.Fatal("mark failed")
	}
	html, js := filepath.Join(dir, "r.html"), filepath.Join(dir, "r.json")
	out, errs, code := runCLI("report", "--run", dir, "--html", html, "--json", js)
	if code != exitOK || !strings.Contains(out, "# Tandem SLA report — PASS") || !strings.Contains(out, "HTML report: "+html) {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, f := range []string{html, js} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	page, _ := os.ReadFile(html)
	if !strings.Contains(string(page), "drill starts") {
		t.Error("the event is not on the page")
	}
	// A stricter SLO given at report time fails the same run.
	if _, _, code := runCLI("report", "--run", dir, "--lag-p99", "10ms", "--quiet"); code != exitMissed {
		t.Fatalf("lag p99 10ms: exit %d, want %d", code, exitMissed)
	}

	// A lost probe fails the run whatever the SLOs.
	out, errs, code = runCLI("report", "--run", writeRun(t, true))
	if code != exitMissed || !strings.Contains(out, "1 acknowledged probe(s) never applied at b") {
		t.Fatalf("lost probe: exit %d\n%s%s", code, out, errs)
	}
}
