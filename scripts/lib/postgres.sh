# Sourced by scripts: starts a throwaway PostgreSQL on a free loopback port and stops it
# on exit. Installs PostgreSQL from Debian packages when it is missing.
# Sets PG_BIN, PG_DIR, PG_PORT and HEIMDALLR_TEST_POSTGRES_URL.

find_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_throwaway_postgres() {
  PG_BIN="$(find_pg_bin)"
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "==> installing PostgreSQL from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    PG_BIN="$(find_pg_bin)"
  fi
  PG_DIR="$(mktemp -d /tmp/heimdallr-pg.XXXXXX)"
  PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"
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
