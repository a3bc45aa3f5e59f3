#!/usr/bin/env bash
# The gates on a Redis Cluster next to one Redis server, in one run (issue
# 16): a release build of the app, started twice on the machine's Postgres
# (a scratch database each), once on the machine's Redis and once on a local
# cluster of 3 masters with a replica each (tests/redis-cluster/cluster.sh),
# with the same load generator scenarios fired at each.
#   scripts/cluster-bench.sh
#   SCENARIOS="flash-sale coupon-rush" scripts/cluster-bench.sh
set -euo pipefail
# The trusted gateway's shared secret, for the app and the load generator.
export GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef} LOADTEST_GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef}
cd "$(dirname "$0")/.."
log() { printf '== %s\n' "$*"; }
die() { printf 'cluster-bench: %s\n' "$*" >&2; exit 2; }
# shellcheck source=tests/redis-cluster/cluster.sh
source tests/redis-cluster/cluster.sh
SCENARIOS=${SCENARIOS:-"health flash-sale coupon-rush invest-rush orders"}
PORT=${PORT:-18082}
DIR=$(mktemp -d /tmp/cluster-bench.XXXXXX)
PORTS=()
APP=
cleanup() {
  [ -n "$APP" ] && kill "$APP" 2>/dev/null
  stop_cluster "$DIR"
  for db in perf_single_$$ perf_cluster_$$; do
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  redis-cli -h 127.0.0.1 --scan --pattern "perf_single_$$:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 DEL >/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT
cargo build --release -p app -p loadtest >/dev/null 2>&1
start_cluster "$DIR"

run() { # NAME DB [VAR=VALUE...]
  local name=$1 db=$2
  shift 2
  env "$@" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" APP_HTTP_ADDR="127.0.0.1:$PORT" \
    APP_TRUSTED_USER_HEADER=X-USER-ID APP_TRUSTED_GATEWAY_SECRET="$GATEWAY_SECRET" APP_ADMIN_LOGIN_ID=admin APP_ADMIN_PASSWORD=change-me-now \
    APP_REDIS_KEY_PREFIX="$db:" RUST_LOG=warn APP_JWT_SECRET=loadtest-secret-loadtest-secret-0123 \
    ./target/release/app >"$DIR/$name.log" 2>&1 &
  APP=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
  for scenario in $SCENARIOS; do
    ./target/release/loadtest --base "http://127.0.0.1:$PORT" --json "$scenario" >"$DIR/$name.$scenario.json" 2>/dev/null || true
    jq -r --arg n "$name" '.reports[0] | "\($n)\t\(.scenario)\t\(.per_second | floor)/s\tp99 \(.p99_ms) ms\t\(.statuses | to_entries | map("\(.key)=\(.value)") | join(" "))\tchecks \(if (.checks | all(.pass)) then "PASS" else "FAIL" end)"' \
      "$DIR/$name.$scenario.json" 2>/dev/null || echo -e "$name\t$scenario\tno report"
  done
  kill "$APP"; wait "$APP" 2>/dev/null || true; APP=
}
log "one Redis server (127.0.0.1:6379)"
run single "perf_single_$$"
log "Redis Cluster ($NODES, each master with a replica)"
run cluster "perf_cluster_$$" APP_REDIS_CLUSTER_NODES="$NODES"
