# Sourced by scripts: a virtualenv with the Python tools the checks use (sqlfluff for the
# Redshift SQL, cfn-lint for the CDK template), created once under ~/.cache/heimdallr.
# Sets PY_TOOLS (the venv's bin directory).

PY_TOOLS_VENV="${HEIMDALLR_PY_TOOLS:-$HOME/.cache/heimdallr/venv}"
PY_TOOLS_REQUIREMENTS=("sqlfluff==4.5.0" "cfn-lint==1.58.0")

ensure_python_tools() {
  if [ ! -x "$PY_TOOLS_VENV/bin/python" ]; then
    echo "==> creating a Python virtualenv for the checks in $PY_TOOLS_VENV"
    if ! python3 -m venv "$PY_TOOLS_VENV" 2>/dev/null; then
      # Debian's python3 ships venv separately.
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$PY_TOOLS_VENV"
      python3 -m venv "$PY_TOOLS_VENV"
    fi
  fi
  if ! "$PY_TOOLS_VENV/bin/pip" freeze 2>/dev/null | grep -qxF -e "${PY_TOOLS_REQUIREMENTS[0]}" \
     || ! "$PY_TOOLS_VENV/bin/pip" freeze 2>/dev/null | grep -qxF -e "${PY_TOOLS_REQUIREMENTS[1]}"; then
    echo "==> installing ${PY_TOOLS_REQUIREMENTS[*]}"
    "$PY_TOOLS_VENV/bin/pip" install --quiet "${PY_TOOLS_REQUIREMENTS[@]}"
  fi
  PY_TOOLS="$PY_TOOLS_VENV/bin"
}

# The DuckDB clients analysts use, oldest and newest the README promises, each in its own
# virtualenv: the end-to-end tests open the local warehouse file with them and run the
# README's queries as written. Sets HEIMDALLR_TEST_DUCKDB_PYTHONS (their interpreters).
DUCKDB_CLIENT_VERSIONS=("1.1.3" "2.0.1")

ensure_duckdb_clients() {
  local pythons=()
  for version in "${DUCKDB_CLIENT_VERSIONS[@]}"; do
    local venv="$HOME/.cache/heimdallr/duckdb-$version"
    if ! "$venv/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$version')" 2>/dev/null; then
      echo "==> installing the DuckDB $version Python client in $venv"
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet "duckdb==$version"
    fi
    pythons+=("$venv/bin/python")
  done
  export HEIMDALLR_TEST_DUCKDB_PYTHONS="${pythons[*]}"
}
