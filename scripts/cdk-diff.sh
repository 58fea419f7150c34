#!/usr/bin/env bash
# Prints `cdk diff` of the working tree's stacks against a git ref, offline, ready to paste
# into a review:
#   scripts/cdk-diff.sh [BASE_REF] [cdk context args...]
#   scripts/cdk-diff.sh main                       # every stage, against main
#   scripts/cdk-diff.sh HEAD~1 -c stage=production # one stage, against the last commit
# BASE_REF defaults to HEAD (what is not committed yet). The base is synthesized in a
# temporary git worktree; both sides use the same stand-in bundles, so the diff shows the
# infrastructure, not the functions' code (a code change is a new asset hash on deploy),
# and the working tree's node_modules (a dependency bump shows as the base's change).
# A stack new in the working tree is diffed against an empty template; a stack only the
# base has is listed as removed; a base that does not synthesize (before infra/ existed,
# or without the stage asked for) counts as having no stacks. Exits non-zero when the
# working tree does not synthesize.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
root="$PWD"
base=HEAD
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  base="$1"
  shift
fi
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=1

if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  echo "error: $base is not a commit here (a shallow clone? fetch it first)" >&2
  exit 2
fi
source scripts/lib/node.sh
ensure_node_modules

work="$(mktemp -d /tmp/heimdallr-cdk-diff.XXXXXX)"
cleanup() {
  git -C "$root" worktree remove --force "$work/base-tree" >/dev/null 2>&1 || true
  rm -rf "$work"
  git -C "$root" worktree prune >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Stand-in bundles: an x86_64 and an arm64 ELF header per function, identical on both sides.
stubs="$work/bundles"
python3 - "$stubs" functions/*/ <<'PY'
import os, struct, sys
out, dirs = sys.argv[1], sys.argv[2:]
for d in dirs:
    name = os.path.basename(os.path.normpath(d))
    if name == "core":
        continue
    for suffix, machine in (("", 62), ("-arm64", 183)):
        os.makedirs(os.path.join(out, name + suffix))
        header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HH", 2, machine) + bytes(44)
        path = os.path.join(out, name + suffix, "bootstrap")
        with open(path, "wb") as f:
            f.write(header + b"stand-in: " + name.encode())
        os.chmod(path, 0o755)
        os.utime(path, (2_000_000_000, 2_000_000_000))
PY

synth() {
  local dir="$1" out="$2"; shift 2
  (cd "$dir" && HEIMDALLR_BUNDLE_DIR="$stubs" npx --no-install cdk synth --quiet --output "$out" "$@" >"$out.log" 2>&1)
}

git worktree add --quiet --detach "$work/base-tree" "$base"
ln -s "$root/node_modules" "$work/base-tree/node_modules"
# Bases from before HEIMDALLR_BUNDLE_DIR read their cdk.json bundleDir (dist/lambda).
mkdir -p "$work/base-tree/dist"
ln -s "$stubs" "$work/base-tree/dist/lambda"

if ! synth "$root" "$work/head" "$@"; then
  echo "error: the working tree does not synthesize:" >&2
  cat "$work/head.log" >&2
  exit 1
fi
if ! synth "$work/base-tree" "$work/base" "$@"; then
  echo "note: $base does not synthesize$([ $# -gt 0 ] && echo " with $*"); every stack counts as new:"
  # head reads the file itself: `sed ... | head` could end sed with SIGPIPE (pipefail).
  head -n 5 "$work/base.log" | sed 's/^/    /'
  rm -rf "$work/base" && mkdir -p "$work/base"
fi

echo "cdk diff: working tree against $base ($(git rev-parse --short "$base"))"
status=0
for template in "$work"/head/*.template.json; do
  stack="$(basename "$template" .template.json)"
  before="$work/base/$stack.template.json"
  if [ ! -f "$before" ]; then
    echo
    echo "Stack $stack is new (not in $base): everything below is added"
    echo '{}' >"$work/empty.json"
    before="$work/empty.json"
  fi
  (cd "$root" && npx --no-install cdk diff --app "$work/head" --template "$before" "$stack" 2>&1) || status=$?
done
for template in "$work"/base/*.template.json; do
  stack="$(basename "$template" .template.json)"
  [ -f "$work/head/$stack.template.json" ] || echo "Stack $stack is removed (in $base, not in the working tree)"
done
# cdk diff exits 0 whatever it finds unless --fail is given; anything else is an error.
exit "$status"
