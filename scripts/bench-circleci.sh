#!/usr/bin/env bash
# CircleCI request budget: a simulated project with N pipelines a day (default 100) synced
# every CADENCE (default 1m and 5m) for two simulated days into a throwaway PostgreSQL;
# prints the second day's requests (per day, per minute, per run, by kind). The look-back
# and sweep follow CIRCLECI_LOOKBACK, CIRCLECI_SWEEP_WINDOW and CIRCLECI_SWEEP_INTERVAL.
# Usage: scripts/bench-circleci.sh [pipelines-per-day] [cadence...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/postgres.sh
cargo build --quiet -p heimdallr-circleci --example requests_per_day
start_throwaway_postgres
"$CARGO_TARGET_DIR/debug/examples/requests_per_day" "$@"
