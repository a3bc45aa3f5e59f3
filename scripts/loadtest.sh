#!/usr/bin/env bash
# Runs the load generator against a fresh release build of the app on this
# machine: a scratch database, the trusted-gateway header and an admin, then
# `loadtest ARGS` (default: `all`), then stops the app and drops the database.
#   scripts/loadtest.sh                  # every scenario and the baselines
#   scripts/loadtest.sh flash-sale --json
# The app's resident memory is reported with each scenario.
set -euo pipefail
# The trusted gateway's shared secret, for the app and the load generator.
export GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef} LOADTEST_GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef}
cd "$(dirname "$0")/.."
PORT=${PORT:-18080}
DB=perf_load_$$
[ $# -gt 0 ] || set -- all
cargo build --release -p app -p loadtest >/dev/null 2>&1
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" APP_HTTP_ADDR="127.0.0.1:$PORT" \
  APP_TRUSTED_USER_HEADER=X-USER-ID APP_TRUSTED_GATEWAY_SECRET="$GATEWAY_SECRET" APP_ADMIN_LOGIN_ID=admin APP_ADMIN_PASSWORD=change-me-now \
  APP_REDIS_KEY_PREFIX="$DB:" RUST_LOG=${RUST_LOG:-warn} APP_JWT_SECRET=loadtest-secret-loadtest-secret-0123
./target/release/app >"/tmp/$DB.log" 2>&1 &
APP=$!
cleanup() {
  kill "$APP" 2>/dev/null || true
  wait "$APP" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "$DB:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 DEL >/dev/null
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
./target/release/loadtest --base "http://127.0.0.1:$PORT" --app-pid "$APP" "$@"
