package replicator

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"path"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tandemdb/tandem/pkg/admin"
	"github.com/tandemdb/tandem/pkg/checkpoint"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/lease"
	"github.com/tandemdb/tandem/pkg/schema"
)

const usage = `usage: replicator <command> [flags]

commands:
  run --config FILE                   replicate this site (binlog → Kafka, peers' topics → database)
  schema prepare --config FILE [--dry-run]
                                      add version columns, triggers, tombstone and bookkeeping tables
  schema check --config FILE          report what is missing; exit 1 if anything is
  seed --config FILE --from PEER --from-addr HOST:PORT [--from-user USER] [--from-admin URL]
                                      copy a peer's replicated tables into this new, empty
                                      site as of one snapshot, and where its sinks start
                                      (--from-admin: that peer's admin server, needed with
                                      more than one peer; see docs/operations.md)
  seed --config FILE --from PEER --backup-gtid GTID [--queues-empty-at-backup] [--backup-within-retention]
                                      this site's database was restored from a physical
                                      backup of PEER (consistent with GTID): store where its
                                      sinks start and drop what was PEER's alone; run
                                      schema prepare first (see docs/operations.md)
  backfill --config FILE [--chunk N] [--rate ROWS/S] [--table SCHEMA.TABLE]... [--dry-run]
                                      stamp the rows that existed before replication started
                                      (version 0) so that they replicate; run at every site
                                      (see docs/operations.md)
  checkpoint show --config FILE       print the stored binlog position
  checkpoint reset --config FILE      forget the stored binlog position (after a purge; see docs)
  version                             print the version
`

// Main is the replicator's command line; it returns the process exit code.
func Main(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd := args[0]; cmd {
	case "run":
		err = cmdRun(ctx, args[1:], env, stderr)
	case "schema":
		if len(args) < 2 || (args[1] != "prepare" && args[1] != "check") {
			fmt.Fprint(stderr, "replicator schema: want `prepare` or `check`\n\n"+usage)
			return 2
		}
		err = cmdSchema(ctx, args[1], args[2:], env, stdout)
	case "seed":
		err = cmdSeed(ctx, args[1:], env, stdout)
	case "backfill":
		err = cmdBackfill(ctx, args[1:], env, stdout)
	case "checkpoint":
		if len(args) < 2 || (args[1] != "show" && args[1] != "reset") {
			fmt.Fprint(stderr, "replicator checkpoint: want `show` or `reset`\n\n"+usage)
			return 2
		}
		err = cmdCheckpoint(args[1], args[2:], env, stdout)
	case "version", "--version":
		fmt.Fprintln(stdout, "tandem replicator", Version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "replicator: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "replicator: %v\n\n%s", err, usage)
			return 2
		}
		fmt.Fprintf(stderr, "replicator: %v\n", err)
		return 1
	}
	return 0
}

type usageError struct{ error }

// Version is the module version the binary was built from.
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func loadConfig(name string, args []string, env func(string) string, extra func(*flag.FlagSet)) (*config.Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	file := fs.String("config", "", "config file (YAML)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, usageError{fmt.Errorf("%s: %w", name, err)}
	}
	if *file == "" {
		return nil, nil, usageError{fmt.Errorf("%s: --config FILE is required", name)}
	}
	cfg, err := config.Load(*file, env)
	if err != nil {
		return nil, nil, err
	}
	return cfg, fs, nil
}

func newLogger(c config.Log, stderr io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(stderr), lvl)), nil
}

func cmdRun(ctx context.Context, args []string, env func(string) string, stderr io.Writer) error {
	cfg, _, err := loadConfig("run", args, env, nil)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr sync errors are meaningless
	log = log.With(zap.String("site", cfg.Site.Name))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.HA.Enabled {
		log.Info("replicator starting with site-level HA", zap.Uint8("site_id", cfg.Site.ID), zap.String("admin", cfg.Admin.Listen))
		err := runHA(ctx, cfg, log, reg)
		log.Info("replicator stopped", zap.Error(err))
		return err
	}
	r, err := New(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer r.Close()
	srv := admin.New(admin.Options{
		Listen: cfg.Admin.Listen, Token: cfg.Admin.Token.Reveal(), AllowNoToken: cfg.Admin.AllowNoToken,
		Registry: reg, Ready: r.Ready, Pprof: cfg.Admin.Pprof,
	}, log.Named("admin"))
	r.registerAdmin(srv)
	errc := make(chan error, 1)
	actx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); <-errc }()
	go func() { errc <- srv.Run(actx) }()
	log.Info("replicator started", zap.Uint8("site_id", cfg.Site.ID), zap.String("topic", cfg.LocalTopic()),
		zap.Int("peers", len(cfg.Peers)), zap.String("admin", cfg.Admin.Listen))
	err = r.Run(ctx)
	log.Info("replicator stopped", zap.Error(err))
	return err
}

func cmdSchema(ctx context.Context, sub string, args []string, env func(string) string, stdout io.Writer) error {
	var dry *bool
	cfg, _, err := loadConfig("schema "+sub, args, env, func(fs *flag.FlagSet) {
		dry = fs.Bool("dry-run", false, "print the DDL without changing anything")
	})
	if err != nil {
		return err
	}
	db, err := sql.Open("mysql", cfg.Database.DSN())
	if err != nil {
		return err
	}
	defer db.Close()
	tables, err := resolveTables(ctx, db, cfg.Schema.Tables)
	if err != nil {
		return err
	}
	opt := schema.Options{Site: cfg.Site.ID, MetaSchema: cfg.Schema.MetaSchema, VersionColumn: cfg.Schema.VersionColumn, Tables: tables}
	if sub == "check" {
		problems, err := schema.Check(ctx, db, opt)
		if err != nil {
			return err
		}
		if len(problems) == 0 {
			fmt.Fprintf(stdout, "schema check: %s ready (%d tables)\n", cfg.Database.Addr(), len(tables))
			return nil
		}
		for _, p := range problems {
			fmt.Fprintf(stdout, "%s: %s\n  fix: %s\n", p.Object, p.Problem, p.Fix)
		}
		return fmt.Errorf("schema check: %d problem(s) on %s", len(problems), cfg.Database.Addr())
	}
	plan, err := schema.Inspect(ctx, db, opt)
	if err != nil {
		return err
	}
	if *dry {
		fmt.Fprint(stdout, plan.String())
		return nil
	}
	if err := plan.Apply(ctx, db); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema prepare: %s ready (%d tables, %d steps applied)\n", cfg.Database.Addr(), len(tables), len(plan.Steps))
	return nil
}

// resolveTables expands "schema.table" entries whose table part may be a
// glob ("shop.*") into concrete tables.
func resolveTables(ctx context.Context, db *sql.DB, specs []string) ([]schema.TableRef, error) {
	var out []schema.TableRef
	seen := map[schema.TableRef]bool{}
	for _, spec := range specs {
		s, t, ok := strings.Cut(spec, ".")
		if !ok || s == "" || t == "" {
			return nil, fmt.Errorf("schema.tables: %q is not schema.table (a table may be a glob such as shop.*)", spec)
		}
		if !strings.ContainsAny(t, "*?[") {
			ref := schema.TableRef{Schema: s, Table: t}
			if !seen[ref] {
				seen[ref] = true
				out = append(out, ref)
			}
			continue
		}
		all, err := schema.ListTables(ctx, db, []string{s})
		if err != nil {
			return nil, err
		}
		for _, ref := range all {
			if ok, _ := path.Match(t, ref.Table); ok && !seen[ref] {
				seen[ref] = true
				out = append(out, ref)
			}
		}
	}
	return out, nil
}

func cmdCheckpoint(sub string, args []string, env func(string) string, stdout io.Writer) error {
	cfg, _, err := loadConfig("checkpoint "+sub, args, env, nil)
	if err != nil {
		return err
	}
	st, err := checkpoint.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()
	if sub == "reset" {
		if err := st.ResetPosition(); err != nil {
			return err
		}
		if cfg.HA.Enabled {
			// The site's shared checkpoint too; run with every replicator
			// of the site stopped.
			rdb := haClient(cfg)
			defer rdb.Close()
			p, site := cfg.HA.Redis.KeyPrefix, cfg.Site.Name
			if err := lease.ForceState(ctx, rdb, p, site, stateReset, "1"); err != nil {
				return err
			}
			if err := lease.ForceState(ctx, rdb, p, site, statePosition, ""); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "checkpoint reset (this replicator's and the site's shared one): the next leader reads from the source's current position")
			return nil
		}
		fmt.Fprintln(stdout, "checkpoint reset: the next start reads from the source's current position")
		return nil
	}
	if cfg.HA.Enabled {
		rdb := haClient(cfg)
		defer rdb.Close()
		v, ok, err := lease.LoadState(ctx, rdb, cfg.HA.Redis.KeyPrefix, cfg.Site.Name, statePosition)
		if err != nil {
			return err
		}
		holder, epoch, err := lease.Holder(ctx, rdb, cfg.HA.Redis.KeyPrefix, cfg.Site.Name)
		if err != nil {
			return err
		}
		if holder == "" {
			holder = "nobody"
		}
		if !ok {
			v = "none"
		}
		fmt.Fprintf(stdout, "shared (the leader's, in Redis): %s\nlease: held by %s (epoch %d)\nthis replicator's state_dir: ", v, holder, epoch)
	}
	pos, ok, err := st.Position()
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintln(stdout, "no checkpoint stored")
		return nil
	}
	fmt.Fprintln(stdout, pos)
	return nil
}
