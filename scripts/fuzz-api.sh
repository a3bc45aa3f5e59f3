#!/usr/bin/env bash
# Property-based API fuzz with the PyPI package schemathesis against a
# running service: every operation of /api-docs/openapi.json, with all checks
# (server errors, status codes, content types, response schemas and headers,
# positive and negative data, auth), once with an admin token and once with a
# user token. Starts nothing: run the app first, on a scratch database, since
# the run writes (products, campaigns, orders, users).
#
#   BASE=http://127.0.0.1:18097 scripts/fuzz-api.sh
#
# Start that app with the abuse limits off (APP_SIGNIN_LIMIT_PER_LOGIN=off
# APP_SIGNIN_LIMIT_PER_ADDRESS=off APP_ATTEMPT_LIMIT_PER_USER=off): the run
# sends thousands of writes per user, and 429s, though documented, leave
# operations untested.
#
# Environment:
#   BASE           the service (default http://127.0.0.1:8080)
#   ADMIN_TOKEN    an admin bearer token; else signs in with
#   ADMIN_LOGIN_ID / ADMIN_PASSWORD (default: APP_ADMIN_LOGIN_ID /
#                  APP_ADMIN_PASSWORD, else admin / change-me-now)
#   USER_TOKEN     a user bearer token; else signs up a fresh user
#   SEED_DATA      1 (default): create a product, a campaign with codes, an
#                  investment product, an order, an investment and issued
#                  coupons, and let path parameters draw their ids and codes
#                  half of the time; 0: fuzz with what is there
#   MAX_EXAMPLES   test cases per operation and phase (default 50)
#   MAX_TIME       seconds per run, admin and user each (default 300)
#   REQUEST_TIMEOUT  seconds before one request counts as hung (default 60)
#   MAX_RESPONSE_TIME  seconds a response may take before it fails the
#                  max_response_time check (default 30; schemathesis's own is 10)
#   FUZZ_SEED      schemathesis seed (default: random; printed by the run)
#   REPORT_DIR     where logs and JUnit/NDJSON reports go
#                  (default target/fuzz/<UTC timestamp>)
#
# Failures analysed as schemathesis false positives are dropped by
# scripts/fuzz-api-hooks.py (each rule names the exact problem detail) and
# counted at the end; docs/reliability.md explains each. Exits 1 when either
# run reports any other failure.
set -euo pipefail

BASE="${BASE:-http://127.0.0.1:8080}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SCHEMATHESIS_VENV:-$ROOT/target/schemathesis-venv}"
ST="$VENV/bin/st"
PY="$VENV/bin/python"
MAX_EXAMPLES="${MAX_EXAMPLES:-50}"
MAX_TIME="${MAX_TIME:-300}"
# Generating 1,000,000 codes (count's maximum) takes some 15 s on a 2-core
# machine once the scratch database holds millions of codes: slow, not hung.
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-60}"
MAX_RESPONSE_TIME="${MAX_RESPONSE_TIME:-30}"
SEED_DATA="${SEED_DATA:-1}"
REPORT_DIR="${REPORT_DIR:-$ROOT/target/fuzz/$(date -u +%Y%m%dT%H%M%SZ)}"
ADMIN_LOGIN_ID="${ADMIN_LOGIN_ID:-${APP_ADMIN_LOGIN_ID:-admin}}"
ADMIN_PASSWORD="${ADMIN_PASSWORD:-${APP_ADMIN_PASSWORD:-change-me-now}}"

if [[ ! -x "$ST" ]]; then
    echo "installing schemathesis into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check schemathesis
fi
mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"
echo "schemathesis $("$ST" --version | awk '{print $NF}') against $BASE; reports in $REPORT_DIR" >&2

# call METHOD PATH [TOKEN] [BODY] [EXTRA CURL ARGS...]: prints the body, fails on a non-2xx.
call() {
    local method="$1" path="$2" token="${3:-}" body="${4:-}"
    shift $(($# < 4 ? $# : 4))
    local args=(--silent --show-error --fail-with-body --max-time 30 -X "$method" "$BASE$path")
    [[ -n "$token" ]] && args+=(-H "authorization: Bearer $token")
    [[ -n "$body" ]] && args+=(-H 'content-type: application/json' -d "$body")
    curl "${args[@]}" "$@"
}
# field NAME: reads one top-level member of the JSON on stdin.
field() { "$PY" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

curl --fail --silent --show-error --max-time 10 "$BASE/health/ready" >/dev/null

if [[ -z "${ADMIN_TOKEN:-}" ]]; then
    ADMIN_TOKEN="$(call POST /api/v1/auth/signin "" \
        "{\"loginId\":\"$ADMIN_LOGIN_ID\",\"password\":\"$ADMIN_PASSWORD\"}" | field token)"
fi
if [[ -z "${USER_TOKEN:-}" ]]; then
    login="fuzz-$(date +%s)-$RANDOM"
    USER_TOKEN="$(call POST /api/v1/auth/signup "" \
        "{\"loginId\":\"$login\",\"password\":\"fuzz-password-1\"}" | field token)"
    echo "signed up $login" >&2
fi

ids=() codes=()
if [[ "$SEED_DATA" == 1 ]]; then
    run="$(date +%s)-$RANDOM"
    product="$(call POST /api/v1/admin/products "$ADMIN_TOKEN" \
        "{\"name\":\"fuzz $run\",\"price\":1000,\"stock\":1000000}" | field id)"
    campaign="$(call POST /api/v1/admin/coupon-campaigns "$ADMIN_TOKEN" \
        "{\"name\":\"fuzz $run\",\"discountType\":\"AMOUNT\",\"discountValue\":100,\"validDays\":30}" | field id)"
    call POST "/api/v1/admin/coupon-campaigns/$campaign/codes" "$ADMIN_TOKEN" '{"count":1000}' >/dev/null
    # A second campaign nobody holds a coupon of, so that issue can succeed.
    fresh="$(call POST /api/v1/admin/coupon-campaigns "$ADMIN_TOKEN" \
        "{\"name\":\"fuzz fresh $run\",\"discountType\":\"PERCENT\",\"discountValue\":10,\"maxDiscountAmount\":500,\"validDays\":2}" | field id)"
    call POST "/api/v1/admin/coupon-campaigns/$fresh/codes" "$ADMIN_TOKEN" '{"count":1000}' >/dev/null
    invest="$(call POST /api/v1/admin/invest-products "$ADMIN_TOKEN" \
        "{\"title\":\"fuzz $run\",\"totalInvestingAmount\":1000000000000,\"startedAt\":\"2000-01-01T00:00:00Z\",\"finishedAt\":\"2999-12-31T00:00:00Z\"}" \
        | field productId)"
    for token in "$ADMIN_TOKEN" "$USER_TOKEN"; do
        call POST /api/v1/points/charge "$token" '{"amount":1000000}' -H "Idempotency-Key: fuzz-seed-$run" >/dev/null || true
        codes+=("$(call POST "/api/v1/coupon-campaigns/$campaign/issue" "$token" | field code)")
    done
    order="$(call POST /api/v1/orders "$USER_TOKEN" \
        "{\"items\":[{\"productId\":$product,\"quantity\":1}]}" -H "Idempotency-Key: fuzz-seed-order-$run" | field orderId)"
    call POST /api/v1/investments "$USER_TOKEN" "{\"productId\":$invest,\"investAmount\":5000}" \
        -H "Idempotency-Key: fuzz-seed-invest-$run" >/dev/null
    mapfile -t ids < <(printf '%s\n' "$product" "$campaign" "$fresh" "$order" "$invest" | sort -nu)
    echo "seeded product $product, campaigns $campaign (codes ${codes[*]}) and $fresh, order $order, invest product $invest" >&2
fi

CONFIG="$REPORT_DIR/schemathesis.toml"
{
    echo "hooks = \"$ROOT/scripts/fuzz-api-hooks.py\""
    if ((${#ids[@]})); then
        echo
        echo "[dictionaries.ids]"
        echo "values = [$(IFS=,; echo "${ids[*]}")]"
        echo "[dictionaries.codes]"
        printf 'values = [%s]\n' "$(printf '"%s",' "${codes[@]}" | sed 's/,$//')"
        echo
        echo "[parameters]"
        echo '"path.id" = { dictionary = "ids", probability = 0.5 }'
        echo '"path.code" = { dictionary = "codes", probability = 0.5 }'
    fi
} >"$CONFIG"

DROPPED="$REPORT_DIR/dropped.tsv"
: >"$DROPPED"
status=0
for who in admin user; do
    token="$ADMIN_TOKEN"
    [[ "$who" == user ]] && token="$USER_TOKEN"
    args=(--config-file "$CONFIG" run "$BASE/api-docs/openapi.json"
        --header "Authorization: Bearer $token"
        --checks all --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME"
        --request-timeout "$REQUEST_TIMEOUT" --max-response-time "$MAX_RESPONSE_TIME"
        --report junit,ndjson --report-dir "$REPORT_DIR/$who" --no-color)
    [[ -n "${FUZZ_SEED:-}" ]] && args+=(--seed "$FUZZ_SEED")
    echo "== $who: st ${args[*]/$token/…}" >&2
    rc=0
    # From the report directory, where schemathesis keeps its .schemathesis cache.
    (cd "$REPORT_DIR" && FUZZ_DROPPED_LOG="$DROPPED" "$ST" "${args[@]}") >"$REPORT_DIR/$who.log" 2>&1 || rc=$?
    sed -n '/^=* SUMMARY =*$/,$p' "$REPORT_DIR/$who.log" >&2
    echo "== $who: exit $rc (full log $REPORT_DIR/$who.log)" >&2
    ((rc == 0)) || status=1
done

if [[ -s "$DROPPED" ]]; then
    echo "known false positives dropped by scripts/fuzz-api-hooks.py:" >&2
    sort "$DROPPED" | uniq -c | sort -rn >&2
fi
exit "$status"
