package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/schema"
)

// Config is the verifier's configuration: the sites to watch, what to probe
// and check, and the SLOs a run is judged against. Load it from YAML with
// LoadConfig (strict: unknown fields are errors), or build it in Go from
// DefaultConfig and call Validate.
type Config struct {
	Sites []Site `yaml:"sites"`
	// MetaSchema holds Tandem's bookkeeping tables (_tandem_probe,
	// _tandem_heartbeat, _tandem_watermarks) on every site.
	MetaSchema string `yaml:"meta_schema"`
	// VersionColumn is the per-row version column of replicated tables.
	VersionColumn string `yaml:"version_column"`
	// Tenants are probed one row per tick each and judged by their class's
	// SLO. Empty means one probe stream for the global tenant ("").
	Tenants []Tenant `yaml:"tenants,omitempty"`
	Probe   Probe    `yaml:"probe"`
	Check   Check    `yaml:"check"`
	SLOs    SLOs     `yaml:"slos"`
	Admin   Admin    `yaml:"admin"`
}

// Site is one database the verifier connects to.
type Site struct {
	// Name must match the replicator's site name (it labels directions
	// and metrics).
	Name string `yaml:"name"`
	// ID is the site id, the low byte of every version the site writes.
	ID   uint8  `yaml:"id"`
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	User string `yaml:"user"`
	// Password is best given by TANDEM_VERIFIER_<NAME>_PASSWORD (NAME upper
	// case, '-' as '_'), which overrides the file.
	Password config.Secret `yaml:"password,omitempty"`
	// Params are extra go-sql-driver DSN parameters (e.g. tls).
	Params map[string]string `yaml:"params,omitempty"`
}

// Tenant is a probed tenant and its SLO class.
type Tenant struct {
	Name  string `yaml:"name"`
	Class string `yaml:"class"`
}

// Probe configures `verifier probe`.
type Probe struct {
	// Rate is probe rows per second per site and tenant.
	Rate float64 `yaml:"rate"`
	// PollInterval is how often every other site is polled for probes.
	PollInterval Duration `yaml:"poll_interval"`
	// WriteTimeout bounds one probe write; a write that takes longer counts
	// as failed (the site is not accepting writes in time).
	WriteTimeout Duration `yaml:"write_timeout"`
	// HeartbeatInterval is how often the replicators' heartbeat rows are
	// read at every site; 0 disables heartbeat lag.
	HeartbeatInterval Duration `yaml:"heartbeat_interval"`
	// Drain is how long a stopping probe waits for outstanding probes to
	// arrive before it counts them as not applied.
	Drain Duration `yaml:"drain"`
}

// Check configures `verifier check`.
type Check struct {
	// Tables are "schema.table" names or glob patterns.
	Tables []string `yaml:"tables,omitempty"`
	// ChunkTime is the target duration of one chunk checksum; chunk sizes
	// adapt to it.
	ChunkTime Duration `yaml:"chunk_time"`
	// ChunkRows is the first chunk's size; MaxChunkRows bounds the tuning.
	ChunkRows    int `yaml:"chunk_rows"`
	MaxChunkRows int `yaml:"max_chunk_rows"`
	// LeafRows is the range size below which bisection stops and rows are
	// compared one by one.
	LeafRows int `yaml:"leaf_rows"`
	// Retries and RetryDelay bound how often a row that differs is read
	// again before it is reported; in-flight rows usually settle on the
	// first retry.
	Retries    int      `yaml:"retries"`
	RetryDelay Duration `yaml:"retry_delay"`
	// TenantColumn and Tenant restrict the check to one tenant's rows in
	// tables having that column.
	TenantColumn string `yaml:"tenant_column,omitempty"`
	Tenant       string `yaml:"tenant,omitempty"`
	// FenceTimeout bounds how long fenced mode waits for its markers.
	FenceTimeout Duration `yaml:"fence_timeout"`
}

// SLOs are the objectives: Default for every tenant, Classes by name.
type SLOs struct {
	Default SLO            `yaml:"default"`
	Classes map[string]SLO `yaml:"classes,omitempty"`
}

// SLO is one set of objectives. In Classes, a zero field inherits the
// default's value.
type SLO struct {
	// LagP99 bounds the 99th percentile of probe lag outside fault
	// windows (faults are judged by RPO and RTO).
	LagP99 Duration `yaml:"lag_p99"`
	// FaultLag is the lag above which one probe counts as bad (opening a
	// fault window). Zero means LagP99.
	FaultLag Duration `yaml:"fault_lag"`
	// RPOMaxWrites and RPOMaxWindow bound, per fault, the acknowledged
	// writes another site had not applied (count, and age of the oldest).
	// Zero means not checked.
	RPOMaxWrites int      `yaml:"rpo_max_writes"`
	RPOMaxWindow Duration `yaml:"rpo_max_window"`
	// RTOMax bounds the time from a fault's start to sustained recovery.
	RTOMax Duration `yaml:"rto_max"`
	// RecoverySamples is N: recovery needs N consecutive good probes.
	RecoverySamples int `yaml:"recovery_samples"`
}

// Admin configures the verifier's HTTP server (/metrics, /healthz,
// /readyz), served by pkg/admin.
type Admin struct {
	// Listen is host:port; empty disables the server.
	Listen string `yaml:"listen"`
	// Token is best given by TANDEM_VERIFIER_ADMIN_TOKEN.
	Token        config.Secret `yaml:"token,omitempty"`
	AllowNoToken bool          `yaml:"allow_no_token"`
}

// Environment variables read by LoadConfig.
const (
	EnvAdminToken = "TANDEM_VERIFIER_ADMIN_TOKEN"
	envPassword   = "TANDEM_VERIFIER_%s_PASSWORD"
)

// PasswordEnv is the environment variable holding site's password.
func PasswordEnv(site string) string {
	return fmt.Sprintf(envPassword, strings.ToUpper(strings.ReplaceAll(site, "-", "_")))
}

// Defaults documented in docs/verifier.md.
const (
	DefaultRate         = 10
	DefaultPollInterval = 25 * time.Millisecond
	DefaultChunkTime    = 200 * time.Millisecond
	DefaultChunkRows    = 1000
	DefaultMaxChunkRows = 500_000
	DefaultLeafRows     = 64
	DefaultRetries      = 6
	DefaultRetryDelay   = time.Second
)

// DefaultConfig returns a configuration holding every default; Sites are
// empty.
func DefaultConfig() *Config {
	return &Config{
		MetaSchema:    schema.DefaultMetaSchema,
		VersionColumn: schema.DefaultVersionColumn,
		Probe: Probe{
			Rate:              DefaultRate,
			PollInterval:      Duration(DefaultPollInterval),
			WriteTimeout:      Duration(time.Second),
			HeartbeatInterval: Duration(200 * time.Millisecond),
			Drain:             Duration(30 * time.Second),
		},
		Check: Check{
			ChunkTime:    Duration(DefaultChunkTime),
			ChunkRows:    DefaultChunkRows,
			MaxChunkRows: DefaultMaxChunkRows,
			LeafRows:     DefaultLeafRows,
			Retries:      DefaultRetries,
			RetryDelay:   Duration(DefaultRetryDelay),
			FenceTimeout: Duration(time.Minute),
		},
		SLOs: SLOs{Default: SLO{
			LagP99:          Duration(time.Second),
			RTOMax:          Duration(30 * time.Second),
			RecoverySamples: 10,
		}},
	}
}

// maxConfigBytes bounds the file: a larger one is a mistake.
const maxConfigBytes = 1 << 20

// LoadConfig reads the YAML file at path onto DefaultConfig, applies the
// environment (env is os.Getenv in production; nil means none) and
// validates. Unknown fields are errors naming the field and line.
func LoadConfig(path string, env func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ConfigError{Problems: []string{"verifier config: " + err.Error()}}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("verifier config: read %s: %w", path, err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("verifier config %s: larger than 1 MiB; allowed: a configuration file", path)
	}
	c, err := ParseConfig(data, env)
	var ce *ConfigError
	switch {
	case errors.As(err, &ce):
		for i, p := range ce.Problems {
			ce.Problems[i] = path + ": " + p
		}
		return nil, ce
	case err != nil:
		return nil, &ConfigError{Problems: []string{path + ": " + err.Error()}}
	}
	return c, nil
}

// ParseConfig is LoadConfig for YAML already in memory.
func ParseConfig(data []byte, env func(string) string) (*Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	c.ApplyEnv(env)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ApplyEnv sets the secrets given in the environment.
func (c *Config) ApplyEnv(env func(string) string) {
	if env == nil {
		return
	}
	for i := range c.Sites {
		if v := env(PasswordEnv(c.Sites[i].Name)); v != "" {
			c.Sites[i].Password = config.Secret(v)
		}
	}
	if v := env(EnvAdminToken); v != "" {
		c.Admin.Token = config.Secret(v)
	}
}

// ConfigError lists every problem of a configuration.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	return fmt.Sprintf("%d problems:\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

type problems []string

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, field+": "+fmt.Sprintf(format, args...))
}

var (
	siteNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	identifierRE = regexp.MustCompile(`^[A-Za-z0-9_$]{1,64}$`)
)

// Validate reports every problem at once, each naming the field, what is
// wrong and what is allowed; nil when the configuration is usable.
func (c *Config) Validate() error {
	var ps problems
	if len(c.Sites) < 2 {
		ps.add("sites", "%d site(s) configured; allowed: at least 2", len(c.Sites))
	}
	names, ids := map[string]int{}, map[uint8]int{}
	for i, s := range c.Sites {
		f := fmt.Sprintf("sites[%d]", i)
		switch {
		case s.Name == "":
			ps.add(f+".name", "required; allowed 1-32 characters of a-z, 0-9 and '-'")
		case !siteNameRE.MatchString(s.Name):
			ps.add(f+".name", "%q is not allowed; allowed 1-32 characters of a-z, 0-9 and '-'", s.Name)
		default:
			if j, dup := names[s.Name]; dup {
				ps.add(f+".name", "%q is also sites[%d]; allowed: distinct names", s.Name, j)
			}
			names[s.Name] = i
		}
		if s.ID == 0 {
			ps.add(f+".id", "required; allowed 1..%d", hlc.MaxSite)
		} else if j, dup := ids[s.ID]; dup {
			ps.add(f+".id", "%d is also sites[%d]; allowed: distinct ids", s.ID, j)
		} else {
			ids[s.ID] = i
		}
		if strings.TrimSpace(s.Host) == "" {
			ps.add(f+".host", "required; allowed a host name or IP address")
		}
		if s.Port < 1 || s.Port > 65535 {
			ps.add(f+".port", "%d is out of range; allowed 1..65535", s.Port)
		}
		if s.User == "" {
			ps.add(f+".user", "required; allowed a database user name")
		}
	}
	if !identifierRE.MatchString(c.MetaSchema) {
		ps.add("meta_schema", "%q is not allowed; allowed 1-64 characters of A-Z, a-z, 0-9, '_' and '$'", c.MetaSchema)
	}
	if !identifierRE.MatchString(c.VersionColumn) {
		ps.add("version_column", "%q is not allowed; allowed 1-64 characters of A-Z, a-z, 0-9, '_' and '$'", c.VersionColumn)
	}
	tenants := map[string]int{}
	for i, t := range c.Tenants {
		f := fmt.Sprintf("tenants[%d]", i)
		if j, dup := tenants[t.Name]; dup {
			ps.add(f+".name", "%q is also tenants[%d]; allowed: distinct names", t.Name, j)
		}
		tenants[t.Name] = i
		if len(t.Name) > 255 {
			ps.add(f+".name", "longer than 255 bytes; allowed: at most 255")
		}
		if _, ok := c.SLOs.Classes[t.Class]; t.Class != "" && t.Class != "default" && !ok {
			ps.add(f+".class", "%q is not a class in slos.classes; allowed: %s", t.Class, strings.Join(c.classNames(), ", "))
		}
	}
	p := c.Probe
	if p.Rate <= 0 || p.Rate > 1000 {
		ps.add("probe.rate", "%v is out of range; allowed 0 < rate <= 1000 per second", p.Rate)
	}
	checkDur(&ps, "probe.poll_interval", p.PollInterval, time.Millisecond, 10*time.Second)
	checkDur(&ps, "probe.write_timeout", p.WriteTimeout, 10*time.Millisecond, time.Minute)
	checkDur(&ps, "probe.heartbeat_interval", p.HeartbeatInterval, 0, time.Minute)
	checkDur(&ps, "probe.drain", p.Drain, 0, time.Hour)
	k := c.Check
	for i, t := range k.Tables {
		if msg := checkTablePattern(t); msg != "" {
			ps.add(fmt.Sprintf("check.tables[%d]", i), "%s", msg)
		}
	}
	checkDur(&ps, "check.chunk_time", k.ChunkTime, time.Millisecond, time.Minute)
	checkInt(&ps, "check.chunk_rows", k.ChunkRows, 1, 10_000_000)
	checkInt(&ps, "check.max_chunk_rows", k.MaxChunkRows, max(k.ChunkRows, 1), 10_000_000)
	checkInt(&ps, "check.leaf_rows", k.LeafRows, 1, 100_000)
	checkInt(&ps, "check.retries", k.Retries, 0, 1000)
	checkDur(&ps, "check.retry_delay", k.RetryDelay, 0, 10*time.Minute)
	checkDur(&ps, "check.fence_timeout", k.FenceTimeout, time.Second, time.Hour)
	if (k.TenantColumn == "") != (k.Tenant == "") {
		ps.add("check.tenant_column", "tenant_column and tenant go together; allowed: both set or both empty")
	}
	if k.TenantColumn != "" && !identifierRE.MatchString(k.TenantColumn) {
		ps.add("check.tenant_column", "%q is not allowed; allowed 1-64 characters of A-Z, a-z, 0-9, '_' and '$'", k.TenantColumn)
	}
	c.SLOs.Default.check(&ps, "slos.default", true)
	for _, name := range c.classNames() {
		if name == "default" {
			continue
		}
		c.SLOs.Classes[name].check(&ps, "slos.classes."+name, false)
	}
	if c.Admin.Listen != "" {
		host, port, err := net.SplitHostPort(c.Admin.Listen)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 || host == "" {
			ps.add("admin.listen", "%q is not host:port; allowed e.g. \"127.0.0.1:9190\"", c.Admin.Listen)
		} else if c.Admin.Token == "" && !c.Admin.AllowNoToken {
			ps.add("admin.token", "required when admin.listen is set; allowed: a token (%s), or admin.allow_no_token: true on a loopback address", EnvAdminToken)
		} else if c.Admin.Token != "" && len(c.Admin.Token.Reveal()) < config.MinTokenLength {
			ps.add("admin.token", "shorter than %d characters; allowed: at least %d", config.MinTokenLength, config.MinTokenLength)
		}
	}
	if len(ps) > 0 {
		return &ConfigError{Problems: ps}
	}
	return nil
}

func (s SLO) check(ps *problems, f string, isDefault bool) {
	lo := time.Duration(0)
	if isDefault {
		lo = time.Millisecond
	}
	checkDur(ps, f+".lag_p99", s.LagP99, lo, time.Hour)
	checkDur(ps, f+".fault_lag", s.FaultLag, 0, time.Hour)
	checkDur(ps, f+".rpo_max_window", s.RPOMaxWindow, 0, 24*time.Hour)
	checkDur(ps, f+".rto_max", s.RTOMax, lo, 24*time.Hour)
	if s.RPOMaxWrites < 0 {
		ps.add(f+".rpo_max_writes", "%d is negative; allowed 0 (not checked) or more", s.RPOMaxWrites)
	}
	minN := 0
	if isDefault {
		minN = 1
	}
	checkInt(ps, f+".recovery_samples", s.RecoverySamples, minN, 10_000)
}

func (c *Config) classNames() []string {
	names := []string{"default"}
	for n := range c.SLOs.Classes {
		names = append(names, n)
	}
	slices.Sort(names[1:])
	return names
}

func checkDur(ps *problems, f string, d Duration, lo, hi time.Duration) {
	if v := d.Duration(); v < lo || v > hi {
		ps.add(f, "%s is out of range; allowed %s..%s", v, lo, hi)
	}
}

func checkInt(ps *problems, f string, v, lo, hi int) {
	if v < lo || v > hi {
		ps.add(f, "%d is out of range; allowed %d..%d", v, lo, hi)
	}
}

const tablePatternAllowed = `"schema.table" where either part may use the glob characters *, ? and [a-z]`

func checkTablePattern(p string) string {
	sp, tp, ok := strings.Cut(p, ".")
	switch {
	case !ok || sp == "" || tp == "" || strings.Contains(tp, "."):
		return fmt.Sprintf("%q is not allowed; allowed %s", p, tablePatternAllowed)
	case strings.ContainsAny(p, "/` \t\n"):
		return fmt.Sprintf("%q contains '/', '`' or white space; allowed %s", p, tablePatternAllowed)
	}
	for _, part := range []string{sp, tp} {
		if _, err := path.Match(part, ""); err != nil {
			return fmt.Sprintf("%q is not a valid glob (%v); allowed %s", p, err, tablePatternAllowed)
		}
	}
	return ""
}

// SLOFor returns the SLO of tenant: its class's, with zero fields taken
// from the default.
func (c *Config) SLOFor(tenant string) SLO {
	class := ""
	for _, t := range c.Tenants {
		if t.Name == tenant {
			class = t.Class
		}
	}
	return c.SLOs.Resolve(class)
}

// Resolve returns class's SLO with zero fields filled from the default,
// and FaultLag defaulted to LagP99.
func (s SLOs) Resolve(class string) SLO {
	out := s.Default
	if cl, ok := s.Classes[class]; ok && class != "" && class != "default" {
		if cl.LagP99 != 0 {
			out.LagP99 = cl.LagP99
		}
		if cl.FaultLag != 0 {
			out.FaultLag = cl.FaultLag
		}
		if cl.RPOMaxWrites != 0 {
			out.RPOMaxWrites = cl.RPOMaxWrites
		}
		if cl.RPOMaxWindow != 0 {
			out.RPOMaxWindow = cl.RPOMaxWindow
		}
		if cl.RTOMax != 0 {
			out.RTOMax = cl.RTOMax
		}
		if cl.RecoverySamples != 0 {
			out.RecoverySamples = cl.RecoverySamples
		}
	}
	if out.FaultLag == 0 {
		out.FaultLag = out.LagP99
	}
	return out
}

// ProbeTenants lists the tenants probe rows are written for.
func (c *Config) ProbeTenants() []string {
	if len(c.Tenants) == 0 {
		return []string{""}
	}
	out := make([]string, len(c.Tenants))
	for i, t := range c.Tenants {
		out[i] = t.Name
	}
	return out
}

// SiteByName returns the site named name.
func (c *Config) SiteByName(name string) (Site, bool) {
	for _, s := range c.Sites {
		if s.Name == name {
			return s, true
		}
	}
	return Site{}, false
}

// database is the site as pkg/config's Database, whose DSN fixes what
// byte-exact comparisons need (utf8mb4_bin, UTC, no interpolation, raw
// time values).
func (s Site) database() config.Database {
	d := config.Default().Database
	d.Host, d.Port, d.User, d.Password, d.Params = s.Host, s.Port, s.User, s.Password, s.Params
	d.ReadTimeout = config.Duration(5 * time.Minute)
	return d
}

// DSN is the site's go-sql-driver DSN. It holds the password: never log it.
func (s Site) DSN() string { return s.database().DSN() }

// Addr is host:port.
func (s Site) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Duration is a duration written with a unit ("25ms", "1s") in YAML and
// JSON. It parses like pkg/config's Duration (a bare number other than 0
// is refused: seconds or nanoseconds?) and also reads back from JSON, so
// run.json round-trips.
type Duration time.Duration

// Duration converts d.
func (d Duration) Duration() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a duration string; errors name the line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var cd config.Duration
	if err := cd.UnmarshalYAML(n); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(cd)
	return nil
}

// MarshalText writes d with a unit.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
