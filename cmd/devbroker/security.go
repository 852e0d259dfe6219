package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// parseSecurity checks the -tls-* and -sasl-* flags and reads the password.
func (c *config) parseSecurity(passwordFile string) error {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return fmt.Errorf("-tls-cert and -tls-key go together")
	}
	if c.tlsClientCA != "" && c.tlsCert == "" {
		return fmt.Errorf("-tls-client-ca needs -tls-cert and -tls-key")
	}
	switch c.saslMechanism {
	case "":
		if c.saslUser != "" || passwordFile != "" {
			return fmt.Errorf("-sasl-user and -sasl-password-file need -sasl-mechanism")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.saslUser == "" || passwordFile == "" {
			return fmt.Errorf("-sasl-mechanism %s needs -sasl-user and -sasl-password-file", c.saslMechanism)
		}
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return fmt.Errorf("-sasl-password-file: %w", err)
		}
		if c.saslPassword = strings.TrimRight(string(b), "\r\n"); c.saslPassword == "" {
			return fmt.Errorf("-sasl-password-file %s is empty", passwordFile)
		}
	default:
		return fmt.Errorf("-sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.saslMechanism)
	}
	// The durable mode talks to kfake over an internal connection that
	// would have to pass the same TLS and SASL checks; tests of Tandem's
	// broker security do not need a durable broker.
	if c.dataDir != "" && (c.tlsCert != "" || c.saslMechanism != "") {
		return fmt.Errorf("-tls-cert and -sasl-mechanism work only without -data-dir (an in-memory broker)")
	}
	return nil
}

// securityOpts are the kfake options for the -tls-* and -sasl-* flags.
func (c *config) securityOpts() ([]kfake.Opt, error) {
	var opts []kfake.Opt
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if c.tlsClientCA != "" {
			pem, err := os.ReadFile(c.tlsClientCA)
			if err != nil {
				return nil, fmt.Errorf("-tls-client-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("-tls-client-ca %s holds no PEM certificate", c.tlsClientCA)
			}
			tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		opts = append(opts, kfake.TLS(tc))
	}
	if c.saslMechanism != "" {
		opts = append(opts, kfake.EnableSASL(), kfake.Superuser(c.saslMechanism, c.saslUser, c.saslPassword))
	}
	return opts, nil
}
