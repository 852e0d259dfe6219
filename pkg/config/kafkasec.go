package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"
)

// EnvKafkaSASLPassword and EnvKafkaSASLPasswordFile give the password of
// kafka.sasl.username.
const (
	EnvKafkaSASLPassword     = "TANDEM_KAFKA_SASL_PASSWORD"
	EnvKafkaSASLPasswordFile = "TANDEM_KAFKA_SASL_PASSWORD_FILE"
)

// SASL mechanisms, spelled as Kafka's sasl.mechanism spells them.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

var saslMechanisms = []string{SASLPlain, SASLScramSHA256, SASLScramSHA512}

// KafkaTLS encrypts the connections to the brokers (Kafka's SSL and
// SASL_SSL listeners) and, with a client certificate, authenticates Tandem
// to them (mutual TLS).
type KafkaTLS struct {
	Enabled bool `yaml:"enabled"`
	// CAFile holds the PEM certificates that sign the brokers'
	// certificates; empty trusts the system's roots.
	CAFile string `yaml:"ca_file,omitempty"`
	// CertFile and KeyFile are the PEM client certificate and its key,
	// both or neither.
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
	// ServerName is the name checked in the brokers' certificates; empty
	// checks the host of each broker address, as Kafka's
	// ssl.endpoint.identification.algorithm=https does.
	ServerName string `yaml:"server_name,omitempty"`
}

// KafkaSASL authenticates Tandem to the brokers (Kafka's SASL_PLAINTEXT and
// SASL_SSL listeners).
type KafkaSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no
	// SASL. PLAIN sends the password itself, so it needs kafka.tls.
	Mechanism string `yaml:"mechanism,omitempty"`
	Username  string `yaml:"username,omitempty"`
	// Password is best given by TANDEM_KAFKA_SASL_PASSWORD or a file.
	Password     Secret `yaml:"password,omitempty"`
	PasswordFile string `yaml:"password_file,omitempty"`
}

// Enabled reports whether SASL is configured.
func (s *KafkaSASL) Enabled() bool { return s.Mechanism != "" }

// TLSConfig returns the client TLS configuration for the brokers, or nil
// when kafka.tls is not enabled. Validate has already loaded it once, so an
// error here means a file changed since.
func (k *Kafka) TLSConfig() (*tls.Config, error) {
	cfg, field, err := k.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return cfg, nil
}

// tlsConfig is TLSConfig with the field an error is about kept apart.
func (k *Kafka) tlsConfig() (*tls.Config, string, error) {
	t := &k.TLS
	if !t.Enabled {
		return nil, "", nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, "kafka.tls.ca_file", err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "kafka.tls.ca_file", fmt.Errorf("%s holds no PEM certificate; allowed: a file of PEM \"CERTIFICATE\" blocks", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, "kafka.tls.cert_file", fmt.Errorf("%s with key %s: %w; allowed: a PEM certificate and its PEM private key", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, "", nil
}

func (k *Kafka) checkSecurity(ps *problems) {
	t := &k.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "") {
		ps.add("kafka.tls.enabled", "is false while other kafka.tls fields are set; allowed: enabled: true to use them, or remove them")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		ps.add("kafka.tls.cert_file", "cert_file and key_file go together; allowed: both (mutual TLS) or neither")
	}
	if t.Enabled && (t.CertFile == "") == (t.KeyFile == "") {
		// Load the files now, so that a wrong path or a bad PEM stops the
		// start with the field named rather than as a handshake error.
		if _, field, err := k.tlsConfig(); err != nil {
			ps.add(field, "%v", err)
		}
	}

	s := &k.SASL
	if s.Mechanism == "" {
		if s.Username != "" || s.Password != "" {
			ps.add("kafka.sasl.mechanism", "is empty while kafka.sasl.username or password is set; allowed %s", strings.Join(saslMechanisms, ", "))
		}
		return
	}
	if !slices.Contains(saslMechanisms, s.Mechanism) {
		ps.add("kafka.sasl.mechanism", "%q is not allowed; allowed %s (as Kafka's sasl.mechanism spells them), or empty for no SASL", s.Mechanism, strings.Join(saslMechanisms, ", "))
	}
	if s.Username == "" {
		ps.add("kafka.sasl.username", "required with kafka.sasl.mechanism")
	}
	if s.Password == "" {
		ps.add("kafka.sasl.password", "required with kafka.sasl.mechanism; allowed %s, %s or kafka.sasl.password_file", EnvKafkaSASLPassword, EnvKafkaSASLPasswordFile)
	}
	if s.Mechanism == SASLPlain && !t.Enabled {
		ps.add("kafka.sasl.mechanism", "PLAIN sends the password in clear text, and kafka.tls is not enabled; allowed: PLAIN with kafka.tls.enabled: true, or SCRAM-SHA-256/SCRAM-SHA-512")
	}
}
