#!/usr/bin/env bash
# make bench: end-to-end and package benchmarks on real servers, printed as
# a table. Figures depend on the machine and on what else runs on it; the
# README's numbers say which command and machine produced them.
#   BENCH_ROWS   backlog size for the catch-up benchmark (default 1000000)
#   BENCH_FILTER go test -bench regexp for the end-to-end package (default .)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== end-to-end benchmarks (real MariaDB x2, broker, replicator processes)"
go test -run '^$' -bench "${BENCH_FILTER:-.}" -benchtime 1x -timeout 60m ./internal/e2e/ | tee -a "$out"
echo
echo "== package benchmarks"
go test -run '^$' -bench . -benchtime 2s -timeout 20m ./pkg/event/ ./pkg/sink/ ./pkg/binlog/ | tee -a "$out"
go test -run '^$' -bench Triggers -benchtime 3000x ./pkg/schema/ | tee -a "$out"

echo
echo "== summary"
awk '
/^Benchmark/ {
	name=$1; sub(/-[0-9]+$/, "", name)
	line=""
	for (i = 3; i < NF; i += 2) line = line sprintf("%s %s  ", $i, $(i+1))
	printf "%-40s %s\n", name, line
}' "$out"
