#!/usr/bin/env bash
# Fault: slow dependencies under load (run by run.sh).
#
# The app reaches Redis and Postgres through a TCP proxy each
# (tests/faults/proxy.py). 5 s into a 20 s load, both add latency for
# FAULTS_LATENCY_FOR (8) s: every chunk is held FAULTS_REDIS_DELAY_MS (200)
# ms on its way to and from Redis, FAULTS_PG_DELAY_MS (20) ms to and from
# Postgres (a query's round trips add up: a transaction makes several). A
# Redis round trip then takes 400 ms more, under the app's
# APP_DEPENDENCY_TIMEOUT=FAULTS_DEPENDENCY_TIMEOUT (2) s. Then:
# - the load generator's checks, plus: no request waited longer than the
#   dependency timeout + 1 s, and every request sent 2 s after the latency
#   ended was served;
# - /health/ready answers within 2.5 s throughout and is 200 after (what it
#   says meanwhile is printed: a probe that has to open a connection makes
#   several round trips, and may pass its 1 s timeout);
# - the invariants in Postgres, no advisory lock left behind, the outbox
#   drains and every order's event is in the stream.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NAME=latency
DB=fault_latency
PREFIX="$NAME:"
TIMEOUT_S=${FAULTS_DEPENDENCY_TIMEOUT:-2}
export APP_DEPENDENCY_TIMEOUT="${TIMEOUT_S}s" FAULT_DURATION=${FAULTS_HANG_DURATION:-20} FAULT_CLIENT_TIMEOUT=15
trap proxies_stop EXIT

proxy_start redis "$REDIS_PORT"
proxy_start postgres "$PG_PORT"
export APP_REDIS_PORT=$PROXY_PORT_REDIS APP_PG_PORT=$PROXY_PORT_POSTGRES
app_start "$NAME"
wait_for 60 app_ready || die "the app did not become ready (see $FAULTS_DIR/app-$NAME.log)"
load_start "$NAME" --recovery-within 5 --max-wait $((TIMEOUT_S + 1)) --clean-after 2
ready_poll_start

sleep_until 5
log "adding latency for ${FAULTS_LATENCY_FOR:-8} s: Redis ${FAULTS_REDIS_DELAY_MS:-200} ms, Postgres ${FAULTS_PG_DELAY_MS:-20} ms each way"
mark fault
proxy_mode redis delay "${FAULTS_REDIS_DELAY_MS:-200}"
proxy_mode postgres delay "${FAULTS_PG_DELAY_MS:-20}"
sleep "${FAULTS_LATENCY_FOR:-8}"
log "latency off"
proxy_mode redis pass
proxy_mode postgres pass
mark back

load_finish || true
ready_poll_stop
REPORT="$FAULT_OUT/report.json"
check_ready_during any ""
log "checking Postgres"
check_orders_in_db "$DB" "$REPORT"
check_coupons_and_investments_in_db "$DB" "$REPORT"
check_no_advisory_lock "$DB"
log "checking the order events"
check_outbox_drains "$DB" 30
check_every_event_in_stream "$DB" "$PREFIX"

app_stop
