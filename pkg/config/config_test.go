package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"gopkg.in/yaml.v3"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// minimalYAML holds only the required fields.
const minimalYAML = `
site: {id: 1, name: site-a}
database: {user: tandem}
reader: {server_id: 1001}
kafka: {brokers: ["127.0.0.1:9092"]}
state_dir: /var/lib/tandem
admin: {allow_no_token: true}
`

const testToken = "0123456789abcdef-token"

// valid returns a Config that passes Validate.
func valid() *Config {
	c := Default()
	c.Site = Site{ID: 1, Name: "site-a"}
	c.Database.User = "tandem"
	c.Database.Password = "db-secret"
	c.Reader.ServerID = 1001
	c.Kafka.Brokers = []string{"127.0.0.1:9092", "kafka-2:9092"}
	c.Peers = []Peer{{ID: 2, Name: "site-b"}, {ID: 3, Name: "site-c"}}
	c.StateDir = "/var/lib/tandem"
	c.Admin.Token = testToken
	return c
}

func noEnv(string) string { return "" }

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// problemsOf returns the problems of an *Error, failing the test otherwise.
func problemsOf(t *testing.T, err error) []*Problem {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	if len(e.Problems) == 0 {
		t.Fatalf("*config.Error without problems")
	}
	return e.Problems
}

func TestValidConfigs(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, f := range []string{"site-a.yaml", "site-b.yaml"} {
		c, err := Load(filepath.Join("..", "..", "configs", f), noEnv)
		if err != nil {
			t.Fatalf("configs/%s: %v", f, err)
		}
		if got := c.LocalTopic(); got != "tandem."+c.Site.Name {
			t.Errorf("configs/%s: LocalTopic = %q", f, got)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		path   string // the field the problem must name
		want   string // a substring of the message
	}{
		{"site id required", func(c *Config) { c.Site.ID = 0 }, "site.id", "required; allowed 1..255"},
		{"site name required", func(c *Config) { c.Site.Name = "" }, "site.name", "required"},
		{"site name upper case", func(c *Config) { c.Site.Name = "Site-A" }, "site.name", `"Site-A" is not allowed; allowed 1-32 characters`},
		{"site name too long", func(c *Config) { c.Site.Name = strings.Repeat("a", 33) }, "site.name", "1-32 characters"},
		{"site name leading dash", func(c *Config) { c.Site.Name = "-a" }, "site.name", "starting with a letter or digit"},
		{"database host required", func(c *Config) { c.Database.Host = "" }, "database.host", "required"},
		{"database host with port", func(c *Config) { c.Database.Host = "db:3306" }, "database.host", "use database.port"},
		{"database host with slash", func(c *Config) { c.Database.Host = "db/x" }, "database.host", "not a host"},
		{"database port zero", func(c *Config) { c.Database.Port = 0 }, "database.port", "0 is out of range; allowed 1..65535"},
		{"database port high", func(c *Config) { c.Database.Port = 70000 }, "database.port", "allowed 1..65535"},
		{"database user required", func(c *Config) { c.Database.User = "" }, "database.user", "required"},
		{"database flavor", func(c *Config) { c.Database.Flavor = "postgres" }, "database.flavor", `"postgres" is not allowed; allowed "mariadb" or "mysql"`},
		{"database reserved param", func(c *Config) { c.Database.Params = map[string]string{"loc": "Local"} }, "database.params.loc", "cannot be overridden"},
		{"database reserved timeout", func(c *Config) { c.Database.Params = map[string]string{"timeout": "1s"} }, "database.params.timeout", "database.connect_timeout"},
		{"database param name", func(c *Config) { c.Database.Params = map[string]string{"a&b": "1"} }, "database.params.a&b", "not a parameter name"},
		{"database param value", func(c *Config) { c.Database.Params = map[string]string{"maxAllowedPacket": "big"} }, "database.params.maxAllowedPacket", `invalid value "big"`},
		{"database connect timeout", func(c *Config) { c.Database.ConnectTimeout = 0 }, "database.connect_timeout", "allowed 1ms..1h0m0s"},
		{"database read timeout", func(c *Config) { c.Database.ReadTimeout = -1 }, "database.read_timeout", "out of range"},
		{"database write timeout", func(c *Config) { c.Database.WriteTimeout = Duration(48 * time.Hour) }, "database.write_timeout", "out of range"},
		{"reader server id", func(c *Config) { c.Reader.ServerID = 0 }, "reader.server_id", "required; allowed 1..4294967295"},
		{"reader include no dot", func(c *Config) { c.Reader.Include = []string{"orders"} }, "reader.include[0]", `"orders" has no '.'`},
		{"reader include two dots", func(c *Config) { c.Reader.Include = []string{"a.b.c"} }, "reader.include[0]", "more than one '.'"},
		{"reader include empty part", func(c *Config) { c.Reader.Include = []string{"shop."} }, "reader.include[0]", "empty schema or table part"},
		{"reader include space", func(c *Config) { c.Reader.Include = []string{"shop.my table"} }, "reader.include[0]", "white space"},
		{"reader include bad glob", func(c *Config) { c.Reader.Include = []string{"shop.[a"} }, "reader.include[0]", "not a valid glob"},
		{"reader include duplicate", func(c *Config) { c.Reader.Include = []string{"a.*", "a.*"} }, "reader.include[1]", "repeats reader.include[0]"},
		{"reader exclude", func(c *Config) { c.Reader.Exclude = []string{"ok.*", "bad"} }, "reader.exclude[1]", "no '.'"},
		{"fragment changes", func(c *Config) { c.Reader.MaxFragmentChanges = 0 }, "reader.max_fragment_changes", "allowed 1..1000000"},
		{"fragment bytes", func(c *Config) { c.Reader.MaxFragmentBytes = 10 }, "reader.max_fragment_bytes", "allowed 1024..1073741824"},
		{"fragment bytes above batch", func(c *Config) { c.Reader.MaxFragmentBytes = 2 << 20 }, "reader.max_fragment_bytes", "exceeds kafka.batch_bytes"},
		{"reconnect min", func(c *Config) { c.Reader.ReconnectMin = 0 }, "reader.reconnect_min", "out of range"},
		{"reconnect max", func(c *Config) { c.Reader.ReconnectMax = Duration(2 * time.Hour) }, "reader.reconnect_max", "out of range"},
		{"reconnect max below min", func(c *Config) { c.Reader.ReconnectMax = Duration(time.Millisecond) }, "reader.reconnect_max", "below reader.reconnect_min"},
		{"brokers required", func(c *Config) { c.Kafka.Brokers = nil }, "kafka.brokers", "required"},
		{"broker without port", func(c *Config) { c.Kafka.Brokers = []string{"a:1", "localhost"} }, "kafka.brokers[1]", `"localhost" is not host:port`},
		{"broker without host", func(c *Config) { c.Kafka.Brokers = []string{":9092"} }, "kafka.brokers[0]", "is not host:port"},
		{"broker port", func(c *Config) { c.Kafka.Brokers = []string{"a:0"} }, "kafka.brokers[0]", "allowed 1..65535"},
		{"broker duplicate", func(c *Config) { c.Kafka.Brokers = []string{"a:1", "a:1"} }, "kafka.brokers[1]", "repeats kafka.brokers[0]"},
		{"topic prefix chars", func(c *Config) { c.Kafka.TopicPrefix = "tandem/" }, "kafka.topic_prefix", "allowed characters"},
		{"topic prefix length", func(c *Config) { c.Kafka.TopicPrefix = strings.Repeat("t", 240) }, "kafka.topic_prefix", "topic limit"},
		{"partitions", func(c *Config) { c.Kafka.Partitions = 0 }, "kafka.partitions", "allowed 1..10000"},
		{"replication factor", func(c *Config) { c.Kafka.ReplicationFactor = 0 }, "kafka.replication_factor", "allowed 1..32"},
		{"acks", func(c *Config) { c.Kafka.Acks = "0" }, "kafka.acks", `allowed "all"`},
		{"max in flight", func(c *Config) { c.Kafka.MaxInFlight = 0 }, "kafka.max_in_flight", "allowed 1..10000"},
		{"batch bytes", func(c *Config) { c.Kafka.BatchBytes = 0 }, "kafka.batch_bytes", "out of range"},
		{"kafka linger", func(c *Config) { c.Kafka.Linger = -1 }, "kafka.linger", "allowed 0s..10s"},
		{"client id", func(c *Config) { c.Kafka.ClientID = "a b" }, "kafka.client_id", "not allowed"},
		{"peer id", func(c *Config) { c.Peers[1].ID = 0 }, "peers[1].id", "required"},
		{"peer name", func(c *Config) { c.Peers[0].Name = "B" }, "peers[0].name", "not allowed"},
		{"peer is local id", func(c *Config) { c.Peers[0].ID = 1 }, "peers[0].id", "local site's id"},
		{"peer is local name", func(c *Config) { c.Peers[1].Name = "site-a" }, "peers[1].name", "local site's name"},
		{"peer duplicate id", func(c *Config) { c.Peers[1].ID = 2 }, "peers[1].id", "repeats peers[0].id"},
		{"peer duplicate name", func(c *Config) { c.Peers[1].Name = "site-b" }, "peers[1].name", "repeats peers[0].name"},
		{"sink rows", func(c *Config) { c.Sink.MaxBatchRows = 0 }, "sink.max_batch_rows", "out of range"},
		{"sink txns", func(c *Config) { c.Sink.MaxBatchTxns = 0 }, "sink.max_batch_txns", "out of range"},
		{"sink bytes", func(c *Config) { c.Sink.MaxBatchBytes = 100 }, "sink.max_batch_bytes", "out of range"},
		{"sink linger", func(c *Config) { c.Sink.Linger = Duration(time.Minute) }, "sink.linger", "out of range"},
		{"rows per statement", func(c *Config) { c.Sink.RowsPerStatement = 0 }, "sink.rows_per_statement", "out of range"},
		{"rows per statement above batch", func(c *Config) { c.Sink.MaxBatchRows = 100 }, "sink.rows_per_statement", "exceeds sink.max_batch_rows"},
		{"workers", func(c *Config) { c.Sink.Workers = -1 }, "sink.workers", "allowed 0..256"},
		{"max retries", func(c *Config) { c.Sink.MaxRetries = -1 }, "sink.max_retries", "allowed 0..1000000"},
		{"meta schema", func(c *Config) { c.Schema.MetaSchema = "tan-dem" }, "schema.meta_schema", "not allowed"},
		{"version column", func(c *Config) { c.Schema.VersionColumn = "" }, "schema.version_column", "not allowed"},
		{"schema tables pattern", func(c *Config) { c.Schema.Tables = []string{"*"} }, "schema.tables[0]", "no '.'"},
		{"schema table too long", func(c *Config) { c.Schema.Tables = []string{"shop." + strings.Repeat("t", 60)} }, "schema.tables[0]", "tombstone table"},
		{"max offset", func(c *Config) { c.Clock.MaxOffset = Duration(time.Microsecond) }, "clock.max_offset", "allowed 0 (no check"},
		{"max offset negative", func(c *Config) { c.Clock.MaxOffset = -1 }, "clock.max_offset", "out of range"},
		{"wall offset", func(c *Config) { c.Clock.WallOffset = Duration(-25 * time.Hour) }, "clock.wall_offset", "out of range"},
		{"heartbeat", func(c *Config) { c.Heartbeat.Interval = Duration(time.Millisecond) }, "heartbeat.interval", "allowed 10ms..1h0m0s"},
		{"state dir", func(c *Config) { c.StateDir = " " }, "state_dir", "required"},
		{"admin listen required", func(c *Config) { c.Admin.Listen = "" }, "admin.listen", "required"},
		{"admin listen", func(c *Config) { c.Admin.Listen = "9180" }, "admin.listen", "not host:port"},
		{"admin token required", func(c *Config) { c.Admin.Token = "" }, "admin.token", "required; set TANDEM_ADMIN_TOKEN"},
		{"admin no token off loopback", func(c *Config) {
			c.Admin.Token, c.Admin.AllowNoToken, c.Admin.Listen = "", true, "0.0.0.0:9180"
		}, "admin.allow_no_token", "only on a loopback"},
		{"admin no token all interfaces", func(c *Config) {
			c.Admin.Token, c.Admin.AllowNoToken, c.Admin.Listen = "", true, ":9180"
		}, "admin.allow_no_token", "only on a loopback"},
		{"admin token short", func(c *Config) { c.Admin.Token = "short" }, "admin.token", "too short; allowed at least 16"},
		{"admin token space", func(c *Config) { c.Admin.Token = "0123456789 abcdef" }, "admin.token", "white space"},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, "log.level", `"trace" is not allowed; allowed debug, info, warn or error`},
		{"log format", func(c *Config) { c.Log.Format = "text" }, "log.format", "allowed json or console"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate accepted the config")
			}
			ps := problemsOf(t, err)
			if len(ps) != 1 {
				t.Errorf("want exactly one problem, got %d:\n%v", len(ps), err)
			}
			p := ps[0]
			if p.Path != tt.path || !strings.Contains(p.Msg, tt.want) {
				t.Errorf("problem %q\nwant path %q and a message containing %q", p, tt.path, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "config: "+tt.path+": ") {
				t.Errorf("error %q does not start with the field path", err)
			}
			if strings.Contains(err.Error(), "db-secret") || strings.Contains(err.Error(), testToken) {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestValidateCollectsEveryProblem(t *testing.T) {
	err := (&Config{}).Validate()
	ps := problemsOf(t, err)
	paths := map[string]bool{}
	for _, p := range ps {
		paths[p.Path] = true
	}
	for _, want := range []string{"site.id", "site.name", "database.host", "database.user", "reader.server_id",
		"kafka.brokers", "kafka.partitions", "sink.rows_per_statement", "state_dir", "admin.listen", "admin.token", "log.level"} {
		if !paths[want] {
			t.Errorf("no problem reported for %s in:\n%v", want, err)
		}
	}
	if !strings.HasPrefix(err.Error(), fmt.Sprintf("config: %d problems:\n", len(ps))) {
		t.Errorf("error does not start with the problem count:\n%v", err)
	}
}

func TestAllowNoTokenOnLoopback(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:9180", "127.1.2.3:0", "[::1]:9180", "localhost:9180"} {
		c := valid()
		c.Admin.Token, c.Admin.AllowNoToken, c.Admin.Listen = "", true, listen
		if err := c.Validate(); err != nil {
			t.Errorf("listen %s: %v", listen, err)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(minimalYAML), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Site = Site{ID: 1, Name: "site-a"}
	want.Database.User = "tandem"
	want.Reader.ServerID = 1001
	want.Kafka.Brokers = []string{"127.0.0.1:9092"}
	want.Kafka.ClientID = "tandem-site-a"
	want.StateDir = "/var/lib/tandem"
	want.Admin.AllowNoToken = true
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", c, want)
	}
	// Spot-check the documented defaults themselves.
	for _, chk := range []struct {
		name      string
		got, want any
	}{
		{"kafka.topic_prefix", c.Kafka.TopicPrefix, "tandem."},
		{"kafka.partitions", c.Kafka.Partitions, 8},
		{"kafka.replication_factor", c.Kafka.ReplicationFactor, 3},
		{"kafka.acks", c.Kafka.Acks, "all"},
		{"kafka.max_in_flight", c.Kafka.MaxInFlight, 64},
		{"kafka.linger", c.Kafka.Linger.Duration(), time.Duration(0)},
		{"sink.max_batch_rows", c.Sink.MaxBatchRows, 2000},
		{"sink.rows_per_statement", c.Sink.RowsPerStatement, 200},
		{"sink.workers", c.Sink.Workers, 0},
		{"sink.max_retries", c.Sink.MaxRetries, 10},
		{"sink.linger", c.Sink.Linger.Duration(), time.Duration(0)},
		{"schema.meta_schema", c.Schema.MetaSchema, "tandem"},
		{"schema.version_column", c.Schema.VersionColumn, "_tandem_hlc"},
		{"clock.max_offset", c.Clock.MaxOffset.Duration(), 500 * time.Millisecond},
		{"heartbeat.interval", c.Heartbeat.Interval.Duration(), 100 * time.Millisecond},
		{"heartbeat.enabled", c.Heartbeat.Enabled, true},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9180"},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		{"database.flavor", c.Database.Flavor, "mariadb"},
		{"database.port", c.Database.Port, 3306},
	} {
		if chk.got != chk.want {
			t.Errorf("%s = %v, want %v", chk.name, chk.got, chk.want)
		}
	}
}

func TestParseOverridesAndEmptyValues(t *testing.T) {
	c, err := Parse([]byte(`
site: {id: 1, name: site-a}
database: {user: tandem, params: {tls: "true", sql_mode: "'TRADITIONAL'"}}
reader: {server_id: 1001, include: ["shop.*"]}
kafka:
  brokers: ["a:1"]
  partitions: 3
  linger: 0
  client_id:
heartbeat: {enabled: false, interval: 1s}
sink:
peers: [{id: 2, name: site-b}]
state_dir: s
admin: {allow_no_token: true}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.Partitions != 3 || c.Kafka.Linger != 0 || c.Heartbeat.Enabled || c.Heartbeat.Interval.Duration() != time.Second {
		t.Errorf("values not applied: %+v %+v", c.Kafka, c.Heartbeat)
	}
	if c.Kafka.ClientID != "tandem-site-a" || c.Sink != Default().Sink {
		t.Errorf("empty values did not keep defaults: client_id %q, sink %+v", c.Kafka.ClientID, c.Sink)
	}
	if !reflect.DeepEqual(c.Peers, []Peer{{ID: 2, Name: "site-b"}}) || !reflect.DeepEqual(c.Reader.Include, []string{"shop.*"}) {
		t.Errorf("lists: %+v %+v", c.Peers, c.Reader.Include)
	}
	if c.Database.Params["sql_mode"] != "'TRADITIONAL'" {
		t.Errorf("params: %v", c.Database.Params)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error, in any order
	}{
		{"unknown field", "site: {id: 1, name: a}\nkafka:\n  brokers: [\"a:1\"]\n  bogus: 1\n",
			[]string{"line 4: kafka.bogus: unknown field; allowed: brokers, topic_prefix, partitions"}},
		{"unknown field typo", "kafka:\n  parttions: 3\n",
			[]string{"line 2: kafka.parttions: unknown field (did you mean partitions?)"}},
		{"unknown section", "\n\nsinks: {}\n", []string{"line 3: sinks: unknown field (did you mean sink?); allowed: site, database"}},
		{"unknown peer field", "peers:\n  - id: 2\n    nam: b\n", []string{"line 3: peers[0].nam: unknown field"}},
		{"string for int", "kafka: {partitions: eight}\n", []string{`line 1: kafka.partitions: want an integer, got "eight"`}},
		{"float for int", "kafka:\n  partitions: 1.5\n", []string{`line 2: kafka.partitions: want an integer, got "1.5"`}},
		{"site id overflow", "site:\n  id: 256\n", []string{`line 2: site.id: want an integer 0..255, got "256"`}},
		{"negative server id", "reader: {server_id: -1}\n", []string{`reader.server_id: want an integer 0..4294967295, got "-1"`}},
		{"yes for bool", "heartbeat: {enabled: yes}\n", []string{`heartbeat.enabled: want true or false, got "yes"`}},
		{"bare duration", "sink: {linger: 5}\n", []string{`sink.linger: want a duration with a unit such as "100ms"`, `got "5"`}},
		{"bad duration", "sink: {linger: 5 parsecs}\n", []string{`sink.linger: want a duration`, `got "5 parsecs"`}},
		{"list for duration", "sink: {linger: [1]}\n", []string{`sink.linger: want a duration`, `got a list`}},
		{"scalar for list", "kafka: {brokers: a:1}\n", []string{"kafka.brokers: want a list of strings, got \"a:1\""}},
		{"mapping for string", "state_dir: {a: b}\n", []string{"state_dir: want a string, got a mapping"}},
		{"scalar for section", "kafka: 5\n", []string{`line 1: kafka: want a mapping with the fields brokers, topic_prefix`}},
		{"list for params", "database: {params: [a]}\n", []string{"database.params: want a mapping of names to strings, got a list"}},
		{"list in params", "database: {params: {tls: [a]}}\n", []string{"database.params.tls: want a string, got a list"}},
		{"duplicate key", "site: {id: 1}\nstate_dir: a\nstate_dir: b\n", []string{"line 3: state_dir: set twice (first on line 2)"}},
		{"merge key", "base: &b {id: 1}\n", []string{"base: unknown field"}},
		{"merge key in section", "x: &s {id: 1}\nsite:\n  <<: *s\n", []string{"line 3: site: merge keys (<<) are not supported"}},
		{"document not a mapping", "- a\n- b\n", []string{"want a mapping of sections (site:, database:, kafka:, ...), got a list"}},
		{"two documents", "site: {id: 1}\n---\nsite: {id: 2}\n", []string{"more than one YAML document"}},
		{"syntax error", "site: {id: 1\n", []string{"config: line "}},
		{"tab indentation", "site:\n\tid: 1\n", []string{"found character that cannot start any token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatal("Parse accepted the document")
			}
			problemsOf(t, err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseLinesOnValidationProblems(t *testing.T) {
	_, err := Parse([]byte(`site:
  id: 1
  name: Site_A
kafka:
  brokers:
    - "a:1"
    - localhost
`), noEnv)
	for _, w := range []string{
		`line 3: site.name: "Site_A" is not allowed`,
		`line 7: kafka.brokers[1]: "localhost" is not host:port`,
		"\n  database.user: required", // no line: not in the file
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
	// A value refused while decoding is not reported a second time by
	// validation.
	_, err = Parse([]byte("site: {id: 300, name: a}\n"), noEnv)
	if n := strings.Count(err.Error(), "site.id"); n != 1 {
		t.Errorf("site.id reported %d times:\n%v", n, err)
	}
}

func TestParseEmptyDocuments(t *testing.T) {
	for _, doc := range []string{"", "\n# only a comment\n", "~\n", "---\n"} {
		_, err := Parse([]byte(doc), noEnv)
		ps := problemsOf(t, err)
		for _, p := range ps {
			if !strings.HasPrefix(p.Msg, "required") {
				t.Errorf("%q: unexpected problem %v", doc, p)
			}
		}
	}
}

func TestParseAliases(t *testing.T) {
	doc := strings.Replace(minimalYAML, "reader: {server_id: 1001}", `reader:
  server_id: 1001
  include: &tables ["shop.*", "crm.*"]
schema:
  tables: *tables`, 1)
	c, err := Parse([]byte(doc), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Schema.Tables, []string{"shop.*", "crm.*"}) {
		t.Errorf("schema.tables via alias = %v", c.Schema.Tables)
	}
}

func TestEnvOverrides(t *testing.T) {
	env := envMap(map[string]string{
		EnvDatabaseHost:     "db.internal",
		EnvDatabasePort:     "3307",
		EnvDatabasePassword: "env-pass",
		EnvKafkaBrokers:     " k1:9092, k2:9092 ,,",
		EnvAdminToken:       testToken,
		EnvStateDir:         "/state",
		EnvLogLevel:         "debug",
	})
	c, err := Parse([]byte(minimalYAML), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.Host != "db.internal" || c.Database.Port != 3307 || c.Database.Password.Reveal() != "env-pass" ||
		!reflect.DeepEqual(c.Kafka.Brokers, []string{"k1:9092", "k2:9092"}) || c.Admin.Token.Reveal() != testToken ||
		c.StateDir != "/state" || c.Log.Level != "debug" {
		t.Errorf("environment not applied: %+v", c)
	}
}

func TestEnvProblemsNameTheVariable(t *testing.T) {
	env := envMap(map[string]string{
		EnvDatabasePort: "abc",
		EnvKafkaBrokers: "k1:9092,localhost",
		EnvLogLevel:     "loud",
	})
	_, err := Parse([]byte(minimalYAML), env)
	for _, w := range []string{
		`database.port (from TANDEM_DATABASE_PORT): "abc" is not a port number; allowed 1..65535`,
		`kafka.brokers[1] (from TANDEM_KAFKA_BROKERS): "localhost" is not host:port`,
		`log.level (from TANDEM_LOG_LEVEL): "loud" is not allowed`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecrets(t *testing.T) {
	passFile := writeFile(t, "pass", "file-pass\n")
	tokenFile := writeFile(t, "token", testToken+"\r\n")
	envPassFile := writeFile(t, "envpass", "env-file-pass\n\n")
	withYAML := func(extra string) string {
		return strings.Replace(minimalYAML, "database: {user: tandem}", "database: {user: tandem"+extra+"}", 1)
	}
	tests := []struct {
		name      string
		yaml      string
		env       map[string]string
		wantPass  string
		wantToken string
		wantErr   string
	}{
		{"yaml value", withYAML(", password: yaml-pass"), nil, "yaml-pass", "", ""},
		{"yaml file", withYAML(", password_file: " + passFile), nil, "file-pass", "", ""},
		{"env beats yaml", withYAML(", password: yaml-pass"), map[string]string{EnvDatabasePassword: "env-pass"}, "env-pass", "", ""},
		{"env file beats yaml file", withYAML(", password_file: " + passFile), map[string]string{EnvDatabasePasswordFile: envPassFile}, "env-file-pass", "", ""},
		{"token file", strings.Replace(minimalYAML, "admin: {allow_no_token: true}", "admin: {token_file: "+tokenFile+"}", 1), nil, "", testToken, ""},
		{"token env file", minimalYAML, map[string]string{EnvAdminTokenFile: tokenFile}, "", testToken, ""},
		{"both in yaml", withYAML(", password: a, password_file: " + passFile), nil, "", "", "database.password_file: both database.password and database.password_file are set"},
		{"both in env", minimalYAML, map[string]string{EnvAdminToken: testToken, EnvAdminTokenFile: tokenFile}, "", "", "admin.token (from TANDEM_ADMIN_TOKEN): both TANDEM_ADMIN_TOKEN and TANDEM_ADMIN_TOKEN_FILE are set"},
		{"missing file", withYAML(", password_file: /nonexistent/pass"), nil, "", "", "database.password_file: stat /nonexistent/pass: no such file or directory"},
		{"missing env file", minimalYAML, map[string]string{EnvDatabasePasswordFile: "/nonexistent/p"}, "", "", "database.password_file (from TANDEM_DATABASE_PASSWORD_FILE): stat /nonexistent/p"},
		{"empty file", withYAML(", password_file: " + writeFile(t, "empty", "\n")), nil, "", "", "is empty; allowed: a file holding only the secret"},
		{"directory", withYAML(", password_file: " + t.TempDir()), nil, "", "", "is not a regular file"},
		{"huge file", withYAML(", password_file: " + writeFile(t, "huge", strings.Repeat("x", maxSecretBytes+1))), nil, "", "", "is larger than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), envMap(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v\nwant one containing %q", err, tt.wantErr)
				}
				for _, s := range []string{"file-pass", "yaml-pass", testToken} {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error leaks secret %q: %v", s, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Database.Password.Reveal() != tt.wantPass || c.Admin.Token.Reveal() != tt.wantToken {
				t.Errorf("password %q token %q, want %q %q", c.Database.Password.Reveal(), c.Admin.Token.Reveal(), tt.wantPass, tt.wantToken)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c := valid()
	c.Database.Password = "hunter2-password"
	c.Admin.Token = "hunter2-token-0123456789"
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", *c), "%#v": fmt.Sprintf("%#v", *c),
		"%s": fmt.Sprintf("%s", c.Database.Password), "%q": fmt.Sprintf("%q", c.Admin.Token),
		"%x": fmt.Sprintf("%x", c.Database.Password), "%d": fmt.Sprintf("%d", c.Admin.Token),
		"yaml": string(y), "json": string(j), "section": fmt.Sprint(c.Database, c.Admin),
	} {
		if strings.Contains(s, "hunter2") || !strings.Contains(s, "***") && name != "%x" {
			t.Errorf("%s: %s", name, s)
		}
	}
	if got := fmt.Sprint(Secret("")); got != "" {
		t.Errorf("empty secret prints %q", got)
	}
}

func TestRedacted(t *testing.T) {
	c := valid()
	r := c.Redacted()
	if r.Database.Password.Reveal() != "***" || r.Admin.Token.Reveal() != "***" {
		t.Errorf("Redacted kept secrets: %q %q", r.Database.Password.Reveal(), r.Admin.Token.Reveal())
	}
	if strings.Contains(r.Database.DSN(), "db-secret") || !strings.Contains(r.Database.DSN(), ":***@") {
		t.Errorf("redacted DSN %q", r.Database.DSN())
	}
	if c.Database.Password.Reveal() != "db-secret" {
		t.Errorf("Redacted changed the original")
	}
	// No shared slices or maps.
	c.Database.Params = map[string]string{"tls": "true"}
	r = c.Redacted()
	r.Kafka.Brokers[0] = "changed:1"
	r.Peers[0].Name = "changed"
	r.Database.Params["tls"] = "false"
	if c.Kafka.Brokers[0] == "changed:1" || c.Peers[0].Name == "changed" || c.Database.Params["tls"] != "true" {
		t.Errorf("Redacted shares memory with the original")
	}
	// An unset secret stays visibly unset.
	c.Admin.Token = ""
	if c.Redacted().Admin.Token != "" {
		t.Errorf("unset token redacted to %q", c.Redacted().Admin.Token)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	c := valid()
	c.Database.Password, c.Admin.Token = "", ""
	c.Admin.AllowNoToken = true
	c.Database.Params = map[string]string{"tls": "preferred"}
	c.Reader.Include = []string{"shop.*"}
	c.Clock.WallOffset = Duration(-1500 * time.Millisecond)
	c.Kafka.ClientID = "custom"
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out, noEnv)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip changed the config:\n%s\n%+v\n%+v", out, back, c)
	}
}

func TestDSN(t *testing.T) {
	d := valid().Database
	d.Host, d.Port = "::1", 3307
	d.Password = "p@ss/w:rd?&=%"
	d.Params = map[string]string{"tls": "skip-verify", "sql_mode": "'TRADITIONAL'", "maxAllowedPacket": "0"}
	dsn := d.DSN()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("ParseDSN(%q): %v", dsn, err)
	}
	if cfg.User != "tandem" || cfg.Passwd != "p@ss/w:rd?&=%" || cfg.Net != "tcp" || cfg.Addr != "[::1]:3307" || cfg.DBName != "" {
		t.Errorf("identity: %+v", cfg)
	}
	if cfg.Loc != time.UTC || cfg.ParseTime || cfg.InterpolateParams || cfg.MultiStatements || cfg.Collation != "utf8mb4_bin" {
		t.Errorf("fixed settings: loc %v parseTime %v interpolate %v multi %v collation %q", cfg.Loc, cfg.ParseTime, cfg.InterpolateParams, cfg.MultiStatements, cfg.Collation)
	}
	if !strings.Contains(dsn, "charset=utf8mb4&") {
		t.Errorf("no charset in %q", dsn)
	}
	if cfg.Params["time_zone"] != "'+00:00'" || cfg.Params["sql_mode"] != "'TRADITIONAL'" || cfg.TLSConfig != "skip-verify" || cfg.MaxAllowedPacket != 0 {
		t.Errorf("params: %v tls %q maxAllowedPacket %d", cfg.Params, cfg.TLSConfig, cfg.MaxAllowedPacket)
	}
	if cfg.Timeout != 5*time.Second || cfg.ReadTimeout != time.Minute || cfg.WriteTimeout != time.Minute {
		t.Errorf("timeouts: %v %v %v", cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout)
	}

	// The sinks' DSN differs in multiStatements only.
	sinkCfg, err := mysql.ParseDSN(d.SinkDSN())
	if err != nil {
		t.Fatalf("ParseDSN(SinkDSN): %v", err)
	}
	if !sinkCfg.MultiStatements {
		t.Error("SinkDSN: multiStatements off")
	}
	sinkCfg.MultiStatements = false
	if got, want := sinkCfg.FormatDSN(), cfg.FormatDSN(); got != want {
		t.Errorf("SinkDSN differs beyond multiStatements:\n%s\n%s", got, want)
	}
}

func TestSelects(t *testing.T) {
	r := Reader{Include: []string{"shop.*", "tenant_*.orders"}, Exclude: []string{"shop.tmp_*"}}
	for _, tt := range []struct {
		schema, table string
		want          bool
	}{
		{"shop", "orders", true},
		{"shop", "tmp_x", false},
		{"tenant_1", "orders", true},
		{"tenant_1", "users", false},
		{"Shop", "orders", false},
		{"crm", "x", false},
	} {
		if got := r.Selects(tt.schema, tt.table); got != tt.want {
			t.Errorf("Selects(%s.%s) = %v", tt.schema, tt.table, got)
		}
	}
	all := Reader{Exclude: []string{"*.audit"}}
	if !all.Selects("crm", "x") || all.Selects("crm", "audit") || all.Selects("mysql", "user") || all.Selects("sys", "x") {
		t.Errorf("empty include: wrong selection")
	}
	if MatchTable("bad", "bad", "") || MatchTable("a.[", "a", "[") {
		t.Errorf("malformed pattern matched")
	}
}

func TestLoad(t *testing.T) {
	p := writeFile(t, "c.yaml", "site: {id: 0}\n")
	_, err := Load(p, noEnv)
	if err == nil || !strings.HasPrefix(err.Error(), "config "+p+": ") || !strings.Contains(err.Error(), "line 1: site.id: required") {
		t.Errorf("error %v does not name the file and line", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), noEnv); err == nil || !strings.Contains(err.Error(), "missing.yaml: no such file") {
		t.Errorf("missing file: %v", err)
	}
	big := writeFile(t, "big.yaml", "# "+strings.Repeat("x", maxConfigBytes)+"\n")
	if _, err := Load(big, noEnv); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"site-a.yaml", "site-b.yaml"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "configs", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(minimalYAML))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("site: &s {id: 1}\npeers: [*s, *s]\n"))
	f.Add([]byte("database: {params: {a: b, a: c}}\n"))
	f.Add([]byte("kafka: {brokers: [\"a:1\"], linger: 1h}\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, nil)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error %v (%T) is not a *config.Error with problems", err, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config Validate refuses: %v", err)
		}
		_ = c.Database.DSN()
		_ = c.Redacted()
	})
}

// TestDocs keeps docs/configuration.md complete and its example valid.
func TestDocs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var walk func(rt reflect.Type, prefix string)
	walk = func(rt reflect.Type, prefix string) {
		names, index := fieldNames(rt)
		for _, n := range names {
			path := joinPath(prefix, n)
			ft := rt.Field(index[n]).Type
			if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]() {
				walk(ft, path)
				continue
			}
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				walk(ft.Elem(), path)
				if !strings.Contains(doc, "`"+path+"`") {
					t.Errorf("docs/configuration.md does not mention `%s`", path)
				}
				continue
			}
			if prefix == "peers" {
				continue // documented by the list's example
			}
			if !strings.Contains(doc, "`"+path+"`") {
				t.Errorf("docs/configuration.md does not mention `%s`", path)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	for _, env := range []string{EnvDatabaseHost, EnvDatabasePort, EnvDatabasePassword, EnvDatabasePasswordFile,
		EnvKafkaBrokers, EnvAdminToken, EnvAdminTokenFile, EnvStateDir, EnvLogLevel} {
		if !strings.Contains(doc, "`"+env+"`") {
			t.Errorf("docs/configuration.md does not document %s", env)
		}
	}
	_, rest, ok := strings.Cut(doc, "## A complete production example")
	_, rest, ok2 := strings.Cut(rest, "```yaml\n")
	example, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("production example not found")
	}
	if _, err := Parse([]byte(example), envMap(map[string]string{EnvAdminToken: testToken})); err != nil {
		t.Errorf("the production example does not load: %v", err)
	}
}
