package config

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Environment variables that override the file (docs/configuration.md). An
// empty variable counts as unset.
const (
	EnvDatabaseHost         = "TANDEM_DATABASE_HOST"
	EnvDatabasePort         = "TANDEM_DATABASE_PORT"
	EnvDatabasePassword     = "TANDEM_DATABASE_PASSWORD"
	EnvDatabasePasswordFile = "TANDEM_DATABASE_PASSWORD_FILE"
	EnvKafkaBrokers         = "TANDEM_KAFKA_BROKERS"
	EnvAdminToken           = "TANDEM_ADMIN_TOKEN"
	EnvAdminTokenFile       = "TANDEM_ADMIN_TOKEN_FILE"
	EnvStateDir             = "TANDEM_STATE_DIR"
	EnvLogLevel             = "TANDEM_LOG_LEVEL"
)

const (
	// maxConfigBytes bounds the config file; a larger one is a mistake
	// (a log file passed by accident), not a configuration.
	maxConfigBytes = 1 << 20
	// maxSecretBytes bounds a secret file.
	maxSecretBytes = 64 << 10
)

// Load reads the YAML file at path and returns the configuration: defaults,
// then the file, then environment overrides read through env (os.Getenv in
// production; nil means none), then secret files, then Validate. The error
// lists every problem found, each with its field path and, where known, its
// line.
func Load(path string, env func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err) // *PathError names the file
	}
	return parse(path, data, env)
}

// Parse is Load for a file already in memory.
func Parse(data []byte, env func(string) string) (*Config, error) {
	return parse("", data, env)
}

func parse(source string, data []byte, env func(string) string) (*Config, error) {
	if len(data) > maxConfigBytes {
		return nil, problems{{Msg: fmt.Sprintf("the file is larger than %d bytes; allowed: a configuration file of at most 1 MiB", maxConfigBytes)}}.err(source)
	}
	if env == nil {
		env = func(string) string { return "" }
	}
	c := Default()
	d := newDecoder()
	if !d.document(data, reflect.ValueOf(c).Elem()) {
		return nil, d.ps.err(source)
	}
	ps := d.ps
	o := overrides{env: env, sources: map[string]string{}}
	o.apply(c)
	ps = append(ps, o.ps...)
	if c.Kafka.ClientID == "" && c.Site.Name != "" {
		c.Kafka.ClientID = "tandem-" + c.Site.Name
	}
	for _, p := range c.check() {
		if d.suppressed(p.Path) {
			continue
		}
		if src := o.source(p.Path); src != "" {
			p.Source = src
		} else {
			p.Line = d.lines[p.Path]
		}
		ps = append(ps, p)
	}
	// Read like the file: problems in line order, then those without a
	// line (missing fields, environment values).
	slices.SortStableFunc(ps, func(a, b *Problem) int {
		la, lb := a.Line, b.Line
		if la == 0 {
			la = math.MaxInt
		}
		if lb == 0 {
			lb = math.MaxInt
		}
		return cmp.Compare(la, lb)
	})
	if err := ps.err(source); err != nil {
		return nil, err
	}
	return c, nil
}

// suppressed reports whether path, or a field containing it, already
// failed to decode.
func (d *decoder) suppressed(path string) bool {
	for f := range d.failed {
		if path == f || strings.HasPrefix(path, f+".") || strings.HasPrefix(path, f+"[") {
			return true
		}
	}
	return false
}

// overrides applies the environment variables.
type overrides struct {
	env     func(string) string
	ps      problems
	sources map[string]string // field path → variable that set it
}

func (o *overrides) source(path string) string {
	for f, src := range o.sources {
		if path == f || strings.HasPrefix(path, f+".") || strings.HasPrefix(path, f+"[") {
			return src
		}
	}
	return ""
}

func (o *overrides) add(path, src, format string, args ...any) {
	o.ps = append(o.ps, &Problem{Path: path, Source: src, Msg: fmt.Sprintf(format, args...)})
}

func (o *overrides) apply(c *Config) {
	if v := o.env(EnvDatabaseHost); v != "" {
		c.Database.Host = v
		o.sources["database.host"] = EnvDatabaseHost
	}
	if v := o.env(EnvDatabasePort); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil {
			o.add("database.port", EnvDatabasePort, "%q is not a port number; allowed 1..65535", v)
		} else {
			c.Database.Port = port
			o.sources["database.port"] = EnvDatabasePort
		}
	}
	if v := o.env(EnvKafkaBrokers); v != "" {
		var brokers []string
		for b := range strings.SplitSeq(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		c.Kafka.Brokers = brokers
		o.sources["kafka.brokers"] = EnvKafkaBrokers
	}
	if v := o.env(EnvStateDir); v != "" {
		c.StateDir = v
		o.sources["state_dir"] = EnvStateDir
	}
	if v := o.env(EnvLogLevel); v != "" {
		c.Log.Level = v
		o.sources["log.level"] = EnvLogLevel
	}
	o.secret(&c.Database.Password, &c.Database.PasswordFile, "database.password", EnvDatabasePassword, EnvDatabasePasswordFile)
	o.secret(&c.Admin.Token, &c.Admin.TokenFile, "admin.token", EnvAdminToken, EnvAdminTokenFile)
	o.secret(&c.Tenants.Redis.Password, &c.Tenants.Redis.PasswordFile, "tenants.redis.password", EnvRedisPassword, EnvRedisPasswordFile)
	o.secret(&c.HA.Redis.Password, &c.HA.Redis.PasswordFile, "ha.redis.password", EnvHARedisPassword, EnvHARedisPasswordFile)
	o.secret(&c.Kafka.SASL.Password, &c.Kafka.SASL.PasswordFile, "kafka.sasl.password", EnvKafkaSASLPassword, EnvKafkaSASLPasswordFile)
}

// secret resolves one secret. The environment beats the file; within each,
// giving both the value and a file is refused rather than guessed.
func (o *overrides) secret(value *Secret, file *string, path, envName, envFile string) {
	filePath := path + "_file"
	if *value != "" && *file != "" {
		o.add(filePath, "", "both %s and %s are set; allowed: one of them", path, filePath)
		return
	}
	ev, ef := o.env(envName), o.env(envFile)
	switch {
	case ev != "" && ef != "":
		o.add(path, envName, "both %s and %s are set; allowed: one of them", envName, envFile)
	case ev != "":
		*value, *file = Secret(ev), ""
		o.sources[path] = envName
	case ef != "":
		s, err := readSecretFile(ef)
		if err != nil {
			o.add(filePath, envFile, "%v", err)
			return
		}
		*value, *file = s, ef
		o.sources[path] = envFile
	case *file != "":
		s, err := readSecretFile(*file)
		if err != nil {
			o.add(filePath, "", "%v", err)
			return
		}
		*value = s
	}
}

// SecretFile reads a secret from a file the way password_file and the
// *_FILE variables are read (a regular file, trailing newline trimmed).
func SecretFile(path string) (Secret, error) { return readSecretFile(path) }

// readSecretFile reads a secret from a regular file (a Kubernetes secret
// mount is a symlink to one), without the trailing newline editors add.
func readSecretFile(path string) (Secret, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		// A FIFO or device would block or never end.
		return "", fmt.Errorf("%s is not a regular file; allowed: a file holding only the secret", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxSecretBytes {
		return "", fmt.Errorf("%s is larger than %d bytes; allowed: a file holding only the secret", path, maxSecretBytes)
	}
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty; allowed: a file holding only the secret", path)
	}
	return Secret(s), nil
}
