package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

var (
	siteNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	topicRE      = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)
	identifierRE = regexp.MustCompile(`^[A-Za-z0-9_$]{1,64}$`)
	paramKeyRE   = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
)

const (
	siteNameAllowed   = "1-32 characters of a-z, 0-9 and '-', starting with a letter or digit"
	identifierAllowed = "1-64 characters of A-Z, a-z, 0-9, '_' and '$'"
	// maxTopicLen is Kafka's limit on topic names.
	maxTopicLen = 249
	// MinTokenLength is the shortest admin token accepted.
	MinTokenLength = 16
)

// reservedParams are DSN parameters Database.DSN sets itself; letting
// params change them would break what the sink and verifier rely on (UTC,
// utf8mb4, server-side placeholders, affected-row counts).
var reservedParams = map[string]string{
	"charset":           "utf8mb4",
	"collation":         "utf8mb4_bin",
	"loc":               "UTC",
	"time_zone":         "'+00:00'",
	"parseTime":         "false",
	"interpolateParams": "false",
	"multiStatements":   "false",
	"clientFoundRows":   "false",
	"columnsWithAlias":  "false",
	"allowAllFiles":     "false",
	"timeout":           "database.connect_timeout",
	"readTimeout":       "database.read_timeout",
	"writeTimeout":      "database.write_timeout",
}

// Validate reports every problem of c at once: an *Error whose Problems
// each name the field path, what is wrong and what is allowed, or nil. Load
// and Parse call it; call it again after changing a Config in Go.
func (c *Config) Validate() error { return c.check().err("") }

func (c *Config) check() problems {
	var ps problems
	checkSite(&ps, "site", c.Site.ID, c.Site.Name)
	c.Database.check(&ps)
	c.checkReader(&ps)
	c.checkKafka(&ps)
	c.checkPeers(&ps)
	c.Sink.check(&ps)
	c.Schema.check(&ps)
	c.Clock.check(&ps)
	c.Heartbeat.check(&ps)
	c.Tombstones.check(&ps)
	if strings.TrimSpace(c.StateDir) == "" {
		ps.add("state_dir", "required; set a directory for the replicator's Pebble store (or %s)", EnvStateDir)
	}
	c.Tenants.check(&ps)
	c.checkHA(&ps)
	c.Admin.check(&ps)
	c.Log.check(&ps)
	return ps
}

func checkSite(ps *problems, path string, id uint8, name string) {
	if id == 0 {
		ps.add(path+".id", "required; allowed 1..%d (0 is reserved)", hlc.MaxSite)
	}
	switch {
	case name == "":
		ps.add(path+".name", "required; allowed %s", siteNameAllowed)
	case !siteNameRE.MatchString(name):
		ps.add(path+".name", "%q is not allowed; allowed %s", name, siteNameAllowed)
	}
}

// checkHostPort checks a host:port address; zeroPort allows port 0 (pick
// a free port).
func checkHostPort(ps *problems, path, addr, example string, zeroPort bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" && !zeroPort {
		ps.add(path, "%q is not host:port; allowed e.g. %q", addr, example)
		return
	}
	p, err := strconv.Atoi(port)
	lo := 1
	if zeroPort {
		lo = 0
	}
	if err != nil || p < lo || p > 65535 {
		ps.add(path, "%q has port %q; allowed %d..65535", addr, port, lo)
	}
}

func checkDuration(ps *problems, path string, d Duration, lo, hi time.Duration) {
	if v := d.Duration(); v < lo || v > hi {
		ps.add(path, "%s is out of range; allowed %s..%s", v, lo, hi)
	}
}

func checkInt(ps *problems, path string, v, lo, hi int) {
	if v < lo || v > hi {
		ps.add(path, "%d is out of range; allowed %d..%d", v, lo, hi)
	}
}

func (d *Database) check(ps *problems) {
	switch {
	case d.Host == "":
		ps.add("database.host", "required; allowed a host name or IP address (or %s)", EnvDatabaseHost)
	case strings.ContainsAny(d.Host, " \t\n/@?") || strings.HasPrefix(d.Host, "[") || strings.Contains(d.Host, ":") && net.ParseIP(d.Host) == nil:
		ps.add("database.host", "%q is not a host; allowed a host name or IP address without port (use database.port)", d.Host)
	}
	checkInt(ps, "database.port", d.Port, 1, 65535)
	if d.User == "" {
		ps.add("database.user", "required; allowed the MariaDB/MySQL user the replicator connects as")
	}
	if d.Flavor != FlavorMariaDB && d.Flavor != FlavorMySQL {
		ps.add("database.flavor", "%q is not allowed; allowed %q or %q", d.Flavor, FlavorMariaDB, FlavorMySQL)
	}
	for _, k := range sortedKeys(d.Params) {
		v := d.Params[k]
		path := "database.params." + k
		if owner, ok := reservedParams[k]; ok {
			ps.add(path, "is set by Tandem (%s) and cannot be overridden; allowed: other go-sql-driver parameters such as tls", owner)
			continue
		}
		if !paramKeyRE.MatchString(k) {
			ps.add(path, "%q is not a parameter name; allowed 1-64 characters of A-Z, a-z, 0-9 and '_'", k)
			continue
		}
		if _, err := mysql.ParseDSN("/?" + k + "=" + url.QueryEscape(v)); err != nil {
			ps.add(path, "invalid value %q: %v", v, err)
		}
	}
	checkDuration(ps, "database.connect_timeout", d.ConnectTimeout, time.Millisecond, time.Hour)
	checkDuration(ps, "database.read_timeout", d.ReadTimeout, time.Millisecond, 24*time.Hour)
	checkDuration(ps, "database.write_timeout", d.WriteTimeout, time.Millisecond, 24*time.Hour)
}

func checkTablePatterns(ps *problems, path string, patterns []string) {
	seen := map[string]int{}
	for i, p := range patterns {
		ip := fmt.Sprintf("%s[%d]", path, i)
		if msg := checkTablePattern(p); msg != "" {
			ps.add(ip, "%s", msg)
			continue
		}
		if j, dup := seen[p]; dup {
			ps.add(ip, "%q repeats %s[%d]; allowed: each pattern once", p, path, j)
			continue
		}
		seen[p] = i
	}
}

func (c *Config) checkReader(ps *problems) {
	r := &c.Reader
	if r.ServerID == 0 {
		ps.add("reader.server_id", "required; allowed 1..4294967295, different from the server_id of every MariaDB/MySQL server and replica in the topology")
	}
	checkTablePatterns(ps, "reader.include", r.Include)
	checkTablePatterns(ps, "reader.exclude", r.Exclude)
	checkInt(ps, "reader.max_fragment_changes", r.MaxFragmentChanges, 1, 1_000_000)
	checkInt(ps, "reader.max_fragment_bytes", r.MaxFragmentBytes, 1<<10, 1<<30)
	if r.MaxFragmentBytes > c.Kafka.BatchBytes && c.Kafka.BatchBytes > 0 {
		ps.add("reader.max_fragment_bytes", "%d exceeds kafka.batch_bytes (%d); allowed at most kafka.batch_bytes, because a fragment is one Kafka message and must fit in one batch", r.MaxFragmentBytes, c.Kafka.BatchBytes)
	}
	checkDuration(ps, "reader.reconnect_min", r.ReconnectMin, time.Millisecond, time.Hour)
	checkDuration(ps, "reader.reconnect_max", r.ReconnectMax, time.Millisecond, time.Hour)
	if r.ReconnectMax < r.ReconnectMin {
		ps.add("reader.reconnect_max", "%s is below reader.reconnect_min (%s); allowed at least reader.reconnect_min", r.ReconnectMax, r.ReconnectMin)
	}
}

func (c *Config) checkKafka(ps *problems) {
	k := &c.Kafka
	if len(k.Brokers) == 0 {
		ps.add("kafka.brokers", "required; allowed a list of host:port addresses, e.g. [\"kafka-1:9092\", \"kafka-2:9092\"] (or %s=kafka-1:9092,kafka-2:9092)", EnvKafkaBrokers)
	}
	seen := map[string]int{}
	for i, b := range k.Brokers {
		path := fmt.Sprintf("kafka.brokers[%d]", i)
		if j, dup := seen[b]; dup {
			ps.add(path, "%q repeats kafka.brokers[%d]; allowed: each broker once", b, j)
			continue
		}
		seen[b] = i
		checkHostPort(ps, path, b, "127.0.0.1:9092", false)
	}
	switch {
	case !topicRE.MatchString(k.TopicPrefix):
		ps.add("kafka.topic_prefix", "%q is not allowed; allowed characters A-Z, a-z, 0-9, '.', '_' and '-'", k.TopicPrefix)
	case len(k.TopicPrefix) > maxTopicLen-32:
		ps.add("kafka.topic_prefix", "is %d characters long; allowed at most %d, so that prefix + site name fits Kafka's %d-character topic limit", len(k.TopicPrefix), maxTopicLen-32, maxTopicLen)
	}
	checkInt(ps, "kafka.partitions", k.Partitions, 1, 10_000)
	checkInt(ps, "kafka.replication_factor", k.ReplicationFactor, 1, 32)
	if k.Acks != AcksAll && k.Acks != AcksOne {
		ps.add("kafka.acks", "%q is not allowed; allowed %q (default, required for no data loss) or %q (benchmarks only)", k.Acks, AcksAll, AcksOne)
	}
	checkInt(ps, "kafka.max_in_flight", k.MaxInFlight, 1, 10_000)
	checkInt(ps, "kafka.batch_bytes", k.BatchBytes, 1<<10, 1<<30)
	checkDuration(ps, "kafka.linger", k.Linger, 0, 10*time.Second)
	if k.ClientID != "" && (!topicRE.MatchString(k.ClientID) || len(k.ClientID) > 255) {
		ps.add("kafka.client_id", "%q is not allowed; allowed 1-255 characters of A-Z, a-z, 0-9, '.', '_' and '-'", k.ClientID)
	}
	k.checkSecurity(ps)
}

func (c *Config) checkPeers(ps *problems) {
	ids := map[uint8]int{}
	names := map[string]int{}
	for i, p := range c.Peers {
		path := fmt.Sprintf("peers[%d]", i)
		checkSite(ps, path, p.ID, p.Name)
		// Compare only valid values: an invalid one is already reported.
		if p.ID != 0 {
			if p.ID == c.Site.ID {
				ps.add(path+".id", "%d is the local site's id (site.id); allowed: the ids of the other sites only", p.ID)
			} else if j, dup := ids[p.ID]; dup {
				ps.add(path+".id", "%d repeats peers[%d].id; allowed: each site once", p.ID, j)
			} else {
				ids[p.ID] = i
			}
		}
		if siteNameRE.MatchString(p.Name) {
			if p.Name == c.Site.Name {
				ps.add(path+".name", "%q is the local site's name (site.name); allowed: the names of the other sites only", p.Name)
			} else if j, dup := names[p.Name]; dup {
				ps.add(path+".name", "%q repeats peers[%d].name; allowed: each site once", p.Name, j)
			} else {
				names[p.Name] = i
			}
		}
	}
}

func (s *Sink) check(ps *problems) {
	checkInt(ps, "sink.max_batch_rows", s.MaxBatchRows, 1, 1_000_000)
	checkInt(ps, "sink.max_batch_txns", s.MaxBatchTxns, 1, 1_000_000)
	checkInt(ps, "sink.max_batch_bytes", s.MaxBatchBytes, 1024, 256<<20)
	checkDuration(ps, "sink.linger", s.Linger, 0, 10*time.Second)
	checkInt(ps, "sink.rows_per_statement", s.RowsPerStatement, 1, 10_000)
	if s.RowsPerStatement > s.MaxBatchRows && s.MaxBatchRows > 0 {
		ps.add("sink.rows_per_statement", "%d exceeds sink.max_batch_rows (%d); allowed at most sink.max_batch_rows", s.RowsPerStatement, s.MaxBatchRows)
	}
	checkInt(ps, "sink.workers", s.Workers, 0, 256)
	checkInt(ps, "sink.max_retries", s.MaxRetries, 0, 1_000_000)
}

func (s *Schema) check(ps *problems) {
	if !identifierRE.MatchString(s.MetaSchema) {
		ps.add("schema.meta_schema", "%q is not allowed; allowed %s", s.MetaSchema, identifierAllowed)
	}
	if !identifierRE.MatchString(s.VersionColumn) {
		ps.add("schema.version_column", "%q is not allowed; allowed %s", s.VersionColumn, identifierAllowed)
	}
	checkTablePatterns(ps, "schema.tables", s.Tables)
	for i, t := range s.Tables {
		if _, table, ok := strings.Cut(t, "."); ok && !strings.ContainsAny(table, "*?[") && len(table) > schema.MaxTableName {
			ps.add(fmt.Sprintf("schema.tables[%d]", i), "table name %q is %d characters long; allowed at most %d, so that its tombstone table %s<name> fits MariaDB's 64-character limit",
				table, len(table), schema.MaxTableName, schema.TombPrefix)
		}
	}
}

func (c *Clock) check(ps *problems) {
	if v := c.MaxOffset.Duration(); v != 0 && (v < time.Millisecond || v > time.Hour) {
		ps.add("clock.max_offset", "%s is out of range; allowed 0 (no check, not recommended) or 1ms..1h", v)
	}
	checkDuration(ps, "clock.wall_offset", c.WallOffset, -24*time.Hour, 24*time.Hour)
}

func (h *Heartbeat) check(ps *problems) {
	checkDuration(ps, "heartbeat.interval", h.Interval, 10*time.Millisecond, time.Hour)
}

func (t *Tombstones) check(ps *problems) {
	if t.GCInterval != 0 {
		checkDuration(ps, "tombstones.gc_interval", t.GCInterval, 100*time.Millisecond, 24*time.Hour)
	}
	checkDuration(ps, "tombstones.gc_grace", t.GCGrace, 0, 30*24*time.Hour)
	if t.ReconcileInterval != 0 {
		checkDuration(ps, "tombstones.reconcile_interval", t.ReconcileInterval, 100*time.Millisecond, time.Hour)
	}
	checkDuration(ps, "tombstones.reconcile_window", t.ReconcileWindow, time.Second, 24*time.Hour)
}

// IsLoopback reports whether the host part of a host:port address is a
// loopback address ("localhost", 127.0.0.0/8, ::1). An empty host means
// every interface and is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a *Admin) check(ps *problems) {
	if a.Listen == "" {
		ps.add("admin.listen", "required; allowed host:port, e.g. %q", DefaultAdminListen)
	} else {
		checkHostPort(ps, "admin.listen", a.Listen, DefaultAdminListen, true)
	}
	token := a.Token.Reveal()
	switch {
	case token == "" && !a.AllowNoToken:
		ps.add("admin.token", "required; set %s or %s (e.g. from `openssl rand -hex 32`), or admin.allow_no_token: true on a loopback admin.listen", EnvAdminToken, EnvAdminTokenFile)
	case token == "" && a.Listen != "" && !IsLoopback(a.Listen):
		ps.add("admin.allow_no_token", "is honoured only on a loopback admin.listen (127.0.0.1, ::1, localhost), not %q; set %s", a.Listen, EnvAdminToken)
	case token != "" && len(token) < MinTokenLength:
		// Never echo the token, nor its length.
		ps.add("admin.token", "too short; allowed at least %d characters (e.g. from `openssl rand -hex 32`)", MinTokenLength)
	case token != "" && strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		ps.add("admin.token", "contains white space, control or non-ASCII characters; allowed printable ASCII, because it is sent in an HTTP header")
	}
}

func (l *Log) check(ps *problems) {
	switch l.Level {
	case LevelDebug, LevelInfo, LevelWarn, LevelError:
	default:
		ps.add("log.level", "%q is not allowed; allowed %s, %s, %s or %s", l.Level, LevelDebug, LevelInfo, LevelWarn, LevelError)
	}
	if l.Format != FormatJSON && l.Format != FormatConsole {
		ps.add("log.format", "%q is not allowed; allowed %s or %s", l.Format, FormatJSON, FormatConsole)
	}
}
