package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/tandemdb/tandem/pkg/admin"
	"github.com/tandemdb/tandem/pkg/verify"
)

const usage = `usage: verifier <command> [flags]

commands:
  probe   --run DIR [--duration D] [--rate N]     write probes at every site, watch them arrive everywhere,
                                                  record lag, faults, RPO and RTO to DIR; judge them at the end
  check   [--table S.T]... [--fenced] [--repair]  compare tables between sites (chunk checksums, bisection,
          [--json FILE] [--run DIR]               classification); print differing keys and repair SQL
  report  --run DIR [--html F] [--json F]         the SLA report of a run: Markdown on stdout, JSON, and an
          [--markdown F]                          HTML page with charts that needs no network
  mark    --run DIR TEXT                          annotate a run's timeline (e.g. "fault injected")
  version                                         print the version

sites and SLOs come from --config FILE (YAML, see docs/verifier.md); for the common cases flags do too:
  --site NAME=ID@HOST:PORT (repeat; user --user, password TANDEM_VERIFIER_<NAME>_PASSWORD)
  --meta-schema NAME, --lag-p99 D, --fault-lag D, --rto-max D, --rpo-max-writes N, --rpo-max-window D,
  --recovery-samples N

exit status: 0 SLOs met / sites consistent, 1 an SLO missed / an inconsistency found,
             2 usage or configuration error, 3 the verifier could not do its job
`

// Exit codes.
const (
	exitOK       = 0
	exitMissed   = 1
	exitUsage    = 2
	exitFailure  = 3
	versionLabel = "tandem verifier"
)

type usageError struct{ error }

// missedError reports a missed SLO or an inconsistency: the verifier did
// its job and the answer is "no".
type missedError struct{ error }

func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch cmd := args[0]; cmd {
	case "probe":
		err = cmdProbe(ctx, args[1:], env, stdout, stderr)
	case "check":
		err = cmdCheck(ctx, args[1:], env, stdout, stderr)
	case "report":
		err = cmdReport(args[1:], env, stdout)
	case "mark":
		err = cmdMark(args[1:])
	case "version", "--version":
		fmt.Fprintln(stdout, versionLabel, version())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "verifier: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	var ue usageError
	var me missedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "verifier: %v\n\n%s", err, usage)
		return exitUsage
	case errors.As(err, &me):
		fmt.Fprintf(stderr, "verifier: %v\n", err)
		return exitMissed
	}
	var ce *verify.ConfigError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "verifier: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "verifier: %v\n", err)
	return exitFailure
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// common are the flags every command that talks to sites shares.
type common struct {
	config     string
	sites      list
	user       string
	meta       string
	logLevel   string
	lagP99     time.Duration
	faultLag   time.Duration
	rtoMax     time.Duration
	rpoWindow  time.Duration
	rpoWrites  int
	recoveries int
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "verifier config file (YAML)")
	fs.Var(&c.sites, "site", "a site NAME=ID@HOST:PORT (repeat; instead of the config's sites)")
	fs.StringVar(&c.user, "user", "root", "database user for --site sites")
	fs.StringVar(&c.meta, "meta-schema", "", "Tandem's meta schema (default tandem)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&c.lagP99, "lag-p99", 0, "SLO: lag p99 outside faults (default SLO)")
	fs.DurationVar(&c.faultLag, "fault-lag", 0, "lag above which a probe is bad (default: lag-p99)")
	fs.DurationVar(&c.rtoMax, "rto-max", 0, "SLO: RTO per fault")
	fs.DurationVar(&c.rpoWindow, "rpo-max-window", 0, "SLO: RPO window per fault")
	fs.IntVar(&c.rpoWrites, "rpo-max-writes", 0, "SLO: RPO writes per fault")
	fs.IntVar(&c.recoveries, "recovery-samples", 0, "consecutive good probes that end a fault")
}

var siteFlagRE = regexp.MustCompile(`^([a-z0-9][a-z0-9-]{0,31})=([0-9]{1,3})@(.+):([0-9]{1,5})$`)

// load builds the configuration: the file (or defaults), then flags.
func (c *common) load(env func(string) string) (*verify.Config, error) {
	var cfg *verify.Config
	if c.config != "" {
		var err error
		if cfg, err = verify.LoadConfig(c.config, env); err != nil {
			return nil, err
		}
	} else {
		cfg = verify.DefaultConfig()
	}
	if len(c.sites) > 0 {
		cfg.Sites = nil
		for _, s := range c.sites {
			m := siteFlagRE.FindStringSubmatch(s)
			if m == nil {
				return nil, usageError{fmt.Errorf("--site %q: allowed NAME=ID@HOST:PORT, e.g. a=1@127.0.0.1:3306", s)}
			}
			id, _ := strconv.Atoi(m[2])
			port, _ := strconv.Atoi(m[4])
			if id < 1 || id > 255 {
				return nil, usageError{fmt.Errorf("--site %q: id %d; allowed 1..255", s, id)}
			}
			cfg.Sites = append(cfg.Sites, verify.Site{Name: m[1], ID: uint8(id), Host: m[3], Port: port, User: c.user})
		}
		cfg.ApplyEnv(env)
	}
	if c.config == "" && len(c.sites) == 0 {
		return nil, usageError{errors.New("no sites: give --config FILE or --site NAME=ID@HOST:PORT at least twice")}
	}
	if c.meta != "" {
		cfg.MetaSchema = c.meta
	}
	c.applySLO(&cfg.SLOs)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *common) applySLO(s *verify.SLOs) {
	d := &s.Default
	if c.lagP99 > 0 {
		d.LagP99 = verify.Duration(c.lagP99)
	}
	if c.faultLag > 0 {
		d.FaultLag = verify.Duration(c.faultLag)
	}
	if c.rtoMax > 0 {
		d.RTOMax = verify.Duration(c.rtoMax)
	}
	if c.rpoWindow > 0 {
		d.RPOMaxWindow = verify.Duration(c.rpoWindow)
	}
	if c.rpoWrites > 0 {
		d.RPOMaxWrites = c.rpoWrites
	}
	if c.recoveries > 0 {
		d.RecoverySamples = c.recoveries
	}
}

func (c *common) sloFlagsSet() bool {
	return c.lagP99 > 0 || c.faultLag > 0 || c.rtoMax > 0 || c.rpoWindow > 0 || c.rpoWrites > 0 || c.recoveries > 0
}

func newLogger(level string, stderr io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %w", err)}
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(ec), zapcore.AddSync(stderr), lvl)), nil
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%s: %w", fs.Name(), err)}
	}
	return nil
}

func cmdProbe(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var c common
	c.register(fs)
	dir := fs.String("run", "", "run directory to record to (required)")
	duration := fs.Duration("duration", 0, "stop after this long (default: until SIGINT/SIGTERM)")
	rate := fs.Float64("rate", 0, "probe rows per second per site and tenant (default 10)")
	listen := fs.String("listen", "", "serve /metrics, /healthz, /readyz here (overrides admin.listen)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{errors.New("probe: --run DIR is required")}
	}
	cfg, err := c.load(env)
	if err != nil {
		return err
	}
	if *rate > 0 {
		cfg.Probe.Rate = *rate
	}
	if *listen != "" {
		cfg.Admin.Listen = *listen
		if cfg.Admin.Token == "" {
			cfg.Admin.AllowNoToken = true // loopback only; admin refuses otherwise
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, stderr)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := verify.NewProber(cfg, *dir, log, reg, nil)
	if err != nil {
		return err
	}
	defer p.Close()

	pctx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	if *duration > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(pctx, *duration)
		defer cancel()
	}
	// The admin server lives as long as the probe (draining included); if
	// it fails, the probe stops too.
	g, gctx := errgroup.WithContext(context.WithoutCancel(ctx))
	context.AfterFunc(gctx, stopProbe)
	actx, stopAdmin := context.WithCancel(gctx)
	defer stopAdmin()
	if cfg.Admin.Listen != "" {
		srv := admin.New(admin.Options{Listen: cfg.Admin.Listen, Token: cfg.Admin.Token.Reveal(),
			AllowNoToken: cfg.Admin.AllowNoToken, Registry: reg, Ready: p.Ready}, log.Named("admin"))
		g.Go(func() error { return srv.Run(actx) })
	}
	g.Go(func() error {
		defer stopAdmin()
		return p.Run(pctx)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	run, err := verify.ReadRun(*dir)
	if err != nil {
		return err
	}
	rep := verify.BuildReport(run, nil, time.Now())
	if err := rep.WriteMarkdown(stdout); err != nil {
		return err
	}
	if !rep.Pass {
		return missedError{fmt.Errorf("probe: %d SLO miss(es); see the report above", len(rep.Failures))}
	}
	return nil
}

func cmdCheck(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var c common
	c.register(fs)
	var tables, only list
	fs.Var(&tables, "table", "schema.table or glob pattern to check (repeat; overrides check.tables)")
	fs.Var(&only, "only", "check only these configured sites (repeat; default all)")
	fenced := fs.Bool("fenced", false, "write fence markers, wait for them everywhere, then demand equality")
	repair := fs.Bool("repair", false, "apply the winning version of every diverged, missing or resurrected row")
	jsonOut := fs.String("json", "", "write the full result as JSON to this file ('-' for stdout)")
	dir := fs.String("run", "", "append the check's summary to this run directory")
	tenantCol := fs.String("tenant-column", "", "restrict to rows whose COLUMN equals --tenant")
	tenant := fs.String("tenant", "", "the tenant for --tenant-column")
	retries := fs.Int("retries", -1, "re-reads of a differing row before it is reported (default check.retries)")
	retryDelay := fs.Duration("retry-delay", 0, "delay between re-reads (default check.retry_delay)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := c.load(env)
	if err != nil {
		return err
	}
	if *tenantCol != "" || *tenant != "" {
		cfg.Check.TenantColumn, cfg.Check.Tenant = *tenantCol, *tenant
	}
	if *retries >= 0 {
		cfg.Check.Retries = *retries
	}
	if *retryDelay > 0 {
		cfg.Check.RetryDelay = verify.Duration(*retryDelay)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, stderr)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr
	ch, err := verify.NewChecker(ctx, cfg, only, log)
	if err != nil {
		return err
	}
	defer ch.Close()
	res, err := ch.Run(ctx, verify.CheckOptions{Tables: tables, Fenced: *fenced, Repair: *repair, Progress: stderr})
	if err != nil {
		return err
	}
	text := stdout
	if *jsonOut == "-" {
		text = stderr
	}
	res.WriteText(text, cfg.Sites)
	if *jsonOut != "" {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		data = append(data, '\n')
		if *jsonOut == "-" {
			_, err = stdout.Write(data)
		} else {
			err = os.WriteFile(*jsonOut, data, 0o644)
		}
		if err != nil {
			return fmt.Errorf("check: write %s: %w", *jsonOut, err)
		}
	}
	if *dir != "" {
		if err := verify.AppendCheck(*dir, res.Summary()); err != nil {
			return err
		}
	}
	if !res.Pass {
		repaired := 0
		for _, r := range res.Repairs {
			if r.Applied {
				repaired++
			}
		}
		if *repair && repaired == len(res.Repairs) && res.InFlight == 0 {
			fmt.Fprintf(text, "all %d difference(s) repaired; run the check again to confirm\n", repaired)
		}
		return missedError{fmt.Errorf("check: %s", res.Verdict)}
	}
	return nil
}

func cmdReport(args []string, env func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var c common
	c.register(fs)
	dir := fs.String("run", "", "run directory (required)")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	mdOut := fs.String("markdown", "", "write the report as Markdown to this file")
	htmlOut := fs.String("html", "", "write the report as a self-contained HTML page to this file")
	quiet := fs.Bool("quiet", false, "do not print the Markdown report on stdout")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{errors.New("report: --run DIR is required")}
	}
	run, err := verify.ReadRun(*dir)
	if err != nil {
		return err
	}
	// SLOs: the run's, unless a config file or SLO flags say otherwise.
	var slos *verify.SLOs
	if c.config != "" {
		cfg, err := verify.LoadConfig(c.config, env)
		if err != nil {
			return err
		}
		slos = &cfg.SLOs
	}
	if c.sloFlagsSet() {
		if slos == nil {
			s := run.Info.SLOs
			slos = &s
		}
		c.applySLO(slos)
	}
	rep := verify.BuildReport(run, slos, time.Now())
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		return err
	}
	if !*quiet {
		if _, err := stdout.Write(md.Bytes()); err != nil {
			return err
		}
	}
	write := func(name string, f func(io.Writer) error) error {
		if name == "" {
			return nil
		}
		var b bytes.Buffer
		if err := f(&b); err != nil {
			return err
		}
		if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		return nil
	}
	if err := write(*jsonOut, rep.WriteJSON); err != nil {
		return err
	}
	if err := write(*mdOut, func(w io.Writer) error { _, err := w.Write(md.Bytes()); return err }); err != nil {
		return err
	}
	if err := write(*htmlOut, rep.WriteHTML); err != nil {
		return err
	}
	if *htmlOut != "" {
		abs, err := filepath.Abs(*htmlOut)
		if err != nil {
			abs = *htmlOut
		}
		fmt.Fprintf(stdout, "\nHTML report: %s\n", abs)
	}
	if !rep.Pass {
		return missedError{fmt.Errorf("report: %s: %d SLO miss(es)", verdictWord(rep.Pass), len(rep.Failures))}
	}
	return nil
}

func verdictWord(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func cmdMark(args []string) error {
	fs := flag.NewFlagSet("mark", flag.ContinueOnError)
	dir := fs.String("run", "", "run directory (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() == 0 {
		return usageError{errors.New("mark: want --run DIR TEXT")}
	}
	return verify.AppendEvent(*dir, verify.Event{At: time.Now().UTC(), Text: strings.Join(fs.Args(), " ")})
}
