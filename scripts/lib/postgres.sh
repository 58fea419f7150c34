# Sourced by scripts: starts a throwaway PostgreSQL on a free loopback port and stops it
# on exit. Installs PostgreSQL from Debian packages when it is missing.
# Sets PG_BIN, PG_DIR, PG_PORT and HEIMDALLR_TEST_POSTGRES_URL.
# Everything here runs under the callers' `set -euo pipefail`: a lookup that finds nothing
# must not fail (that would end the script with no message before the install branch).

# How PostgreSQL is installed when it is missing. scripts/test-setup.sh replaces it with a
# stub to test the path a fresh machine takes without installing anything.
HEIMDALLR_PG_INSTALL_CMD="${HEIMDALLR_PG_INSTALL_CMD:-apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null}"

# Prints the newest /usr/lib/postgresql/<version>/bin that has a server (initdb), or
# nothing (and succeeds) when there is none.
find_pg_bin() {
  local dir found=()
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ]; then found+=("$dir"); fi
  done
  [ "${#found[@]}" -gt 0 ] || return 0
  printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

start_throwaway_postgres() {
  PG_BIN="$(find_pg_bin)"
  if [ -z "$PG_BIN" ]; then
    echo "==> installing PostgreSQL (no /usr/lib/postgresql/*/bin/initdb here): $HEIMDALLR_PG_INSTALL_CMD"
    if ! bash -c "$HEIMDALLR_PG_INSTALL_CMD"; then
      echo "error: PostgreSQL is not installed and installing it failed ($HEIMDALLR_PG_INSTALL_CMD)." >&2
      echo "  The tests start a throwaway PostgreSQL server: install one as root with" >&2
      echo "    apt-get update && apt-get install postgresql" >&2
      echo "  (the Debian packages put it under /usr/lib/postgresql/<version>/bin), then run this again." >&2
      return 1
    fi
    PG_BIN="$(find_pg_bin)"
    if [ -z "$PG_BIN" ]; then
      echo "error: PostgreSQL was installed ($HEIMDALLR_PG_INSTALL_CMD) but there is still no" >&2
      echo "  /usr/lib/postgresql/<version>/bin/initdb; these scripts expect the Debian layout" >&2
      echo "  (apt-get install postgresql)." >&2
      return 1
    fi
  fi
  if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 is missing (it picks a free port for PostgreSQL): apt-get install python3" >&2
    return 1
  fi
  PG_DIR="$(mktemp -d /tmp/heimdallr-pg.XXXXXX)"
  PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$PG_DIR"; fi
  trap stop_throwaway_postgres EXIT
  echo "==> starting PostgreSQL ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$PG_PORT"
  as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U heimdallr --auth=trust -E UTF8 >/dev/null
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  export HEIMDALLR_TEST_POSTGRES_URL="postgres://heimdallr@127.0.0.1:$PG_PORT/postgres"
}

# PostgreSQL refuses to run as root: use the postgres account the package created.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop_throwaway_postgres() {
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
