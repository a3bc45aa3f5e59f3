#!/usr/bin/env bash
# Measures coupon code generation: one POST of COUNT codes (default 1,000,000)
# against the release binary on a fresh database, on this machine's local
# Postgres and Redis. Prints codes per second.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-1000000}
PORT=${PORT:-18090}
DB=perf_codes_$$
cargo build --release -p app >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" APP_HTTP_ADDR="127.0.0.1:$PORT" \
  APP_ADMIN_LOGIN_ID=perfadmin APP_ADMIN_PASSWORD=perf-password RUST_LOG=warn \
  APP_STATEMENT_TIMEOUT=60s APP_JSON_BODY_LIMIT=65536
./target/release/app >/tmp/perf-codes.log 2>&1 &
APP=$!
trap 'kill $APP 2>/dev/null; sleep 1; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null' EXIT
for _ in $(seq 1 50); do curl -sf "localhost:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
TOKEN=$(curl -s -XPOST "localhost:$PORT/api/v1/auth/signin" -H 'content-type: application/json' \
  -d '{"loginId":"perfadmin","password":"perf-password"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
CAMPAIGN=$(curl -s -XPOST "localhost:$PORT/api/v1/admin/coupon-campaigns" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' \
  -d '{"name":"perf","discountType":"AMOUNT","discountValue":1000,"validDays":7}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
START=$(date +%s.%N)
curl -s --max-time 600 -XPOST "localhost:$PORT/api/v1/admin/coupon-campaigns/$CAMPAIGN/codes" \
  -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "{\"count\":$COUNT}"
END=$(date +%s.%N)
echo
python3 -c "s=$END-$START; print(f'$COUNT codes in {s:.2f} s = {$COUNT/s:,.0f} codes/s')"
