package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tandemdb/tandem/internal/fsutil"
)

// config is the parsed command line.
type config struct {
	listen     string
	partitions int
	autoCreate bool
	topics     map[string]int32
	readyFile  string
	logLevel   kfake.LogLevel
	dataDir    string
	noFsync    bool

	// Security, for testing Tandem's kafka.tls and kafka.sasl: a TLS
	// listener with this certificate (and, with tlsClientCA, client
	// certificates required), and SASL with one user.
	tlsCert, tlsKey, tlsClientCA string
	saslMechanism, saslUser      string
	saslPassword                 string
}

// run starts the broker, blocks until ctx is cancelled and returns the exit
// code: 0 after a clean shutdown, 2 for bad flags, 1 for anything else.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "devbroker: %v\n", err)
		return 2
	}
	if err := serve(ctx, cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "devbroker: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("devbroker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      config
		topics   string
		logLevel string
	)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:0",
		"`host:port` to listen on and advertise to clients; port 0 picks a free port")
	fs.IntVar(&cfg.partitions, "partitions", 1,
		"partitions of auto-created topics and of CreateTopics requests asking for -1")
	fs.BoolVar(&cfg.autoCreate, "auto-create", true,
		"create unknown topics when a client's metadata request allows it (like auto.create.topics.enable)")
	fs.StringVar(&topics, "topics", "",
		"comma-separated topics to create at start, each `name[:partitions]`")
	fs.StringVar(&cfg.readyFile, "ready-file", "",
		"once listening, write the bound address to this `path` (atomically, via rename)")
	fs.StringVar(&logLevel, "log-level", "warn", "broker log level on stderr: none, error, warn, info or debug")
	fs.StringVar(&cfg.dataDir, "data-dir", "",
		"keep the log in this `directory` and replay it on start, so a restarted broker keeps its topics and records; empty keeps everything in memory")
	fsync := fs.Bool("fsync", true,
		"with -data-dir, fsync the log before acknowledging (group commit); false only writes it to the OS page cache before acknowledging, "+
			"as a Kafka broker does by default: the log then survives a broker crash or kill but not a machine crash")
	fs.StringVar(&cfg.tlsCert, "tls-cert", "", "serve TLS with this PEM certificate `file` (with -tls-key); in-memory brokers only")
	fs.StringVar(&cfg.tlsKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	fs.StringVar(&cfg.tlsClientCA, "tls-client-ca", "", "require client certificates signed by the PEM CA in this `file` (mutual TLS)")
	fs.StringVar(&cfg.saslMechanism, "sasl-mechanism", "", "require SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with -sasl-user and -sasl-password-file); in-memory brokers only")
	fs.StringVar(&cfg.saslUser, "sasl-user", "", "the one SASL user (a superuser)")
	saslPasswordFile := fs.String("sasl-password-file", "", "`file` holding the SASL user's password (not a flag value: argv is visible to every local user)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if err := cfg.parseSecurity(*saslPasswordFile); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.noFsync = !*fsync
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		return config{}, fmt.Errorf("-listen %q: want host:port: %v", cfg.listen, err)
	}
	if cfg.partitions < 1 {
		return config{}, fmt.Errorf("-partitions %d: want at least 1", cfg.partitions)
	}
	var err error
	if cfg.topics, err = parseTopics(topics, cfg.partitions); err != nil {
		return config{}, err
	}
	if cfg.logLevel, err = parseLogLevel(logLevel); err != nil {
		return config{}, err
	}
	return cfg, nil
}

func parseTopics(s string, def int) (map[string]int32, error) {
	topics := make(map[string]int32)
	if s == "" {
		return topics, nil
	}
	for _, item := range strings.Split(s, ",") {
		name, n, hasN := strings.Cut(strings.TrimSpace(item), ":")
		parts := def
		if hasN {
			var err error
			if parts, err = strconv.Atoi(n); err != nil || parts < 1 {
				return nil, fmt.Errorf("-topics %q: partitions of %q must be a positive integer", s, name)
			}
		}
		if name == "" {
			return nil, fmt.Errorf("-topics %q: empty topic name", s)
		}
		topics[name] = int32(parts)
	}
	return topics, nil
}

func parseLogLevel(s string) (kfake.LogLevel, error) {
	switch s {
	case "none":
		return kfake.LogLevelNone, nil
	case "error":
		return kfake.LogLevelError, nil
	case "warn":
		return kfake.LogLevelWarn, nil
	case "info":
		return kfake.LogLevelInfo, nil
	case "debug":
		return kfake.LogLevelDebug, nil
	}
	return 0, fmt.Errorf("-log-level %q: want none, error, warn, info or debug", s)
}

func serve(ctx context.Context, cfg config, stderr io.Writer) error {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(cfg.partitions),
		kfake.ClusterID("tandem-devbroker"),
		kfake.WithLogger(kfake.BasicLogger(stderr, cfg.logLevel)),
	}
	if cfg.autoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	sec, err := cfg.securityOpts()
	if err != nil {
		return err
	}
	opts = append(opts, sec...)
	if cfg.dataDir != "" {
		return serveDurable(ctx, cfg, opts, stderr)
	}
	opts = append(opts,
		// kfake always asks for 127.0.0.1:port; listen where we were told
		// instead. The listener's address is what metadata advertises.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, cfg.listen)
		}))
	for name, parts := range cfg.topics {
		opts = append(opts, kfake.SeedTopics(parts, name))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	defer c.Close()
	unpublish, err := publish(cfg, c.ListenAddrs()[0], "in-memory; data is lost on exit", stderr)
	if err != nil {
		return err
	}
	defer unpublish()
	<-ctx.Done()
	fmt.Fprintf(stderr, "devbroker: shutting down\n")
	return nil
}

// publish logs addr and writes it to the ready file; the returned func
// removes the file again.
func publish(cfg config, addr, note string, stderr io.Writer) (func(), error) {
	fmt.Fprintf(stderr, "devbroker: listening on %s (%s)\n", addr, note)
	if cfg.readyFile == "" {
		return func() {}, nil
	}
	if err := fsutil.WriteFileAtomic(cfg.readyFile, addr+"\n"); err != nil {
		return nil, fmt.Errorf("write ready file: %w", err)
	}
	// A stale file would tell the next caller that a dead broker is up.
	return func() { os.Remove(cfg.readyFile) }, nil
}

// serveDurable runs the broker on a journal in cfg.dataDir: it replays the
// journal into a fresh kfake cluster before any client can connect, then
// journals every state-changing request before kfake applies it.
func serveDurable(ctx context.Context, cfg config, opts []kfake.Opt, stderr io.Writer) error {
	lock, err := lockDataDir(cfg.dataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	public, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	gate := newGateListener(public)
	defer gate.Close() // kfake closes it too; closing twice is harmless
	opts = append(opts, kfake.ListenFn(func(string, string) (net.Listener, error) { return gate, nil }))
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer c.Close()

	conn, err := gate.dialInternal()
	if err != nil {
		return fmt.Errorf("connect to kfake: %w", err)
	}
	client := newRawClient(conn)
	defer client.Close()
	resp, err := client.do(kmsg.NewPtrApiVersionsRequest())
	if err != nil {
		return fmt.Errorf("ask kfake for its API versions: %w", err)
	}
	rec := &recorder{c: c, partitions: int32(cfg.partitions), autoCreate: cfg.autoCreate}
	if err := rec.checkVersions(resp.(*kmsg.ApiVersionsResponse)); err != nil {
		return err
	}
	rec.install()

	path := filepath.Join(cfg.dataDir, journalName)
	start := time.Now()
	var stats replayStats
	res, err := readJournal(path, func(key, version int16, body []byte) error {
		return replayFrame(client, key, version, body, &stats)
	})
	if err == nil {
		err = client.drain()
	}
	if err != nil {
		return fmt.Errorf("replay %s: %w", path, err)
	}
	took := time.Since(start).Round(time.Millisecond)
	if res.size > res.validEnd {
		fmt.Fprintf(stderr, "devbroker: journal %s: dropped a torn tail of %d bytes at offset %d (a write a crash interrupted; responses wait for the fsync, so none of it was acknowledged)\n",
			path, res.size-res.validEnd, res.validEnd)
	}
	j, err := openJournal(path, res.validEnd)
	if err != nil {
		return err
	}
	defer j.Close()
	if cfg.noFsync {
		j.noFsync()
	}
	rec.j = j
	rec.recording.Store(true)

	if req := rec.seedRequest(cfg.topics); req != nil {
		resp, err := client.do(req)
		if err != nil {
			return fmt.Errorf("create -topics: %w", err)
		}
		for _, t := range resp.(*kmsg.CreateTopicsResponse).Topics {
			if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
				return fmt.Errorf("create -topics %s: %w", t.Topic, err)
			}
		}
		if err := j.waitAppended(); err != nil {
			return err
		}
	}
	if err := client.Close(); err != nil {
		return fmt.Errorf("close the replay connection: %w", err)
	}
	gate.open(j)

	note := fmt.Sprintf("journal %s: replayed %d requests, %d record batches (%d rejected again) in %v",
		path, stats.requests, stats.batches, stats.rejected, took)
	unpublish, err := publish(cfg, public.Addr().String(), note, stderr)
	if err != nil {
		return err
	}
	defer unpublish()
	select {
	case <-ctx.Done():
		fmt.Fprintf(stderr, "devbroker: shutting down\n")
		return nil
	case <-j.failed:
		return fmt.Errorf("stopping, so that no client is told a write is durable when it is not: %w", j.failure())
	}
}
