#!/usr/bin/env bash
# The analyst views at company size: 10 million occurrences, 100 000 items, 500 000 people
# and an activity table of 50 million rows (SCALE=1; SCALE=0.1 for a quick look), in the
# DuckDB file (read with the DuckDB Python client, the engine analysts use; the command's
# debug build only migrates) and in a throwaway PostgreSQL. Prints the time of every view
# (all its rows), of fix_next as `heimdallr top` reads it, and of every worked query of
# docs/analysts.md. Figures: docs/testing.md.
# Usage: scripts/bench-views.sh   (SCALE=1, BACKENDS="duckdb postgres")
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-1}"
BACKENDS="${BACKENDS:-duckdb postgres}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/postgres.sh
source scripts/lib/python.sh
cargo build --quiet -p heimdallr --bin heimdallr
HEIMDALLR="$CARGO_TARGET_DIR/debug/heimdallr"
ensure_duckdb_clients
PYTHON="${HEIMDALLR_TEST_DUCKDB_PYTHONS##* }"
WORK="$(mktemp -d /tmp/heimdallr-views.XXXXXX)"
cleanup() { rm -rf "$WORK"; stop_throwaway_postgres 2>/dev/null || true; }
trap cleanup EXIT
# Defines the activity views. The command's debug build would compute the estimates in
# an unoptimised DuckDB: a fresh placeholder keeps them from being due, and the Python
# side then times the refresh (the same statements a sync runs) in the optimised engine.
migrate_with_activity() { # warehouse
  "$HEIMDALLR" migrate --warehouse "$1" --activity-table app.user_activity | sed 's/^/  /'
}
nproc_info="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "==> scale $SCALE on $nproc_info"
for backend in $BACKENDS; do
  case "$backend" in
    duckdb)
      where="$WORK/company.duckdb"
      "$HEIMDALLR" migrate --warehouse "$where" >/dev/null
      "$PYTHON" scripts/bench-views.py duckdb "$where" fill "$SCALE"
      migrate_with_activity "$where"
      "$PYTHON" scripts/bench-views.py duckdb "$where" time "$SCALE"
      echo "  file size: $(du -h "$where" | cut -f1)"
      ;;
    postgres)
      start_throwaway_postgres
      where="$HEIMDALLR_TEST_POSTGRES_URL"
      "$HEIMDALLR" migrate --warehouse "$where" >/dev/null
      "$PYTHON" scripts/bench-views.py postgres "$where" fill "$SCALE"
      migrate_with_activity "$where"
      "$PYTHON" scripts/bench-views.py postgres "$where" time "$SCALE"
      stop_throwaway_postgres
      ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
done
