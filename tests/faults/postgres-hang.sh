#!/usr/bin/env bash
# Fault: Postgres hangs under load (run by run.sh).
#
# 5 s into a 20 s load, the private cluster is paused: SIGSTOP to the
# postmaster, then to every process it started (backends, checkpointer,
# walwriter, …). Open connections stay open, new ones are accepted by the
# kernel, nothing is answered. FAULTS_HANG (7) s later all resume (SIGCONT).
# The app runs with APP_DEPENDENCY_TIMEOUT=FAULTS_DEPENDENCY_TIMEOUT (2) s
# and APP_STATEMENT_TIMEOUT=FAULTS_STATEMENT_TIMEOUT (2) s: a Postgres
# operation may take their sum (the client-side bound of one operation),
# less than the pause. The load generator's client timeout is well above it.
# Then:
# - the load generator's checks (throughput back within 10 s), plus: the
#   hang is answered with 503s, no request waited longer than the two
#   timeouts + 1 s, and every request sent 2 s after the return was
#   served (no restart);
# - /health/ready, asked every 250 ms: 503 naming postgres (and only
#   postgres) as not answering, each answer within its own short timeout,
#   and 200 again after;
# - the invariants in Postgres, no advisory lock left behind, the outbox
#   drains and every order's event is in the stream.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NAME=postgres-hang
DB=fault_postgres_hang
PREFIX="$NAME:"
TIMEOUT_S=${FAULTS_DEPENDENCY_TIMEOUT:-2}
# One Postgres operation may take the dependency timeout (for a connection)
# plus the statement timeout, by design (README, APP_DEPENDENCY_TIMEOUT):
# 2 s instead of the default 5 s, so that the pause outlasts it.
STATEMENT_S=${FAULTS_STATEMENT_TIMEOUT:-2}
export APP_DEPENDENCY_TIMEOUT="${TIMEOUT_S}s" APP_STATEMENT_TIMEOUT="${STATEMENT_S}s" FAULT_DURATION=${FAULTS_HANG_DURATION:-20} FAULT_CLIENT_TIMEOUT=15
trap pg_resume EXIT

# A request makes its dependency calls one after another (the gate, the
# write, settling the reservation); a money write has one budget for them
# all, the two timeouts (domain::deadline), so it never waits their sum.
app_start "$NAME"
wait_for 60 app_ready || die "the app did not become ready (see $FAULTS_DIR/app-$NAME.log)"
load_start "$NAME" --expect-503 --recovery-within 10 --max-wait $((TIMEOUT_S + STATEMENT_S + 1)) --clean-after 2
ready_poll_start

sleep_until 5
log "pausing Postgres (SIGSTOP to the postmaster and its $(pgrep -c -P "$(pg_postmaster)") children) for ${FAULTS_HANG:-7} s"
mark fault
pg_pause
sleep "${FAULTS_HANG:-7}"
log "resuming Postgres (SIGCONT)"
pg_resume
wait_for 10 pg_up || die "Postgres did not answer after SIGCONT"
mark back

load_finish || true
ready_poll_stop
REPORT="$FAULT_OUT/report.json"
check_ready_during postgres 'postgres \(no answer within'
log "checking Postgres"
check_orders_in_db "$DB" "$REPORT"
check_coupons_and_investments_in_db "$DB" "$REPORT"
check_no_advisory_lock "$DB"
log "checking the order events"
check_outbox_drains "$DB" 30
check_every_event_in_stream "$DB" "$PREFIX"

app_stop
