// Command replicator is Tandem's per-site daemon: it streams the local
// binlog to the site's Kafka topic and applies every other site's topic to
// the local database. See `replicator help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandemdb/tandem/internal/replicator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := replicator.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
