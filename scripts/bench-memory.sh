#!/usr/bin/env bash
# Memory benchmark: peak RSS of a Rollbar sync against occurrence size, inside a
# Lambda-sized box (the stack's default function: 128 MB, and its CPU share), release
# build, default settings, into a throwaway PostgreSQL. For each size (5, 25, 50, 100 and
# 128 KB per occurrence as served) N occurrences (default 1200) are synced from empty and
# the box's peak memory, the sync's rows/s and what landed are printed. Then the small case
# is synced again with a byte budget too large to matter (HEIMDALLR_BATCH_BYTES=1GiB): the
# byte bound must not cost it more than 10% of its rows/s.
# Targets (exit 1 when missed): every occurrence lands, no kill, peak <= 100 MB at every size.
# Usage: scripts/bench-memory.sh [occurrences]
#   SIZES="5 25 50 100 128" (KB), MEMORY_MB=128, CPU_MB=<the box's CPU share as a function
#   of this many MB; default MEMORY_MB, as Lambda gives>, RUNS=3 (medians of rows/s)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1200}"
SIZES="${SIZES:-5 25 50 100 128}"
MEMORY_MB="${MEMORY_MB:-128}"
CPU_MB="${CPU_MB:-$MEMORY_MB}"
RUNS="${RUNS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/bench.sh
bench_start

psql_bench() { psql -qtA "$HEIMDALLR_TEST_POSTGRES_URL" "$@"; }

# One sync from an empty schema inside the box: prints "<stored> <seconds> <peak bytes> <exit>".
boxed_sync() { # api-url [extra env...]
  local url="$1"; shift
  psql_bench -c "DROP SCHEMA IF EXISTS heimdallr CASCADE" >/dev/null 2>&1
  local start end code=0
  start="$(date +%s.%N)"
  env "$@" ROLLBAR_API_URL="$url" ROLLBAR_ACCESS_TOKEN=fake-token RUST_LOG=warn \
    LAMBDA_BOX_CPU_MB="$CPU_MB" "$BIN/lambda-box" "$MEMORY_MB" \
    "$BIN/heimdallr" sync rollbar --once --warehouse "$HEIMDALLR_TEST_POSTGRES_URL" \
    > "$WORK/sync.out" 2> "$WORK/sync.err" || code=$?
  end="$(date +%s.%N)"
  local peak stored
  peak="$(sed -n 's/.*peak_bytes=\([0-9]*\).*/\1/p' "$WORK/sync.err" | tail -1)"
  stored="$(psql_bench -c 'SELECT COUNT(*) FROM heimdallr.rollbar_occurrences' 2>/dev/null || echo 0)"
  echo "$stored $(python3 -c "print($end - $start)") ${peak:-0} $code"
}

: > "$WORK/results"
for kb in $SIZES; do
  bytes=$((kb * 1024))
  # Sizes spread +-10% around the figure, as real payloads are.
  "$BIN/fake-apis" "$N" 200 0 "$((bytes * 9 / 10))-$((bytes * 11 / 10))" > "$WORK/fake-$kb.out" &
  BENCH_PIDS+=($!)
  url="$(stand_in_value "$WORK/fake-$kb.out" ROLLBAR_API_URL)"
  for round in $(seq 1 "$RUNS"); do
    echo "==> $kb KB occurrences, round $round of $RUNS: $N into a $MEMORY_MB MB box"
    echo "$kb default $(boxed_sync "$url")" >> "$WORK/results"
  done
  if [ "$kb" = "$(echo $SIZES | cut -d' ' -f1)" ]; then
    for round in $(seq 1 "$RUNS"); do
      echo "==> $kb KB occurrences, round $round of $RUNS: without a byte bound (HEIMDALLR_BATCH_BYTES=1GiB)"
      echo "$kb unbounded $(boxed_sync "$url" HEIMDALLR_BATCH_BYTES=1GiB)" >> "$WORK/results"
    done
  fi
done

python3 - "$N" "$MEMORY_MB" "$CPU_MB" "$WORK/results" <<'PY'
import statistics, sys
n, memory_mb, cpu_mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
runs = {}
for line in open(sys.argv[4]):
    kb, mode, stored, seconds, peak, code = line.split()
    runs.setdefault((int(kb), mode), []).append((int(stored), float(seconds), int(peak), int(code)))
failures = []
print()
print(f"{n} occurrences per size, a {memory_mb} MB box with the CPU share of {cpu_mb} MB, release build, defaults")
print(f"{'size':>8} {'mode':>10} {'peak RSS':>10} {'rows/s':>8} {'landed':>8}  exits")
rates = {}
for (kb, mode), results in sorted(runs.items()):
    peak_mb = max(r[2] for r in results) / 2**20
    rate = statistics.median(n / r[1] for r in results)
    rates[(kb, mode)] = rate
    landed = min(r[0] for r in results)
    exits = ",".join(str(r[3]) for r in results)
    print(f"{kb:>6}KB {mode:>10} {peak_mb:>8.1f}MB {rate:>8.0f} {landed:>8}  {exits}")
    if mode == "default":
        if landed != n or any(r[3] != 0 for r in results):
            failures.append(f"{kb} KB: {landed} of {n} landed, exits {exits}")
        if peak_mb > 100:
            failures.append(f"{kb} KB: peak {peak_mb:.1f} MB > 100 MB")
small = min(kb for kb, _ in rates)
if (small, "unbounded") in rates:
    cost = 1 - rates[(small, "default")] / rates[(small, "unbounded")]
    print(f"the byte bound costs the {small} KB case {cost * 100:.1f}% of its rows/s (target <= 10%)")
    if cost > 0.10:
        failures.append(f"byte bound costs {cost * 100:.1f}% at {small} KB")
if failures:
    print("MISSED: " + "; ".join(failures))
    sys.exit(1)
print("targets met")
PY
