package replicator

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/hlc"
)

func TestMain(m *testing.M) { testenv.Main(m) } // shared test servers, then goleak

func TestWatermarkTextRoundTrip(t *testing.T) {
	wm := map[uint8]hlc.Timestamp{2: hlc.New(1700000000000, 3, 2), 1: hlc.New(1700000000123, 0, 1), 255: 1}
	text := watermarkText(wm)
	if !strings.HasPrefix(text, "1:") {
		t.Fatalf("not in origin order: %q", text)
	}
	got := parseWatermarks(text)
	if len(got) != len(wm) {
		t.Fatalf("parsed %v from %q, want %v", got, text, wm)
	}
	for k, v := range wm {
		if got[k] != v {
			t.Fatalf("origin %d: %v, want %v", k, got[k], v)
		}
	}
	// Malformed parts are skipped, not fatal: a newer peer's format must
	// not stop this one.
	if got := parseWatermarks("x,3:5,4:y,:1,300:1,5:7"); len(got) != 2 || got[3] != 5 || got[5] != 7 {
		t.Fatalf("lenient parse = %v", got)
	}
	if got := parseWatermarks(""); len(got) != 0 {
		t.Fatalf("empty parse = %v", got)
	}
}

func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	env := func(string) string { return "" }
	if code := Main(context.Background(), nil, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage") {
		t.Fatalf("no args: code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := Main(context.Background(), []string{"frobnicate"}, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := Main(context.Background(), []string{"run"}, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--config FILE is required") {
		t.Fatalf("run without config: code %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := Main(context.Background(), []string{"version"}, env, &out, &errb); code != 0 || !strings.Contains(out.String(), "tandem replicator") {
		t.Fatalf("version: code %d, stdout %q", code, out.String())
	}
}

// TestRunRejectsBadConfig: every problem is named, with its field.
func TestRunRejectsBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("site: {id: 1, name: a}\nkafka: {brokers: []}\n"), 0o600)
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"run", "--config", cfg}, func(string) string { return "" }, &out, &errb)
	if code != 1 {
		t.Fatalf("code %d, want 1; stderr %q", code, errb.String())
	}
	for _, want := range []string{"database.user", "reader.server_id", "kafka.brokers", "state_dir"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("error lacks %q:\n%s", want, errb.String())
		}
	}
}

// TestReconcileSpan: the first pass and one every reconcileFullEvery read
// the whole window; the others only the recent tombstones.
func TestReconcileSpan(t *testing.T) {
	const recent, window = 10_000, 120_000
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		lastFull, now time.Time
		span          uint64
		full          bool
	}{
		{time.Time{}, t0, window, true},
		{t0, t0.Add(time.Second), recent, false},
		{t0, t0.Add(reconcileFullEvery - time.Millisecond), recent, false},
		{t0, t0.Add(reconcileFullEvery), window, true},
	} {
		if span, full := reconcileSpan(recent, window, tc.lastFull, tc.now); span != tc.span || full != tc.full {
			t.Errorf("reconcileSpan(last full %v, now %v) = %d, %v; want %d, %v", tc.lastFull, tc.now, span, full, tc.span, tc.full)
		}
	}
}

// TestSeedRejectsBadArguments: each mistake is named before anything is
// connected to.
func TestSeedRejectsBadArguments(t *testing.T) {
	env := func(string) string { return "" }
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"seed", "--config", "../../configs/site-b.yaml"}, 2, "--from PEER and either --from-addr HOST:PORT"},
		{[]string{"seed", "--config", "../../configs/site-b.yaml", "--from", "nowhere", "--from-addr", "db:3306"}, 1,
			`--from "nowhere" is not one of this site's peers (allowed: site-a)`},
		{[]string{"seed", "--config", "../../configs/site-b.yaml", "--from", "site-a", "--from-addr", "db"}, 1,
			`--from-addr "db" is not host:port`},
		{[]string{"seed", "--config", "../../configs/site-b.yaml", "--from", "site-a", "--from-addr", "db:70000"}, 1,
			`--from-addr "db:70000" is not host:port`},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), tt.args, env, &out, &errb)
		if code != tt.code || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: code %d, stderr %q; want code %d and %q", tt.args[3:], code, errb.String(), tt.code, tt.want)
		}
	}
}

// TestConfigReachesPipeline: the kafka and sink settings reach the
// producer, the source's lanes and the appliers (they had been validated
// and then ignored).
func TestConfigReachesPipeline(t *testing.T) {
	base, err := os.ReadFile("../../configs/site-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(base), "  replication_factor: 1\n",
		"  replication_factor: 1\n  acks: one\n  client_id: tandem-test\n  batch_bytes: 2097152\n  linger: 3ms\n  max_in_flight: 2\n", 1)
	y += "sink: {linger: 7ms, workers: 3, max_batch_bytes: 4096}\n"
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kafkaConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !kc.AcksOne || kc.ClientID != "tandem-test" {
		t.Errorf("kafka: acks one %t, client id %q", kc.AcksOne, kc.ClientID)
	}
	sc := sourceConfig(cfg, nil, nil)
	if sc.MaxBatchBytes != 2097152 || sc.Linger != 3*time.Millisecond || sc.MaxInFlight != 2 {
		t.Errorf("source: %+v", sc)
	}
	ac := applierConfig(cfg, kc, cfg.Peers[0])
	if ac.Linger != 7*time.Millisecond || ac.Workers != 3 || ac.MaxBatchBytes != 4096 || ac.Topic != "tandem.site-b" {
		t.Errorf("applier: %+v", ac)
	}
}
