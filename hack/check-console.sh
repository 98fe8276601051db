#!/usr/bin/env bash
# The web console's TypeScript passes ESLint (typescript-eslint's type-aware
# recommended rules) and type-checks (strict), and the committed build in
# dagwright/api/console/static/js is what it compiles to (installs and
# `make demo` need no Node; this keeps the two from drifting).
set -euo pipefail
cd "$(dirname "$0")/../console"
if [ ! -x node_modules/.bin/tsc ] || [ package-lock.json -nt node_modules/.bin/tsc ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/eslint src
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
node_modules/.bin/tsc -p . --outDir "$out"
if ! diff -r "$out" ../dagwright/api/console/static/js >/dev/null; then
  echo "dagwright: the console's committed JavaScript is not its TypeScript's build: run make console" >&2
  diff -r "$out" ../dagwright/api/console/static/js | head -20 >&2
  exit 1
fi
