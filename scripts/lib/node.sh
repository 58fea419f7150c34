# Sourced by scripts, from the project root: Node.js, npm and the npm packages in
# node_modules (npm ci from package-lock.json), installed when missing.
# Runs under the callers' `set -euo pipefail`: a lookup that finds nothing must not fail
# (that would end the script with no message before the install branch).

ensure_node_modules() {
  if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing Node.js and npm from Debian packages"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } \
       || ! command -v npm >/dev/null 2>&1; then
      echo "error: npm is missing and installing it (apt-get install nodejs npm) failed." >&2
      echo "  The CDK checks need Node.js 20+ and npm (docs/deploy.md): as root," >&2
      echo "  apt-get install nodejs npm, or install Node.js from https://nodejs.org, then run this again." >&2
      return 1
    fi
  fi
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "==> npm ci"
    if ! npm ci --no-audit --no-fund --loglevel=error; then
      echo "error: npm ci failed: node_modules (the CDK, jest, TypeScript from package-lock.json) is missing." >&2
      echo "  Is the npm registry reachable (npm config get registry)?" >&2
      return 1
    fi
  fi
}
