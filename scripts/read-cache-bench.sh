#!/usr/bin/env bash
# The shared read cache, measured (issue 19): two instances of the release
# app on one scratch database (100,000 products) and one Redis, the load
# generator's `reads` scenario spread over both, once with the cache on
# (APP_READ_CACHE_BOUND, default 1s) and once with it off. For each: reads/s,
# p50/p99, and the Postgres statements run per read (pg_stat_statements when
# it is loaded, else committed transactions; either way including the
# background jobs of the window).
#
#   scripts/read-cache-bench.sh               # SCALE=1: 100,000 reads per mode
#   SCALE=0.2 scripts/read-cache-bench.sh     # a quick run
#   CONNECTIONS=128 BOUND=500ms scripts/read-cache-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef}
export LOADTEST_GATEWAY_SECRET=$GATEWAY_SECRET
SCALE=${SCALE:-1}
CONNECTIONS=${CONNECTIONS:-256}
BOUND=${BOUND:-1s}
PRODUCTS=${PRODUCTS:-100000}
DB=read_cache_bench_$$
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -X -q -At)
OUT=target/read-cache-bench
mkdir -p "$OUT"

cargo build --release -q -p app -p loadtest
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
APPS=()
stop_apps() {
  for pid in ${APPS[@]+"${APPS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${APPS[@]+"${APPS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  APPS=()
}
cleanup() {
  stop_apps
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "$DB:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 DEL >/dev/null || true
}
trap cleanup EXIT
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
./target/release/app migrate >/dev/null
"${PSQL[@]}" -d "$DB" -c "INSERT INTO products (name, price, stock)
  SELECT 'Product ' || g, 100 + g % 9900, 1000000 FROM generate_series(1, $PRODUCTS) g" \
  -c "VACUUM ANALYZE products"

has_pss=$("${PSQL[@]}" -d "$DB" -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'" 2>/dev/null || echo 0)
if [ "$has_pss" = 0 ]; then
  "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null 2>&1 && has_pss=1 || true
fi
statements() {
  if [ "$has_pss" = 1 ] && "${PSQL[@]}" -d "$DB" -c "SELECT 1 FROM pg_stat_statements LIMIT 1" >/dev/null 2>&1; then
    "${PSQL[@]}" -d "$DB" -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$DB'"
  else
    # Each backend reports its transactions when it exits or about once a
    # second; read after the apps stopped.
    "${PSQL[@]}" -d "$DB" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'"
  fi
}

run_mode() { # $1: on|off
  local mode=$1 bound=$BOUND
  [ "$mode" = off ] && bound=off
  local bases=""
  for port in 18181 18182; do
    APP_HTTP_ADDR="127.0.0.1:$port" APP_TRUSTED_USER_HEADER=X-USER-ID \
      APP_TRUSTED_GATEWAY_SECRET="$GATEWAY_SECRET" APP_ADMIN_LOGIN_ID=admin \
      APP_ADMIN_PASSWORD=change-me-now APP_REDIS_KEY_PREFIX="$DB:$mode:" RUST_LOG=warn \
      APP_JWT_SECRET=loadtest-secret-loadtest-secret-0123 APP_READ_CACHE_BOUND=$bound \
      ./target/release/app >"$OUT/app-$mode-$port.log" 2>&1 &
    APPS+=($!)
    bases="${bases:+$bases,}http://127.0.0.1:$port"
  done
  for port in 18181 18182; do
    for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.2; done
  done
  # The setup (a product, a campaign of 100,000 codes, a user) runs before
  # the firing; the statements are counted from the firing's start.
  ./target/release/loadtest reads --base "$bases" --connections "$CONNECTIONS" --scale "$SCALE" \
    --json >"$OUT/reads-$mode.json" 2>"$OUT/reads-$mode.err" &
  local lt=$!
  until grep -q "firing reads" "$OUT/reads-$mode.err" 2>/dev/null; do
    kill -0 "$lt" 2>/dev/null || { cat "$OUT/reads-$mode.err" >&2; exit 1; }
    sleep 0.1
  done
  local before; before=$(statements)
  wait "$lt" || echo "reads ($mode): a check failed; see $OUT/reads-$mode.json" >&2
  for port in 18181 18182; do
    curl -s "127.0.0.1:$port/metrics" | grep '^read_cache_reads_total' | sed "s/^/$port /" || true
  done >"$OUT/cache-$mode.txt"
  stop_apps
  sleep 1
  local after; after=$(statements)
  python3 - "$OUT/reads-$mode.json" "$mode" "$before" "$after" "$OUT/cache-$mode.txt" <<'PY'
import json, sys
path, mode, before, after, cache = sys.argv[1:6]
report = json.load(open(path))
r = report["reports"][0]
reads = r["requests"]
stmts = int(float(after)) - int(float(before))
loads = sum(int(float(l.split()[-1])) for l in open(cache) if 'outcome="load"' in l)
print(f"| {mode} | {reads:,} | {r['per_second']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
      f"{stmts:,} | {stmts / reads:.2f} | {loads:,} |")
PY
}

echo "| cache | reads | reads/s | p50 ms | p99 ms | Postgres statements | per read | cache loads |"
echo "|---|---|---|---|---|---|---|---|"
run_mode on
run_mode off
