#!/usr/bin/env bash
# Lambda benchmark: builds the release bundles (scripts/build-functions.sh), prints each
# bootstrap's size and its cold start on this machine: the time from process start to the
# first scheduled event handled, against loopback stand-ins for the Lambda Runtime API,
# Secrets Manager and Rollbar, writing to a throwaway PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/postgres.sh

scripts/build-functions.sh
cargo build --release --quiet -p heimdallr-fakes --bin lambda-cold-start
start_throwaway_postgres
for bundle in dist/lambda/*/bootstrap; do
  echo "==> $bundle: $(stat -c %s "$bundle" | awk '{printf "%.1f MB", $1 / 1048576}')"
  "$CARGO_TARGET_DIR/release/lambda-cold-start" "$bundle" "$HEIMDALLR_TEST_POSTGRES_URL" 5
done
