#!/usr/bin/env bash
# Rollbar sync benchmark: N occurrences (default 100000) served by the fake Rollbar API on
# loopback, synced into a throwaway PostgreSQL. Prints:
#   - the raw fetch rate of the same pages (no parsing, no writing),
#   - the sync's rows/s and peak RSS,
#   - PostgreSQL's binary COPY rate for the same rows,
# and checks them against the targets: sync >= 70% of min(fetch, COPY), RSS <= 64 MB.
# Usage: scripts/bench-rollbar.sh [occurrences]
#   LIMIT=page size (default 1000, the sync's), BATCH_ROWS=rows per transaction (default 1000,
#   the sync's), RUNS=rounds of measurement (default 3; medians are compared)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
LIMIT="${LIMIT:-1000}"
BATCH_ROWS="${BATCH_ROWS:-1000}"
RUNS="${RUNS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/bench.sh
bench_start

echo "==> generating $N occurrences in the fake Rollbar API"
"$BIN/fake-apis" "$N" 200 > "$WORK/fake.out" &
BENCH_PIDS+=($!)
API_URL="$(stand_in_value "$WORK/fake.out" ROLLBAR_API_URL)"

# Each figure is measured RUNS times (default 3), in rounds of fetch, sync, COPY, and the
# median is compared: on a small shared machine one run moves by 10-20%.
psql_bench() { psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" "$@"; }
: > "$WORK/rounds"
for round in $(seq 1 "$RUNS"); do
  echo "==> round $round of $RUNS: raw fetch (page size $LIMIT)"
  FETCH="$("$BIN/rollbar-raw-fetch" "$API_URL" fake-token "$LIMIT")"
  FETCH_SECONDS="$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$FETCH")"
  FETCH_BYTES="$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$FETCH")"

  echo "==> round $round of $RUNS: sync into an empty PostgreSQL schema (batches of $BATCH_ROWS rows)"
  psql_bench -c "DROP SCHEMA IF EXISTS heimdallr CASCADE" >/dev/null 2>&1
  /usr/bin/time -f '%M %e %U %S' -o "$WORK/time" \
    env ROLLBAR_API_URL="$API_URL" ROLLBAR_ACCESS_TOKEN=fake-token RUST_LOG=warn \
    "$BIN/heimdallr" sync rollbar --once --warehouse "$HEIMDALLR_TEST_POSTGRES_URL" \
    --rollbar-page-limit "$LIMIT" --batch-rows "$BATCH_ROWS" > "$WORK/sync.out"
  read -r RSS_KB SYNC_SECONDS SYNC_USER SYNC_SYS < "$WORK/time"
  STORED="$(psql_bench -c 'SELECT COUNT(*) FROM heimdallr.rollbar_occurrences')"

  echo "==> round $round of $RUNS: binary COPY of the same rows"
  psql_bench -c "COPY heimdallr.rollbar_occurrences TO '$PG_DIR/rows.bin' (FORMAT binary)"
  psql_bench -c "CREATE TABLE heimdallr.copy_bench (LIKE heimdallr.rollbar_occurrences INCLUDING ALL)"
  COPY_START="$(date +%s.%N)"
  # With the session settings the sync uses (lz4 for the documents), so that both pay the same.
  PGOPTIONS="-c default_toast_compression=lz4" \
    psql_bench -c "COPY heimdallr.copy_bench FROM '$PG_DIR/rows.bin' (FORMAT binary)" >/dev/null
  COPY_END="$(date +%s.%N)"
  echo "$STORED $FETCH_SECONDS $FETCH_BYTES $SYNC_SECONDS $RSS_KB $COPY_START $COPY_END $SYNC_USER $SYNC_SYS" >> "$WORK/rounds"
done

python3 - "$N" "$WORK/rounds" <<'PY'
import statistics, sys
n = int(sys.argv[1])
rounds = [line.split() for line in open(sys.argv[2]) if line.strip()]
fetch, sync, copy, cpu, rss, bytes_per_s = [], [], [], [], [], []
for stored, fetch_s, fetch_bytes, sync_s, rss_kb, copy_start, copy_end, user_s, sys_s in rounds:
    if int(stored) != n:
        sys.exit(f"stored {stored} of {n} occurrences")
    fetch.append(n / float(fetch_s))
    bytes_per_s.append(int(fetch_bytes) / float(fetch_s))
    sync.append(n / float(sync_s))
    copy.append(n / (float(copy_end) - float(copy_start)))
    cpu.append(float(user_s) + float(sys_s))
    rss.append(int(rss_kb) / 1024)
med = statistics.median
def spread(values):
    return f"(runs: {', '.join(f'{v:.0f}' for v in values)})"
fetch_rate, sync_rate, copy_rate = med(fetch), med(sync), med(copy)
floor = 0.7 * min(fetch_rate, copy_rate)
rss_mb = max(rss)
print()
print(f"occurrences            {n}, {len(rounds)} rounds, medians compared")
print(f"raw fetch              {fetch_rate:10.0f} rows/s  ({med(bytes_per_s) / 1e6:.1f} MB/s, {int(rounds[0][2]) / n:.0f} bytes/row) {spread(fetch)}")
print(f"PostgreSQL COPY        {copy_rate:10.0f} rows/s  {spread(copy)}")
print(f"sync                   {sync_rate:10.0f} rows/s  ({med(cpu):.1f} s CPU in the sync process) {spread(sync)}")
print(f"sync / min(fetch,COPY) {sync_rate / min(fetch_rate, copy_rate):10.0%}   target >= 70%  {'ok' if sync_rate >= floor else 'MISSED'}")
print(f"sync peak RSS          {rss_mb:10.1f} MB      target <= 64 MB {'ok' if rss_mb <= 64 else 'MISSED'} (highest of the runs)")
PY
