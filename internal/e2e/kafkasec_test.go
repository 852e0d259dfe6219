package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// TestKafkaTLSAndSASL: two sites replicate both ways through a broker that
// accepts only TLS connections with a client certificate signed by its CA
// and SASL SCRAM-SHA-512 (Kafka's SASL_SSL with ssl.client.auth=required);
// the password reaches the replicators through
// TANDEM_KAFKA_SASL_PASSWORD_FILE. A replicator with a wrong password, an
// untrusted broker certificate, no client certificate or no security at all
// stops at start with an error that says which setting to look at.
func TestKafkaTLSAndSASL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dir := t.TempDir()
	files, err := testenv.WriteTLSFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	const user, password = "tandem", "kafka-e2e-secret-0123"
	broker := testenv.NewSecureBroker(t, testenv.BrokerSecurity{
		TLS: files, ClientCerts: true,
		SASLMechanism: "SCRAM-SHA-512", SASLUser: user, SASLPassword: password,
		Dialer: secureDialer(t, files, user, password),
	})
	pwFile := filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := newCluster(t, broker, testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.kafka = "  tls: {enabled: true, ca_file: " + files.CA + ", cert_file: " + files.Cert + ", key_file: " + files.Key + "}\n" +
		"  sasl: {mechanism: SCRAM-SHA-512, username: " + user + "}\n"
	for _, s := range c.sites {
		s.env = []string{"TANDEM_KAFKA_SASL_PASSWORD_FILE=" + pwFile}
	}
	c.createTables()
	c.writeConfigs("")
	c.prepare()
	c.start(0)
	c.start(1)
	ctx := context.Background()
	for i := range c.sites {
		if _, err := workload.Run(ctx, c.dbAt(i), workload.Options{DB: c.db, Seed: seed(t), Changes: 3000, Keys: 500}); err != nil {
			t.Fatal(err)
		}
	}
	res := c.waitConverged(0, 1, 2*time.Minute)
	rows := 0
	for _, n := range res.Rows {
		rows += n
	}
	if rows == 0 {
		t.Fatal("converged on no rows: nothing was replicated")
	}
	for _, s := range c.sites {
		log, _ := os.ReadFile(filepath.Join(s.dir, "replicator.log"))
		if strings.Contains(string(log), password) {
			t.Errorf("replicator %s logged the Kafka password", s.name)
		}
	}

	// Each refusal runs site s1's config with one thing changed.
	base, err := os.ReadFile(c.sites[0].cfg)
	if err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name     string
		edit     func(string) string
		password string
		wants    []string
	}{
		{"wrong password", nil, "not-the-password", []string{"SASL Authentication Failed", "kafka.sasl.username \"tandem\""}},
		{"untrusted broker certificate", func(y string) string { return strings.Replace(y, files.CA, files.OtherCA, 1) }, password,
			[]string{"certificate signed by unknown authority", "kafka.tls.ca_file"}},
		{"no client certificate", func(y string) string {
			return strings.Replace(y, ", cert_file: "+files.Cert+", key_file: "+files.Key, "", 1)
		}, password, []string{"tls: certificate required", "set kafka.tls.cert_file and kafka.tls.key_file"}},
		{"no TLS and no SASL", func(y string) string { return strings.Replace(y, c.kafka, "", 1) }, "",
			[]string{"the brokers closed the connection without an answer: their listener may require TLS (kafka.tls) or SASL (kafka.sasl)"}},
		{"TLS without SASL", func(y string) string {
			return strings.Replace(y, "  sasl: {mechanism: SCRAM-SHA-512, username: "+user+"}\n", "", 1)
		}, "", []string{"their listener may require SASL (kafka.sasl)"}},
		{"unknown mechanism at the broker", func(y string) string { return strings.Replace(y, "SCRAM-SHA-512", "SCRAM-SHA-256", 1) }, password,
			[]string{"SASL Authentication Failed"}},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			// Its own state directory: s1's is locked by s1.
			tmp := t.TempDir()
			y := strings.Replace(string(base), filepath.Join(c.sites[0].dir, "state"), filepath.Join(tmp, "state"), 1)
			if r.edit != nil {
				y = r.edit(y)
			}
			cfg := filepath.Join(tmp, "replicator.yaml")
			if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			var env []string
			if r.password != "" {
				env = []string{"TANDEM_KAFKA_SASL_PASSWORD=" + r.password}
			}
			out := runFailsEnv(t, c.bin, cfg, env, r.wants...)
			t.Logf("refused: %s", tail(strings.TrimSpace(out), 600))
			if r.password != "" && strings.Contains(out, r.password) {
				t.Errorf("output shows the password:\n%s", out)
			}
		})
	}
}

// secureDialer connects to the secure broker as the replicators do.
func secureDialer(t *testing.T, files testenv.TLSFiles, user, password string) *kafka.Dialer {
	t.Helper()
	pem, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	mech, err := scram.Mechanism(scram.SHA512, user, password)
	if err != nil {
		t.Fatal(err)
	}
	return &kafka.Dialer{
		Timeout:       2 * time.Second,
		TLS:           &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		SASLMechanism: mech,
	}
}
