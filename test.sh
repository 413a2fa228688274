#!/usr/bin/env bash
# Every test of the product: the server's (Rust, each on SQLite and on PostgreSQL) and the web client's
# (JSDoc types, unit tests, end-to-end tests in Chromium against the real server).
# Needs PostgreSQL on 127.0.0.1:5432, Node.js and Debian's chromium: `bash .ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace
cargo build -p multichat-server
cd ui-tests
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p tsconfig.json
node --test unit/
node --test --test-concurrency=1 e2e/
