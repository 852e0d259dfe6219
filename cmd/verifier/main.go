// Command verifier tells whether Tandem keeps its promise: it measures
// replication lag, RPO and RTO per direction and tenant against SLOs
// (probe, report) and checks that sites hold the same rows while they are
// being written (check). See `verifier help` and docs/verifier.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal stops gracefully (a probe drains and reports); a
	// second one, with the default behaviour restored, ends the process.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
