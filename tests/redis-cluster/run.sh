#!/usr/bin/env bash
# The Redis Cluster step (issue 16). Starts a local Redis Cluster of 3
# masters, each with a replica (redis-server --cluster-enabled yes on free
# ports below 55535, `redis-cli --cluster create … --cluster-replicas 1`,
# a short cluster-node-timeout so a replica takes over in seconds), then
#   1. the acceptance flows on it: cargo test -p app --features
#      redis-cluster-tests --test cluster_flows;
#   2. the failover step: the app on the cluster (and on the machine's
#      Postgres, a scratch database), a flash sale fired at it by the load
#      generator, and the master that holds the sale's stock counter killed
#      with SIGKILL while it runs. Checked afterwards: no answer 500, no
#      oversell (sold + left = stock, in Postgres), every answer one the API
#      allows, the cluster healthy again, the sale's counter rebuilt from
#      Postgres, and a new order served.
# Exits 1 when a check failed, 2 when something it needs is missing. It
# never touches the machine's Redis (6379); it uses the machine's Postgres
# (127.0.0.1:5432) for a scratch database that it drops.
#   tests/redis-cluster/run.sh
#   CLUSTER_STEPS=failover tests/redis-cluster/run.sh   # one step
set -euo pipefail
# The trusted gateway's shared secret, for the app and the load generator.
export GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef} LOADTEST_GATEWAY_SECRET=${GATEWAY_SECRET:-loadtest-gateway-secret-0123456789abcdef}
cd "$(dirname "$0")/../.."

log() { printf '== %s\n' "$*"; }
die() { printf 'redis-cluster: %s\n' "$*" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is missing: install $2"; }
need redis-server "Redis 7 (apt-get install redis-server)"
need redis-cli "Redis 7 (apt-get install redis-tools)"
need psql "the Postgres client (apt-get install postgresql-client)"
need jq "jq (apt-get install jq)"
need curl "curl (apt-get install curl)"
STEPS=${CLUSTER_STEPS:-"flows failover"}
# shellcheck source=tests/redis-cluster/cluster.sh
source tests/redis-cluster/cluster.sh
PORTS=()

DIR=$(mktemp -d /tmp/redis-cluster.XXXXXX)
FAILS=0
check() { # NAME OK(0|1) DETAIL
  local verdict=PASS
  [ "$2" = 1 ] || { verdict=FAIL; FAILS=$((FAILS + 1)); }
  printf '   [%s] %s: %s\n' "$verdict" "$1" "$3"
}

APP_PID=
LOAD_PID=
DB=
teardown() {
  local rc=$?
  set +e
  [ -n "$LOAD_PID" ] && kill -KILL "$LOAD_PID" 2>/dev/null
  [ -n "$APP_PID" ] && kill -KILL "$APP_PID" 2>/dev/null
  stop_cluster "$DIR"
  [ -n "$DB" ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  [ "${CLUSTER_KEEP:-0}" = 1 ] || rm -rf "$DIR"
  exit "$rc"
}
trap teardown EXIT

start_cluster "$DIR"
export TEST_REDIS_CLUSTER_NODES=$NODES

if [[ " $STEPS " == *" flows "* ]]; then
  log "the flows on the cluster (cargo test -p app --features redis-cluster-tests --test cluster_flows)"
  if cargo test -p app --features redis-cluster-tests --test cluster_flows; then
    check "cluster flows" 1 "orders, coupons, investments, rate limits, lock, stream, ranking"
  else
    check "cluster flows" 0 "see the test output above"
  fi
fi

if [[ " $STEPS " == *" failover "* ]]; then
  log "building app and loadtest (debug)"
  cargo build -p app -p loadtest --quiet
  APP_PORT=$(port=$((28000 + RANDOM % 2000)); while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done; echo "$port")
  DB=cluster_failover_$$
  PREFIX="$DB:"
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" APP_HTTP_ADDR="127.0.0.1:$APP_PORT" \
    APP_REDIS_CLUSTER_NODES="$NODES" APP_REDIS_KEY_PREFIX="$PREFIX" \
    APP_TRUSTED_USER_HEADER=X-USER-ID APP_TRUSTED_GATEWAY_SECRET="$GATEWAY_SECRET" APP_ADMIN_LOGIN_ID=admin APP_ADMIN_PASSWORD=change-me-now \
    APP_JWT_SECRET=cluster-secret-cluster-secret-0123456 RUST_LOG=${RUST_LOG:-warn} \
    APP_ATTEMPT_LIMIT_PER_USER=off APP_DEPENDENCY_TIMEOUT=2s
  ./target/debug/app >"$DIR/app.log" 2>&1 &
  APP_PID=$!
  for _ in $(seq 1 150); do curl -sf "127.0.0.1:$APP_PORT/health/ready" >/dev/null && break; sleep 0.2; done
  curl -sf "127.0.0.1:$APP_PORT/health/ready" >/dev/null || { tail -20 "$DIR/app.log" >&2; die "the app did not become ready"; }

  log "flash sale on the cluster; the master holding the sale's stock counter is killed while it runs"
  ./target/debug/loadtest --base "http://127.0.0.1:$APP_PORT" --connections 64 --json flash-sale \
    >"$DIR/report.json" 2>"$DIR/loadtest.err" &
  LOAD_PID=$!
  psql_db() { psql -h 127.0.0.1 -U postgres -d "$DB" -Atc "$1"; }
  # The sale has begun when its first order is paid.
  product=
  for _ in $(seq 1 1200); do
    product=$(psql_db "SELECT product_id FROM order_items ORDER BY order_id LIMIT 1" 2>/dev/null || true)
    [ -n "$product" ] && break
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$product" ] || { cat "$DIR/loadtest.err" >&2; die "the flash sale paid no order"; }
  slot=$(redis-cli -p "${PORTS[0]}" cluster keyslot "${PREFIX}stock:{$product}")
  victim=$(redis-cli -p "${PORTS[0]}" cluster nodes | awk -v s="$slot" '
    $3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (s >= r[1] && s <= (r[2] == "" ? r[1] : r[2])) { split($2, a, "[:@]"); print a[2]; exit } } }')
  [ -n "$victim" ] || die "no master holds slot $slot"
  sold_at_kill=$(psql_db "SELECT count(*) FROM order_items WHERE product_id = $product")
  kill -KILL "$(cat "$DIR/$victim/pid")"
  log "killed the master on port $victim (slot $slot of stock:{$product}) after $sold_at_kill paid orders"
  wait "$LOAD_PID" || true
  LOAD_PID=
  rest=()
  for port in "${PORTS[@]}"; do [ "$port" = "$victim" ] || rest+=("$port"); done
  # Recovered means: the killed master is marked failed, a replica owns its
  # slot, and every node left reports cluster_state:ok.
  owner_of_slot() {
    redis-cli -p "${rest[0]}" cluster nodes | awk -v s="$slot" '
      $3 ~ /master/ && $3 !~ /fail/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (s >= r[1] && s <= (r[2] == "" ? r[1] : r[2])) { split($2, a, "[:@]"); print a[2]; exit } } }'
  }
  victim_failed() { redis-cli -p "${rest[0]}" cluster nodes | awk -v p=":$victim@" 'index($2, p) && $3 ~ /fail/ { found = 1 } END { exit !found }'; }
  recovered=0
  for _ in $(seq 1 150); do
    owner=$(owner_of_slot)
    if victim_failed && [ -n "$owner" ] && [ "$owner" != "$victim" ] && cluster_ok "${rest[@]}"; then recovered=1; break; fi
    sleep 0.1
  done

  statuses=$(jq -c '.reports[0].statuses // {}' "$DIR/report.json" 2>/dev/null || echo '{}')
  echo "   answers: $statuses"
  five_hundreds=$(echo "$statuses" | jq '[to_entries[] | select(.key | startswith("500")) | .value] | add // 0')
  unexpected=$(echo "$statuses" | jq -r '[to_entries[] | select(.key != "201" and .key != "409 OUT_OF_STOCK" and (.key | startswith("503") | not)) | "\(.key)=\(.value)"] | join(", ")')
  stock=1000
  sold=$(psql_db "SELECT coalesce(sum(quantity), 0) FROM order_items WHERE product_id = $product")
  left=$(psql_db "SELECT stock FROM products WHERE id = $product")
  paid=$(echo "$statuses" | jq '.["201"] // 0')
  check "no answer 500" "$([ "$five_hundreds" = 0 ] && echo 1 || echo 0)" "$five_hundreds answers 500"
  check "only allowed answers" "$([ -z "$unexpected" ] && echo 1 || echo 0)" "201, 409 OUT_OF_STOCK or 503${unexpected:+; also $unexpected}"
  check "no oversell" "$([ $((sold + left)) = "$stock" ] && [ "$left" -ge 0 ] && echo 1 || echo 0)" "sold $sold + left $left = stock $stock"
  check "every 201 is a paid order" "$([ "$paid" = "$sold" ] && echo 1 || echo 0)" "$paid answers 201, $sold units sold"
  check "the cluster recovered" "$recovered" "the killed master marked failed, slot $slot served by ${owner:-nobody} (a replica took over), cluster_state:ok on the 5 nodes left"
  # The counter is rebuilt from Postgres: absent, or what Postgres has, once
  # the counters rebuilt before the kill have lived out their 30 s.
  # Read from the slot's new owner directly: an unreachable node is a
  # failure, never "absent".
  counter=unread
  for _ in $(seq 1 80); do
    owner=$(owner_of_slot)
    if [ -n "$owner" ] && reply=$(redis-cli -p "$owner" --no-raw get "${PREFIX}stock:{$product}" 2>&1) &&
      [[ "$reply" != *ERR* && "$reply" != *MOVED* && "$reply" != *refused* ]]; then
      counter=$([ "$reply" = "(nil)" ] && echo absent || echo "$reply" | tr -d '"')
      left=$(psql_db "SELECT stock FROM products WHERE id = $product")
      { [ "$counter" = absent ] || [ "$counter" = "$left" ]; } && break
    fi
    sleep 0.5
  done
  check "the gate agrees with Postgres" "$({ [ "$counter" = absent ] || [ "$counter" = "$left" ]; } && echo 1 || echo 0)" "stock:{$product} on port ${owner:-?} = $counter, Postgres $left"
  # A new sale is served after the failover.
  new=$(curl -sf -X POST "127.0.0.1:$APP_PORT/api/v1/admin/products" -H 'content-type: application/json' \
    -H "authorization: Bearer $(curl -sf -X POST "127.0.0.1:$APP_PORT/api/v1/auth/signin" -H 'content-type: application/json' \
      -d '{"loginId":"admin","password":"change-me-now"}' | jq -r .token)" \
    -d '{"name":"after failover","price":10,"stock":3}' | jq -r '.id // empty')
  buyer=$(psql_db "SELECT u.login_id FROM users u JOIN wallets w ON w.user_id = u.id WHERE u.role = 'USER' AND w.balance >= 10 ORDER BY u.id LIMIT 1")
  code=$(curl -s -o "$DIR/after.json" -w '%{http_code}' -X POST "127.0.0.1:$APP_PORT/api/v1/orders" \
    -H 'content-type: application/json' -H "X-USER-ID: $buyer" -H "X-Gateway-Secret: $GATEWAY_SECRET" -H "Idempotency-Key: after-failover" \
    -d "{\"items\":[{\"productId\":${new:-0},\"quantity\":1}]}")
  check "an order after the failover" "$([ "$code" = 201 ] && echo 1 || echo 0)" "POST /api/v1/orders answered $code $(head -c 200 "$DIR/after.json")"
fi

if [ "$FAILS" -gt 0 ]; then
  log "$FAILS check(s) failed"
  exit 1
fi
log "all checks passed"
