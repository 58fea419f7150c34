#!/usr/bin/env bash
# Redshift write paths benchmark: inline statements against S3 staging + COPY, for
# backfills of 10k, 100k and 1M occurrences, through the Data API and S3 stand-ins (the
# statements run on a throwaway PostgreSQL). Prints a table per 10k rows: Data API calls,
# statements, status polls, bytes sent, S3 requests, COPYs, and the time modelled for the
# stated per-call latencies (docs/redshift.md, "Choosing the path").
# Usage: scripts/bench-redshift.sh [ROWS,ROWS,..]   (default 10000,100000,1000000)
#        PROFILE=dev scripts/bench-redshift.sh       (skip the release build: the counts
#                                                     are the same, only wall time differs)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${1:-10000,100000,1000000}"
PROFILE="${PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/postgres.sh

echo "==> building the benchmark ($PROFILE profile, without the embedded DuckDB)"
cargo build --quiet --profile "$PROFILE" --no-default-features --example bench_redshift
DIR="$PROFILE"; [ "$PROFILE" = dev ] && DIR=debug
start_throwaway_postgres
trap stop_throwaway_postgres EXIT
echo "==> $SIZES rows, batches of 1000 (the sync's default)"
"$CARGO_TARGET_DIR/$DIR/examples/bench_redshift" "$SIZES"
