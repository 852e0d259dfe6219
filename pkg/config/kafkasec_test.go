package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestKafkaSecurity(t *testing.T) {
	dir := t.TempDir()
	files, err := testenv.WriteTLSFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	withKafka := func(section string) string {
		return strings.Replace(minimalYAML, `kafka: {brokers: ["127.0.0.1:9092"]}`, "kafka:\n  brokers: [\"127.0.0.1:9092\"]\n"+section, 1)
	}

	good := withKafka("  tls: {enabled: true, ca_file: " + files.CA + ", cert_file: " + files.Cert + ", key_file: " + files.Key + ", server_name: localhost}\n" +
		"  sasl: {mechanism: SCRAM-SHA-512, username: tandem}\n")
	c, err := Parse([]byte(good), envMap(map[string]string{EnvKafkaSASLPassword: "kafka-s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.SASL.Password.Reveal() != "kafka-s3cret" || !c.Kafka.SASL.Enabled() {
		t.Fatalf("sasl %+v", c.Kafka.SASL)
	}
	tc, err := c.Kafka.TLSConfig()
	if err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "localhost" {
		t.Fatalf("TLSConfig = %+v, %v", tc, err)
	}
	if strings.Contains(c.Redacted().Kafka.SASL.Password.Reveal(), "kafka-s3cret") {
		t.Fatal("Redacted keeps the Kafka password")
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Parse([]byte(withKafka("  sasl: {mechanism: SCRAM-SHA-256, username: u}\n")), envMap(map[string]string{EnvKafkaSASLPasswordFile: pwFile}))
	if err != nil || c.Kafka.SASL.Password.Reveal() != "from-file" {
		t.Fatalf("password from %s: %v", EnvKafkaSASLPasswordFile, err)
	}
	if c, err = Parse([]byte(minimalYAML), noEnv); err != nil {
		t.Fatal(err)
	}
	if tc, err := c.Kafka.TLSConfig(); tc != nil || err != nil {
		t.Fatalf("TLSConfig without kafka.tls = %v, %v; want nil, nil", tc, err)
	}

	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name, section string
		env           map[string]string
		want          []string
	}{
		{"unknown mechanism", "  sasl: {mechanism: GSSAPI, username: u, password: p}\n", nil,
			[]string{`kafka.sasl.mechanism: "GSSAPI" is not allowed; allowed PLAIN, SCRAM-SHA-256, SCRAM-SHA-512`}},
		{"lower-case mechanism", "  sasl: {mechanism: scram-sha-512, username: u, password: p}\n", nil,
			[]string{`kafka.sasl.mechanism: "scram-sha-512" is not allowed`}},
		{"no username or password", "  sasl: {mechanism: SCRAM-SHA-256}\n", nil,
			[]string{"kafka.sasl.username: required with kafka.sasl.mechanism", "kafka.sasl.password: required with kafka.sasl.mechanism; allowed TANDEM_KAFKA_SASL_PASSWORD"}},
		{"user without mechanism", "  sasl: {username: u}\n", nil,
			[]string{"kafka.sasl.mechanism: is empty while kafka.sasl.username or password is set"}},
		{"password without mechanism", "", map[string]string{EnvKafkaSASLPassword: "p"},
			[]string{"kafka.sasl.mechanism: is empty"}},
		{"PLAIN in clear text", "  sasl: {mechanism: PLAIN, username: u, password: p}\n", nil,
			[]string{"kafka.sasl.mechanism: PLAIN sends the password in clear text, and kafka.tls is not enabled"}},
		{"tls fields while disabled", "  tls: {ca_file: " + files.CA + "}\n", nil,
			[]string{"kafka.tls.enabled: is false while other kafka.tls fields are set"}},
		{"cert without key", "  tls: {enabled: true, cert_file: " + files.Cert + "}\n", nil,
			[]string{"kafka.tls.cert_file: cert_file and key_file go together"}},
		{"missing CA file", "  tls: {enabled: true, ca_file: " + filepath.Join(dir, "nope.pem") + "}\n", nil,
			[]string{"kafka.tls.ca_file: open " + filepath.Join(dir, "nope.pem") + ": no such file or directory"}},
		{"CA file not PEM", "  tls: {enabled: true, ca_file: " + notPEM + "}\n", nil,
			[]string{"kafka.tls.ca_file: " + notPEM + " holds no PEM certificate"}},
		{"key does not match", "  tls: {enabled: true, cert_file: " + files.Cert + ", key_file: " + notPEM + "}\n", nil,
			[]string{"kafka.tls.cert_file: " + files.Cert + " with key " + notPEM + ": tls: failed to find any PEM data in key input"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(withKafka(tt.section)), envMap(tt.env))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "kafka-s3cret") {
				t.Errorf("error shows the password:\n%v", err)
			}
		})
	}
}
