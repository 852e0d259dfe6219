package binlog

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tandemdb/tandem/pkg/schema"
)

// Flavors the reader speaks.
const (
	FlavorMariaDB = "mariadb"
	FlavorMySQL   = "mysql"
)

// Defaults applied by Validate to zero fields.
const (
	DefaultMaxFragmentChanges = 1000
	DefaultMaxFragmentBytes   = 4 << 20
	DefaultReconnectMin       = 100 * time.Millisecond
	DefaultReconnectMax       = 10 * time.Second
)

// Config configures a Reader.
type Config struct {
	Host     string
	Port     int
	User     string
	Password string
	// Flavor is "mariadb" (default) or "mysql".
	Flavor string
	// ServerID is the replica id this reader registers with; it must differ
	// from the server_id of every real server in the topology, or the source
	// disconnects one of the two.
	ServerID uint32
	// Site is the origin site id stamped on every Txn (1..255).
	Site uint8
	// VersionColumn is the per-row version column (default
	// schema.DefaultVersionColumn).
	VersionColumn string
	// MetaSchema holds Tandem's bookkeeping tables (default
	// schema.DefaultMetaSchema).
	MetaSchema string
	// Include and Exclude are "schema.table" patterns where * matches any
	// run of characters ("shop.*", "*.audit_log"). An empty Include means
	// every table that is not excluded. Tandem's own tables follow fixed
	// rules whatever the patterns say.
	Include []string
	Exclude []string
	// MaxFragmentChanges and MaxFragmentBytes bound the changes held for
	// one transaction: a bigger transaction is emitted as numbered
	// fragments (defaults 1000 changes, 4 MiB of approximate value bytes).
	MaxFragmentChanges int
	MaxFragmentBytes   int
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts (defaults 100ms and 10s).
	ReconnectMin time.Duration
	ReconnectMax time.Duration
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Flavor == "" {
		c.Flavor = FlavorMariaDB
	}
	if c.VersionColumn == "" {
		c.VersionColumn = schema.DefaultVersionColumn
	}
	if c.MetaSchema == "" {
		c.MetaSchema = schema.DefaultMetaSchema
	}
	if c.MaxFragmentChanges == 0 {
		c.MaxFragmentChanges = DefaultMaxFragmentChanges
	}
	if c.MaxFragmentBytes == 0 {
		c.MaxFragmentBytes = DefaultMaxFragmentBytes
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	return c
}

// Validate fills in defaults for zero fields and reports every field that
// is wrong, naming it and the values it allows.
func (c *Config) Validate() error {
	*c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if c.Host == "" {
		bad("binlog: Host is empty; set the source server's host name or IP address")
	}
	if c.Port < 1 || c.Port > 65535 {
		bad("binlog: Port %d is out of range; allowed 1..65535", c.Port)
	}
	if c.User == "" {
		bad("binlog: User is empty; set a user with the REPLICATION SLAVE and REPLICATION CLIENT privileges")
	}
	if c.Flavor != FlavorMariaDB && c.Flavor != FlavorMySQL {
		bad("binlog: Flavor %q is not supported; allowed %q (default) or %q", c.Flavor, FlavorMariaDB, FlavorMySQL)
	}
	if c.ServerID == 0 {
		bad("binlog: ServerID is 0; set a replica id (1..4294967295) that no real server in the topology uses")
	}
	if c.Site == 0 {
		bad("binlog: Site is 0, which is reserved; allowed 1..255")
	}
	if strings.ContainsAny(c.VersionColumn, "`.") {
		bad("binlog: VersionColumn %q must be a plain column name (no dots or backquotes)", c.VersionColumn)
	}
	if strings.ContainsAny(c.MetaSchema, "`.") {
		bad("binlog: MetaSchema %q must be a plain schema name (no dots or backquotes)", c.MetaSchema)
	}
	for i, p := range c.Include {
		if err := validPattern(p); err != nil {
			bad("binlog: Include[%d]: %w", i, err)
		}
	}
	for i, p := range c.Exclude {
		if err := validPattern(p); err != nil {
			bad("binlog: Exclude[%d]: %w", i, err)
		}
	}
	if c.MaxFragmentChanges < 1 {
		bad("binlog: MaxFragmentChanges %d must be at least 1 (default %d)", c.MaxFragmentChanges, DefaultMaxFragmentChanges)
	}
	if c.MaxFragmentBytes < 1 {
		bad("binlog: MaxFragmentBytes %d must be at least 1 (default %d)", c.MaxFragmentBytes, DefaultMaxFragmentBytes)
	}
	if c.ReconnectMin < 0 {
		bad("binlog: ReconnectMin %s is negative (default %s)", c.ReconnectMin, DefaultReconnectMin)
	}
	if c.ReconnectMax < c.ReconnectMin {
		bad("binlog: ReconnectMax %s is below ReconnectMin %s", c.ReconnectMax, c.ReconnectMin)
	}
	return errors.Join(errs...)
}
