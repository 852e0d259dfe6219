package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/compare"
	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
	"github.com/tandemdb/tandem/pkg/verify"
)

// activeActive starts two sites that apply each other, with the workload
// tables, and returns the cluster.
func activeActive(t *testing.T) *cluster {
	t.Helper()
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.createTables()
	c.writeConfigs("")
	c.prepare()
	c.start(0)
	c.start(1)
	return c
}

// verifierConfig writes a verifier config for c's sites and returns its
// path. slo is the YAML of slos.default.
func verifierConfig(t *testing.T, c *cluster, slo string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("sites:\n")
	for _, s := range c.sites {
		fmt.Fprintf(&b, "  - {name: %s, id: %d, host: 127.0.0.1, port: %d, user: root}\n", s.name, s.id, s.srv.Port)
	}
	fmt.Fprintf(&b, "meta_schema: %s\ncheck:\n  tables: [\"%s.*\"]\n  retry_delay: 500ms\n  retries: 8\n", c.meta, c.db)
	fmt.Fprintf(&b, "slos:\n  default: %s\n", slo)
	path := filepath.Join(t.TempDir(), "verifier.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runVerifier runs the verifier binary to completion and returns its
// stdout, stderr and exit code.
func runVerifier(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testenv.BuildBinary(t, "./cmd/verifier"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("verifier %v: %v", args, err)
	return "", "", -1
}

// TestVerifierPlantedDivergence: a row changed at B behind the
// replicator's back (sink mode, version untouched) is reported with its
// exact key and class; --repair fixes it and a fenced check then demands
// and finds full equality.
func TestVerifierPlantedDivergence(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := activeActive(t)
	if _, err := workload.Run(context.Background(), c.dbAt(0), workload.Options{
		DB: c.db, Seed: seed(t), Changes: 3000, Keys: 1000, TxnRows: 20,
	}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(0, 1, time.Minute)
	cfg := verifierConfig(t, c, "{lag_p99: 1s}")

	// Clean first: nothing differs.
	if out, errs, code := runVerifier(t, "check", "--config", cfg); code != 0 {
		t.Fatalf("check of converged sites: exit %d\n%s\n%s", code, out, errs)
	}

	// Plant: at B, in sink mode, change a row A wrote, leaving its version.
	var key int64
	b := c.dbAt(1)
	if err := b.QueryRow(fmt.Sprintf("SELECT id FROM `%s`.items ORDER BY id LIMIT 1 OFFSET 100", c.db)).Scan(&key); err != nil {
		t.Fatal(err)
	}
	conn, err := b.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SET @tandem_apply = 1",
		fmt.Sprintf("UPDATE `%s`.items SET qty = qty + 1000 WHERE id = %d", c.db, key),
		"SET @tandem_apply = NULL"} {
		if _, err := conn.ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()

	dir := t.TempDir()
	jsonOut := filepath.Join(dir, "check.json")
	out, errs, code := runVerifier(t, "check", "--config", cfg, "--json", jsonOut, "--run", dir)
	if code != 1 {
		t.Fatalf("check with a planted divergence: exit %d, want 1\n%s\n%s", code, out, errs)
	}
	var res verify.CheckResult
	data, err := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	wantKey := fmt.Sprint(key)
	if len(res.Diffs) != 1 {
		t.Fatalf("%d diffs, want 1:\n%s", len(res.Diffs), out)
	}
	d := res.Diffs[0]
	if d.Table != c.db+".items" || len(d.Key) != 1 || d.Key[0] != wantKey || d.Site != "s2" || d.Class != verify.ClassDiverged || d.Winner != "s1" {
		t.Fatalf("diff %+v; want %s.items id=%s diverged at s2 (winner s1)\n%s", d, c.db, wantKey, out)
	}
	if !strings.Contains(out, "diverged    "+c.db+".items id="+wantKey+" at s2") || !strings.Contains(out, "SET @tandem_apply = 1;") {
		t.Fatalf("text output lacks the key or the repair SQL:\n%s", out)
	}
	t.Logf("reported:\n%s", out)

	if out, errs, code := runVerifier(t, "check", "--config", cfg, "--repair"); code != 1 || !strings.Contains(out, "repairs applied: 1 of 1") {
		t.Fatalf("repair: exit %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = runVerifier(t, "check", "--config", cfg, "--fenced", "--run", dir)
	if code != 0 || !strings.Contains(out, "check PASS (fenced") {
		t.Fatalf("fenced check after repair: exit %d\n%s\n%s", code, out, errs)
	}
	// The two checks given --run are recorded for `verifier report`; the
	// directory is not a probe run, so read the file itself.
	lines, err := os.ReadFile(filepath.Join(dir, verify.ChecksFile))
	if err != nil {
		t.Fatal(err)
	}
	var sums []verify.CheckSummary
	for _, l := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
		var s verify.CheckSummary
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, s)
	}
	if len(sums) != 2 || sums[0].Pass || sums[0].Diverged != 1 || !sums[1].Pass || sums[1].Mode != "fenced" {
		t.Fatalf("checks recorded: %+v", sums)
	}
}

// TestVerifierCheckUnderLoad: while both sites take writes to the same
// keys, 20 consecutive checks report no diverged, missing or resurrected
// row: rows in flight are re-read until they settle, not reported. After
// the load, a fenced check finds the sites equal.
func TestVerifierCheckUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := activeActive(t)
	cfg, err := verify.LoadConfig(verifierConfig(t, c, "{lag_p99: 1s}"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s := seed(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := make([]workload.Stats, len(c.sites))
	for i := range c.sites {
		for w := range 2 { // two writers per site, on the same key space
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := workload.Run(ctx, c.dbAt(i), workload.Options{
					DB: c.db, Seed: s + uint64(10*i+w), Changes: math.MaxInt32, Keys: 2000, TxnRows: 10, Rate: 500,
				})
				if err != nil {
					t.Errorf("workload at %s: %v", c.sites[i].name, err)
				}
				mu.Lock()
				total[i].Inserts += st.Inserts
				total[i].Updates += st.Updates
				total[i].Deletes += st.Deletes
				total[i].Txns += st.Txns
				total[i].Errors += st.Errors
				mu.Unlock()
			}()
		}
	}
	// Let the tables fill and replication run before the first check.
	testenv.WaitFor(t, 30*time.Second, "rows at both sites", func() bool {
		return c.count(0, c.db+".items") > 500 && c.count(1, c.db+".items") > 500
	})

	ch, err := verify.NewChecker(context.Background(), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	settled, inFlight := 0, 0
	for i := range 20 {
		res, err := ch.Run(context.Background(), verify.CheckOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("check %2d: %d rows, %.0f rows/s, %d settled after %d re-read(s), %d still in flight, %s",
			i+1, res.Rows, res.RowsPerSec, res.Settled, res.Rechecks, res.InFlight, res.Elapsed.D().Round(time.Millisecond))
		if bad := res.Diverged + res.Missing + res.Resurrected; bad > 0 || !res.Pass {
			var b strings.Builder
			res.WriteText(&b, cfg.Sites)
			t.Fatalf("check %d under load reported %d bad row(s):\n%s", i+1, bad, b.String())
		}
		settled += res.Settled
		inFlight += res.InFlight
	}
	stop()
	wg.Wait()
	t.Logf("load: %+v / %+v; over 20 checks %d rows were in flight and settled on re-read, %d still in flight at the end of a check",
		total[0], total[1], settled, inFlight)
	if settled == 0 {
		t.Error("no check saw a row in flight: the load did not exercise the re-reads")
	}
	c.waitConverged(0, 1, time.Minute)
	res, err := ch.Run(context.Background(), verify.CheckOptions{Fenced: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass || len(res.Diffs) != 0 {
		t.Fatalf("fenced check after the load: %s", res.Verdict)
	}
}

// prober runs `verifier probe` in the background.
type prober struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	listen string
	out    bytes.Buffer
	errOut *os.File
	done   chan struct{}
	code   int
}

func startProbe(t *testing.T, cfg string) *prober {
	t.Helper()
	p := &prober{t: t, dir: t.TempDir(), listen: freeAddr(t), done: make(chan struct{})}
	var err error
	if p.errOut, err = os.Create(filepath.Join(p.dir, "verifier.log")); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(testenv.BuildBinary(t, "./cmd/verifier"), "probe", "--config", cfg, "--run", p.dir, "--listen", p.listen)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, p.errOut
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		p.errOut.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// metric sums the verifier's metric samples whose labels contain match.
func (p *prober) metric(name, match string) float64 {
	resp, err := http.Get("http://" + p.listen + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") || !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// waitProbes waits until every direction has seen n more probes.
func (p *prober) waitProbes(c *cluster, n float64) {
	p.t.Helper()
	base := map[string]float64{}
	for _, from := range c.sites {
		for _, to := range c.sites {
			if from != to {
				base[from.name+to.name] = p.metric("tandem_verifier_probe_lag_seconds_count", fmt.Sprintf(`from="%s",tenant="_global",to="%s"`, from.name, to.name))
			}
		}
	}
	testenv.WaitFor(p.t, 30*time.Second, "probes flowing in every direction", func() bool {
		select {
		case <-p.done:
			p.t.Fatalf("verifier probe exited: %s\n%s", p.out.String(), p.log())
		default:
		}
		for _, from := range c.sites {
			for _, to := range c.sites {
				if from != to && p.metric("tandem_verifier_probe_lag_seconds_count", fmt.Sprintf(`from="%s",tenant="_global",to="%s"`, from.name, to.name))-base[from.name+to.name] < n {
					return false
				}
			}
		}
		return true
	})
}

func (p *prober) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "verifier.log"))
	return tail(string(b), 4000)
}

// stop ends the probe (SIGTERM: it drains and prints its report) and
// returns the report JSON `verifier report` writes for the run.
func (p *prober) stop() *verify.Report {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.t.Fatalf("verifier probe did not stop within 60 s after SIGTERM:\n%s", p.log())
	}
	if p.code != 0 && p.code != 1 {
		p.t.Fatalf("verifier probe exit %d:\n%s\n%s", p.code, p.out.String(), p.log())
	}
	p.t.Logf("verifier probe exit %d; its report:\n%s", p.code, p.out.String())
	jsonOut, htmlOut := filepath.Join(p.dir, "report.json"), filepath.Join(p.dir, "report.html")
	out, errs, code := runVerifier(p.t, "report", "--run", p.dir, "--json", jsonOut, "--html", htmlOut, "--quiet")
	if code != p.code || !strings.Contains(out, "HTML report: "+htmlOut) {
		p.t.Fatalf("verifier report: exit %d (probe exited %d)\n%s\n%s", code, p.code, out, errs)
	}
	data, err := os.ReadFile(jsonOut)
	if err != nil {
		p.t.Fatal(err)
	}
	var r verify.Report
	if err := json.Unmarshal(data, &r); err != nil {
		p.t.Fatal(err)
	}
	return &r
}

func direction(t *testing.T, r *verify.Report, from, to string) *verify.DirectionReport {
	t.Helper()
	for i := range r.Directions {
		if d := &r.Directions[i]; d.From == from && d.To == to && d.Tenant == "" {
			return d
		}
	}
	t.Fatalf("no direction %s→%s in the report", from, to)
	return nil
}

// TestVerifierProbeSinkStop: under probe load, B stops applying A's
// changes for 10 s (its appliers paused through the admin API). The
// verifier finds one fault in direction A→B whose RTO is the injected
// window within ±1 s and whose RPO is the probes written during it; no
// acknowledged probe is lost.
func TestVerifierProbeSinkStop(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := activeActive(t)
	cfg := verifierConfig(t, c, "{lag_p99: 1s, fault_lag: 1s, rto_max: 20s, recovery_samples: 10}")
	p := startProbe(t, cfg)
	p.waitProbes(c, 20)

	t0 := time.Now()
	c.admin(1, "POST", "/v1/appliers/pause")
	<-time.After(10 * time.Second) // the injected fault's duration, not synchronisation
	c.admin(1, "POST", "/v1/appliers/resume")
	t1 := time.Now()
	injected := t1.Sub(t0)
	testenv.WaitFor(t, 30*time.Second, "the verifier to close the fault window", func() bool {
		return p.metric("tandem_verifier_faults_total", `from="s1"`) >= 1
	})
	p.waitProbes(c, 10)
	r := p.stop()

	ab := direction(t, r, "s1", "s2")
	var f *verify.Fault
	for i := range ab.Faults {
		if g := &ab.Faults[i]; g.Start.Before(t1) && g.End.After(t0) && (f == nil || g.RTO > f.RTO) {
			f = g
		}
	}
	if f == nil {
		t.Fatalf("no fault s1→s2 overlaps the injected window %s–%s: %+v", t0.Format("15:04:05.000"), t1.Format("15:04:05.000"), ab.Faults)
	}
	t.Logf("injected %s (%s–%s); measured RTO %s (%s–%s), RPO %d writes / %s, %d slow probes",
		injected.Round(time.Millisecond), t0.Format("15:04:05.000"), t1.Format("15:04:05.000"), f.RTO.D().Round(time.Millisecond),
		f.Start.Format("15:04:05.000"), f.End.Format("15:04:05.000"), f.RPOWrites, f.RPOWindow.D().Round(time.Millisecond), f.SlowProbes)
	if d := f.RTO.D() - injected; d < -time.Second || d > time.Second {
		t.Errorf("RTO %s is not the injected %s ± 1 s", f.RTO.D(), injected)
	}
	// Written during the window at 10/s, none applied before its end.
	want := int(math.Round(injected.Seconds() * r.Run.Rate))
	if f.RPOWrites < want-15 || f.RPOWrites > want+15 {
		t.Errorf("RPO %d writes; %s at %g/s wrote about %d", f.RPOWrites, injected, r.Run.Rate, want)
	}
	if d := f.RPOWindow.D() - injected; d < -time.Second || d > time.Second {
		t.Errorf("RPO window %s is not the injected %s ± 1 s", f.RPOWindow.D(), injected)
	}
	for _, d := range r.Directions {
		if d.Lost != 0 || d.Probes == 0 || d.Seen != d.Probes {
			t.Errorf("%s→%s: %d probes, %d seen, %d lost", d.From, d.To, d.Probes, d.Seen, d.Lost)
		}
	}
	if ba := direction(t, r, "s2", "s1"); len(ba.Faults) > 0 {
		t.Logf("s2→s1 had %d fault(s) (noise on a loaded machine): %+v", len(ba.Faults), ba.Faults)
	}
}

// TestVerifierProbeKill: SIGKILL each replicator under probe load and
// restart it 3 s later. Each outage is a fault window in both directions
// (the killed process was one direction's reader and the other's
// applier), and RPO after recovery is 0: every acknowledged probe reaches
// the other site.
func TestVerifierProbeKill(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := activeActive(t)
	cfg := verifierConfig(t, c, "{lag_p99: 1s, rto_max: 30s, recovery_samples: 10}")
	p := startProbe(t, cfg)
	p.waitProbes(c, 20)
	for i := range c.sites {
		c.kill(i)
		<-time.After(3 * time.Second) // the outage's duration, not synchronisation
		c.start(i)
		p.waitProbes(c, 20)
	}
	r := p.stop()
	if !r.Final {
		t.Fatal("the run did not drain")
	}
	for _, d := range r.Directions {
		t.Logf("%s→%s: %d probes, lag p50 %s max %s, faults %+v", d.From, d.To, d.Probes, d.Lag.P50.D(), d.Lag.Max.D(), d.Faults)
		if len(d.Faults) == 0 {
			t.Errorf("%s→%s: no fault window although each replicator was down for 3 s", d.From, d.To)
		}
		if d.Lost != 0 || d.Probes == 0 || d.Seen != d.Probes {
			t.Errorf("%s→%s: %d probes, %d seen, %d lost: RPO after recovery is not 0", d.From, d.To, d.Probes, d.Seen, d.Lost)
		}
		for _, f := range d.Faults {
			if !f.Recovered || f.Lost != 0 {
				t.Errorf("%s→%s fault %+v", d.From, d.To, f)
			}
		}
	}
}

// BenchmarkCheck compares `verifier check` (chunked checksums) with a
// naive full-table compare (internal/compare: both tables streamed in key
// order and compared in Go) on the same BENCH_ROWS-row table (default
// 1M) at two sites. Run with `make bench` (scripts/bench.sh).
func BenchmarkCheck(b *testing.B) {
	rows := envInt("BENCH_ROWS", 1_000_000)
	srv := []*testenv.MariaDB{testenv.SharedMariaDB(b, 1), testenv.SharedMariaDB(b, 2)}
	db := testenv.NewDatabaseOn(b, "vb", srv...)
	ddl := fmt.Sprintf("CREATE TABLE `%s`.bench (id BIGINT NOT NULL PRIMARY KEY, a INT NOT NULL, b VARCHAR(64) NOT NULL, "+
		"c DOUBLE NOT NULL, d DATETIME(6) NOT NULL, `_tandem_hlc` BIGINT UNSIGNED NOT NULL DEFAULT 0 INVISIBLE) "+
		"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin", db)
	load := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(srv))
	for i, s := range srv {
		s.Exec(b, ddl)
		conn := s.DB(b, "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := 0; lo < rows && errs[i] == nil; lo += 100_000 {
				_, errs[i] = conn.Exec(fmt.Sprintf("INSERT INTO `%s`.bench (id, a, b, c, d, `_tandem_hlc`) SELECT seq, seq %% 1000, CONCAT('row-', seq), seq / 7, "+
					"'2026-11-21 12:00:00.000001', ((1767225600000 + seq) << 20) | 1 FROM `%s`.seq_%d_to_%d", db, db, lo+1, min(lo+100_000, rows)))
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("load site %d: %v", i+1, err)
		}
	}
	b.Logf("%d identical rows loaded at both sites in %s", rows, time.Since(load).Round(time.Millisecond))
	bin := testenv.BuildBinary(b, "./cmd/verifier")
	table := db + ".bench"
	var checkRate, naiveRate float64
	b.ResetTimer()
	for range b.N {
		jsonOut := filepath.Join(b.TempDir(), "check.json")
		args := []string{"check", "--table", table, "--json", jsonOut}
		for i, s := range srv {
			args = append(args, "--site", fmt.Sprintf("s%d=%d@%s", i+1, i+1, s.Addr()))
		}
		start := time.Now()
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("verifier check: %v\n%s", err, out)
		}
		took := time.Since(start)
		var res verify.CheckResult
		data, err := os.ReadFile(jsonOut)
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(data, &res); err != nil {
			b.Fatal(err)
		}
		if res.Rows != int64(rows) || !res.Pass {
			b.Fatalf("check: %d rows, pass %v\n%s", res.Rows, res.Pass, out)
		}
		checkRate = float64(rows) / took.Seconds()
		b.Logf("verifier check: %s", strings.TrimSpace(string(out)))

		start = time.Now()
		cres, err := compare.Tables(context.Background(), srv[0].DB(b, ""), srv[1].DB(b, ""), []string{table})
		if err != nil {
			b.Fatal(err)
		}
		if !cres.Equal() || cres.Rows[table] != rows {
			b.Fatalf("naive compare: %+v", cres)
		}
		naiveRate = float64(rows) / time.Since(start).Seconds()
	}
	b.StopTimer()
	b.ReportMetric(checkRate, "check-rows/s")
	b.ReportMetric(naiveRate, "naive-rows/s")
	b.ReportMetric(checkRate/naiveRate, "speedup")
	b.Logf("%d rows: verifier check %.0f rows/s (whole process), naive full-table SELECT compare %.0f rows/s", rows, checkRate, naiveRate)
}
