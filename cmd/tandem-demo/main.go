// Command tandem-demo runs `make demo`: two local sites (two MariaDB
// servers with binlogs), Redis, a Kafka-protocol broker, a replicator per
// site both ways, a conflicting workload at both sites, and the verdict.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandemdb/tandem/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := demo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
