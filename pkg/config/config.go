// Package config loads the replicator's configuration: one YAML file plus a
// few environment overrides (docs/configuration.md lists every field).
//
// Loading is strict, because a typo in a replication config silently falls
// back to a default and is found only when data is missing: an unknown field
// is an error naming the field, its line and the allowed fields, and Validate
// reports every problem at once (field path, what is wrong, what is
// allowed), so one run tells the operator everything to fix.
//
// Secrets (database password, admin token) are of type Secret, which prints
// as "***" through fmt, YAML and JSON, so logging a Config or one of its
// sections cannot leak them; Secret.Reveal returns the value for the one
// place that needs it.
package config

import (
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/tandemdb/tandem/pkg/schema"
)

// Config is the whole replicator configuration. The zero value is not
// useful; start from Default (Load and Parse do).
type Config struct {
	Site      Site      `yaml:"site"`
	Database  Database  `yaml:"database"`
	Reader    Reader    `yaml:"reader"`
	Kafka     Kafka     `yaml:"kafka"`
	Peers     []Peer    `yaml:"peers,omitempty"`
	Sink      Sink      `yaml:"sink"`
	Schema    Schema    `yaml:"schema"`
	Clock     Clock     `yaml:"clock"`
	Heartbeat Heartbeat `yaml:"heartbeat"`
	// Tombstones configures the collection of delete tombstones.
	Tombstones Tombstones `yaml:"tombstones"`
	// StateDir holds the replicator's Pebble store (reader checkpoint, HLC
	// upper bound, parked messages). Required; one directory per
	// replicator process.
	StateDir string `yaml:"state_dir"`
	// Tenants configures tenant resolution and the registry (tenants.go).
	Tenants Tenants `yaml:"tenants"`
	// HA configures site-level high availability (ha.go).
	HA    HA    `yaml:"ha"`
	Admin Admin `yaml:"admin"`
	Log   Log   `yaml:"log"`
}

// Site identifies the local site.
type Site struct {
	// ID is the site id, 1..255: the low byte of every HLC version this
	// site writes (pkg/hlc), so it must never change once data exists.
	ID uint8 `yaml:"id"`
	// Name names the site in topics (Kafka.TopicPrefix+Name), metrics and
	// logs: 1-32 characters of a-z, 0-9 and '-'.
	Name string `yaml:"name"`
}

// Peer is another site whose changes this replicator applies locally.
type Peer struct {
	ID   uint8  `yaml:"id"`
	Name string `yaml:"name"`
}

// Flavors of Database.Flavor.
const (
	FlavorMariaDB = "mariadb"
	FlavorMySQL   = "mysql"
)

// Database is the local site's server: the binlog source of the reader and
// the target the sinks apply to.
type Database struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	User string `yaml:"user"`
	// Password is best given by TANDEM_DATABASE_PASSWORD or a file
	// (password_file, TANDEM_DATABASE_PASSWORD_FILE); after Load it holds
	// the resolved value whichever way it came.
	Password Secret `yaml:"password,omitempty"`
	// PasswordFile is a file holding the password (trailing newline
	// trimmed). Relative paths are relative to the working directory.
	PasswordFile string `yaml:"password_file,omitempty"`
	// Flavor is "mariadb" or "mysql".
	Flavor string `yaml:"flavor"`
	// Params are extra go-sql-driver DSN parameters (e.g. tls). Keys Tandem
	// fixes itself (charset, loc, time_zone, ...) are refused.
	Params map[string]string `yaml:"params,omitempty"`
	// ConnectTimeout, ReadTimeout and WriteTimeout are the driver's dial
	// and per-I/O timeouts.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	ReadTimeout    Duration `yaml:"read_timeout"`
	WriteTimeout   Duration `yaml:"write_timeout"`
}

// Addr is host:port.
func (d Database) Addr() string { return net.JoinHostPort(d.Host, strconv.Itoa(d.Port)) }

// Reader configures the binlog reader.
type Reader struct {
	// ServerID is the replica server id the reader announces to the
	// source; it must differ from every server id in the topology.
	ServerID uint32 `yaml:"server_id"`
	// Include and Exclude are "schema.table" patterns (glob: *, ?, [a-z])
	// selecting the tables whose changes are published; see Selects.
	Include []string `yaml:"include,omitempty"`
	Exclude []string `yaml:"exclude,omitempty"`
	// MaxFragmentChanges and MaxFragmentBytes bound one Kafka message; a
	// larger source transaction is split into numbered fragments, which is
	// what keeps memory bounded (DESIGN.md §2.8).
	MaxFragmentChanges int `yaml:"max_fragment_changes"`
	MaxFragmentBytes   int `yaml:"max_fragment_bytes"`
	// ReconnectMin and ReconnectMax bound the exponential back-off between
	// reconnects to the source.
	ReconnectMin Duration `yaml:"reconnect_min"`
	ReconnectMax Duration `yaml:"reconnect_max"`
}

// Selects reports whether the reader publishes changes to schema.table: not
// a system schema, not matched by any Exclude pattern, and matched by an
// Include pattern (or Include is empty). Tandem's own _tandem_* tables are
// the reader's business (pkg/schema), not this filter's.
func (r Reader) Selects(schemaName, table string) bool {
	if systemSchemas[schemaName] {
		return false
	}
	for _, p := range r.Exclude {
		if MatchTable(p, schemaName, table) {
			return false
		}
	}
	if len(r.Include) == 0 {
		return true
	}
	for _, p := range r.Include {
		if MatchTable(p, schemaName, table) {
			return true
		}
	}
	return false
}

// Kafka acknowledgement modes.
const (
	AcksAll = "all"
	AcksOne = "one"
)

// Kafka configures the producer (reader) and consumers (sinks).
type Kafka struct {
	Brokers []string `yaml:"brokers"`
	// TopicPrefix + site name is a site's topic.
	TopicPrefix string `yaml:"topic_prefix"`
	// Partitions and ReplicationFactor are used when Tandem creates a
	// topic. Tenants map to partitions by key hash, so changing Partitions
	// of an existing topic reorders tenants: drain first.
	Partitions        int `yaml:"partitions"`
	ReplicationFactor int `yaml:"replication_factor"`
	// Acks is "all" (default) or "one". "one" loses acknowledged writes
	// when a partition leader fails, which breaks DESIGN.md §2.3; it exists
	// for benchmarks only.
	Acks string `yaml:"acks"`
	// MaxInFlight is how many produce batches may await acknowledgement.
	MaxInFlight int `yaml:"max_in_flight"`
	// BatchBytes is the largest produce batch; one message (a fragment)
	// must fit in it.
	BatchBytes int `yaml:"batch_bytes"`
	// Linger is how long the producer waits to fill a partition's batch
	// once it has one message. Default 0: a batch is what arrived while
	// the previous one was in flight (batching under load by itself,
	// without delaying a quiet-period transaction).
	Linger Duration `yaml:"linger"`
	// ClientID defaults to "tandem-" + site name.
	ClientID string `yaml:"client_id"`
	// TLS and SASL secure the connections to the brokers; both off by
	// default (a PLAINTEXT listener).
	TLS  KafkaTLS  `yaml:"tls"`
	SASL KafkaSASL `yaml:"sasl"`
}

// Sink configures the appliers (one per peer).
type Sink struct {
	// MaxBatchRows and MaxBatchTxns bound one group-committed target
	// transaction; Linger is how long a partition waits to fill it.
	MaxBatchRows int      `yaml:"max_batch_rows"`
	MaxBatchTxns int      `yaml:"max_batch_txns"`
	Linger       Duration `yaml:"linger"`
	// MaxBatchBytes bounds the messages one round of a partition takes:
	// what a later message of the partition (another tenant's) waits
	// behind while a throttled or paused tenant's messages are queued.
	MaxBatchBytes int `yaml:"max_batch_bytes"`
	// RowsPerStatement is the number of rows per multi-row upsert.
	RowsPerStatement int `yaml:"rows_per_statement"`
	// Workers bounds how many partitions of one peer's topic apply a
	// batch at the same time; 0 (default) lets every partition.
	Workers int `yaml:"workers"`
	// MaxRetries is how often a failing batch is retried before its
	// messages are parked (schema.Parked) and the partition moves on.
	MaxRetries int `yaml:"max_retries"`
}

// Schema names the objects Tandem adds to the database (pkg/schema).
type Schema struct {
	MetaSchema    string `yaml:"meta_schema"`
	VersionColumn string `yaml:"version_column"`
	// Tables are the "schema.table" names or patterns `replicator schema
	// prepare` installs the version column and triggers on.
	Tables []string `yaml:"tables,omitempty"`
}

// Clock configures the hybrid logical clock (pkg/hlc).
type Clock struct {
	// MaxOffset is how far a remote version may be ahead of the local wall
	// clock and still advance it; 0 disables the check.
	MaxOffset Duration `yaml:"max_offset"`
	// WallOffset skews the replicator's own wall clock (tests and drills
	// only): the Go-side counterpart of faking the database server's clock
	// (libfaketime, Chaos Mesh TimeChaos), so both sides of a site can be
	// skewed together.
	WallOffset Duration `yaml:"wall_offset"`
}

// Heartbeat configures the heartbeat rows that measure lag (DESIGN.md §7).
type Heartbeat struct {
	Enabled  bool     `yaml:"enabled"`
	Interval Duration `yaml:"interval"`
}

// Tombstones configures tombstone garbage collection (docs/tombstones.md).
type Tombstones struct {
	// GCInterval is how often collection runs; 0 disables it.
	GCInterval Duration `yaml:"gc_interval"`
	// GCGrace is how far below the lowest applied watermark of all sites a
	// tombstone's version must be before it is collected.
	GCGrace Duration `yaml:"gc_grace"`
	// ReconcileInterval is how often rows left below their own tombstone
	// by an insert that raced a delete are removed (docs/tombstones.md,
	// "Late inserts"); 0 disables it.
	ReconcileInterval Duration `yaml:"reconcile_interval"`
	// ReconcileWindow is how far back each pass looks: tombstones with
	// versions this much older than the database clock are checked only
	// once more, just before they are collected.
	ReconcileWindow Duration `yaml:"reconcile_window"`
}

// Admin configures the HTTP admin server (pkg/admin).
type Admin struct {
	Listen string `yaml:"listen"`
	// Token authenticates every admin endpoint except /healthz and
	// /readyz. Give it by TANDEM_ADMIN_TOKEN or a file.
	Token     Secret `yaml:"token,omitempty"`
	TokenFile string `yaml:"token_file,omitempty"`
	// AllowNoToken runs the admin server without a token. It is honoured
	// only on a loopback listen address and must be set explicitly, so an
	// unauthenticated admin endpoint is always a decision, never an
	// accident.
	AllowNoToken bool `yaml:"allow_no_token"`
	// Pprof serves Go's runtime profiles under /debug/pprof/ (with the
	// token, like every admin endpoint but the probes).
	Pprof bool `yaml:"pprof"`
}

// Log levels and formats.
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"

	FormatJSON    = "json"
	FormatConsole = "console"
)

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Defaults that docs/configuration.md documents.
const (
	DefaultDatabaseHost       = "127.0.0.1"
	DefaultDatabasePort       = 3306
	DefaultTopicPrefix        = "tandem."
	DefaultPartitions         = 8
	DefaultReplicationFactor  = 3
	DefaultMaxInFlight        = 64
	DefaultBatchBytes         = 1 << 20
	DefaultMaxFragmentChanges = 1000
	DefaultMaxFragmentBytes   = 512 << 10
	DefaultMaxBatchRows       = 2000
	DefaultMaxBatchTxns       = 1000
	DefaultMaxBatchBytes      = 1 << 20
	DefaultRowsPerStatement   = 200
	DefaultSinkMaxRetries     = 10
	DefaultAdminListen        = "127.0.0.1:9180"
)

// Default returns a Config holding every default. Required fields (site,
// database.user, reader.server_id, kafka.brokers, state_dir) are empty.
func Default() *Config {
	return &Config{
		Database: Database{
			Host:           DefaultDatabaseHost,
			Port:           DefaultDatabasePort,
			Flavor:         FlavorMariaDB,
			ConnectTimeout: Duration(5 * time.Second),
			ReadTimeout:    Duration(60 * time.Second),
			WriteTimeout:   Duration(60 * time.Second),
		},
		Reader: Reader{
			MaxFragmentChanges: DefaultMaxFragmentChanges,
			MaxFragmentBytes:   DefaultMaxFragmentBytes,
			ReconnectMin:       Duration(100 * time.Millisecond),
			ReconnectMax:       Duration(30 * time.Second),
		},
		Kafka: Kafka{
			TopicPrefix:       DefaultTopicPrefix,
			Partitions:        DefaultPartitions,
			ReplicationFactor: DefaultReplicationFactor,
			Acks:              AcksAll,
			MaxInFlight:       DefaultMaxInFlight,
			BatchBytes:        DefaultBatchBytes,
		},
		Sink: Sink{
			MaxBatchRows:     DefaultMaxBatchRows,
			MaxBatchTxns:     DefaultMaxBatchTxns,
			MaxBatchBytes:    DefaultMaxBatchBytes,
			RowsPerStatement: DefaultRowsPerStatement,
			MaxRetries:       DefaultSinkMaxRetries,
		},
		Schema: Schema{
			MetaSchema:    schema.DefaultMetaSchema,
			VersionColumn: schema.DefaultVersionColumn,
		},
		Clock: Clock{
			MaxOffset: Duration(500 * time.Millisecond),
		},
		Heartbeat: Heartbeat{
			Enabled:  true,
			Interval: Duration(100 * time.Millisecond),
		},
		Tombstones: Tombstones{
			GCInterval: Duration(time.Minute),
			GCGrace:    Duration(time.Hour),
			// A racing insert commits within its lock wait
			// (innodb_lock_wait_timeout, 50 s by default) of the delete.
			ReconcileInterval: Duration(time.Second),
			ReconcileWindow:   Duration(2 * time.Minute),
		},
		Tenants: defaultTenants(),
		HA:      defaultHA(),
		Admin:   Admin{Listen: DefaultAdminListen},
		Log:     Log{Level: LevelInfo, Format: FormatJSON},
	}
}

// Topic is the Kafka topic of the site named site.
func (c *Config) Topic(site string) string { return c.Kafka.TopicPrefix + site }

// LocalTopic is the topic the local reader publishes to.
func (c *Config) LocalTopic() string { return c.Topic(c.Site.Name) }

// Redacted returns a deep copy safe to log or print: secrets are replaced by
// "***" (even for Reveal) and no slice or map is shared with c.
func (c *Config) Redacted() *Config {
	r := c.clone()
	if r.Database.Password != "" {
		r.Database.Password = redacted
	}
	if r.Admin.Token != "" {
		r.Admin.Token = redacted
	}
	if r.Tenants.Redis.Password != "" {
		r.Tenants.Redis.Password = redacted
	}
	if r.Kafka.SASL.Password != "" {
		r.Kafka.SASL.Password = redacted
	}
	if r.HA.Redis.Password != "" {
		r.HA.Redis.Password = redacted
	}
	return r
}

func (c *Config) clone() *Config {
	r := *c
	r.Database.Params = maps.Clone(c.Database.Params)
	r.Reader.Include = slices.Clone(c.Reader.Include)
	r.Reader.Exclude = slices.Clone(c.Reader.Exclude)
	r.Kafka.Brokers = slices.Clone(c.Kafka.Brokers)
	r.Peers = slices.Clone(c.Peers)
	r.Schema.Tables = slices.Clone(c.Schema.Tables)
	r.Tenants = c.Tenants.clone()
	return &r
}
