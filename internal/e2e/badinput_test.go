package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
	"github.com/tandemdb/tandem/pkg/pipeline"
)

// TestMalformedMessageParked: garbage in A's topic is parked at B (kept,
// logged, counted) and the data after it still replicates.
func TestMalformedMessageParked(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	broker := testenv.SharedBroker(t)
	c := oneWay(t, broker, testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.start(0)
	c.start(1)
	ctx := context.Background()
	if _, err := workload.Run(ctx, c.dbAt(0), workload.Options{DB: c.db, Seed: 1, Changes: 2000, Keys: 300}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(0, 1, time.Minute)

	// Produce two poison messages into A's topic, on every partition so the
	// one holding the data is hit too.
	topic := c.prefix + c.sites[0].name
	kc := pipeline.KafkaConfig{Brokers: []string{broker.Addr}}
	parts, err := pipeline.EnsureTopic(ctx, kc, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p := range parts {
		for _, v := range [][]byte{[]byte("not a tandem message"), {0x54, 0x44, 0x01, 0xff, 0xff}} {
			produceRaw(t, broker.Addr, topic, p, []byte("poison"), v)
		}
	}
	if _, err := workload.Run(ctx, c.dbAt(0), workload.Options{DB: c.db, Seed: 2, Changes: 2000, Keys: 300}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(0, 1, time.Minute)
	parked := c.meta + "._tandem_parked"
	testenv.WaitFor(t, 30*time.Second, "poison messages parked", func() bool { return c.count(1, parked) == 2*parts })
	var reason, msg string
	var payload []byte
	if err := c.dbAt(1).QueryRow("SELECT reason, error, payload FROM "+parked+" ORDER BY id LIMIT 1").Scan(&reason, &msg, &payload); err != nil {
		t.Fatal(err)
	}
	if reason != "decode" || string(payload) != "not a tandem message" || msg == "" {
		t.Fatalf("parked row: reason=%q error=%q payload=%q; want reason decode, the error, the original bytes", reason, msg, payload)
	}
	t.Logf("parked: %s", msg)
}

// runFails runs `replicator run` and expects it to exit non-zero quickly
// with every one of wants in its output.
func runFails(t *testing.T, bin, cfg string, wants ...string) {
	t.Helper()
	runFailsEnv(t, bin, cfg, nil, wants...)
}

// runFailsEnv is runFails with env added to the environment; it returns
// the output.
func runFailsEnv(t *testing.T, bin, cfg string, env []string, wants ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "--config", cfg)
	cmd.Env = append(append(os.Environ(), "TANDEM_ADMIN_TOKEN="+adminToken), env...)
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err == nil {
		t.Fatalf("replicator run succeeded; want a refusal. Output:\n%s", out)
	}
	if ctx.Err() != nil {
		t.Fatalf("replicator run did not stop within a minute; want an immediate refusal. Output:\n%s", tail(out, 3000))
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, tail(out, 3000))
		}
	}
	return out
}

// TestInvalidConfigNamesField: a bad config is refused before anything
// starts, naming the field and what is allowed.
func TestInvalidConfigNamesField(t *testing.T) {
	bin := testenv.BuildBinary(t, "./cmd/replicator")
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("site: {id: 0, name: A}\ndatabase: {user: root}\nreader: {server_id: 7}\nkafka: {brokers: [\"nohostport\"]}\nstate_dir: /tmp/x\nbogus: 1\n"), 0o600)
	runFails(t, bin, cfg, "site.id", "site.name", "kafka.brokers[0]", "bogus")
}

// TestRefusesMisconfiguredSource: a source with binlog_format=STATEMENT, or
// without full row metadata, is refused at start with the fix spelled out.
func TestRefusesMisconfiguredSource(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	for _, tc := range []struct {
		name  string
		opt   testenv.MariaDBOptions
		wants []string
	}{
		{"statement", testenv.MariaDBOptions{Site: 1, BinlogFormat: "STATEMENT"}, []string{"binlog_format", "ROW"}},
		{"minimal-metadata", testenv.MariaDBOptions{Site: 1, RowMetadata: "MINIMAL"}, []string{"binlog_row_metadata", "FULL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.NewMariaDB(t, tc.opt)
			c := newCluster(t, testenv.SharedBroker(t), srv)
			c.writeConfigs("")
			runFails(t, c.bin, c.sites[0].cfg, tc.wants...)
		})
	}
}

// TestPurgedCheckpointStops: when the binlog holding the reader's
// checkpoint was purged, the replicator stops with an explicit message
// instead of silently skipping.
func TestPurgedCheckpointStops(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	srv := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 1})
	c := newCluster(t, testenv.SharedBroker(t), srv)
	c.createTables()
	c.writeConfigs("")
	c.prepare()
	c.start(0)
	c.stop(0)
	ctx := context.Background()
	if _, err := workload.Run(ctx, c.dbAt(0), workload.Options{DB: c.db, Seed: 3, Changes: 500}); err != nil {
		t.Fatal(err)
	}
	db := c.dbAt(0)
	if _, err := db.Exec("FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	var file string
	var pos int64
	var x1, x2 any
	if err := db.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &x1, &x2); err != nil {
		t.Fatal(err)
	}
	// MariaDB keeps binlogs InnoDB may still need for crash recovery and
	// says so only in a warning: purge until the old files are gone.
	testenv.WaitFor(t, 30*time.Second, "old binlogs purged", func() bool {
		if _, err := db.Exec("PURGE BINARY LOGS TO '" + file + "'"); err != nil {
			t.Fatal(err)
		}
		var first string
		var size any
		if err := db.QueryRow("SHOW BINARY LOGS").Scan(&first, &size); err != nil {
			t.Fatal(err)
		}
		return first == file
	})
	runFails(t, c.bin, c.sites[0].cfg, "no longer in the source's binary logs", "checkpoint")
}
