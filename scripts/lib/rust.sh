# Sourced by scripts, from the project root: fails early, and says so, when rustc is older
# than the workspace's rust-version (Cargo.toml [workspace.package]), which is the newest
# rust-version among the locked crates (the AWS SDK's, for one).

check_rust_version() {
  local need have version
  need="$(awk -F'"' '/^rust-version[[:space:]]*=/ { print $2; exit }' Cargo.toml)"
  if [ -z "$need" ]; then
    echo "error: no rust-version = \"...\" line in Cargo.toml ([workspace.package])" >&2
    return 1
  fi
  if ! command -v rustc >/dev/null 2>&1; then
    echo "error: rustc is missing; this workspace needs Rust $need or newer (Cargo.toml rust-version):" >&2
    echo "  install it with rustup (https://rustup.rs), then rustup update" >&2
    return 1
  fi
  if ! have="$(rustc --version 2>&1)"; then
    echo "error: rustc --version failed (this workspace needs Rust $need or newer):" >&2
    echo "$have" >&2
    echo "  rustup default stable; rustup update" >&2
    return 1
  fi
  version="${have#rustc }"
  version="${version%% *}"  # 1.95.0 (59807616e 2026-04-14) -> 1.95.0
  version="${version%%-*}"  # 1.96.0-nightly -> 1.96.0
  if ! printf '%s\n%s\n' "$need" "$version" | sort -V -C; then
    echo "error: rustc $version is older than the minimum $need this workspace needs (Cargo.toml rust-version); rustup update" >&2
    return 1
  fi
  echo "    rustc $version (this workspace needs $need or newer)"
}
