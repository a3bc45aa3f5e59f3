#!/usr/bin/env bash
# Proves the Grafana dashboard against a real Prometheus (issue 17): starts
# the app (debug build, a scratch database on the machine's Postgres, its
# own Redis key prefix), a Prometheus on a free port scraping it every
# second, drives a short mixed load with the load generator (orders with
# refusals, coupon issues, investments), then takes every PromQL expression
# in the dashboard JSON and
#   - evaluates it through Prometheus' HTTP API (it must parse), and
#   - checks that every metric name in it has series (/api/v1/series).
# A metric name with no series fails the run, naming the panel: a typo or a
# renamed metric would show "No data" on the day the panel is needed. An
# expression may rightly be empty in a healthy run (a 5xx rate), so the
# names are checked, never the values.
#
#   scripts/check-dashboard.sh
#   DASHBOARD=/tmp/edited.json scripts/check-dashboard.sh   # another file
# Prometheus comes from Debian's packages (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DASHBOARD=${DASHBOARD:-docker/grafana/dashboards/points-commerce.json}
log() { printf '== %s\n' "$*"; }
die() { printf 'check-dashboard: %s\n' "$*" >&2; exit 2; }
for tool in jq curl psql python3; do command -v "$tool" >/dev/null || die "'$tool' is missing"; done
[ -f "$DASHBOARD" ] || die "no dashboard at $DASHBOARD"
if ! command -v prometheus >/dev/null; then
  log "installing Prometheus (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DIR=$(mktemp -d /tmp/check-dashboard.XXXXXX)
DB=dash_$$
APP_PORT=$(free_port)
PROM_PORT=$(free_port)
export GATEWAY_SECRET=dashboard-gateway-secret-0123456789 LOADTEST_GATEWAY_SECRET=dashboard-gateway-secret-0123456789
APP= PROM=
cleanup() {
  [ -n "$PROM" ] && kill "$PROM" 2>/dev/null
  [ -n "$APP" ] && kill "$APP" 2>/dev/null
  wait 2>/dev/null
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "$DB:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 DEL >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

log "building app and loadtest (debug)"
cargo build -p app -p loadtest --quiet
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" APP_HTTP_ADDR="127.0.0.1:$APP_PORT" \
  APP_TRUSTED_USER_HEADER=X-USER-ID APP_TRUSTED_GATEWAY_SECRET="$GATEWAY_SECRET" \
  APP_ADMIN_LOGIN_ID=admin APP_ADMIN_PASSWORD=change-me-now APP_REDIS_KEY_PREFIX="$DB:" \
  APP_JWT_SECRET=dashboard-secret-dashboard-secret-012345 RUST_LOG=warn \
  ./target/debug/app >"$DIR/app.log" 2>&1 &
APP=$!
for _ in $(seq 1 150); do curl -sf "127.0.0.1:$APP_PORT/health/ready" >/dev/null && break; sleep 0.2; done
curl -sf "127.0.0.1:$APP_PORT/health/ready" >/dev/null || { tail -5 "$DIR/app.log" >&2; die "the app did not start"; }

cat >"$DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: points-commerce
    static_configs:
      - targets: ["127.0.0.1:$APP_PORT"]
EOF
log "starting Prometheus on 127.0.0.1:$PROM_PORT, scraping the app every second"
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$DIR/prometheus.log" 2>&1 &
PROM=$!
PROMETHEUS="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 1 100); do curl -sf "$PROMETHEUS/-/ready" >/dev/null && break; sleep 0.2; done
curl -sf "$PROMETHEUS/-/ready" >/dev/null || { tail -5 "$DIR/prometheus.log" >&2; die "Prometheus did not start"; }

log "a short mixed load (flash sale with refusals, coupon rush, investments)"
for scenario in flash-sale coupon-rush invest-rush; do
  ./target/debug/loadtest --base "http://127.0.0.1:$APP_PORT" --connections 32 --scale 0.02 --no-baselines "$scenario" \
    >"$DIR/load-$scenario.log" 2>&1 || true
done
# Every series scraped at least a few times since the load.
sleep 4

# Identifiers of a PromQL expression that name metrics: string literals,
# label matchers, durations and grouping clauses removed, then every
# identifier not followed by "(" (a function) and not a keyword.
metric_names() {
  python3 - "$1" <<'PY'
import re, sys
expr = sys.argv[1]
expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
expr = re.sub(r'\{[^}]*\}', '', expr)
expr = re.sub(r'\[[^\]]*\]', '', expr)
expr = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', '', expr)
keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}
names = set()
for m in re.finditer(r'[a-zA-Z_:][a-zA-Z0-9_:]*', expr):
    rest = expr[m.end():].lstrip()
    if rest.startswith("(") or m.group(0).lower() in keywords:
        continue
    names.add(m.group(0))
print("\n".join(sorted(names)))
PY
}

# Whether a metric name has series in the last 10 minutes. A busy machine
# can leave Prometheus' first answers empty or failed (one CI run reported
# no series for a metric the next panel found), so an empty answer is asked
# again for up to 10 s before the name counts as missing.
series_of() {
  local name=$1 answer count
  for _ in $(seq 1 10); do
    answer=$(curl -s --max-time 5 --get "$PROMETHEUS/api/v1/series" --data-urlencode "match[]=$name" \
      --data-urlencode "start=$(($(date +%s) - 600))") || answer=
    count=$(echo "$answer" | jq '.data | length' 2>/dev/null) || count=0
    [ "${count:-0}" -gt 0 ] && return 0
    sleep 1
  done
  printf '   (last answer for %s: %s)\n' "$name" "${answer:0:300}"
  return 1
}

log "checking every expression of $DASHBOARD"
failures=0 checked=0
while IFS=$'\t' read -r panel expr; do
  checked=$((checked + 1))
  answer=$(curl -s --get "$PROMETHEUS/api/v1/query" --data-urlencode "query=$expr")
  if [ "$(echo "$answer" | jq -r .status)" != success ]; then
    printf '   [FAIL] panel "%s": %s does not evaluate: %s\n' "$panel" "$expr" "$(echo "$answer" | jq -r .error)"
    failures=$((failures + 1))
    continue
  fi
  missing=()
  for name in $(metric_names "$expr"); do
    series_of "$name" || missing+=("$name")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf '   [FAIL] panel "%s": no series for %s (in %s)\n' "$panel" "${missing[*]}" "$expr"
    failures=$((failures + 1))
  else
    printf '   [PASS] panel "%s": %s\n' "$panel" "$expr"
  fi
done < <(jq -r '.. | objects | select(has("targets")) | .title as $t | .targets[] | select(.expr) | [$t, .expr] | @tsv' "$DASHBOARD")
[ "$checked" -gt 0 ] || die "no PromQL expression found in $DASHBOARD"
if [ "$failures" -gt 0 ]; then
  log "$failures of $checked expressions failed"
  exit 1
fi
log "all $checked expressions evaluate and every metric they name has series"
