#!/usr/bin/env bash
# Fault: the app killed with SIGKILL under load and started again (run by
# run.sh).
#
# 8 s into the load, the app gets SIGKILL (no drain, no cleanup: requests
# in flight, order batches in their transaction, the outbox relay and its
# Redis lock all die with it), and is started again at once. Then:
# - the load generator's checks: no 500, no hang, only expected answers,
#   no stale refusal later than the lease window after the kill,
#   throughput back within 10 s of the new process answering, and every key
#   in doubt (above all the requests in flight at the kill) retried to a
#   definite answer: its stored answer or a fresh execution, never a
#   permanent IDEMPOTENCY_IN_PROGRESS; no oversell, over-issue or
#   over-investment;
# - every order answered 201 is in the database (and nothing else is);
# - every order's event reaches the stream `events:orders` (under the key
#   prefix) at least once, exactly once after dedupe on eventId, and the
#   stream holds no event of an order that does not exist;
# - no advisory lock (an idempotency key "in progress") is left behind.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NAME=app-kill
DB=fault_app_kill
PREFIX="$NAME:"

app_start "$NAME"
wait_for 60 app_ready || die "the app did not become ready (see $FAULTS_DIR/app-$NAME.log)"
# The reservations the killed instance held are leases (4 s): the window of
# stale refusals (a sold-out answer while the resource had room), from the
# kill to the last one, must stay within FAULTS_LEASE_WINDOW seconds (5;
# docs/concurrency.md).
load_start "$NAME" --expect-disconnects --recovery-within "${FAULTS_KILL_RECOVERY_WITHIN:-10}" \
  --stale-refusals-within "${FAULTS_LEASE_WINDOW:-5}"

sleep_until 8
log "killing the app (SIGKILL, pid $(app_pid))"
mark fault
app_kill
mark down
log "starting the app again"
app_start "$NAME"
wait_for 60 app_live || die "the app did not start again (see $FAULTS_DIR/app-$NAME.log)"
mark back
wait_for 30 app_ready || true
mark ready

load_finish || true
REPORT="$FAULT_OUT/report.json"
in_flight=$(jq '.keys.inFlightAtBreak' "$REPORT")
check "requests were in flight at the kill (the fault hit work in progress)" "$(ok_if [ "$in_flight" -gt 0 ])" \
  "$in_flight keys in flight at the kill; resolved as $(jq -c '.keys.inFlightResolvedAs' "$REPORT")"
log "checking Postgres"
check_orders_in_db "$DB" "$REPORT"
check_coupons_and_investments_in_db "$DB" "$REPORT"
locks=$(psql_at "$DB" "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
check "no advisory lock left behind (no idempotency key held in progress)" "$(ok_if [ "$locks" = 0 ])" "$locks held"

log "checking the order events"
check_outbox_drains "$DB" 30
psql_at "$DB" "SELECT o.id, x.event_id FROM orders o LEFT JOIN outbox x ON (x.payload->>'orderId')::bigint = o.id ORDER BY 1" |
  tr '|' '\t' | sort >"$FAULT_OUT/events-expected.tsv"
jq -r '.orders[].orderId' "$REPORT" | sort -u >"$FAULT_OUT/orders-201.txt"
stream_events "$PREFIX" | sort >"$FAULT_OUT/events-stream.tsv"
entries=$(wc -l <"$FAULT_OUT/events-stream.tsv")
distinct=$(sort -u "$FAULT_OUT/events-stream.tsv" | wc -l)
# Orders answered 201 without an entry in the stream.
no_event=$(cut -f1 "$FAULT_OUT/events-stream.tsv" | sort -u | comm -23 "$FAULT_OUT/orders-201.txt" - | wc -l)
check "every order answered 201 has its event in the stream (at least once)" "$(ok_if [ "$no_event" = 0 ])" \
  "$(wc -l <"$FAULT_OUT/orders-201.txt") orders answered 201, $no_event without an event; $entries entries, $((entries - distinct)) duplicates (redelivered)"
# After dedupe on eventId: one event per order, the outbox's.
two_ids=$(sort -u "$FAULT_OUT/events-stream.tsv" | cut -f1 | uniq -d | wc -l)
wrong_id=$(sort -u "$FAULT_OUT/events-stream.tsv" | comm -23 - "$FAULT_OUT/events-expected.tsv" | wc -l)
check "exactly once after dedupe on eventId: one eventId per order, the one in its outbox row" \
  "$(ok_if [ "$two_ids" = 0 ] && [ "$wrong_id" = 0 ])" \
  "$distinct distinct events; $two_ids orders with two eventIds; $wrong_id events that are not an order's outbox event"

app_stop
