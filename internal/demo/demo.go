// Package demo is `make demo`: it starts two local sites and everything
// between them, runs replicators both ways under a conflicting workload and
// prints what happened and whether the sites converged.
package demo

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandemdb/tandem/internal/compare"
	"github.com/tandemdb/tandem/internal/promtext"
	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

type site struct {
	conn   *sql.DB
	id     int
	name   string
	db     *testenv.MariaDB
	cfg    string
	admin  string
	cmd    *exec.Cmd
	done   chan struct{}
	logf   *os.File
	stats  workload.Stats
	logDir string
}

// Main runs the demo and returns the exit code: 0 when the sites converged.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tandem-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".tandem/demo", "directory for configs, state and logs")
	changes := fs.Int("changes", 20000, "row changes per site")
	keys := fs.Int("keys", 400, "keys per table; small means many conflicts")
	bin := fs.String("replicator", "bin/replicator", "replicator binary (built by make build)")
	vbin := fs.String("verifier", "bin/verifier", "verifier binary (built by make build)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	d := &demo{out: stdout, dir: *dir, changes: *changes, keys: *keys, bin: *bin, vbin: *vbin}
	err := d.run(ctx)
	d.close()
	if err != nil {
		fmt.Fprintf(stderr, "\ndemo: FAILED: %v\nlogs: %s\n", err, d.dir)
		return 1
	}
	return 0
}

type demo struct {
	out     io.Writer
	dir     string
	changes int
	keys    int
	bin     string
	vbin    string
	token   string
	sites   []*site
	redis   *testenv.Redis
	broker  *testenv.Broker
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) step(title string) { d.say("\n▶ %s", title) }

func (d *demo) run(ctx context.Context) error {
	start := time.Now()
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}
	abs, _ := filepath.Abs(d.dir)
	d.dir = abs
	tok := make([]byte, 16)
	rand.Read(tok)
	d.token = hex.EncodeToString(tok)

	d.step("Starting two MariaDB sites, Redis and a Kafka-protocol broker on loopback")
	for i, name := range []string{"site-a", "site-b"} {
		db, err := testenv.StartMariaDB(testenv.MariaDBOptions{Site: i + 1})
		if err != nil {
			return err
		}
		s := &site{id: i + 1, name: name, db: db, logDir: filepath.Join(d.dir, name)}
		d.sites = append(d.sites, s)
		if s.conn, err = db.RootDB(); err != nil {
			return err
		}
		d.say("  %s: MariaDB %s (server_id %d, gtid_domain_id %d, binlog ROW/FULL)", name, db.Addr(), db.ServerID, db.DomainID)
	}
	var err error
	if d.redis, err = testenv.StartRedis(); err != nil {
		return err
	}
	d.say("  Redis %s (tenant registry, leases)", d.redis.Addr)
	if d.broker, err = testenv.StartBroker(); err != nil {
		return err
	}
	d.say("  broker %s (kfake; production uses a Kafka cluster)", d.broker.Addr)

	d.step("Creating the demo schema at both sites and running `replicator schema prepare`")
	for _, s := range d.sites {
		if err := s.db.ExecErr("CREATE DATABASE demo"); err != nil {
			return err
		}
		for _, q := range workload.DDL("demo") {
			if err := s.db.ExecErr(q); err != nil {
				return err
			}
		}
	}
	if _, err := os.Stat(d.bin); err != nil {
		if d.bin, err = testenv.Build("./cmd/replicator"); err != nil {
			return err
		}
	}
	if _, err := os.Stat(d.vbin); err != nil {
		if d.vbin, err = testenv.Build("./cmd/verifier"); err != nil {
			return err
		}
	}
	for _, s := range d.sites {
		if err := d.writeConfig(s); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, d.bin, "schema", "prepare", "--config", s.cfg)
		cmd.Env = append(os.Environ(), "TANDEM_ADMIN_TOKEN="+d.token)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("schema prepare at %s: %v\n%s", s.name, err, out)
		}
		d.say("  %s", strings.TrimSpace(string(out)))
	}

	d.step("Starting a replicator per site, both ways (site-a ⇄ site-b)")
	for _, s := range d.sites {
		if err := d.startReplicator(ctx, s); err != nil {
			return err
		}
		d.say("  %s: replicator ready (admin %s, log %s)", s.name, s.admin, filepath.Join(s.logDir, "replicator.log"))
	}

	d.step(fmt.Sprintf("Conflicting workload: %d row changes at EACH site at once, same %d keys per table", d.changes, d.keys))
	// The verifier probes both sites during the load: lag, faults, RPO/RTO.
	runDir := filepath.Join(d.dir, "verifier-run")
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	probe := exec.CommandContext(probeCtx, d.vbin, append([]string{"probe", "--run", runDir, "--duration", "10m"}, d.verifierSites()...)...)
	probeLog, err := os.Create(filepath.Join(d.dir, "verifier-probe.log"))
	if err != nil {
		return err
	}
	defer probeLog.Close()
	probe.Stdout, probe.Stderr = probeLog, probeLog
	probe.Cancel = func() error { return probe.Process.Signal(syscall.SIGTERM) }
	probe.WaitDelay = 20 * time.Second
	if err := probe.Start(); err != nil {
		return err
	}
	d.say("  verifier probe writing 10 probes/s at each site (run dir %s)", runDir)
	wstart := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(d.sites))
	for i, s := range d.sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stats, errs[i] = workload.Run(ctx, s.conn, workload.Options{
				DB: "demo", Seed: uint64(1000 + i), Changes: d.changes, Keys: d.keys, TxnRows: 10,
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range d.sites {
		d.say("  %s: %d inserts, %d updates, %d deletes in %d transactions (%d retried after deadlocks)",
			s.name, s.stats.Inserts, s.stats.Updates, s.stats.Deletes, s.stats.Txns, s.stats.Errors)
	}
	d.say("  written in %s", time.Since(wstart).Round(time.Millisecond))

	d.step("Waiting for replication to drain, then comparing every row (versions included)")
	tables := []string{"demo.items", "demo.pairs", "demo.alltypes"}
	var res compare.Result
	deadline := time.Now().Add(3 * time.Minute)
	for {
		res, err = compare.Tables(ctx, d.sites[0].conn, d.sites[1].conn, tables)
		if err == nil && res.Equal() {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond) // polling interval of a wait with a deadline
	}
	if err != nil {
		return err
	}
	drained := time.Since(wstart)

	d.step("What happened")
	total := 0
	names := make([]string, 0, len(res.Rows))
	for n := range res.Rows {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d.say("  %-16s %6d rows", n, res.Rows[n])
		total += res.Rows[n]
	}
	for _, s := range d.sites {
		m, err := d.scrape(s)
		if err != nil {
			return err
		}
		d.say("  %s applied %.0f row changes from its peer; conflicts resolved (incoming version lost): %.0f; duplicates skipped: %.0f; loop-dropped: %.0f",
			s.name, m.Sum("tandem_rows_applied_total"), m.Sum("tandem_conflicts_total"), m.Sum("tandem_duplicates_total"), m.Sum("tandem_txns_dropped_loop_total"))
		d.say("  %s replication lag from heartbeats (peer → %s): p50 %s, p99 %s", s.name, s.name, lagQuantile(m, 0.5), lagQuantile(m, 0.99))
	}
	d.say("  drained %s after the workload started", drained.Round(time.Millisecond))

	d.step("Verifier: fenced consistency check and the SLA report")
	stopProbe()
	probe.Wait() // it writes its results on SIGTERM; its own verdict is in the report
	check := exec.CommandContext(ctx, d.vbin, append([]string{"check", "--table", "demo.*", "--fenced", "--run", runDir}, d.verifierSites()...)...)
	out, cerr := check.CombinedOutput()
	d.say("%s", indent(string(out)))
	if cerr != nil {
		return fmt.Errorf("verifier check: %v", cerr)
	}
	html := filepath.Join(d.dir, "verifier-report.html")
	rep := exec.CommandContext(ctx, d.vbin, "report", "--run", runDir, "--html", html)
	out, rerr := rep.CombinedOutput()
	d.say("%s", indent(string(out)))
	var ee *exec.ExitError
	if rerr != nil && !(errors.As(rerr, &ee) && ee.ExitCode() == 1) {
		return fmt.Errorf("verifier report: %v", rerr)
	}
	d.say("  (the HTML report is self-contained: open it in any browser, offline)")

	d.step("Verdict")
	if !res.Equal() {
		for _, df := range res.Diffs {
			d.say("  %s", df)
		}
		return fmt.Errorf("site-a and site-b differ in %d+%d rows", len(res.Diffs), res.More)
	}
	d.say("  CONVERGED: site-a and site-b hold byte-identical rows in %d tables (%d rows, versions included),", len(tables), total)
	d.say("  after %d concurrent conflicting changes at two sites. Demo took %s.", d.sites[0].stats.Changes()+d.sites[1].stats.Changes(), time.Since(start).Round(time.Second))
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (d *demo) writeConfig(s *site) error {
	if err := os.MkdirAll(s.logDir, 0o700); err != nil {
		return err
	}
	var err error
	if s.admin, err = freeAddr(); err != nil {
		return err
	}
	peer := d.sites[2-s.id]
	cfg := fmt.Sprintf(`# Generated by make demo for %[1]s; configs/site-a.yaml is the annotated example.
site: {id: %[2]d, name: %[1]s}
database: {host: 127.0.0.1, port: %[3]d, user: root}
reader:
  server_id: %[4]d
  include: ["demo.*", "tandem.*"]
kafka:
  brokers: ["%[5]s"]
  partitions: 4
  replication_factor: 1
peers:
  - {id: %[6]d, name: %[7]s}
schema:
  tables: ["demo.*"]
state_dir: %[8]s
admin: {listen: "%[9]s"}
log: {level: info, format: json}
`, s.name, s.id, s.db.Port, 9000+s.id, d.broker.Addr, peer.id, peer.name, filepath.Join(s.logDir, "state"), s.admin)
	s.cfg = filepath.Join(s.logDir, "replicator.yaml")
	return os.WriteFile(s.cfg, []byte(cfg), 0o600)
}

func (d *demo) startReplicator(ctx context.Context, s *site) error {
	var err error
	if s.logf, err = os.Create(filepath.Join(s.logDir, "replicator.log")); err != nil {
		return err
	}
	s.cmd = exec.Command(d.bin, "run", "--config", s.cfg)
	s.cmd.Env = append(os.Environ(), "TANDEM_ADMIN_TOKEN="+d.token)
	s.cmd.Stdout, s.cmd.Stderr = s.logf, s.logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-s.done:
			return fmt.Errorf("replicator %s exited; see %s", s.name, s.logf.Name())
		default:
		}
		if resp, err := http.Get("http://" + s.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a wait with a deadline
	}
	return fmt.Errorf("replicator %s not ready within 60s; see %s", s.name, s.logf.Name())
}

func (d *demo) close() {
	for _, s := range d.sites {
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(20 * time.Second):
				s.cmd.Process.Kill()
				<-s.done
			}
			s.logf.Close()
		}
		if s.db != nil {
			s.db.Close(false)
		}
	}
	if d.broker != nil {
		d.broker.Close()
	}
	if d.redis != nil {
		d.redis.Close()
	}
}

func (d *demo) scrape(s *site) (promtext.Metrics, error) {
	req, _ := http.NewRequest("GET", "http://"+s.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return promtext.Parse(string(body)), nil
}

// lagQuantile renders quantile q of the heartbeat lag histogram.
func lagQuantile(m promtext.Metrics, q float64) string {
	v := promtext.Quantile(m.Buckets("tandem_replication_lag_seconds"), q)
	switch {
	case math.IsNaN(v):
		return "n/a"
	case math.IsInf(v, 1):
		return "> 60s"
	}
	return time.Duration(v * float64(time.Second)).Round(100 * time.Microsecond).String()
}

// verifierSites are the verifier's --site flags for the demo's sites.
func (d *demo) verifierSites() []string {
	var args []string
	for _, s := range d.sites {
		args = append(args, "--site", fmt.Sprintf("%s=%d@%s", s.name, s.id, s.db.Addr()))
	}
	return args
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
