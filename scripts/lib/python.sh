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
