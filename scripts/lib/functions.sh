# The Lambda functions, found rather than listed: every crate under functions/ with a
# `<name>-bootstrap` binary (see "Adding a source" in the README). Sourced by the scripts.

# Prints one function name per line (the crate directory, e.g. rollbar); fails when there
# is none, so that a script never builds or tests nothing and says it passed.
lambda_functions() {
  local manifest name found=0
  for manifest in functions/*/Cargo.toml; do
    name="$(basename "$(dirname "$manifest")")"
    if grep -Eq "^name[[:space:]]*=[[:space:]]*\"$name-bootstrap\"" "$manifest"; then
      echo "$name"
      found=1
    fi
  done
  if [ "$found" = 0 ]; then
    echo "error: no Lambda crate under functions/ (a crate with a <name>-bootstrap binary)" >&2
    return 1
  fi
}

# Sets LAMBDA_CRATES to the cargo arguments for the engine and every function crate with
# its `lambda` feature: -p heimdallr-core -p heimdallr-<name>... --features heimdallr-<name>/lambda,...
set_lambda_crates() {
  local name names features=""
  names="$(lambda_functions)" || return 1
  LAMBDA_CRATES=(-p heimdallr-core)
  for name in $names; do
    LAMBDA_CRATES+=(-p "heimdallr-$name")
    features="${features:+$features,}heimdallr-$name/lambda"
  done
  LAMBDA_CRATES+=(--features "$features")
}
