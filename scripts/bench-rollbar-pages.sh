#!/usr/bin/env bash
# Rollbar page size against a real round trip: N occurrences (default 20000) served by the
# fake Rollbar API with every answer delayed LATENCY_MS (default 150, as over the internet),
# synced into a throwaway PostgreSQL at each page size. Prints rows/s, pages, wall time and
# peak RSS per page size, and checks peak RSS <= 64 MB at every size the API allows.
# Usage: scripts/bench-rollbar-pages.sh [occurrences] [page sizes...]
#   LATENCY_MS=delay per answer (default 150), BATCH_ROWS=rows per transaction (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20000}"
shift || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100 300 1000 2000 5000)
LATENCY_MS="${LATENCY_MS:-150}"
BATCH_ROWS="${BATCH_ROWS:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/bench.sh
bench_start

echo "==> $N occurrences in the fake Rollbar API, every answer delayed ${LATENCY_MS} ms"
"$BIN/fake-apis" "$N" 200 "$LATENCY_MS" > "$WORK/fake.out" &
BENCH_PIDS+=($!)
API_URL="$(stand_in_value "$WORK/fake.out" ROLLBAR_API_URL)"

psql_bench() { psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" "$@"; }
printf '\n%10s %10s %8s %9s %12s\n' "page size" "rows/s" "pages" "seconds" "peak RSS MB"
worst=0
for size in "${SIZES[@]}"; do
  psql_bench -c "DROP SCHEMA IF EXISTS heimdallr CASCADE" >/dev/null 2>&1
  /usr/bin/time -f '%M %e' -o "$WORK/time" \
    env ROLLBAR_API_URL="$API_URL" ROLLBAR_ACCESS_TOKEN=fake-token RUST_LOG=warn \
    "$BIN/heimdallr" sync rollbar --once --warehouse "$HEIMDALLR_TEST_POSTGRES_URL" \
    --rollbar-page-limit "$size" --batch-rows "$BATCH_ROWS" > "$WORK/sync.out"
  read -r RSS_KB SECONDS_TAKEN < "$WORK/time"
  STORED="$(psql_bench -c 'SELECT COUNT(*) FROM heimdallr.rollbar_occurrences')"
  [ "$STORED" -eq "$N" ] || { echo "stored $STORED of $N at page size $size" >&2; exit 1; }
  PAGES="$(sed -n 's/^rollbar\/occurrences\/default: .* \([0-9]*\) pages.*/\1/p' "$WORK/sync.out")"
  RSS_MB=$(( RSS_KB / 1024 ))
  [ "$RSS_MB" -gt "$worst" ] && worst=$RSS_MB
  python3 -c "print(f'{$size:>10} {$N / $SECONDS_TAKEN:>10.0f} {int(\"$PAGES\" or 0):>8} {$SECONDS_TAKEN:>9.1f} {$RSS_KB / 1024:>12.1f}')"
done
echo
if [ "$worst" -le 64 ]; then
  echo "peak RSS <= 64 MB at every page size: ok (highest ${worst} MB)"
else
  echo "peak RSS over 64 MB at some page size: MISSED (highest ${worst} MB)"
  exit 1
fi
