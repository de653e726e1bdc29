#!/usr/bin/env bash
# Browser tests of the portal (tests/browser/portal.mjs): playwright-core
# drives Debian's Chromium against a real `charter serve` on SQLite and a
# real `charter instance`, both on loopback ports the script picks. No
# browser build is downloaded: Chromium comes from apt, and
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD keeps npm from fetching one. Leaves a
# screenshot of every page in target/portal-screenshots/. About 30 s once
# Chromium and the binary are there.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${CHARTER_BIN:-${CARGO_TARGET_DIR:-target}/debug/charter}"
if [ ! -x "$BIN" ]; then
  cargo build --locked --bin charter
fi

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

CHARTER_BIN="$BIN" timeout 300 node tests/browser/portal.mjs
