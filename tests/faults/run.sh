#!/usr/bin/env bash
# The fault runner (issue 8): while `loadtest fault` fires a steady mix of
# orders, coupon issues and investments at the app, each fault script breaks
# something and checks the invariants afterwards:
#   redis     Redis stopped (SHUTDOWN NOSAVE) and started again
#   postgres  Postgres stopped (pg_ctl stop -m fast) and started again
#   app-kill  the app killed with SIGKILL and started again
#   redis-hang     Redis paused (SIGSTOP) past the app's dependency timeout, then resumed
#   postgres-hang  Postgres (postmaster and backends) paused the same way
#   latency        200 ms each way added to Redis (20 ms to Postgres) by a TCP proxy
#   silent-drop    a TCP proxy silently drops the traffic to both, then closes
#                  those connections
# (the last four run 20 s of load each, and also check the longest wait of a
# request against the app's timeouts + 1 s, what /health/ready says, and
# that the app serves again without a restart; docs/reliability.md)
# Each prints what it checked, PASS/FAIL per invariant; this exits 1 when any
# check failed (2 when something it needs is missing).
#
# Isolation: it never touches the machine's Postgres (5432) or Redis (6379).
# It creates its own Postgres cluster (initdb in a temp dir, trust auth, run
# as the postgres user) and its own redis-server, on free ports, and tears
# them down on exit.
#
#   tests/faults/run.sh                 # all seven faults
#   FAULTS="redis" tests/faults/run.sh  # one of them
# Knobs: FAULTS_PROFILE (debug|release, default debug), FAULTS_DURATION (s of
# load per fault, 30; FAULTS_HANG_DURATION, 20, for the last four),
# FAULTS_CONNECTIONS (32), FAULTS_CLIENT_TIMEOUT (s, 5; 15 for the last four),
# FAULTS_DEPENDENCY_TIMEOUT (s, 2), FAULTS_HANG (s, 7), FAULTS_LEASE_WINDOW
# (s, 5), FAULTS_KEEP=1 (keep the scratch directory). Reports, logs and a summary
# table go to target/faults/latest/.
set -euo pipefail
# The trusted gateway's shared secret, for the app and the load generator.
export GATEWAY_SECRET=${GATEWAY_SECRET:-fault-runner-gateway-secret-0123456789} LOADTEST_GATEWAY_SECRET=${GATEWAY_SECRET:-fault-runner-gateway-secret-0123456789}
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=tests/faults/lib.sh
source tests/faults/lib.sh

run_started=$(now_ms)

# --- what it needs: fail loudly, saying what to install ----------------------
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is missing: install $2"; }
need cargo "a Rust toolchain (https://rustup.rs)"
need redis-server "Redis 7 (apt-get install redis-server)"
need redis-cli "Redis 7 (apt-get install redis-tools)"
need psql "the Postgres client (apt-get install postgresql-client)"
need jq "jq (apt-get install jq)"
need curl "curl (apt-get install curl)"
need awk "awk (apt-get install gawk)"
need pkill "procps (apt-get install procps)"
case " ${FAULTS:-latency} " in
  *" latency "* | *" silent-drop "*) need python3 "Python 3.11 (apt-get install python3), for tests/faults/proxy.py" ;;
esac
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)}
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] ||
  die "initdb/pg_ctl not found (PG_BIN=${PG_BIN:-unset}): install Postgres 15 server binaries (apt-get install postgresql-15), or set PG_BIN"
if [ "$(id -u)" = 0 ]; then
  need runuser "util-linux (runuser)"
  id postgres >/dev/null 2>&1 ||
    die "running as root needs the 'postgres' OS user to run the private cluster: install postgresql (it creates the user)"
fi

# --- build -------------------------------------------------------------------
PROFILE=${FAULTS_PROFILE:-debug}
case "$PROFILE" in
  debug) cargo_profile=() ;;
  release) cargo_profile=(--release) ;;
  *) die "FAULTS_PROFILE must be debug or release" ;;
esac
log "building app and loadtest ($PROFILE)"
build_started=$(now_ms)
cargo build "${cargo_profile[@]}" -p app -p loadtest --quiet
build_s=$(( ($(now_ms) - build_started) / 1000 ))
export APP_BIN="$ROOT/target/$PROFILE/app" LOADTEST_BIN="$ROOT/target/$PROFILE/loadtest"

# --- private Postgres and Redis ----------------------------------------------
FAULTS_DIR=$(mktemp -d /tmp/faults.XXXXXX)
chmod 755 "$FAULTS_DIR"
RESULTS="$ROOT/target/faults/latest"
export FAULTS_DIR PG_BIN
export PG_DATA="$FAULTS_DIR/pg"
export FAULT_CHECKS="$FAULTS_DIR/checks.tsv"
: >"$FAULT_CHECKS"

teardown() {
  local rc=$?
  set +e
  if [ -s "$FAULTS_DIR/load.pid" ]; then kill -KILL "$(cat "$FAULTS_DIR/load.pid")" 2>/dev/null; fi
  if [ -s "$FAULTS_DIR/app.pid" ]; then kill -KILL "$(cat "$FAULTS_DIR/app.pid")" 2>/dev/null; fi
  ready_poll_stop
  proxies_stop
  # A hang fault that died half-way may have left a server paused.
  if [ -s "$FAULTS_DIR/redis.pid" ]; then redis_resume; fi
  pg_resume
  if [ -n "${REDIS_PORT:-}" ]; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" SHUTDOWN NOSAVE >/dev/null 2>&1
    if [ -s "$FAULTS_DIR/redis.pid" ]; then kill -KILL "$(cat "$FAULTS_DIR/redis.pid")" 2>/dev/null; fi
  fi
  if [ -f "$PG_DATA/postmaster.pid" ]; then as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1; fi
  mkdir -p "$RESULTS"
  cp -r "$FAULTS_DIR"/*.log "$FAULTS_DIR"/checks.tsv "$RESULTS"/ 2>/dev/null
  for d in "$FAULTS_DIR"/*/; do
    [ -f "$d/report.json" ] || [ -f "$d/loadtest.err" ] || continue
    mkdir -p "$RESULTS/$(basename "$d")"
    cp "$d"/* "$RESULTS/$(basename "$d")"/ 2>/dev/null
  done
  if [ "${FAULTS_KEEP:-0}" = 1 ]; then
    echo "scratch directory kept: $FAULTS_DIR" >&2
  else
    rm -rf "$FAULTS_DIR"
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM
rm -rf "$RESULTS"

PG_PORT=$(free_port 54329)
REDIS_PORT=$(free_port 16380)
APP_PORT=$(free_port 18190)
export PG_PORT REDIS_PORT APP_PORT
log "private Postgres on 127.0.0.1:$PG_PORT ($PG_BIN), Redis on 127.0.0.1:$REDIS_PORT, app on 127.0.0.1:$APP_PORT"
mkdir -p "$PG_DATA" "$FAULTS_DIR/pgsock"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DATA" "$FAULTS_DIR/pgsock" "$FAULTS_DIR"
as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync >"$FAULTS_DIR/initdb.log" 2>&1 ||
  { cat "$FAULTS_DIR/initdb.log" >&2; die "initdb failed"; }
pg_start || { cat "$FAULTS_DIR/postgres.log" >&2; die "the private Postgres did not start"; }
redis_start
wait_for 10 redis_up || die "the private redis-server did not start"

# --- the faults --------------------------------------------------------------
FAULTS=${FAULTS:-redis postgres app-kill redis-hang postgres-hang latency silent-drop}
for fault in $FAULTS; do
  [ -f "tests/faults/$fault.sh" ] || die "no such fault: $fault (tests/faults/$fault.sh)"
  started=$(now_ms)
  log "fault: $fault"
  # A fault script that dies half-way is a failure, not a skip.
  if ! bash "tests/faults/$fault.sh"; then
    printf 'FAIL\t%s: the fault script ran to its end\tit exited early (see above)\n' "$fault" >>"$FAULT_CHECKS"
    app_stop
  fi
  printf '%s\t%s\n' "$fault" $(( ($(now_ms) - started) / 1000 )) >>"$FAULTS_DIR/durations.tsv"
done

# --- summary -----------------------------------------------------------------
total_s=$(( ($(now_ms) - run_started) / 1000 ))
{
  echo "| fault | requests | 2xx | 4xx | 503 | other 5xx | timeouts / refused / broken | outage | recovery | keys in doubt → settled | invariants |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for fault in $FAULTS; do
    report="$FAULTS_DIR/$fault/report.json"
    [ -s "$report" ] || { echo "| $fault | no report | | | | | | | | | FAIL |"; continue; }
    jq -r --arg f "$fault" --argjson pass "$(grep -c "^PASS" "$FAULTS_DIR/$fault/checks.tsv" 2>/dev/null || true)" \
      --argjson total "$(wc -l <"$FAULTS_DIR/$fault/checks.tsv" 2>/dev/null || echo 0)" '
      def fmt: if . == null then "?" else (. * 10 | round / 10 | tostring) + " s" end;
      "| \($f) | \(.requests) | \(.answers["2xx"]) | \(.answers["4xx"] | to_entries | map("\(.key): \(.value)") | join(", ")) | \(.answers["503"]) | \(.answers.other5xx | add // 0) | \(.answers.timeouts) / \(.answers.refused) / \(.answers.broken) | \(.recovery.outageS | fmt) | \(.recovery.recoveryS | fmt) | \(.keys.inDoubt) → \(.keys.resolvedReplayed) replayed, \(.keys.resolvedFresh) afresh, \(.keys.stuck) stuck | \($pass)/\($total) PASS |"' \
      "$report"
  done
} >"$FAULTS_DIR/summary.md"
fails=$(grep -c '^FAIL' "$FAULT_CHECKS" || true)
passes=$(grep -c '^PASS' "$FAULT_CHECKS" || true)
{
  echo
  echo "profile $PROFILE; build $build_s s; total $total_s s; per fault: $(awk -F'\t' '{printf "%s%s %s s", sep, $1, $2; sep=", "}' "$FAULTS_DIR/durations.tsv")"
} >>"$FAULTS_DIR/summary.md"
echo
log "summary"
cat "$FAULTS_DIR/summary.md"
echo
if [ "$fails" -gt 0 ]; then
  log "FAILED: $fails of $((fails + passes)) checks"
  grep '^FAIL' "$FAULT_CHECKS" | sed 's/^/   /'
  exit 1
fi
log "ALL PASS ($passes checks)"
