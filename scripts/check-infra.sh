#!/usr/bin/env bash
# Checks the CDK app in infra/: npm dependencies (npm ci), TypeScript, the jest tests
# (assertions, cdk-nag AwsSolutions, template snapshot), then `cdk synth` of the real app
# (every stage in cdk.json) with the real bundles (scripts/build-functions.sh), cfn-lint on
# every stage's template, and `cdk diff` against the previous commit (scripts/cdk-diff.sh).
# Offline: the stack is environment-agnostic; telemetry and notices are off in cdk.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heimdallr/target}"
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=1
source scripts/lib/python.sh
source scripts/lib/node.sh

ensure_node_modules

echo "==> tsc (infra)"
npx tsc -p infra/tsconfig.json --noEmit

echo "==> jest (infra)"
npx jest --config infra/jest.config.js --ci

echo "==> Lambda bundles"
scripts/build-functions.sh

echo "==> cdk synth (the app as cdk.json runs it, every stage; cdk-nag checks on every synth)"
out="$(mktemp -d /tmp/heimdallr-cdk.XXXXXX)"
trap 'rm -rf "$out"' EXIT
npx cdk synth --quiet --output "$out"

ensure_python_tools
echo "==> cfn-lint (every finding fails)"
# W3005 is ignored: aws-cdk-lib's Function adds a DependsOn on its own role (which it also
# references by GetAtt) so that the role's policies exist before a VPC function is created;
# cfn-lint calls the DependsOn redundant.
"$PY_TOOLS/cfn-lint" --ignore-checks W3005 -- "$out"/*.template.json
for template in "$out"/*.template.json; do
  echo "    $(basename "$template" .template.json): $(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['Resources']))" "$template") resources"
done

echo "==> cdk diff against the previous commit (scripts/cdk-diff.sh HEAD~1)"
if git rev-parse --verify --quiet HEAD~1 >/dev/null; then
  scripts/cdk-diff.sh HEAD~1
else
  echo "    (no previous commit in this clone)"
fi
