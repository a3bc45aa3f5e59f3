#!/usr/bin/env bash
# The docs page in a real browser (issue 17): starts the app (debug build, a
# scratch database), opens /docs in Debian's Chromium, headless, driven by
# playwright-core from the npm registry (scripts/docs-page/check.mjs; no
# browser is downloaded), checks that every operation of
# /api-docs/openapi.json is listed on the page, uses "Try it out" on sign-up
# and expects the 201, and saves a screenshot (target/docs-page.png).
# Installs Debian's chromium and playwright-core (into
# ~/.cache/points-commerce/docs-page) when they are missing.
#   scripts/check-docs-page.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '== %s\n' "$*"; }
die() { printf 'check-docs-page: %s\n' "$*" >&2; exit 2; }
for tool in node npm curl psql python3; do command -v "$tool" >/dev/null || die "'$tool' is missing"; done
if ! command -v chromium >/dev/null; then
  log "installing Chromium (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
DRIVER=${DOCS_PAGE_DRIVER:-$HOME/.cache/points-commerce/docs-page}
if [ ! -d "$DRIVER/node_modules/playwright-core" ]; then
  log "installing playwright-core into $DRIVER (npm; no browser download)"
  mkdir -p "$DRIVER"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$DRIVER" playwright-core@1.64.1 >/dev/null
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d /tmp/check-docs-page.XXXXXX)
DB=docs_page_$$
PORT=$(free_port)
APP=
cleanup() {
  [ -n "$APP" ] && kill "$APP" 2>/dev/null
  wait 2>/dev/null
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "$DB:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 DEL >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
log "building the app (debug)"
# The same package set as the other scripts build, so cargo's feature
# unification matches and a CI run reuses their build (-p app alone rebuilt
# the app's crates: 2 min 17 s in a CI run).
cargo build -p app -p loadtest --quiet
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" APP_HTTP_ADDR="127.0.0.1:$PORT" \
  APP_REDIS_KEY_PREFIX="$DB:" APP_JWT_SECRET=docs-page-secret-docs-page-secret-0123 RUST_LOG=warn \
  ./target/debug/app >"$DIR/app.log" 2>&1 &
APP=$!
for _ in $(seq 1 150); do curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null || { tail -5 "$DIR/app.log" >&2; die "the app did not start"; }
mkdir -p "$ROOT/target"
log "opening /docs in headless Chromium"
cp scripts/docs-page/check.mjs "$DRIVER/check.mjs"
node "$DRIVER/check.mjs" "http://127.0.0.1:$PORT" "$ROOT/target/docs-page.png"
log "the docs page works"
