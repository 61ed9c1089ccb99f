#!/usr/bin/env bash
# Build the web frontend (frontend/dist) from the lockfile: `npm ci` when node_modules
# is missing or older than the lockfile, then type-check and `vite build`.
# `make frontend` calls this only when dist/ is missing or older than its sources.
set -euo pipefail
cd "$(dirname "$0")/../frontend"
if ! command -v npm >/dev/null; then
  echo "build-frontend: npm is missing (scripts/install-system-deps.sh installs Node.js)" >&2
  exit 1
fi
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "==> frontend: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
fi
echo "==> frontend: vite build -> frontend/dist"
npx --no-install tsc --noEmit
npx --no-install vite build --logLevel warn
