#!/usr/bin/env bash
# Redshift Data API benchmark: `heimdallr sync rollbar` of N occurrences (default 20000)
# from the fake Rollbar API into the Data API stand-in (statements run on a throwaway
# PostgreSQL). Prints Data API calls and statements per 10k rows, bytes per statement
# (against the 100 KB limit) and wall time per batch.
# Usage: scripts/bench-redshift.sh [occurrences]   (BATCH_ROWS=rows per transaction, default 1000 as the sync's)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20000}"
BATCH_ROWS="${BATCH_ROWS:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/bench.sh
bench_start

"$BIN/fake-apis" "$N" 200 > "$WORK/fake.out" & BENCH_PIDS+=($!)
"$BIN/redshift-data-standin" "$HEIMDALLR_TEST_POSTGRES_URL" > "$WORK/standin.out" & STANDIN=$!
API_URL="$(stand_in_value "$WORK/fake.out" ROLLBAR_API_URL)"
ENDPOINT="$(stand_in_value "$WORK/standin.out" AWS_ENDPOINT_URL_REDSHIFT_DATA)"

echo "==> sync of $N occurrences into redshift-data:// (the stand-in), batches of $BATCH_ROWS rows"
START="$(date +%s.%N)"
env ROLLBAR_API_URL="$API_URL" ROLLBAR_ACCESS_TOKEN=fake-token RUST_LOG=warn \
  AWS_ENDPOINT_URL_REDSHIFT_DATA="$ENDPOINT" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
  "$BIN/heimdallr" sync rollbar --once --batch-rows "$BATCH_ROWS" \
  --warehouse "redshift-data://bench@cluster/bench/postgres" > "$WORK/sync.out"
END="$(date +%s.%N)"
kill -INT "$STANDIN"
wait "$STANDIN" || true
STORED="$(psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" -c 'SELECT COUNT(*) FROM heimdallr.rollbar_occurrences')"
ITEMS="$(psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" -c 'SELECT COUNT(*) FROM heimdallr.rollbar_items')"

python3 - "$N" "$STORED" "$ITEMS" "$START" "$END" "$(sed -n 's/^STATS=//p' "$WORK/standin.out")" <<'PY'
import json, statistics, sys
n, stored, items, start, end, stats = sys.argv[1:]
n, stored, items = int(n), int(stored), int(items)
stats = json.loads(stats)
rows = stored + items
per10k = lambda x: x * 10000 / rows
calls = stats["calls"]
total_calls = sum(calls.values())
sizes, nbytes, millis = stats["batch_sizes"], stats["statement_bytes"], sorted(stats["batch_millis"])
inserts = [b for b in nbytes if b > 2000]
limit = 100_000
print()
print(f"rows written           {rows} ({stored} occurrences, {items} items) in {float(end) - float(start):.1f} s")
print(f"Data API calls         {total_calls} = " + ", ".join(f"{k} {v}" for k, v in sorted(calls.items())))
print(f"  per 10k rows         {per10k(total_calls):8.1f} calls, {per10k(calls.get('BatchExecuteStatement', 0)):.1f} batches, {per10k(sum(sizes)):.1f} statements")
print(f"statements per batch   mean {statistics.mean(sizes):.1f}, max {max(sizes)} (limit 40)")
print(f"bytes per statement    all: mean {statistics.mean(nbytes):,.0f}, max {max(nbytes):,} ({max(nbytes) / limit:.0%} of 100 KB)")
if inserts:
    print(f"  multi-row inserts    {len(inserts)}: mean {statistics.mean(inserts):,.0f} ({statistics.mean(inserts) / limit:.0%} of 100 KB), min {min(inserts):,}")
print(f"wall per batch         median {statistics.median(millis):.0f} ms, p95 {millis[int(len(millis) * 0.95) - 1]:.0f} ms, max {max(millis)} ms ({len(millis)} batches)")
if stored != n:
    sys.exit(f"stored {stored} occurrences, expected {n}")
PY
