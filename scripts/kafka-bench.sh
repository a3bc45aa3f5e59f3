#!/usr/bin/env bash
# Measures the Kafka sink of the outbox (issue 16) on this machine, in one
# run: a fresh release build of the app with APP_KAFKA_BROKERS set against
# a local tansu broker (memory storage), then
#   1. `loadtest SCENARIO` (default flash-sale, then orders) while a sampler
#      reads /metrics every 100 ms: the largest lag of each sink (events not
#      yet published, age of the oldest);
#   2. the relay's rate: the broker is stopped, orders pile up in the outbox
#      (`loadtest orders`), the broker starts again, and the time the Kafka
#      relay takes to drain that backlog gives events per second.
#   scripts/kafka-bench.sh
# Needs tansu (cargo install tansu --locked --version 0.6.0 --features dynostore).
set -euo pipefail
# The trusted gateway's shared secret, for the app and the load generator.
export GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef} LOADTEST_GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef}
cd "$(dirname "$0")/.."
PORT=${PORT:-18081}
DB=perf_kafka_$$
command -v tansu >/dev/null || { echo "tansu is missing: cargo install tansu --locked --version 0.6.0 --features dynostore" >&2; exit 2; }
KPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cargo build --release -p app -p loadtest >/dev/null 2>&1
start_broker() {
  tansu broker --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" \
    --storage-engine memory://tansu/ --silent >/dev/null 2>&1 &
  BROKER=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break; sleep 0.1; done
}
start_broker
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" APP_HTTP_ADDR="127.0.0.1:$PORT" \
  APP_TRUSTED_USER_HEADER=X-USER-ID APP_TRUSTED_GATEWAY_SECRET="$GATEWAY_SECRET" APP_ADMIN_LOGIN_ID=admin APP_ADMIN_PASSWORD=change-me-now \
  APP_REDIS_KEY_PREFIX="$DB:" RUST_LOG=${RUST_LOG:-warn} APP_JWT_SECRET=loadtest-secret-loadtest-secret-0123 \
  APP_KAFKA_BROKERS="127.0.0.1:$KPORT" APP_KAFKA_TIMEOUT=2s
./target/release/app >"/tmp/$DB.log" 2>&1 &
APP=$!
cleanup() {
  kill "$APP" "${SAMPLER:-}" 2>/dev/null || true
  kill "$BROKER" 2>/dev/null || true
  wait "$APP" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "$DB:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 DEL >/dev/null
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done

lag() { # prints: stream_lag kafka_lag stream_age kafka_age
  curl -sf "127.0.0.1:$PORT/metrics" | awk '
    /^outbox_unpublished_events\{sink="stream"\}/ {sl=$2}
    /^outbox_unpublished_events\{sink="kafka"\}/ {kl=$2}
    /^outbox_oldest_unpublished_age_seconds\{sink="stream"\}/ {sa=$2}
    /^outbox_oldest_unpublished_age_seconds\{sink="kafka"\}/ {ka=$2}
    END {print sl+0, kl+0, sa+0, ka+0}'
}
published() { psql -h 127.0.0.1 -U postgres -d "$DB" -Atc "SELECT count(*) FILTER (WHERE published_at IS NOT NULL), count(*) FILTER (WHERE kafka_published_at IS NOT NULL), count(*) FROM outbox"; }

for scenario in ${SCENARIOS:-flash-sale orders}; do
  samples="/tmp/$DB.$scenario.lag"
  : >"$samples"
  ( while true; do lag >>"$samples" || true; sleep 0.1; done ) &
  SAMPLER=$!
  ./target/release/loadtest --base "http://127.0.0.1:$PORT" "$scenario" | grep -E '/s' | head -3
  # until both sinks caught up
  for _ in $(seq 1 300); do read -r sl kl _ _ < <(lag); [ "$sl" = 0 ] && [ "$kl" = 0 ] && break; sleep 0.1; done
  kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
  awk -v s="$scenario" '{ if ($1>sl) sl=$1; if ($2>kl) kl=$2; if ($3>sa) sa=$3; if ($4>ka) ka=$4 }
    END { printf "%s: largest lag, stream %d events (oldest %.1f s), kafka %d events (oldest %.1f s), over %d samples\n", s, sl, sa, kl, ka, NR }' "$samples"
  echo "   outbox (stream published, kafka published, all): $(published)"
done

echo "== the Kafka relay's rate on a backlog"
kill "$BROKER"; wait "$BROKER" 2>/dev/null || true
./target/release/loadtest --base "http://127.0.0.1:$PORT" orders | grep -E '/s' | head -2
for _ in $(seq 1 100); do read -r sl kl _ _ < <(lag); [ "$sl" = 0 ] && break; sleep 0.1; done
read -r _ backlog _ _ < <(lag)
echo "   backlog while the broker was down: $backlog events (stream lag $sl)"
start=$(date +%s%N)
start_broker
for _ in $(seq 1 6000); do read -r _ kl _ _ < <(lag); [ "$kl" = 0 ] && break; sleep 0.05; done
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "   drained $backlog events in $took_ms ms (broker start included): $(( backlog * 1000 / (took_ms > 0 ? took_ms : 1) )) events/s"
echo "   outbox (stream published, kafka published, all): $(published)"
