#!/usr/bin/env bash
# Every test of the product: the server's (Rust, each on SQLite and on PostgreSQL), the web client's (JSDoc
# types, unit tests, end-to-end tests in Chromium against the real server) and the desktop app's (Rust, real
# keyrings, end-to-end through WebDriver under Xvfb).
# Needs PostgreSQL on 127.0.0.1:5432, Node.js, Debian's chromium, WebKitGTK with webkit2gtk-driver, Xvfb,
# gnome-keyring, keyutils and iproute2 (network namespaces, as root, keep LAN discovery off the real network):
# `bash .ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ] && [ -z "${MULTICHAT_SKIP_NETNS:-}" ]; then
  echo "not root: the LAN discovery tests, which need network namespaces, are skipped" >&2
  export MULTICHAT_SKIP_NETNS=1
fi
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

cargo build -p multichat-server -p multichat-desktop
# The Dockerfile's build stage, exactly; and the image runs its binary on debian:bookworm-slim, so that binary
# must need no shared library beyond glibc's.
cargo build --release --locked -p multichat-server
extra=$(ldd "${CARGO_TARGET_DIR:-target}/release/multichat-server" | awk '{print $1}' \
  | grep -vE '^(linux-vdso\.so|/lib64/ld-linux|lib(c|m|gcc_s|dl|pthread|rt)\.so)' || true)
[ -z "$extra" ] || { echo "the server needs libraries the slim image lacks: $extra" >&2; exit 1; }
# tauri-driver (WebDriver for Tauri apps) is a cargo tool: installed once, outside the project.
tools="${MULTICHAT_TOOLS:-$HOME/.cache/multichat/tools}"
[ -x "$tools/bin/tauri-driver" ] || cargo install tauri-driver --version 2.1.0 --locked --root "$tools" --quiet
export TAURI_DRIVER="$tools/bin/tauri-driver"

cd ui-tests
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tsc -p tsconfig.json
node --test unit/
node --test --test-concurrency=1 e2e/

# The desktop app end to end: a virtual screen, a private D-Bus with an unlocked keyring, a throwaway home.
desktop_home=$(mktemp -d)
netns=""
trap 'rm -rf "$keyring_home" "$desktop_home"; [ -z "$netns" ] || ip netns del "$netns"' EXIT
# The app browses the LAN (mDNS) from its login window, and its LAN test announces servers: none of that may
# reach the machine's network. As root, the whole run is inside a network namespace with only loopback;
# elsewhere the app's LAN discovery is off and that test is skipped.
if [ "$(id -u)" = 0 ]; then
  netns="multichat-test-$$"
  ip netns add "$netns"
  ip -n "$netns" link set lo up
  isolated=(ip netns exec "$netns" env MULTICHAT_NETNS="$netns")
else
  isolated=(env MULTICHAT_DISCOVERY=off)
fi
# (Bounded: a window waiting on something that never comes must fail the run, not hang it. --test-force-exit: a
# test that timed out never ran its cleanup, and what it spawned would keep its file running until `timeout`
# killed everything, its report included.)
HOME="$desktop_home" timeout 900 "${isolated[@]}" xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- bash -c \
  'eval "$(printf unlock | gnome-keyring-daemon --unlock --components=secrets | sed "s/^/export /")"
   node --test --test-concurrency=1 --test-force-exit desktop/'

# The .deb the Tauri bundler makes: it installs, and the installed app starts and shows its login window.
cd ../src-tauri
[ -d node_modules ] || npm ci --no-audit --no-fund
npx tauri build --bundles deb
deb=$(ls -t "${CARGO_TARGET_DIR:-../target}"/release/bundle/deb/*.deb | head -n 1)
if [ "$(id -u)" = 0 ]; then
  dpkg -i "$deb"
  cd ../ui-tests
  # No keyring here on purpose: the app must start without one (and without prompting for one).
  HOME="$desktop_home" MULTICHAT_DESKTOP_BIN=/usr/bin/multichat-desktop MULTICHAT_DISCOVERY=off \
    timeout 300 xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- node --test package/
else
  echo "skipped: installing $deb needs root (sudo dpkg -i it, then run node --test package/ in ui-tests)" >&2
fi
