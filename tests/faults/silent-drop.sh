#!/usr/bin/env bash
# Fault: the network silently drops the app's traffic to Redis and Postgres
# (run by run.sh).
#
# The app reaches Redis and Postgres through a TCP proxy each
# (tests/faults/proxy.py). 5 s into a 20 s load, both stop forwarding for
# FAULTS_DROP_FOR (7) s: every open connection, and every new one, is read
# and its bytes thrown away, with no FIN and no RST (a partition, or a
# middlebox that lost its state). Then the proxies close those connections
# (their byte streams are broken) and forward new ones again. The app runs
# with APP_DEPENDENCY_TIMEOUT=FAULTS_DEPENDENCY_TIMEOUT (2) s and
# APP_STATEMENT_TIMEOUT=FAULTS_STATEMENT_TIMEOUT (2) s (a Postgres operation
# may take their sum). Then:
# - the load generator's checks (throughput back within 10 s), plus: the
#   drop is answered with 503s, no request waited longer than the two
#   timeouts + 1 s, and every request sent 2 s after the return was
#   served (the pools replaced their dead connections, no restart);
# - /health/ready: 503 naming both as not answering while it lasts, each
#   answer within its own short timeout, and 200 again after;
# - the invariants in Postgres, no advisory lock left behind, the outbox
#   drains and every order's event is in the stream.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NAME=silent-drop
DB=fault_silent_drop
PREFIX="$NAME:"
TIMEOUT_S=${FAULTS_DEPENDENCY_TIMEOUT:-2}
# One Postgres operation may take the dependency timeout (for a connection)
# plus the statement timeout, by design (README, APP_DEPENDENCY_TIMEOUT):
# 2 s instead of the default 5 s, so that the pause outlasts it.
STATEMENT_S=${FAULTS_STATEMENT_TIMEOUT:-2}
export APP_DEPENDENCY_TIMEOUT="${TIMEOUT_S}s" APP_STATEMENT_TIMEOUT="${STATEMENT_S}s" FAULT_DURATION=${FAULTS_HANG_DURATION:-20} FAULT_CLIENT_TIMEOUT=15
trap proxies_stop EXIT

# A request makes its dependency calls one after another (the gate, the
# write, settling the reservation); a money write has one budget for them
# all, the two timeouts (domain::deadline), so it never waits their sum.
# With Redis unreachable too, a reservation whose write then failed in
# Postgres cannot be given back; it is a lease (4 s), which the first
# reservation after the drop gives back. So a stale refusal (the gate
# refusing what Postgres still has) may come until shortly after the drop
# ends, never later.
stale_within=$(( ${FAULTS_DROP_FOR:-7} + 2 ))
proxy_start redis "$REDIS_PORT"
proxy_start postgres "$PG_PORT"
export APP_REDIS_PORT=$PROXY_PORT_REDIS APP_PG_PORT=$PROXY_PORT_POSTGRES
app_start "$NAME"
wait_for 60 app_ready || die "the app did not become ready (see $FAULTS_DIR/app-$NAME.log)"
load_start "$NAME" --expect-503 --recovery-within 10 --max-wait $((TIMEOUT_S + STATEMENT_S + 1)) --clean-after 2 \
  --stale-refusals-within "$stale_within"
ready_poll_start

sleep_until 5
log "dropping the traffic to Redis and Postgres for ${FAULTS_DROP_FOR:-7} s"
mark fault
proxy_mode redis drop
proxy_mode postgres drop
sleep "${FAULTS_DROP_FOR:-7}"
log "forwarding again (the silenced connections are closed)"
proxy_mode redis pass
proxy_mode postgres pass
sleep 0.1
mark back

load_finish || true
ready_poll_stop
REPORT="$FAULT_OUT/report.json"
check_ready_during "postgres redis" 'postgres \(no answer within .*redis \(no answer within'
log "checking Postgres"
check_orders_in_db "$DB" "$REPORT"
check_coupons_and_investments_in_db "$DB" "$REPORT"
check_no_advisory_lock "$DB"
log "checking the order events"
check_outbox_drains "$DB" 30
check_every_event_in_stream "$DB" "$PREFIX"

app_stop
