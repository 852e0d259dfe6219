// Command devbroker runs an in-memory, single-node broker that speaks the
// Kafka wire protocol (github.com/twmb/franz-go/pkg/kfake). It exists for
// integration tests (internal/testenv) and `make demo` only: production runs
// on a real Kafka cluster, and nothing in the product depends on this broker.
//
// The log lives in memory: a killed or stopped broker loses every topic and
// record. Callers that restart it must expect topics to be gone and recreate
// them (or rely on -auto-create).
//
// Usage:
//
//	devbroker [-listen 127.0.0.1:0] [-partitions 1] [-auto-create=true]
//	          [-topics a,b:3] [-ready-file PATH] [-log-level warn]
//
// Once listening, the bound address is logged on stderr and, with
// -ready-file, written atomically to PATH so callers can wait for the file
// instead of sleeping. SIGINT or SIGTERM stops the broker and exits 0.
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
