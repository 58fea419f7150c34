# Sourced by scripts: a virtualenv with the Python tools the checks use (sqlfluff for the
# Redshift SQL, cfn-lint for the CDK template), created once under ~/.cache/heimdallr.
# Sets PY_TOOLS (the venv's bin directory).
# Everything here runs under the callers' `set -euo pipefail`: a lookup that finds nothing
# must not fail (that would end the script with no message before the install branch).

PY_TOOLS_VENV="${HEIMDALLR_PY_TOOLS:-$HOME/.cache/heimdallr/venv}"
PY_TOOLS_REQUIREMENTS=("sqlfluff==4.5.0" "cfn-lint==1.58.0")

# Creates a virtualenv in DIR, installing Debian's python3-venv first when python3 cannot
# make one without it.
make_venv() { # dir
  local dir="$1"
  if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 is missing (the checks' tools live in virtualenvs under ~/.cache/heimdallr):" >&2
    echo "  apt-get install python3 python3-venv" >&2
    return 1
  fi
  if python3 -m venv "$dir" >/dev/null 2>&1; then return 0; fi
  # Debian's python3 ships venv (ensurepip) separately.
  echo "==> python3 cannot create a virtualenv: installing python3-venv from Debian packages"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }; then
    echo "error: python3 cannot create a virtualenv in $dir (no venv/ensurepip) and installing" >&2
    echo "  python3-venv failed: as root, apt-get install python3-venv (or" >&2
    echo "  python$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3.X)-venv), then run this again." >&2
    return 1
  fi
  rm -rf "$dir"
  if ! python3 -m venv "$dir"; then
    echo "error: python3 -m venv $dir still fails after installing python3-venv" >&2
    return 1
  fi
}

# True when DIR holds a usable virtualenv (an interpreter and pip).
has_venv() { [ -x "$1/bin/python" ] && [ -x "$1/bin/pip" ]; }

ensure_python_tools() {
  local installed requirement missing=0
  if ! has_venv "$PY_TOOLS_VENV"; then
    echo "==> creating a Python virtualenv for the checks in $PY_TOOLS_VENV"
    make_venv "$PY_TOOLS_VENV" || return 1
  fi
  # Read once, not piped into `grep -q` (which can end pip with SIGPIPE under pipefail).
  installed="$("$PY_TOOLS_VENV/bin/pip" freeze 2>/dev/null || true)"
  for requirement in "${PY_TOOLS_REQUIREMENTS[@]}"; do
    grep -qxF -e "$requirement" <<<"$installed" || missing=1
  done
  if [ "$missing" = 1 ]; then
    echo "==> installing ${PY_TOOLS_REQUIREMENTS[*]}"
    if ! "$PY_TOOLS_VENV/bin/pip" install --quiet "${PY_TOOLS_REQUIREMENTS[@]}"; then
      echo "error: pip could not install ${PY_TOOLS_REQUIREMENTS[*]} into $PY_TOOLS_VENV (from PyPI:" >&2
      echo "  is the network or a pip index reachable? PIP_INDEX_URL selects another)" >&2
      return 1
    fi
  fi
  PY_TOOLS="$PY_TOOLS_VENV/bin"
}

# The DuckDB clients analysts use, oldest and newest the README promises, each in its own
# virtualenv: the end-to-end tests open the local warehouse file with them and run the
# README's queries as written. Sets HEIMDALLR_TEST_DUCKDB_PYTHONS (their interpreters).
DUCKDB_CLIENT_VERSIONS=("1.1.3" "2.0.1")

ensure_duckdb_clients() {
  local pythons=() version venv
  for version in "${DUCKDB_CLIENT_VERSIONS[@]}"; do
    venv="$HOME/.cache/heimdallr/duckdb-$version"
    if ! "$venv/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$version')" 2>/dev/null; then
      echo "==> installing the DuckDB $version Python client in $venv"
      rm -rf "$venv"
      make_venv "$venv" || return 1
      if ! "$venv/bin/pip" install --quiet "duckdb==$version"; then
        echo "error: pip could not install duckdb==$version into $venv (from PyPI: is the network" >&2
        echo "  or a pip index reachable? PIP_INDEX_URL selects another)" >&2
        return 1
      fi
    fi
    pythons+=("$venv/bin/python")
  done
  export HEIMDALLR_TEST_DUCKDB_PYTHONS="${pythons[*]}"
}
