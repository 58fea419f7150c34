#!/usr/bin/env bash
# Tests the set-up paths the scripts take on a fresh machine, as that machine sees them:
# no PostgreSQL under /usr/lib/postgresql, no virtualenv under ~/.cache/heimdallr, no npm
# and no node_modules, an old or missing rustc, a Lambda binary that needs no glibc. Each
# library function is run as the scripts run it (a fresh bash under set -euo pipefail) and
# must reach its install branch, or fail with a message saying what is missing; none may
# exit silently. Nothing is installed or downloaded: apt-get, python3, pip, npm, rustc,
# runuser and chown are stubs that record their calls, and the PostgreSQL install is
# HEIMDALLR_PG_INSTALL_CMD pointed at a stub. Takes a second or two.
#
# PostgreSQL is hidden in a private mount namespace (unshare --mount, as root; else an
# unprivileged user namespace) where /usr/lib/postgresql is an empty tmpfs; without one the
# PostgreSQL checks are skipped. npm and rustc are hidden by leaving them off PATH.
#   HEIMDALLR_SCRIPTS_LIB=DIR   test the libraries in DIR instead of scripts/lib
# Exits non-zero when any check fails.
set -uo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.." || exit 2
root="$PWD"
LIB="$(cd "${HEIMDALLR_SCRIPTS_LIB:-scripts/lib}" && pwd)" || exit 2

# ---- a private mount namespace ---------------------------------------------------------
if [ -z "${HEIMDALLR_TEST_SETUP_NS:-}" ]; then
  if [ "$(id -u)" -eq 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    exec env HEIMDALLR_TEST_SETUP_NS=root unshare --mount --propagation private -- bash "$self" "$@"
  elif unshare --mount --map-root-user --propagation private true 2>/dev/null; then
    exec env HEIMDALLR_TEST_SETUP_NS=user unshare --mount --map-root-user --propagation private -- bash "$self" "$@"
  fi
  HEIMDALLR_TEST_SETUP_NS=none
fi

work="$(mktemp -d /tmp/heimdallr-test-setup.XXXXXX)"
made_pg_dir=false
cleanup() {
  if [ "$HEIMDALLR_TEST_SETUP_NS" != none ]; then
    while mountpoint -q /usr/lib/postgresql 2>/dev/null \
      && [ "$(stat -f -c %T /usr/lib/postgresql)" = tmpfs ]; do
      umount /usr/lib/postgresql || break
    done
  fi
  if $made_pg_dir; then rmdir /usr/lib/postgresql 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# What the fresh machine lacks. PostgreSQL: an empty tmpfs over /usr/lib/postgresql, in
# this namespace only.
pg_hidden=false
if [ "$HEIMDALLR_TEST_SETUP_NS" != none ]; then
  if [ ! -e /usr/lib/postgresql ] && [ "$HEIMDALLR_TEST_SETUP_NS" = root ]; then
    # An empty mount point on the real file system, removed on exit.
    mkdir /usr/lib/postgresql && made_pg_dir=true
  fi
  if [ -d /usr/lib/postgresql ] && mount -t tmpfs -o mode=755 tmpfs /usr/lib/postgresql 2>/dev/null \
     && [ "$(stat -f -c %T /usr/lib/postgresql)" = tmpfs ] && [ -z "$(ls -A /usr/lib/postgresql)" ]; then
    pg_hidden=true
  fi
fi

# npm and rustc: the functions run with a PATH of links to every command on this PATH but
# those (and the stubs first).
sysbin="$work/sysbin"
mkdir -p "$sysbin"
declare -A seen=([npm]=1 [npx]=1 [rustc]=1)
IFS=: read -ra path_dirs <<<"$PATH"
for path_dir in "${path_dirs[@]}"; do
  [ -d "$path_dir" ] || continue
  links=()
  for command_path in "$path_dir"/*; do
    command_name="${command_path##*/}"
    [ -z "${seen[$command_name]:-}" ] && [ -x "$command_path" ] && [ ! -d "$command_path" ] || continue
    seen[$command_name]=1
    links+=("$command_path")
  done
  [ "${#links[@]}" -eq 0 ] || ln -s -t "$sysbin" -- "${links[@]}"
done

# ---- stubs ---------------------------------------------------------------------------
# Every stub appends its command line to $STUB_LOG_DIR/<name>.log. Installed tools go to
# $STUB_INSTALL_DIR (on PATH). apt-get installs only the packages in $STUB_APT_PROVIDES.
stubs="$work/stubs"
mkdir -p "$stubs"
stub() { # name, body
  printf '#!/usr/bin/env bash\necho "$*" >>"$STUB_LOG_DIR/%s.log"\n%s\n' "$1" "$2" >"$stubs/$1"
  chmod 755 "$stubs/$1"
}
stub apt-get '
[ "${1:-}" = update ] && exit 0
for package in "$@"; do
  case "$package" in -*) continue ;; install) continue ;; esac
  case " ${STUB_APT_PROVIDES:-} " in
    *" $package "*) ;;
    *) echo "E: Unable to locate package $package (test-setup stub: nothing is installed)" >&2; exit 100 ;;
  esac
  case "$package" in
    python3-venv) : >"$STUB_LOG_DIR/python3-venv-installed" ;;
    npm) cp "$STUB_NPM" "$STUB_INSTALL_DIR/npm" ;;
  esac
done'
# python3: makes stub virtualenvs; without ensurepip (STUB_PY_NO_ENSUREPIP, until apt-get
# installs python3-venv) it leaves a half-made one and fails, as Debian'"'"'s python3 does.
stub python3 '
if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
  dir="${*: -1}"
  mkdir -p "$dir/bin"
  printf "#!/usr/bin/env bash\necho \"\$*\" >>\"\$STUB_LOG_DIR/venv-python.log\"\nexit 1\n" >"$dir/bin/python"
  chmod 755 "$dir/bin/python"
  if [ -n "${STUB_PY_NO_ENSUREPIP:-}" ] && [ ! -e "$STUB_LOG_DIR/python3-venv-installed" ]; then
    echo "The virtual environment was not created successfully because ensurepip is not available. (test-setup stub)" >&2
    exit 1
  fi
  printf "#!/usr/bin/env bash\necho \"$dir \$*\" >>\"\$STUB_LOG_DIR/pip.log\"\nif [ \"\$1\" = freeze ]; then cat \"$dir/freeze.txt\" 2>/dev/null; fi\nexit 0\n" >"$dir/bin/pip"
  chmod 755 "$dir/bin/pip"
  exit 0
fi
case "$*" in
  *socket*) echo 54321 ;;
  *version_info*) echo 3.11 ;;
  *) echo "test-setup stub python3: unexpected call: $*" >&2; exit 3 ;;
esac'
stub runuser 'while [ $# -gt 0 ] && [ "$1" != -- ]; do shift; done; shift; exec "$@"'
stub chown 'exit 0'
stub rustc 'echo "rustc $STUB_RUSTC_VERSION (0000000 2020-01-01) (test-setup stub)"'
# What apt-get "installs" as npm, and the npm some checks start with: npm ci makes the tree.
cat >"$work/npm" <<'EOF'
#!/usr/bin/env bash
echo "$*" >>"$STUB_LOG_DIR/npm.log"
if [ "${1:-}" = ci ]; then mkdir -p node_modules && : >node_modules/.package-lock.json; fi
EOF
chmod 755 "$work/npm"
# The PostgreSQL install (HEIMDALLR_PG_INSTALL_CMD): a server under /usr/lib/postgresql,
# which only ever is the tmpfs of this namespace.
fake_pg() { # version
  [ "$(stat -f -c %T /usr/lib/postgresql)" = tmpfs ] || { echo "refusing: /usr/lib/postgresql is not the test's tmpfs" >&2; return 1; }
  mkdir -p "/usr/lib/postgresql/$1/bin"
  local tool
  for tool in initdb pg_ctl postgres; do
    printf '#!/usr/bin/env bash\necho "%s $*" >>"$STUB_LOG_DIR/pg.log"\n[ "${1:-}" = --version ] && echo "postgres (PostgreSQL) %s (test-setup stub)"\nexit 0\n' \
      "$tool" "$1" >"/usr/lib/postgresql/$1/bin/$tool"
    chmod 755 "/usr/lib/postgresql/$1/bin/$tool"
  done
}
cat >"$stubs/install-postgresql" <<EOF
#!/usr/bin/env bash
echo "called" >>"\$STUB_LOG_DIR/pg-install.log"
$(declare -f fake_pg)
fake_pg 99
EOF
chmod 755 "$stubs/install-postgresql"

# ---- running a function as the scripts do --------------------------------------------
n=0
failed=0
skipped=0
# Starts a check: a fresh HOME, stub log and install directories, a fresh empty tmpfs on
# /usr/lib/postgresql (stacked: nothing is ever deleted there).
begin() { # name
  n=$((n + 1))
  name="$1"
  reasons=()
  dir="$work/check-$n"
  mkdir -p "$dir/home" "$dir/logs" "$dir/installed" "$dir/project"
  if $pg_hidden; then mount -t tmpfs -o mode=755 tmpfs /usr/lib/postgresql; fi
}
skip() { # why
  skipped=$((skipped + 1))
  echo "SKIP  $name ($1)"
}
# Runs SNIPPET in a fresh bash under set -euo pipefail, in $dir/project, with LIBS sourced
# from $LIB, HOME empty, and on PATH the stubs, what they install, and this machine's
# commands but npm and rustc; extra VAR=value arguments go to env.
run() { # "libs" snippet [VAR=value...]
  local libs="$1" snippet="$2"
  shift 2
  status=0
  env -u HEIMDALLR_PG_INSTALL_CMD -u HEIMDALLR_PY_TOOLS \
    PATH="$stubs:$dir/installed:$sysbin" HOME="$dir/home" XDG_CACHE_HOME="$dir/home/.cache" \
    STUB_LOG_DIR="$dir/logs" STUB_INSTALL_DIR="$dir/installed" STUB_NPM="$work/npm" "$@" \
    bash -c '
      set -euo pipefail
      lib="$1" libs="$2" snippet="$3"
      for l in $libs; do
        if [ ! -f "$lib/$l.sh" ]; then echo "test-setup: there is no $lib/$l.sh" >&2; exit 97; fi
        source "$lib/$l.sh"
      done
      cd "$4"
      eval "$snippet"' _ "$LIB" "$libs" "$snippet" "$dir/project" >"$dir/out" 2>"$dir/err" </dev/null || status=$?
}
expect_status() { # 0 | nonzero
  if [ "$1" = nonzero ]; then
    [ "$status" -ne 0 ] || reasons+=("exit status 0, expected a failure")
  else
    [ "$status" -eq "$1" ] || reasons+=("exit status $status, expected $1")
  fi
}
expect_in() { # file extended-regex what
  grep -Eq -e "$2" "$1" 2>/dev/null || reasons+=("$3 (no /$2/ in $(basename "$1"))")
}
expect_not_in() { # file extended-regex what
  if grep -Eq -e "$2" "$1" 2>/dev/null; then reasons+=("$3 (/$2/ in $(basename "$1"))"); fi
}
end() {
  # Whatever else the check expects: never a non-zero exit without a word on stderr.
  if [ "$status" -ne 0 ] && [ ! -s "$dir/err" ]; then
    reasons+=("exited $status with no message")
  fi
  if [ "${#reasons[@]}" -eq 0 ]; then
    echo "PASS  $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    local reason
    for reason in "${reasons[@]}"; do echo "        - $reason"; done
    echo "        exit status $status; the last of its stdout, then stderr:"
    tail -n 5 "$dir/out" | sed 's/^/        out| /'
    tail -n 5 "$dir/err" | sed 's/^/        err| /'
  fi
}

echo "(libraries: $LIB; namespace: $HEIMDALLR_TEST_SETUP_NS)"

# ---- PostgreSQL ----------------------------------------------------------------------
pg_skip_reason="needs a private mount namespace to hide /usr/lib/postgresql (root, or unprivileged user namespaces)"

begin "find_pg_bin with no PostgreSQL: finds nothing and succeeds"
if $pg_hidden; then
  run postgres 'found="$(find_pg_bin)"; echo "PG_BIN=[$found]"'
  expect_status 0
  expect_in "$dir/out" '^PG_BIN=\[\]$' "prints nothing"
  end
else skip "$pg_skip_reason"; fi

begin "find_pg_bin: the newest version with a server (9 < 13; a client-only 16 is not one)"
if $pg_hidden; then
  fake_pg 9 && fake_pg 13 && mkdir -p /usr/lib/postgresql/16/bin && : >/usr/lib/postgresql/16/bin/psql
  run postgres 'found="$(find_pg_bin)"; echo "PG_BIN=[$found]"'
  expect_status 0
  expect_in "$dir/out" '^PG_BIN=\[/usr/lib/postgresql/13/bin\]$' "finds 13"
  end
else skip "$pg_skip_reason"; fi

begin "start_throwaway_postgres with no PostgreSQL: installs it (HEIMDALLR_PG_INSTALL_CMD), then starts it"
if $pg_hidden; then
  run postgres 'start_throwaway_postgres; echo "URL=$HEIMDALLR_TEST_POSTGRES_URL"' \
    HEIMDALLR_PG_INSTALL_CMD="$stubs/install-postgresql"
  expect_status 0
  expect_in "$dir/out" '^==> installing PostgreSQL' "says it installs PostgreSQL"
  expect_in "$dir/logs/pg-install.log" '^called$' "runs the install command"
  expect_in "$dir/logs/pg.log" '^initdb ' "runs the installed initdb"
  expect_in "$dir/logs/pg.log" '^pg_ctl .* start$' "starts the installed server"
  expect_in "$dir/out" '^URL=postgres://heimdallr@127\.0\.0\.1:54321/postgres$' "sets HEIMDALLR_TEST_POSTGRES_URL"
  end
else skip "$pg_skip_reason"; fi

begin "start_throwaway_postgres with no PostgreSQL and a failing apt-get: says what is missing"
if $pg_hidden; then
  run postgres 'start_throwaway_postgres'
  expect_status nonzero
  expect_in "$dir/logs/apt-get.log" 'install .*postgresql' "tries apt-get install postgresql (the default install command)"
  expect_in "$dir/err" 'PostgreSQL' "names PostgreSQL"
  expect_in "$dir/err" 'apt-get (update && apt-get )?install postgresql' "says how to install it"
  end
else skip "$pg_skip_reason"; fi

# ---- glibc needs of the Lambda binaries ------------------------------------------------
glibc_skip=""
command -v objdump >/dev/null 2>&1 || glibc_skip="objdump (binutils) is missing; build-functions.sh skips this check too"
# A minimal static ELF executable for this machine (exit(0)): no dynamic symbols at all.
static_elf="$work/static-bootstrap"
case "$(uname -m)" in x86_64) machine=62 ;; aarch64 | arm64) machine=183 ;; *) machine=62 ;; esac
printf '#!/bin/sh\necho not an ELF binary\n' >"$work/not-elf"
if [ -z "$glibc_skip" ]; then
  python3_real="$(command -v python3 2>/dev/null || true)"
  if [ -n "$python3_real" ]; then
    "$python3_real" - "$static_elf" "$machine" <<'PY'
import struct, sys
path, machine = sys.argv[1], int(sys.argv[2])
code = bytes([0x31, 0xff, 0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05])  # x86_64 exit(0); never run here
entry = 0x400000 + 64 + 56
header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
    "<HHIQQQIHHHHHH", 2, machine, 1, entry, 64, 0, 0, 64, 56, 1, 0, 0, 0)
size = 64 + 56 + len(code)
program = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, size, size, 0x1000)
open(path, "wb").write(header + program + code)
PY
  else
    glibc_skip="python3 is missing (it writes the static test binary)"
  fi
fi
dynamic_elf="$(readlink -f "$(command -v bash)")"

begin "check_glibc on a static binary (no dynamic symbols): needs no glibc, passes"
if [ -z "$glibc_skip" ]; then
  run glibc "check_glibc '$static_elf'"
  expect_status 0
  expect_in "$dir/out" 'needs glibc none' "reports that it needs none"
  end
else skip "$glibc_skip"; fi

begin "check_glibc on a dynamic binary within the limit: passes and names the version"
if [ -z "$glibc_skip" ]; then
  run glibc "MAX_GLIBC=99.0; check_glibc '$dynamic_elf'"
  expect_status 0
  expect_in "$dir/out" 'needs glibc 2\.[0-9]+' "names the glibc it needs"
  end
else skip "$glibc_skip"; fi

begin "check_glibc on a dynamic binary over the limit: fails and says why"
if [ -z "$glibc_skip" ]; then
  run glibc "MAX_GLIBC=2.0; check_glibc '$dynamic_elf'"
  expect_status nonzero
  expect_in "$dir/err" 'needs GLIBC_2\.' "says which glibc it needs"
  end
else skip "$glibc_skip"; fi

begin "check_glibc on a file objdump cannot read: fails and says why"
if [ -z "$glibc_skip" ]; then
  run glibc "check_glibc '$work/not-elf'"
  expect_status nonzero
  expect_in "$dir/err" 'objdump' "names objdump's failure"
  end
else skip "$glibc_skip"; fi

# ---- the Python virtualenvs under ~/.cache/heimdallr -------------------------------------
begin "ensure_python_tools with no virtualenv: creates it and installs the tools"
run python 'ensure_python_tools; echo "PY_TOOLS=$PY_TOOLS"'
expect_status 0
expect_in "$dir/out" '^==> creating a Python virtualenv' "says it creates the virtualenv"
expect_in "$dir/logs/python3.log" "^-m venv $dir/home/.cache/heimdallr/venv\$" "runs python3 -m venv ~/.cache/heimdallr/venv"
expect_in "$dir/logs/pip.log" ' install --quiet sqlfluff==[0-9.]+ cfn-lint==[0-9.]+$' "pip installs sqlfluff and cfn-lint"
expect_in "$dir/out" "^PY_TOOLS=$dir/home/.cache/heimdallr/venv/bin\$" "sets PY_TOOLS"
end

begin "ensure_python_tools with the tools installed: installs nothing"
mkdir -p "$dir/home/.cache/heimdallr"
run python 'python3 -m venv "$PY_TOOLS_VENV" && printf "%s\n" "${PY_TOOLS_REQUIREMENTS[@]}" >"$PY_TOOLS_VENV/freeze.txt" && ensure_python_tools'
expect_status 0
expect_not_in "$dir/out" 'creating|installing' "creates or installs nothing"
expect_not_in "$dir/logs/pip.log" ' install ' "runs no pip install"
end

begin "ensure_python_tools where python3 has no ensurepip: installs python3-venv, then creates it"
run python 'ensure_python_tools' STUB_PY_NO_ENSUREPIP=1 STUB_APT_PROVIDES=python3-venv
expect_status 0
expect_in "$dir/logs/apt-get.log" 'install .*python3-venv' "apt-get installs python3-venv"
expect_in "$dir/logs/pip.log" ' install --quiet sqlfluff' "then pip installs the tools"
end

begin "ensure_python_tools where python3 has no ensurepip and apt-get fails: says what is missing"
run python 'ensure_python_tools' STUB_PY_NO_ENSUREPIP=1
expect_status nonzero
expect_in "$dir/logs/apt-get.log" 'install .*python3-venv' "tries apt-get install python3-venv"
expect_in "$dir/err" 'virtualenv' "says a virtualenv cannot be made"
expect_in "$dir/err" 'python3-venv' "says how to get one"
end

begin "ensure_duckdb_clients with no virtualenvs: creates one per client version"
run python 'ensure_duckdb_clients; echo "PYTHONS=$HEIMDALLR_TEST_DUCKDB_PYTHONS"'
expect_status 0
expect_in "$dir/logs/pip.log" "duckdb-1\.1\.3 install --quiet duckdb==1\.1\.3\$" "pip installs duckdb 1.1.3"
expect_in "$dir/logs/pip.log" "duckdb-2\.0\.1 install --quiet duckdb==2\.0\.1\$" "pip installs duckdb 2.0.1"
expect_in "$dir/out" "^PYTHONS=$dir/home/.cache/heimdallr/duckdb-1\.1\.3/bin/python $dir/home/.cache/heimdallr/duckdb-2\.0\.1/bin/python\$" "sets HEIMDALLR_TEST_DUCKDB_PYTHONS"
end

# ---- npm and node_modules ------------------------------------------------------------
begin "ensure_node_modules with no node_modules: npm ci"
cp "$work/npm" "$dir/installed/npm"
: >"$dir/project/package-lock.json"
run node 'ensure_node_modules'
expect_status 0
expect_in "$dir/logs/npm.log" '^ci ' "runs npm ci"
end

begin "ensure_node_modules with no npm: installs Node.js and npm, then npm ci"
: >"$dir/project/package-lock.json"
run node 'ensure_node_modules' STUB_APT_PROVIDES="nodejs npm"
expect_status 0
expect_in "$dir/logs/apt-get.log" 'install .*nodejs npm' "apt-get installs nodejs and npm"
expect_in "$dir/logs/npm.log" '^ci ' "then runs npm ci"
end

begin "ensure_node_modules with no npm and a failing apt-get: says what is missing"
: >"$dir/project/package-lock.json"
run node 'ensure_node_modules'
expect_status nonzero
expect_in "$dir/logs/apt-get.log" 'install .*nodejs npm' "tries apt-get install nodejs npm"
expect_in "$dir/err" 'npm is missing' "says npm is missing"
expect_in "$dir/err" 'nodejs' "says how to get it"
end

# ---- rustc against Cargo.toml's rust-version -------------------------------------------
need="$(awk -F'"' '/^rust-version[[:space:]]*=/ { print $2; exit }' "$root/Cargo.toml")"
cp "$root/Cargo.toml" "$work/Cargo.toml"

begin "check_rust_version with an old rustc: fails, naming both versions and rustup update"
cp "$work/Cargo.toml" "$dir/project/"
run rust 'check_rust_version' STUB_RUSTC_VERSION=1.0.0
expect_status nonzero
expect_in "$dir/err" "rustc 1\.0\.0 is older than the minimum ${need//./\\.} this workspace needs \(Cargo.toml rust-version\); rustup update" "the message"
end

begin "check_rust_version with rustc at the minimum: passes"
cp "$work/Cargo.toml" "$dir/project/"
run rust 'check_rust_version' STUB_RUSTC_VERSION="$need"
expect_status 0
end

begin "check_rust_version with no rustc: says so and how to get it"
cp "$work/Cargo.toml" "$dir/project/"
rm -f "$stubs/rustc"
run rust 'check_rust_version'
expect_status nonzero
expect_in "$dir/err" 'rustc is missing' "says rustc is missing"
expect_in "$dir/err" 'rustup' "says how to get it"
end

echo "$((n - failed - skipped)) passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
