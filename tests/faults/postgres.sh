#!/usr/bin/env bash
# Fault: Postgres stopped and started again under load (run by run.sh).
#
# 8 s into the load, the private cluster is stopped (pg_ctl stop -m
# FAULTS_PG_STOP_MODE, default fast: open connections are terminated), and
# started again FAULTS_PG_OUTAGE (4) s later. Then:
# - the load generator's checks: the outage answered with 503s, no 500, no
#   hang (every answer within the client timeout), no refused connection,
#   throughput back within 10 s of Postgres accepting connections again,
#   every key in doubt settled, no oversell, no over-issue, no over-investment;
# - every order answered 201 is in the database (and nothing else is), with
#   the other invariants in Postgres;
# - readiness is back, and every order's event reaches the stream once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NAME=postgres
DB=fault_$NAME
PREFIX="$NAME:"

app_start "$NAME"
wait_for 60 app_ready || die "the app did not become ready (see $FAULTS_DIR/app-$NAME.log)"
load_start "$NAME" --expect-503 --recovery-within "${FAULTS_PG_RECOVERY_WITHIN:-10}"

sleep_until 8
log "stopping Postgres (pg_ctl stop -m ${FAULTS_PG_STOP_MODE:-fast})"
mark fault
pg_stop "${FAULTS_PG_STOP_MODE:-fast}"
mark down
ready_during=$(curl -s -o /dev/null -w '%{http_code} in %{time_total} s' -m 5 "http://127.0.0.1:$APP_PORT/health/ready" || true)
sleep "${FAULTS_PG_OUTAGE:-4}"
log "starting Postgres again"
pg_start || die "the private Postgres did not start again (see $FAULTS_DIR/postgres.log)"
mark back

load_finish || true
REPORT="$FAULT_OUT/report.json"
check "/health/ready says 503 while Postgres is down" "$(ok_if [ "${ready_during%% *}" = 503 ])" "$ready_during"
wait_for 10 app_ready || true
check "/health/ready is 200 again after the restart" "$(ok_if app_ready)" \
  "$(curl -s -m 2 "http://127.0.0.1:$APP_PORT/health/ready")"
log "checking Postgres"
check_orders_in_db "$DB" "$REPORT"
check_coupons_and_investments_in_db "$DB" "$REPORT"

log "checking the order events"
check_outbox_drains "$DB" 30
psql_at "$DB" "SELECT (payload->>'orderId'), event_id FROM outbox ORDER BY 1" | tr '|' '\t' | sort >"$FAULT_OUT/events-expected.tsv"
stream_events "$PREFIX" | sort >"$FAULT_OUT/events-stream.tsv"
missing=$(comm -23 "$FAULT_OUT/events-expected.tsv" <(sort -u "$FAULT_OUT/events-stream.tsv") | wc -l)
check "every order's event is in the stream" "$(ok_if [ "$missing" = 0 ])" \
  "$(wc -l <"$FAULT_OUT/events-expected.tsv") orders, $missing events missing, $(wc -l <"$FAULT_OUT/events-stream.tsv") stream entries"

app_stop
