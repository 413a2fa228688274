#!/usr/bin/env bash
# Every test of the product: the server's (Rust, each on SQLite and on PostgreSQL) and the web client's
# (JSDoc types, unit tests, end-to-end tests in Chromium against the real server).
# Needs PostgreSQL on 127.0.0.1:5432, Node.js and Debian's chromium: `bash .ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace

# The desktop's credential store against REAL keyrings: the kernel's (in a fresh session keyring) and a
# Secret Service (gnome-keyring, unlocked, on a private D-Bus with a throwaway home).
MULTICHAT_KEYRING_BACKEND=keyutils keyctl session - \
  cargo test -p multichat-desktop --test keyring_backend -- --ignored
keyring_home=$(mktemp -d)
trap 'rm -rf "$keyring_home"' EXIT
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" HOME="$keyring_home" \
  MULTICHAT_KEYRING_BACKEND=secret-service dbus-run-session -- bash -c \
  'eval "$(printf unlock | gnome-keyring-daemon --unlock --components=secrets | sed "s/^/export /")"
   cargo test -p multichat-desktop --test keyring_backend -- --ignored'

cargo build -p multichat-server
cd ui-tests
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p tsconfig.json
node --test unit/
node --test --test-concurrency=1 e2e/
