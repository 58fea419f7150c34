# What the sync benchmarks share, sourced from the project root: the release binaries
# without the embedded DuckDB, a throwaway PostgreSQL, a work folder, background stand-ins
# stopped on exit, and reading the address a stand-in prints when it is up.
source scripts/lib/postgres.sh

BENCH_PIDS=()

# Builds `heimdallr` and the stand-ins, starts PostgreSQL ($HEIMDALLR_TEST_POSTGRES_URL),
# and sets BIN and WORK; everything is stopped and removed on exit.
bench_start() {
  if [ ! -x /usr/bin/time ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
  fi
  echo "==> building release binaries (PostgreSQL backend only; the embedded DuckDB is not measured)"
  cargo build --release --quiet --no-default-features -p heimdallr -p heimdallr-fakes --bins
  BIN="$CARGO_TARGET_DIR/release"
  start_throwaway_postgres
  WORK="$(mktemp -d /tmp/heimdallr-bench.XXXXXX)"
  trap bench_stop EXIT
}

bench_stop() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  stop_throwaway_postgres
}

# The value a stand-in printed as NAME=value in FILE, once it has (a minute at most).
stand_in_value() { # file name
  local _
  for _ in $(seq 1 600); do
    grep -q "^$2=" "$1" 2>/dev/null && break
    sleep 0.1
  done
  sed -n "s/^$2=//p" "$1" | grep . || { echo "$1 never printed $2" >&2; exit 1; }
}
