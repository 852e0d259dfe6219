// Command devbroker runs a single-node broker that speaks the Kafka wire
// protocol (github.com/twmb/franz-go/pkg/kfake). It exists for integration
// tests (internal/testenv) and `make demo` only: production runs on a real
// Kafka cluster, and nothing in the product depends on this broker.
//
// kfake keeps its log in memory. Without -data-dir a killed or stopped
// broker loses every topic and record. With -data-dir it is durable like a
// real broker: every request that changes state (CreateTopics,
// CreatePartitions, DeleteTopics, DeleteRecords, AlterConfigs,
// IncrementalAlterConfigs, Produce, and metadata requests that auto-create
// topics) is appended to DIR/journal before kfake applies it, a response
// reaches the client only once the journal is fsynced (so acks=all means
// on disk), and on start the journal is replayed into kfake before any
// client connection is accepted: every partition comes back with the same
// records at the same offsets. A torn last write is dropped. Not kept:
// consumer-group state and committed offsets, topic IDs (new ones on every
// start), and LogAppendTime timestamps; idempotent producers get producer
// IDs from devbroker and their retries are not deduplicated.
//
// Usage:
//
//	devbroker [-listen 127.0.0.1:0] [-partitions 1] [-auto-create=true]
//	          [-topics a,b:3] [-ready-file PATH] [-log-level warn]
//	          [-data-dir DIR]
//	          [-tls-cert FILE -tls-key FILE [-tls-client-ca FILE]]
//	          [-sasl-mechanism M -sasl-user U -sasl-password-file FILE]
//
// The -tls-* and -sasl-* flags make an in-memory broker require TLS (and
// client certificates) and SASL (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, one
// superuser), like a Kafka SASL_SSL listener, so that Tandem's kafka.tls and
// kafka.sasl settings are tested against the real protocol.
//
// Once listening (and, with -data-dir, done replaying), the bound address is
// logged on stderr and, with -ready-file, written atomically to PATH so
// callers can wait for the file instead of sleeping. SIGINT or SIGTERM stops
// the broker and exits 0.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
