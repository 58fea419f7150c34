# The Lambda functions, found rather than listed: every crate under functions/ with a
# `<name>-bootstrap` binary (see "Adding a source" in the README). Sourced by the scripts.

# Prints one function name per line (the crate directory, e.g. rollbar).
lambda_functions() {
  local manifest name
  for manifest in functions/*/Cargo.toml; do
    name="$(basename "$(dirname "$manifest")")"
    if grep -q "^name = \"$name-bootstrap\"" "$manifest"; then
      echo "$name"
    fi
  done
}

# Sets LAMBDA_CRATES to the cargo arguments for the engine and every function crate with
# its `lambda` feature: -p heimdallr-core -p heimdallr-<name>... --features heimdallr-<name>/lambda,...
set_lambda_crates() {
  local name features=""
  LAMBDA_CRATES=(-p heimdallr-core)
  while read -r name; do
    LAMBDA_CRATES+=(-p "heimdallr-$name")
    features="${features:+$features,}heimdallr-$name/lambda"
  done < <(lambda_functions)
  LAMBDA_CRATES+=(--features "$features")
}
