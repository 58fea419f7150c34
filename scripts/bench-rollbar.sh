#!/usr/bin/env bash
# Rollbar sync benchmark: N occurrences (default 100000) served by the fake Rollbar API on
# loopback, synced into a throwaway PostgreSQL. Prints:
#   - the raw fetch rate of the same pages (no parsing, no writing),
#   - the sync's rows/s and peak RSS,
#   - PostgreSQL's binary COPY rate for the same rows,
# and checks them against the targets: sync >= 70% of min(fetch, COPY), RSS <= 64 MB.
# Usage: scripts/bench-rollbar.sh [occurrences]
#   LIMIT=page size (default 300, the sync's), BATCH_ROWS=rows per transaction (default 1000,
#   the sync's)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
LIMIT="${LIMIT:-300}"
BATCH_ROWS="${BATCH_ROWS:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/postgres.sh

if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi

echo "==> building release binaries (PostgreSQL backend only; the embedded DuckDB is not measured)"
cargo build --release --quiet --no-default-features -p heimdallr -p heimdallr-fakes --bins
BIN="$CARGO_TARGET_DIR/release"

start_throwaway_postgres
WORK="$(mktemp -d /tmp/heimdallr-bench.XXXXXX)"
FAKE_PID=""
cleanup() {
  [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null || true
  rm -rf "$WORK"
  stop_throwaway_postgres
}
trap cleanup EXIT

echo "==> generating $N occurrences in the fake Rollbar API"
"$BIN/fake-apis" "$N" 200 > "$WORK/fake.out" &
FAKE_PID=$!
for _ in $(seq 1 600); do
  grep -q ROLLBAR_API_URL "$WORK/fake.out" 2>/dev/null && break
  sleep 0.1
done
API_URL="$(sed -n 's/^ROLLBAR_API_URL=//p' "$WORK/fake.out")"
[ -n "$API_URL" ] || { echo "the fake API did not start" >&2; exit 1; }

echo "==> raw fetch (page size $LIMIT)"
FETCH="$("$BIN/rollbar-raw-fetch" "$API_URL" fake-token "$LIMIT")"
FETCH_SECONDS="$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$FETCH")"
FETCH_BYTES="$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$FETCH")"

echo "==> sync into PostgreSQL (batches of $BATCH_ROWS rows)"
/usr/bin/time -f '%M %e %U %S' -o "$WORK/time" \
  env ROLLBAR_API_URL="$API_URL" ROLLBAR_ACCESS_TOKEN=fake-token RUST_LOG=warn \
  "$BIN/heimdallr" sync rollbar --once --warehouse "$HEIMDALLR_TEST_POSTGRES_URL" \
  --rollbar-page-limit "$LIMIT" --batch-rows "$BATCH_ROWS" > "$WORK/sync.out"
read -r RSS_KB SYNC_SECONDS SYNC_USER SYNC_SYS < "$WORK/time"
STORED="$(psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" -c 'SELECT COUNT(*) FROM heimdallr.rollbar_occurrences')"

echo "==> binary COPY of the same rows"
psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" -c "COPY heimdallr.rollbar_occurrences TO '$PG_DIR/rows.bin' (FORMAT binary)"
psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" -c "CREATE TABLE heimdallr.copy_bench (LIKE heimdallr.rollbar_occurrences INCLUDING ALL)"
COPY_START="$(date +%s.%N)"
# With the session settings the sync uses (lz4 for the documents), so that both pay the same.
PGOPTIONS="-c default_toast_compression=lz4" \
  psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" -c "COPY heimdallr.copy_bench FROM '$PG_DIR/rows.bin' (FORMAT binary)" >/dev/null
COPY_END="$(date +%s.%N)"

python3 - "$N" "$STORED" "$FETCH_SECONDS" "$FETCH_BYTES" "$SYNC_SECONDS" "$RSS_KB" "$COPY_START" "$COPY_END" "$SYNC_USER" "$SYNC_SYS" <<'PY'
import sys
n, stored, fetch_s, fetch_bytes, sync_s, rss_kb, copy_start, copy_end, user_s, sys_s = sys.argv[1:]
n, stored = int(n), int(stored)
fetch_rate = n / float(fetch_s)
sync_rate = n / float(sync_s)
copy_rate = n / (float(copy_end) - float(copy_start))
floor = 0.7 * min(fetch_rate, copy_rate)
rss_mb = int(rss_kb) / 1024
print()
print(f"occurrences            {n} (stored {stored})")
print(f"raw fetch              {fetch_rate:10.0f} rows/s  ({int(fetch_bytes) / 1e6 / float(fetch_s):.1f} MB/s, {int(fetch_bytes) / n:.0f} bytes/row)")
print(f"PostgreSQL COPY        {copy_rate:10.0f} rows/s")
print(f"sync                   {sync_rate:10.0f} rows/s  ({float(sync_s):.1f} s wall, {float(user_s) + float(sys_s):.1f} s CPU in the sync process)")
print(f"sync / min(fetch,COPY) {sync_rate / min(fetch_rate, copy_rate):10.0%}   target >= 70%  {'ok' if sync_rate >= floor else 'MISSED'}")
print(f"sync peak RSS          {rss_mb:10.1f} MB      target <= 64 MB {'ok' if rss_mb <= 64 else 'MISSED'}")
if stored != n:
    sys.exit(f"stored {stored} of {n} occurrences")
PY
