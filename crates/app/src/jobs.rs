//! Background jobs of one instance, stopped with the server.
//!
//! - refusal writer: writes the gate refusals recorded in Redis to
//!   Postgres, in batches as they come (`infra::redis::RefusalWriter`); on
//!   stop, after the server has answered its last request, it writes what
//!   is still queued.
//! - idempotency janitor: every hour, deletes idempotency records past their
//!   retention. Every instance runs it; the DELETE is idempotent.
//! - outbox relays, one per sink (the Redis stream; Kafka when configured):
//!   for each, one active instance (the `outbox-relay` lock for the stream,
//!   `outbox-relay:kafka` for Kafka) polls the outbox every 200 ms and
//!   appends the events that sink has not had yet, backing off while the
//!   sink or Postgres is down. The others stand by and take over within a
//!   few seconds when the holder dies. A sink that is down holds back only
//!   its own copy.
//! - coupon expiry notices: once a day at `APP_NOTICE_TIME` (UTC), on one
//!   instance (the `coupon-notices` lock). Each notice is claimed, written,
//!   then marked (`notified_at`), so a second run, or the admin trigger at
//!   the same time, skips what is claimed or sent; a run that dies leaves
//!   claims that lapse after `APP_NOTICE_CLAIM_TTL`, and the next run
//!   writes those notices again under the same `noticeId`.
//! - sales ranking: every instance consumes the order stream in the
//!   `popular` consumer group (each event goes to one consumer), counts each
//!   event once, and every 30 s takes over events a dead consumer left
//!   unacknowledged.

use std::sync::Arc;
use std::time::Duration;

use application::coupon::SendExpiryNotices;
use application::events::RelayOutbox;
use domain::events::Sink;
use infra::postgres::PgIdempotencyStore;
use infra::redis::{RedisLock, RedisSalesRanking, RefusalWriter};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const JANITOR_FIRST_RUN: Duration = Duration::from_secs(60);
const JANITOR_INTERVAL: Duration = Duration::from_secs(3600);
/// How soon a committed event is in the stream, at most (plus one round trip).
const RELAY_POLL: Duration = Duration::from_millis(200);
const RELAY_LOCK_TTL: Duration = Duration::from_secs(6);
const STANDBY_RETRY: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the jobs need.
pub(crate) struct JobDeps {
    pub idempotency: PgIdempotencyStore,
    pub refusal_writer: RefusalWriter,
    pub relays: Vec<Arc<RelayOutbox>>,
    pub lock: RedisLock,
    pub ranking: RedisSalesRanking,
    pub send_notices: Arc<SendExpiryNotices>,
    pub notice_time: chrono::NaiveTime,
}

/// The running jobs and the switch that stops them.
pub(crate) struct Jobs {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Jobs {
    pub(crate) fn start(deps: JobDeps) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(deps.refusal_writer.run(stopped.clone())),
            tokio::spawn(run_janitor(deps.idempotency, stopped.clone())),
        ];
        for relay in deps.relays {
            tasks.push(tokio::spawn(run_relay(
                relay,
                deps.lock.clone(),
                stopped.clone(),
            )));
        }
        tasks.extend([
            tokio::spawn(run_ranking(deps.ranking, stopped.clone())),
            tokio::spawn(run_notices(
                deps.send_notices,
                deps.lock.clone(),
                deps.notice_time,
                stopped,
            )),
        ]);
        Self { stop, tasks }
    }

    /// Asks every job to stop and waits for it (a job finishes its current
    /// step first; each step is bounded by the dependency timeouts).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Sleeps for `wait`, or returns `true` early when asked to stop.
async fn stop_requested(stopped: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    let stop = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stopped.wait_for(|s| *s) => true,
    };
    stop || *stopped.borrow()
}

async fn run_janitor(janitor: PgIdempotencyStore, mut stopped: watch::Receiver<bool>) {
    let mut wait = JANITOR_FIRST_RUN;
    loop {
        if stop_requested(&mut stopped, wait).await {
            return;
        }
        let purge = tokio::select! {
            result = janitor.purge() => result,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match purge {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged expired idempotency records"),
            Err(err) => {
                tracing::warn!(error = %err, "idempotency purge failed; retrying next hour")
            }
        }
        wait = JANITOR_INTERVAL;
    }
}

/// The lock that makes one instance at a time relay to `sink`.
fn relay_lock(sink: Sink) -> &'static str {
    match sink {
        Sink::Stream => "outbox-relay",
        Sink::Kafka => "outbox-relay:kafka",
    }
}

async fn run_relay(relay: Arc<RelayOutbox>, lock: RedisLock, mut stopped: watch::Receiver<bool>) {
    let mut backoff = RELAY_POLL;
    let sink = relay.sink().name();
    loop {
        // Standby until this instance holds the relay lock.
        let lease = match lock
            .try_acquire(relay_lock(relay.sink()), RELAY_LOCK_TTL)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                if stop_requested(&mut stopped, STANDBY_RETRY).await {
                    return;
                }
                continue;
            }
            Err(err) => {
                tracing::warn!(sink, error = %err, "outbox relay cannot reach Redis; retrying");
                if stop_requested(&mut stopped, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tracing::info!(sink, "this instance now relays the outbox");
        loop {
            if lease.is_lost() {
                tracing::warn!(sink, "outbox relay lock lost; standing by");
                break;
            }
            let wait = match relay.relay_batch().await {
                Ok(n) => {
                    backoff = RELAY_POLL;
                    if n == relay.batch() {
                        Duration::ZERO
                    } else {
                        RELAY_POLL
                    }
                }
                Err(err) => {
                    tracing::warn!(sink, error = %err, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            if stop_requested(&mut stopped, wait).await {
                let _ = lease.release().await;
                return;
            }
        }
    }
}

async fn run_ranking(ranking: RedisSalesRanking, mut stopped: watch::Receiver<bool>) {
    let consumer = format!("app-{:08x}", rand::random::<u32>());
    let mut backoff = RELAY_POLL;
    let mut group_ready = false;
    let mut last_claim = tokio::time::Instant::now();
    loop {
        if *stopped.borrow() {
            return;
        }
        let step = async {
            if !group_ready {
                ranking.ensure_group().await?;
            }
            if last_claim.elapsed() > Duration::from_secs(30) {
                ranking
                    .claim_stale(&consumer, Duration::from_secs(60))
                    .await?;
            }
            ranking.consume(&consumer, 100).await
        };
        let result = tokio::select! {
            result = step => result,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match result {
            Ok(_) => {
                group_ready = true;
                backoff = RELAY_POLL;
                if last_claim.elapsed() > Duration::from_secs(30) {
                    last_claim = tokio::time::Instant::now();
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "sales ranking cannot read the order stream; retrying");
                group_ready = false;
                if stop_requested(&mut stopped, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Time until the next `at` (UTC), from `now`.
fn until_next(now: chrono::DateTime<chrono::Utc>, at: chrono::NaiveTime) -> Duration {
    let today = now.date_naive().and_time(at).and_utc();
    let next = if today > now {
        today
    } else {
        today + chrono::Duration::days(1)
    };
    (next - now).to_std().unwrap_or(Duration::from_secs(60))
}

async fn run_notices(
    send_notices: Arc<SendExpiryNotices>,
    lock: RedisLock,
    at: chrono::NaiveTime,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if stop_requested(&mut stopped, until_next(chrono::Utc::now(), at)).await {
            return;
        }
        // One instance sends; the others find the lock taken and skip today.
        match lock
            .try_acquire("coupon-notices", Duration::from_secs(60))
            .await
        {
            Ok(Some(lease)) => {
                match send_notices.execute().await {
                    Ok(notified) => tracing::info!(notified, "coupon expiry notices sent"),
                    Err(err) => {
                        tracing::warn!(error = %err, "coupon expiry notices failed; the admin trigger can retry")
                    }
                }
                let _ = lease.release().await;
            }
            Ok(None) => {}
            Err(err) => {
                // Without Redis, send anyway: the claims keep concurrent runs apart.
                tracing::warn!(error = %err, "notice lock unavailable; sending without it");
                let _ = send_notices.execute().await;
            }
        }
        // Past the minute, so the next wait is a day.
        if stop_requested(&mut stopped, Duration::from_secs(61)).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, TimeZone, Utc};

    use super::*;

    #[test]
    fn the_next_notice_is_today_if_not_yet_past_else_tomorrow() {
        let nine = NaiveTime::from_hms_opt(9, 0, 0).expect("valid");
        let before = Utc
            .with_ymd_and_hms(2026, 11, 23, 8, 0, 0)
            .single()
            .expect("valid");
        let after = Utc
            .with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
            .single()
            .expect("valid");
        assert_eq!(until_next(before, nine), Duration::from_secs(3600));
        assert_eq!(until_next(after, nine), Duration::from_secs(24 * 3600));
    }
}
