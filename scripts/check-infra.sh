#!/usr/bin/env bash
# Checks the CDK app in infra/: npm dependencies (npm ci), TypeScript, the jest tests
# (assertions, cdk-nag AwsSolutions, template snapshot), then `cdk synth` of the real app
# with the real bundles (scripts/build-functions.sh) and cfn-lint on the template.
# Offline: the stack is environment-agnostic; telemetry and notices are off in cdk.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=1
source scripts/lib/python.sh

if ! command -v npm >/dev/null 2>&1; then
  echo "==> installing Node.js and npm from Debian packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "==> tsc (infra)"
npx tsc -p infra/tsconfig.json --noEmit

echo "==> jest (infra)"
npx jest --config infra/jest.config.js --ci

echo "==> Lambda bundles"
scripts/build-functions.sh

echo "==> cdk synth (the app as cdk.json runs it; cdk-nag checks on every synth)"
out="$(mktemp -d /tmp/heimdallr-cdk.XXXXXX)"
trap 'rm -rf "$out"' EXIT
npx cdk synth --quiet --output "$out"

ensure_python_tools
echo "==> cfn-lint (errors fail; warnings are printed)"
"$PY_TOOLS/cfn-lint" --non-zero-exit-code error -- "$out"/*.template.json
echo "    template ok: $(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['Resources']))" "$out"/Heimdallr.template.json) resources"
