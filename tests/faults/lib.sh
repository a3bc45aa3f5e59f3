# Shared by tests/faults/*.sh (sourced, never run). The runner (run.sh)
# starts a private Postgres cluster and a private redis-server on free ports
# and exports where they are; the fault scripts use the helpers below to
# start and stop them and the app. Nothing here ever touches the machine's
# shared Postgres (5432) or Redis (6379).
#
# Environment set by run.sh:
#   FAULTS_DIR     scratch directory (logs, pid files, reports)
#   PG_BIN         directory of initdb, pg_ctl, pg_isready
#   PG_DATA        the private cluster's data directory
#   PG_PORT        its port (127.0.0.1)
#   REDIS_PORT     the private redis-server's port (127.0.0.1)
#   APP_BIN        the app binary; LOADTEST_BIN the load generator
#   APP_PORT       the app's port

log() { printf '== %s\n' "$*"; }
die() { printf 'faults: %s\n' "$*" >&2; exit 2; }

now_ms() { date +%s%3N; }

# A TCP port on 127.0.0.1 that nothing listens on, from $1 upwards.
free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}

# --- checks ------------------------------------------------------------------
# check NAME PASS(0|1) DETAIL: prints one PASS/FAIL line and appends it to
# $FAULT_CHECKS (the runner counts the FAILs) and to the fault's own list.
check() {
  local name=$1 ok=$2 detail=$3 verdict=PASS
  [ "$ok" = 1 ] || verdict=FAIL
  printf '   [%s] %s: %s\n' "$verdict" "$name" "$detail"
  printf '%s\t%s\t%s\n' "$verdict" "$name" "$detail" | tee -a "$FAULT_OUT/checks.tsv" >>"$FAULT_CHECKS"
}

# --- private Postgres -------------------------------------------------------
# Postgres refuses to run as root: as root, run its tools as the postgres user.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$FAULTS_DIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$FAULTS_DIR/pgsock -c max_connections=200 -c fsync=on -c synchronous_commit=on" \
    start >/dev/null
}

pg_stop() { # $1: fast (default) or immediate
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m "${1:-fast}" -w -t 60 stop >/dev/null
}

pg_up() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# psql_at DB SQL: one unaligned, tuples-only answer.
psql_at() {
  psql -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -c "$2"
}

# --- private Redis ----------------------------------------------------------
redis_start() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$FAULTS_DIR" --pidfile "$FAULTS_DIR/redis.pid" \
    --logfile "$FAULTS_DIR/redis.log" >/dev/null
}

redis_stop() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  local _
  for _ in $(seq 1 100); do redis_up || return 0; sleep 0.05; done
  die "redis-server on $REDIS_PORT did not stop"
}

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ]; }

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# --- the app ----------------------------------------------------------------
# app_start NAME: starts the app on database fault_NAME (- becomes _) and key prefix
# NAME: (appending to $FAULTS_DIR/app-NAME.log), records its pid, and waits
# until /health/ready answers. APP_PG_PORT and APP_REDIS_PORT, when set, are
# where the app connects instead (a proxy in front of the private servers).
app_start() {
  local name=$1
  DATABASE_URL="postgres://postgres@127.0.0.1:${APP_PG_PORT:-$PG_PORT}/fault_${name//-/_}" \
    REDIS_URL="redis://127.0.0.1:${APP_REDIS_PORT:-$REDIS_PORT}" \
    APP_HTTP_ADDR="127.0.0.1:$APP_PORT" \
    APP_TRUSTED_USER_HEADER=X-USER-ID APP_TRUSTED_GATEWAY_SECRET="$GATEWAY_SECRET" \
    APP_ADMIN_LOGIN_ID=admin APP_ADMIN_PASSWORD=change-me-now \
    APP_JWT_SECRET=fault-runner-secret-fault-runner-secret-0123 \
    APP_REDIS_KEY_PREFIX="$name:" \
    APP_LOG_FORMAT=json RUST_LOG="${FAULTS_RUST_LOG:-warn}" \
    "$APP_BIN" >>"$FAULTS_DIR/app-$name.log" 2>&1 &
  echo $! >"$FAULTS_DIR/app.pid"
}

app_pid() { cat "$FAULTS_DIR/app.pid" 2>/dev/null; }

app_live() { curl -sf -m 1 "http://127.0.0.1:$APP_PORT/health/live" >/dev/null; }
app_ready() { curl -sf -m 2 "http://127.0.0.1:$APP_PORT/health/ready" >/dev/null; }

wait_for() { # wait_for SECONDS COMMAND...: polls every 50 ms
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# Stops the app with SIGTERM (it drains), or SIGKILL after 20 s.
app_stop() {
  local pid
  pid=$(app_pid) || return 0
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local _
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$FAULTS_DIR/app.pid"
}

app_kill() {
  local pid
  pid=$(app_pid)
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$FAULTS_DIR/app.pid"
}

# --- the load ---------------------------------------------------------------
# load_start NAME ARGS...: starts `loadtest fault` in the background against
# the app, with its report, ready file and marks file under $FAULTS_DIR/NAME.
# A fault script may set FAULT_DURATION and FAULT_CLIENT_TIMEOUT (seconds) for
# its own load; FAULTS_DURATION and FAULTS_CLIENT_TIMEOUT are the defaults.
load_start() {
  local name=$1
  shift
  FAULT_OUT="$FAULTS_DIR/$name"
  mkdir -p "$FAULT_OUT"
  : >"$FAULT_OUT/marks"
  rm -f "$FAULT_OUT/ready"
  "$LOADTEST_BIN" fault --base "http://127.0.0.1:$APP_PORT" \
    --fault-name "$name" --connections "${FAULTS_CONNECTIONS:-32}" \
    --request-timeout "${FAULT_CLIENT_TIMEOUT:-${FAULTS_CLIENT_TIMEOUT:-5}}" \
    --duration "${FAULT_DURATION:-${FAULTS_DURATION:-30}}" \
    --ready-file "$FAULT_OUT/ready" --marks "$FAULT_OUT/marks" \
    --report "$FAULT_OUT/report.json" "$@" \
    >"$FAULT_OUT/loadtest.out" 2>"$FAULT_OUT/loadtest.err" &
  LOAD_PID=$!
  echo "$LOAD_PID" >"$FAULTS_DIR/load.pid"
  # The setup (products, campaigns, 5,000 users) comes first.
  wait_for 120 test -s "$FAULT_OUT/ready" || {
    cat "$FAULT_OUT/loadtest.err" >&2
    die "the load generator did not start firing"
  }
}

mark() { printf '%s %s\n' "$1" "$(now_ms)" >>"$FAULT_OUT/marks"; }

# Sleeps until SECONDS after the firing started.
sleep_until() {
  local at=$(($(cat "$FAULT_OUT/ready") + $1 * 1000)) now
  now=$(now_ms)
  [ "$now" -ge "$at" ] || sleep "$(awk -v ms=$((at - now)) 'BEGIN { printf "%.3f", ms / 1000 }')"
}

# Waits for the load generator; prints its report; records its verdict.
load_finish() {
  local rc=0
  wait "$LOAD_PID" || rc=$?
  rm -f "$FAULTS_DIR/load.pid"
  cat "$FAULT_OUT/loadtest.out"
  if [ ! -s "$FAULT_OUT/report.json" ]; then
    sed 's/^/   loadtest: /' "$FAULT_OUT/loadtest.err"
    check "the load generator ran to its end" 0 "exit code $rc, no report"
    return 1
  fi
  # Its own checks are in its report (and printed above); count them too.
  jq -r '.checks[] | [(if .pass then "PASS" else "FAIL" end), .name, .detail] | @tsv' \
    "$FAULT_OUT/report.json" | tee -a "$FAULT_OUT/checks.tsv" >>"$FAULT_CHECKS"
}

# --- database checks shared by the faults -----------------------------------
# psql_rows DB DDL FILE QUERY: loads the tab-separated FILE into the temp
# table of DDL (named t), then prints the answer of QUERY.
psql_rows() {
  psql -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" \
    -c "CREATE TEMP TABLE t ($2)" -c "\\copy t FROM pstdin" -c "$4" <"$3"
}

ok_if() { if "$@"; then echo 1; else echo 0; fi; }

# The orders answered 201 are all in the database, and the database holds no
# other order: with every key settled, the 201s are exactly what was sold.
check_orders_in_db() {
  local db=$1 report=$2
  jq -r '.orders[] | [.login, .key, .orderId, .productId] | @tsv' "$report" >"$FAULT_OUT/orders.tsv"
  jq -r '.targets[] | select(.kind == "shelf" or .kind == "hot") | [.id, .size] | @tsv' "$report" \
    >"$FAULT_OUT/products.tsv"
  local n_201 missing n_db bad_keys
  n_201=$(wc -l <"$FAULT_OUT/orders.tsv")
  missing=$(psql_rows "$db" "login text, key text, order_id bigint, product_id bigint" "$FAULT_OUT/orders.tsv" \
    "SELECT count(*) FROM t WHERE NOT EXISTS (
       SELECT 1 FROM orders o JOIN users u ON u.id = o.user_id JOIN order_items i ON i.order_id = o.id
        WHERE o.id = t.order_id AND u.login_id = t.login AND i.product_id = t.product_id)")
  n_db=$(psql_at "$db" "SELECT count(*) FROM orders")
  check "every order answered 201 is in the database (its user, its product)" "$(ok_if [ "$missing" = 0 ])" \
    "$n_201 orders answered 201, $missing missing"
  check "no order in the database that was not answered 201 (keys settled)" \
    "$(ok_if [ "$n_db" = "$n_201" ])" "$n_db in the database, $n_201 answered 201"
  bad_keys=$(psql_rows "$db" "login text, key text, order_id bigint, product_id bigint" "$FAULT_OUT/orders.tsv" \
    "SELECT count(*) FROM t JOIN users u ON u.login_id = t.login
       LEFT JOIN idempotency_keys k ON k.user_id = u.id AND k.key = t.key
      WHERE k.response_status IS DISTINCT FROM 201
         OR (convert_from(k.response_body, 'UTF8')::jsonb->>'orderId') IS DISTINCT FROM t.order_id::text")
  check "each 201 order's idempotency key stores that order" "$(ok_if [ "$bad_keys" = 0 ])" \
    "$bad_keys keys without their order"
  local stock_off
  stock_off=$(psql_rows "$db" "id bigint, initial bigint" "$FAULT_OUT/products.tsv" \
    "SELECT count(*) FROM t JOIN products p ON p.id = t.id
       LEFT JOIN (SELECT product_id, sum(quantity) AS q FROM order_items GROUP BY 1) s ON s.product_id = p.id
      WHERE p.stock < 0 OR p.stock + coalesce(s.q, 0) <> t.initial")
  check "no oversell: stock >= 0 and stock + units ordered = initial stock (database)" \
    "$(ok_if [ "$stock_off" = 0 ])" "$(wc -l <"$FAULT_OUT/products.tsv") products, $stock_off off"
  local wallets
  wallets=$(psql_at "$db" "SELECT count(*) FROM wallets w JOIN users u ON u.id = w.user_id
      LEFT JOIN (SELECT user_id, sum(CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END) AS s
                   FROM point_ledger GROUP BY 1) l ON l.user_id = w.user_id
      LEFT JOIN (SELECT user_id, sum(paid_amount) AS paid FROM orders GROUP BY 1) o ON o.user_id = w.user_id
     WHERE w.balance <> coalesce(l.s, 0)
        OR (u.login_id LIKE '%-fb-%' AND w.balance <> 1000000 - coalesce(o.paid, 0))")
  check "every balance = its ledger = 1,000,000 charged - paid orders (database)" \
    "$(ok_if [ "$wallets" = 0 ])" "$wallets wallets off"
}

# Coupons and investments against the database.
check_coupons_and_investments_in_db() {
  local db=$1 report=$2
  jq -r '.coupons[] | [.login, .campaignId, .code] | @tsv' "$report" >"$FAULT_OUT/coupons.tsv"
  jq -r '.investments[] | [.login, .productId, .amount, .investmentId] | @tsv' "$report" >"$FAULT_OUT/investments.tsv"
  local coupon_bad n_coupons two issued doubt pools_over
  coupon_bad=$(psql_rows "$db" "login text, campaign_id bigint, code text" "$FAULT_OUT/coupons.tsv" \
    "SELECT count(*) FROM t LEFT JOIN users u ON u.login_id = t.login LEFT JOIN coupons c ON c.code = t.code
      WHERE c.owner_id IS DISTINCT FROM u.id OR c.campaign_id <> t.campaign_id")
  n_coupons=$(wc -l <"$FAULT_OUT/coupons.tsv")
  issued=$(psql_at "$db" "SELECT count(*) FROM coupons WHERE owner_id IS NOT NULL")
  doubt=$(jq '.couponAnswersInDoubt' "$report")
  two=$(psql_at "$db" "SELECT count(*) FROM (SELECT 1 FROM coupons WHERE owner_id IS NOT NULL
      GROUP BY campaign_id, owner_id HAVING count(*) > 1) x")
  check "every coupon answered 201 is owned by its user (database)" "$(ok_if [ "$coupon_bad" = 0 ])" \
    "$n_coupons answered 201, $coupon_bad not owned by their user"
  check "no over-issue: one code per user and campaign; 201s <= issued <= 201s + answers in doubt (database)" \
    "$([ "$two" = 0 ] && [ "$issued" -ge "$n_coupons" ] && [ "$issued" -le $((n_coupons + doubt)) ] && echo 1 || echo 0)" \
    "$issued issued, $n_coupons answered 201, $doubt in doubt, $two users with two"
  local inv_off n_inv n_db_inv missing_inv
  inv_off=$(psql_at "$db" "SELECT count(*) FROM invest_products p
      LEFT JOIN (SELECT product_id, sum(amount) AS s, count(DISTINCT user_id) AS n FROM investments GROUP BY 1) i
        ON i.product_id = p.id
     WHERE p.current_amount > p.total_amount OR p.current_amount <> coalesce(i.s, 0)
        OR p.investor_count <> coalesce(i.n, 0)")
  check "no over-investment: current <= total, current = sum of investments, investors counted once (database)" \
    "$(ok_if [ "$inv_off" = 0 ])" "$inv_off products off"
  n_inv=$(wc -l <"$FAULT_OUT/investments.tsv")
  n_db_inv=$(psql_at "$db" "SELECT count(*) FROM investments")
  missing_inv=$(psql_rows "$db" "login text, product_id bigint, amount bigint, id bigint" "$FAULT_OUT/investments.tsv" \
    "SELECT count(*) FROM t WHERE NOT EXISTS (SELECT 1 FROM investments i JOIN users u ON u.id = i.user_id
       WHERE i.id = t.id AND u.login_id = t.login AND i.product_id = t.product_id AND i.amount = t.amount)")
  check "every investment answered 201 is in the database, and only those" \
    "$([ "$missing_inv" = 0 ] && [ "$n_db_inv" = "$n_inv" ] && echo 1 || echo 0)" \
    "$n_inv answered 201, $missing_inv missing, $n_db_inv in the database"
}

outbox_pending() { psql_at "$1" "SELECT count(*) FROM outbox WHERE published_at IS NULL"; }
outbox_empty() { [ "$(outbox_pending "$1")" = 0 ]; }

# Every outbox row gets published (waits up to $2 s, default 30).
check_outbox_drains() {
  local db=$1 started left
  started=$(now_ms)
  wait_for "${2:-30}" outbox_empty "$db" || true
  left=$(outbox_pending "$db")
  check "the outbox drains: every event published" "$(ok_if [ "$left" = 0 ])" \
    "$left unpublished after $(( ($(now_ms) - started) / 1000 )) s"
}

# stream_events PREFIX: "orderId<TAB>eventId" for every entry of the stream.
stream_events() {
  rcli --raw XRANGE "${1}events:orders" - + |
    awk 'prev == "payload" { print } { prev = $0 }' |
    jq -r '[.orderId, .eventId] | @tsv'
}

# Every outbox event is in the stream (the stream kept everything: Postgres
# or the app went away, not Redis' data).
check_every_event_in_stream() {
  local db=$1 prefix=$2 missing
  psql_at "$db" "SELECT (payload->>'orderId'), event_id FROM outbox ORDER BY 1" | tr '|' '\t' | sort >"$FAULT_OUT/events-expected.tsv"
  stream_events "$prefix" | sort >"$FAULT_OUT/events-stream.tsv"
  missing=$(comm -23 "$FAULT_OUT/events-expected.tsv" <(sort -u "$FAULT_OUT/events-stream.tsv") | wc -l)
  check "every order's event is in the stream" "$(ok_if [ "$missing" = 0 ])" \
    "$(wc -l <"$FAULT_OUT/events-expected.tsv") orders, $missing events missing, $(wc -l <"$FAULT_OUT/events-stream.tsv") stream entries"
}

check_no_advisory_lock() {
  local locks
  locks=$(psql_at "$1" "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
  check "no advisory lock left behind (no idempotency key held in progress)" "$(ok_if [ "$locks" = 0 ])" "$locks held"
}

# --- hung dependencies (redis-hang, postgres-hang, latency, silent-drop) -----
# A hung server keeps its connections open and answers nothing: SIGSTOP, and
# SIGCONT to resume. The kernel still completes TCP handshakes (the listen
# backlog), so new connections hang too.
redis_pause() { kill -STOP "$(cat "$FAULTS_DIR/redis.pid")"; }
redis_resume() { kill -CONT "$(cat "$FAULTS_DIR/redis.pid")" 2>/dev/null || true; }

# The whole cluster: the postmaster first (so it forks no new backend), then
# every process it started (backends, checkpointer, walwriter, …).
pg_postmaster() { head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null; }
pg_pause() {
  local pm
  pm=$(pg_postmaster)
  kill -STOP "$pm"
  pkill -STOP -P "$pm" || true
}
pg_resume() {
  local pm
  pm=$(pg_postmaster) || return 0
  [ -n "$pm" ] || return 0
  pkill -CONT -P "$pm" || true
  kill -CONT "$pm" 2>/dev/null || true
}

# The TCP proxy (tests/faults/proxy.py): proxy_start NAME TARGET_PORT starts
# one on a free port, exported as PROXY_PORT_NAME, with its mode in
# $FAULTS_DIR/proxy-NAME.mode; proxy_mode NAME MODE... changes it.
proxy_start() {
  local name=$1 target=$2 port
  port=$(free_port $((target + 100)))
  proxy_mode "$name" pass
  python3 "$(dirname "${BASH_SOURCE[0]}")/proxy.py" --listen "$port" --target "127.0.0.1:$target" \
    --control "$FAULTS_DIR/proxy-$name.mode" 2>>"$FAULTS_DIR/proxy-$name.log" &
  echo $! >>"$FAULTS_DIR/proxy.pids"
  wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null || die "the $name proxy did not start"
  printf -v "PROXY_PORT_${name^^}" '%s' "$port"
}
proxy_mode() { # writes the mode atomically; the proxy applies it within 20 ms
  local name=$1
  shift
  echo "$*" >"$FAULTS_DIR/proxy-$name.mode.tmp"
  mv "$FAULTS_DIR/proxy-$name.mode.tmp" "$FAULTS_DIR/proxy-$name.mode"
}
proxies_stop() {
  local pid
  [ -s "$FAULTS_DIR/proxy.pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$FAULTS_DIR/proxy.pids"
  rm -f "$FAULTS_DIR/proxy.pids"
}

# ready_poll_start: asks /health/ready every 250 ms in the background, one
# line per answer in $FAULT_OUT/ready.tsv: sent (epoch ms), status, seconds,
# and the body's checks and detail.
ready_poll_start() {
  : >"$FAULT_OUT/ready.tsv"
  (
    while :; do
      sent=$(now_ms)
      out=$(curl -s -m 5 -w '\n%{http_code} %{time_total}' "http://127.0.0.1:$APP_PORT/health/ready" || true)
      last=$(tail -n 1 <<<"$out")
      printf '%s\t%s\t%s\t%s\n' "$sent" "${last% *}" "${last#* }" \
        "$(head -n -1 <<<"$out" | jq -c '{checks, detail}' 2>/dev/null || echo '{}')" >>"$FAULT_OUT/ready.tsv"
      sleep 0.25
    done
  ) &
  echo $! >"$FAULTS_DIR/poll.pid"
}
ready_poll_stop() {
  [ -s "$FAULTS_DIR/poll.pid" ] || return 0
  kill "$(cat "$FAULTS_DIR/poll.pid")" 2>/dev/null || true
  wait "$(cat "$FAULTS_DIR/poll.pid")" 2>/dev/null || true
  rm -f "$FAULTS_DIR/poll.pid"
}

# check_ready_during "DEPS" HOW: from 1.5 s after `fault` to 1.5 s before
# `back`, every readiness answer was 503 with each of DEPS (postgres, redis)
# DOWN and the other UP, and its detail says HOW (a regex; "" for any); with
# DEPS "any", what it said then is only printed. Every answer of the whole
# fault came within 2.5 s (readiness bounds each probe by 1 s); after
# `back`, a 200 within 5 s.
check_ready_during() {
  local deps=$1 how=$2 fault back want status n bad first_ok slowest
  fault=$(awk '$1 == "fault" { print $2 }' "$FAULT_OUT/marks")
  back=$(awk '$1 == "back" { print $2 }' "$FAULT_OUT/marks")
  want=$(jq -cn --arg down "$deps" '["postgres", "redis"] | map(. as $d | {($d): (if ($down | split(" ") | index($d)) then "DOWN" else "UP" end)}) | add')
  status=$([ -n "$deps" ] && echo 503 || echo 200)
  awk -F'\t' -v a=$((fault + 1500)) -v b=$((back - 1500)) '$1 >= a && $1 <= b' "$FAULT_OUT/ready.tsv" >"$FAULT_OUT/ready-during.tsv"
  n=$(wc -l <"$FAULT_OUT/ready-during.tsv")
  if [ "$deps" = any ]; then
    log "/health/ready while it lasted: $(cut -f2,4 "$FAULT_OUT/ready-during.tsv" | sort | uniq -c | tr '\n\t' '; ')"
  else
    bad=$(while IFS=$'\t' read -r _ code _ body; do
        jq -r --arg code "$code" --arg status "$status" --argjson want "$want" --arg how "$how" \
          'if $code == $status and .checks == $want and ($how == "" or ((.detail // "") | test($how))) then empty else "\($code) \(.checks | tojson) \(.detail // "")" end' <<<"$body"
      done <"$FAULT_OUT/ready-during.tsv" | sort | uniq -c | tr '\n' ';')
    check "/health/ready while it lasts: $status, checks $want${how:+, detail /$how/}" \
      "$([ "$n" -gt 0 ] && [ -z "$bad" ] && echo 1 || echo 0)" \
      "$n answers from fault+1.5 s to back-1.5 s${bad:+; off: $bad}; e.g. $(awk -F'\t' 'NR == 1 { print $2, $4 }' "$FAULT_OUT/ready-during.tsv")"
  fi
  slowest=$(awk -F'\t' 'BEGIN { m = 0 } $3 + 0 > m { m = $3 + 0 } END { print m }' "$FAULT_OUT/ready.tsv")
  check "/health/ready answers within 2.5 s throughout (its own probe timeout, not the dependency's hang)" \
    "$(awk -v m="$slowest" 'BEGIN { exit !(m <= 2.5) }' && echo 1 || echo 0)" \
    "$(wc -l <"$FAULT_OUT/ready.tsv") answers, slowest $slowest s"
  first_ok=$(awk -F'\t' -v b="$back" '$1 >= b && $2 == 200 { print $1 - b; exit }' "$FAULT_OUT/ready.tsv")
  check "/health/ready is 200 again within 5 s of the return" \
    "$([ -n "$first_ok" ] && [ "$first_ok" -le 5000 ] && echo 1 || echo 0)" "${first_ok:-never} ms after the return"
}
