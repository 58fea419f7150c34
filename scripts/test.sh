#!/usr/bin/env bash
# Runs every test Heimdallr has, on a fresh machine as on a developer's:
#   - checks that rustc is at least the workspace's rust-version (Cargo.toml),
#   - tests the set-up paths below as a fresh machine takes them (scripts/test-setup.sh:
#     no PostgreSQL, no virtualenv, no npm; stubs, nothing installed, a few seconds),
#   - installs PostgreSQL from Debian packages when it is missing,
#   - starts a throwaway PostgreSQL on a free loopback port (stopped on exit),
#   - installs the DuckDB Python clients the README names (oldest and newest) in
#     virtualenvs under ~/.cache/heimdallr, to open the local file as analysts do,
#   - checks formatting and lints, then runs the whole cargo test suite,
#   - parses the Redshift SQL with sqlfluff (a Python virtualenv under ~/.cache/heimdallr),
#   - checks the CDK app: npm ci, tsc, jest (assertions, cdk-nag, snapshot), the release
#     Lambda bundles, `cdk synth` and cfn-lint.
# Builds reuse one cargo target directory outside the clone (the embedded DuckDB's C++
# takes many minutes to build the first time): override with CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
source scripts/lib/postgres.sh
source scripts/lib/python.sh
source scripts/lib/functions.sh
source scripts/lib/rust.sh

echo "==> rustc against the workspace's rust-version (Cargo.toml)"
check_rust_version

echo "==> the set-up paths a fresh machine takes (scripts/test-setup.sh)"
scripts/test-setup.sh

start_throwaway_postgres
# Tests that need PostgreSQL fail rather than skip when this is set.
export HEIMDALLR_REQUIRE_POSTGRES=1
# The DuckDB clients analysts open the local file with (README: which versions).
ensure_duckdb_clients
export HEIMDALLR_REQUIRE_DUCKDB_CLIENTS=1
# The Lambda bootstrap tests run inside a Lambda-sized box (cgroup v1 memory limit and CPU
# share, tests/fakes/src/lambda_box.rs): without one they fail rather than skip.
export HEIMDALLR_REQUIRE_LAMBDA_BOX=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check

# Two cargo invocations, on purpose: the command with its embedded DuckDB, and the Lambdas
# with the AWS SDK. Feature unification across both would rebuild DuckDB's C++ whenever
# either side's dependencies change.
# The function crates are found under functions/ (scripts/lib/functions.sh).
set_lambda_crates || exit 1

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy "${LAMBDA_CRATES[@]}" --all-targets -- -D warnings

echo "==> cargo test: engine, sources, the heimdallr command (DuckDB and PostgreSQL)"
cargo test --workspace --all-targets

echo "==> cargo test: the Lambdas (bootstrap against the Runtime API stand-in)"
cargo test "${LAMBDA_CRATES[@]}" --all-targets

echo "==> the Redshift dialect's SQL, parsed as Redshift"
scripts/check-redshift-sql.sh

echo "==> the CDK stack"
scripts/check-infra.sh
