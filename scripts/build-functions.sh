#!/usr/bin/env bash
# Builds every Lambda in release mode (strip, LTO, one codegen unit, panic=abort) into
#   dist/lambda/<function>/bootstrap         x86_64 (always)
#   dist/lambda/<function>-arm64/bootstrap   arm64, when the aarch64-unknown-linux-gnu
#                                            target is installed (built with cargo-lambda
#                                            and zig when present, else with the linker in
#                                            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER)
# and fails if a binary needs a glibc newer than 2.34 (Amazon Linux 2023, provided.al2023).
# On a host that is not x86_64 Linux (macOS, an arm64 machine), the x86_64 bundles are
# cross-compiled with cargo-lambda and zig (docs/deploy.md, "Building the bundles").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
source scripts/lib/functions.sh
source scripts/lib/glibc.sh # check_glibc, MAX_GLIBC
FUNCTIONS="$(lambda_functions)"

arm64=false
# grep reads the whole list (no -q): under pipefail, a grep that stops at the first match
# can end rustup with SIGPIPE and make the test false.
if rustup target list --installed 2>/dev/null | grep -x aarch64-unknown-linux-gnu >/dev/null; then arm64=true; fi
native=false
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then native=true; fi

build() {
  local function="$1" target="$2" out="$3"
  echo "==> heimdallr-$function for $target"
  if [ "$target" = aarch64-unknown-linux-gnu ] && command -v cargo-lambda >/dev/null 2>&1; then
    cargo lambda build --release --arm64 --package "heimdallr-$function" --features lambda --bin "$function-bootstrap"
  elif [ "$target" = x86_64-unknown-linux-gnu ] && ! $native; then
    if ! command -v cargo-lambda >/dev/null 2>&1 && $arm64 && [ "$(uname -s)" = Linux ]; then
      echo "    (x86_64 skipped on this $(uname -m) host without cargo-lambda: deploy with \"architecture\": \"arm64\")"
      return 0
    elif ! command -v cargo-lambda >/dev/null 2>&1; then
      echo "error: this host is $(uname -s) $(uname -m); build the x86_64 Lambda bundles with cargo-lambda and zig:" >&2
      echo "  pip3 install ziglang cargo-lambda   (or: brew install zig && cargo install cargo-lambda)" >&2
      echo "  rustup target add x86_64-unknown-linux-gnu" >&2
      echo "or set \"architecture\": \"arm64\" in cdk.json to deploy arm64 bundles built here" >&2
      exit 1
    fi
    cargo lambda build --release --x86-64 --package "heimdallr-$function" --features lambda --bin "$function-bootstrap"
  else
    cargo build --release --target "$target" --package "heimdallr-$function" --features lambda --bin "$function-bootstrap"
  fi
  mkdir -p "$out"
  # Each crate's binary has its own name (one target directory holds them all); Lambda
  # wants it called bootstrap.
  cp "$CARGO_TARGET_DIR/$target/release/$function-bootstrap" "$out/bootstrap"
  if command -v objdump >/dev/null 2>&1; then
    check_glibc "$out/bootstrap"
  else
    echo "warning: objdump (binutils) is missing: $out/bootstrap's glibc needs are not checked" >&2
  fi
}

for function in $FUNCTIONS; do
  build "$function" x86_64-unknown-linux-gnu "dist/lambda/$function"
  if $arm64; then
    build "$function" aarch64-unknown-linux-gnu "dist/lambda/$function-arm64"
  fi
done
$arm64 || echo "(arm64 skipped: rustup target add aarch64-unknown-linux-gnu to build it)"
