#!/usr/bin/env bash
# The ceilings the load scenarios are compared with (docs/performance.md):
#   1. the database ceiling: the SQL of one paid order (bench/order.sql) under
#      pgbench, on one hot product row and on rows spread over 100 products;
#   2. Redis's ceiling for the gate scripts: the stock gate's RESERVE and the
#      coupon gate's ADMIT, taken from the Rust sources, under redis-benchmark.
# The framework ceiling is the load generator's own `health` scenario.
# Output: one `BASELINE name value` line per figure (pgbench in transactions
# per second with CLIENTS clients, redis-benchmark in calls per second with 50).
# Uses the local Postgres and Redis; a scratch database and key prefix are
# dropped at the end. CLIENTS (default 16, the app's pool size) and DURATION
# (default 10 s) tune pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-10}
DB=perf_baseline_$$
PGURL="postgres://postgres@127.0.0.1:5432/$DB"
cleanup() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern 'bench:*' | xargs -r redis-cli -h 127.0.0.1 DEL >/dev/null
}
trap cleanup EXIT

# The same package set as scripts/loadtest.sh, so neither rebuilds what the
# other built (features unify differently for -p app alone).
cargo build --release -p app -p loadtest >/dev/null 2>&1
DATABASE_URL=$PGURL RUST_LOG=warn ./target/release/app migrate >/dev/null
psql -q -h 127.0.0.1 -U postgres -d "$DB" <<'SQL'
INSERT INTO users (login_id, name) SELECT 'bench' || g, 'bench' FROM generate_series(1, 1000) g;
INSERT INTO wallets (user_id, balance) SELECT id, 100000000 FROM users;
INSERT INTO products (name, price, stock) SELECT 'bench ' || g, 100, 1000000000 FROM generate_series(1, 100) g;
VACUUM ANALYZE;
SQL

pg() {
  pgbench -h 127.0.0.1 -U postgres -n -M prepared -f scripts/bench/order.sql -D users=1000 -D products=100 \
    -D hot="$1" -c "$CLIENTS" -j 2 -T "$DURATION" "$DB" 2>/dev/null | awk '/^tps/ {print $3}'
}
# Each figure is printed as `BASELINE name value`, which the load generator reads.
echo "BASELINE pg_order_hot_tps $(pg 1)"
echo "BASELINE pg_order_spread_tps $(pg 0)"

lua() { # the body of `const NAME: &str = r"…";` in a Rust source file
  python3 - "$1" "$2" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
print(re.search(r'const %s: &str = r"(.*?)";' % sys.argv[2], src, re.S).group(1).strip())
PY
}
R="redis-cli -h 127.0.0.1"
$R SET bench:stock 2000000000 >/dev/null
$R SET bench:remaining 2000000000 >/dev/null
reserve=$($R SCRIPT LOAD "$(lua crates/infra/src/redis/stock_gate.rs RESERVE)")
admit=$($R SCRIPT LOAD "$(lua crates/infra/src/redis/issue_gate.rs ADMIT)")
rb() { redis-benchmark -h 127.0.0.1 -q -c 50 -n 300000 -r 100000000 "$@" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -n 1 | cut -d' ' -f1; }
# RESERVE's KEYS: the line's counter and the holder's mark (a new one per call).
echo "BASELINE redis_stock_reserve_per_s $(rb EVALSHA "$reserve" 2 bench:stock bench:holder:__rand_int__ 1 60000)"
echo "BASELINE redis_coupon_admit_per_s $(rb EVALSHA "$admit" 2 bench:remaining bench:holders __rand_int__)"
