#!/usr/bin/env bash
# Fault: Redis hangs under load (run by run.sh).
#
# 5 s into a 20 s load, the private redis-server is paused (SIGSTOP): its
# connections stay open, new ones are accepted by the kernel, and nothing is
# answered. FAULTS_HANG (7) s later it resumes (SIGCONT), with all its data.
# The app runs with APP_DEPENDENCY_TIMEOUT=FAULTS_DEPENDENCY_TIMEOUT (2) s,
# shorter than the pause, and the load generator with a client timeout well
# above it, so a request stuck on Redis is measured, not cut. Then:
# - the load generator's checks, plus: no request waited longer than the
#   dependency timeout + 1 s, and every request sent 2 s after the return
#   was served (the pool's connections work again, no restart);
# - /health/ready, asked every 250 ms: 503 naming redis (and only redis) as
#   not answering while it hangs, each answer within its own short timeout,
#   and 200 again after;
# - the invariants in Postgres; the outbox drains and every order's event is
#   in the stream (Redis kept its data); no advisory lock left behind.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NAME=redis-hang
DB=fault_redis_hang
PREFIX="$NAME:"
TIMEOUT_S=${FAULTS_DEPENDENCY_TIMEOUT:-2}
export APP_DEPENDENCY_TIMEOUT="${TIMEOUT_S}s" FAULT_DURATION=${FAULTS_HANG_DURATION:-20} FAULT_CLIENT_TIMEOUT=15
trap redis_resume EXIT

app_start "$NAME"
wait_for 60 app_ready || die "the app did not become ready (see $FAULTS_DIR/app-$NAME.log)"
load_start "$NAME" --recovery-within 5 --max-wait $((TIMEOUT_S + 1)) --clean-after 2
ready_poll_start

sleep_until 5
log "pausing Redis (SIGSTOP) for ${FAULTS_HANG:-7} s"
mark fault
redis_pause
sleep "${FAULTS_HANG:-7}"
log "resuming Redis (SIGCONT)"
redis_resume
wait_for 10 redis_up || die "redis-server did not answer after SIGCONT"
mark back

load_finish || true
ready_poll_stop
REPORT="$FAULT_OUT/report.json"
check_ready_during redis 'redis \(no answer within'
log "checking Postgres"
check_orders_in_db "$DB" "$REPORT"
check_coupons_and_investments_in_db "$DB" "$REPORT"
check_no_advisory_lock "$DB"
log "checking the order events"
check_outbox_drains "$DB" 30
check_every_event_in_stream "$DB" "$PREFIX"

app_stop
