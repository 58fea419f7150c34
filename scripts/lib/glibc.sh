# Sourced by scripts/build-functions.sh: fails when a Lambda binary needs a glibc newer
# than the Lambda runtime has (Amazon Linux 2023, provided.al2023).
# Runs under the caller's `set -euo pipefail`: a binary that needs no glibc at all (static)
# must not end the script with no message.
MAX_GLIBC="2.34"

check_glibc() { # binary
  local binary="$1" symbols needed
  if ! command -v objdump >/dev/null 2>&1; then
    echo "error: objdump is missing, so $binary's glibc needs cannot be checked: apt-get install binutils" >&2
    return 1
  fi
  if ! symbols="$(LC_ALL=C objdump -T "$binary" 2>&1)"; then
    if grep -q "not a dynamic object" <<<"$symbols"; then
      symbols="" # statically linked: it needs no glibc from the host
    else
      echo "error: objdump -T $binary failed, so its glibc needs cannot be checked:" >&2
      echo "$symbols" >&2
      return 1
    fi
  fi
  # No GLIBC_ symbol at all is fine (grep finds nothing): it needs none.
  needed="$({ grep -o 'GLIBC_[0-9][0-9.]*' <<<"$symbols" || true; } | sed 's/^GLIBC_//' | sort -V | tail -n 1)"
  if [ -n "$needed" ] && [ "$(printf '%s\n%s\n' "$needed" "$MAX_GLIBC" | sort -V | tail -n 1)" != "$MAX_GLIBC" ]; then
    echo "error: $binary needs GLIBC_$needed; Amazon Linux 2023 has $MAX_GLIBC" >&2
    return 1
  fi
  echo "    $(du -h "$binary" | cut -f1)  $binary  (needs glibc ${needed:-none})"
}
