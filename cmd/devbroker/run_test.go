package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
		check   func(config) bool
	}{
		{args: nil, check: func(c config) bool {
			return c.listen == "127.0.0.1:0" && c.partitions == 1 && c.autoCreate && len(c.topics) == 0 && c.dataDir == "" && !c.noFsync
		}},
		{args: []string{"-fsync=false"}, check: func(c config) bool { return c.noFsync }},
		{args: []string{"-topics", "a, b:3", "-partitions", "2"}, check: func(c config) bool {
			return c.topics["a"] == 2 && c.topics["b"] == 3
		}},
		{args: []string{"-auto-create=false"}, check: func(c config) bool { return !c.autoCreate }},
		{args: []string{"-data-dir", "/var/tmp/b"}, check: func(c config) bool { return c.dataDir == "/var/tmp/b" }},
		{args: []string{"-listen", "9092"}, wantErr: "want host:port"},
		{args: []string{"-partitions", "0"}, wantErr: "at least 1"},
		{args: []string{"-topics", "a:x"}, wantErr: "positive integer"},
		{args: []string{"-topics", ":3"}, wantErr: "empty topic name"},
		{args: []string{"-log-level", "loud"}, wantErr: "want none, error"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
		{args: []string{"-tls-cert", "c.pem"}, wantErr: "-tls-cert and -tls-key go together"},
		{args: []string{"-tls-client-ca", "ca.pem"}, wantErr: "-tls-client-ca needs -tls-cert"},
		{args: []string{"-sasl-mechanism", "GSSAPI"}, wantErr: "want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"},
		{args: []string{"-sasl-mechanism", "PLAIN", "-sasl-user", "u"}, wantErr: "needs -sasl-user and -sasl-password-file"},
		{args: []string{"-sasl-user", "u"}, wantErr: "need -sasl-mechanism"},
		{args: []string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-data-dir", "/var/tmp/b"}, wantErr: "only without -data-dir"},
		{args: []string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-client-ca", "ca.pem"}, check: func(c config) bool {
			return c.tlsCert == "c.pem" && c.tlsKey == "k.pem" && c.tlsClientCA == "ca.pem"
		}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cfg, err := parseFlags(tt.args, new(bytes.Buffer))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Fatalf("unexpected config %+v", cfg)
			}
		})
	}
}

func TestRunBadFlagsExitsTwo(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"-partitions", "-1"}, &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
	}
}

func TestRunServesAndStops(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg     sync.WaitGroup
		code   int
		stderr bytes.Buffer // written by run only; read after wg.Wait
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		code = run(ctx, []string{"-ready-file", ready, "-topics", "seeded:3", "-log-level", "none"}, &stderr)
	}()

	var addr string
	testenv.WaitFor(t, 10*time.Second, "the ready file", func() bool {
		data, err := os.ReadFile(ready)
		addr = strings.TrimSpace(string(data))
		return err == nil
	})
	conn, err := kafka.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions("seeded")
	conn.Close()
	if err != nil || len(parts) != 3 {
		t.Fatalf("seeded topic: %d partitions, err %v; want 3", len(parts), err)
	}

	cancel()
	wg.Wait()
	if code != 0 {
		t.Fatalf("exit code %d, want 0; stderr: %s", code, stderr.String())
	}
	if _, err := os.Stat(ready); !os.IsNotExist(err) {
		t.Fatalf("ready file still there after shutdown (stat: %v)", err)
	}
}
