//! Send the expiry notices: every owner whose coupon expires within three
//! days is told once.
//!
//! A notice is claimed, written, then marked sent, so a run that dies in
//! between loses nothing: its claim lapses after `claim_lifetime` and a later
//! run writes the notice again, under the same notice id.

use std::sync::Arc;

use chrono::Duration;
use domain::clock::Clock;
use domain::coupon::{ExpiryStore, Notifier};
use domain::error::Unavailable;

/// How far ahead the notice looks.
pub const NOTICE_AHEAD: Duration = Duration::days(3);
const NOTICE_BATCH: usize = 1_000;

pub struct SendExpiryNotices {
    store: Arc<dyn ExpiryStore>,
    notifier: Arc<dyn Notifier>,
    clock: Arc<dyn Clock>,
    /// How long a run's claim on a notice holds before another run may
    /// take it: longer than a batch takes to write, short enough that a
    /// dead run's notices go out the same day.
    claim_lifetime: std::time::Duration,
}

impl std::fmt::Debug for SendExpiryNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendExpiryNotices")
    }
}

impl SendExpiryNotices {
    pub fn new(
        store: Arc<dyn ExpiryStore>,
        notifier: Arc<dyn Notifier>,
        clock: Arc<dyn Clock>,
        claim_lifetime: std::time::Duration,
    ) -> Self {
        Self {
            store,
            notifier,
            clock,
            claim_lifetime,
        }
    }

    /// Notifies every owner of an issued, unused coupon expiring within
    /// three days whose notice is owed: claims a batch, writes it, marks
    /// what was written, until a batch comes back short. Returns how many
    /// notices were written and marked.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails. Notices written but not marked
    /// are written again, with the same id, once their claim lapses.
    pub async fn execute(&self) -> Result<usize, Unavailable> {
        let now = self.clock.now();
        let mut total = 0;
        loop {
            let batch = self
                .store
                .claim_notices(now, now + NOTICE_AHEAD, NOTICE_BATCH, self.claim_lifetime)
                .await?;
            let written: Vec<i64> = batch
                .notices
                .iter()
                .filter_map(|notice| match self.notifier.notify(notice) {
                    Ok(()) => Some(notice.coupon_id),
                    Err(err) => {
                        tracing::error!(error = %err, notice_id = %notice.notice_id(), "could not write an expiry notice; it is retried when its claim lapses");
                        None
                    }
                })
                .collect();
            if batch.notices.len() < batch.claimed {
                tracing::error!(
                    unreadable = batch.claimed - batch.notices.len(),
                    "coupons whose notice could not be read stay claimed, unmarked"
                );
            }
            if !written.is_empty() {
                total += self
                    .store
                    .mark_notified(batch.claim, written.clone())
                    .await?;
            }
            // A short batch was the last; a batch where nothing could be
            // written says the output is broken, and claiming on would only
            // claim more of what cannot be sent now.
            if batch.claimed < NOTICE_BATCH || written.is_empty() {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use domain::clock::MockClock;
    use domain::coupon::{
        ClaimedNotices, ExpiryNotice, MockExpiryStore, MockNotifier, NoticeClaim,
    };
    use domain::identity::UserId;
    use domain::ordering::CouponCode;

    use super::*;

    fn clock() -> MockClock {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(
            Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0)
                .single()
                .expect("valid"),
        );
        clock
    }

    const LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

    fn notice(coupon_id: i64) -> ExpiryNotice {
        ExpiryNotice {
            coupon_id,
            user_id: UserId::new(coupon_id),
            code: CouponCode::parse(&format!("CODE-{coupon_id:04}")).expect("valid"),
            expires_at: Utc
                .with_ymd_and_hms(2026, 11, 25, 0, 0, 0)
                .single()
                .expect("valid"),
        }
    }

    fn claimed(ids: std::ops::Range<i64>, claimed: usize) -> ClaimedNotices {
        ClaimedNotices {
            claim: NoticeClaim::new(9),
            notices: ids.map(notice).collect(),
            claimed,
        }
    }

    #[tokio::test]
    async fn notices_look_three_days_ahead_from_now_in_batches_until_one_comes_back_short() {
        let mut store = MockExpiryStore::new();
        let mut calls = 0;
        store
            .expect_claim_notices()
            .withf(|now, until, limit, lifetime| {
                *until - *now == Duration::days(3) && *limit == 1_000 && *lifetime == LIFETIME
            })
            .times(2)
            .returning(move |_, _, _, _| {
                calls += 1;
                Ok(if calls == 1 {
                    claimed(0..1_000, 1_000)
                } else {
                    claimed(1_000..1_007, 7)
                })
            });
        store
            .expect_mark_notified()
            .returning(|_, coupons| Ok(coupons.len()));
        let mut notifier = MockNotifier::new();
        notifier.expect_notify().times(1_007).returning(|_| Ok(()));
        let notices = SendExpiryNotices::new(
            Arc::new(store),
            Arc::new(notifier),
            Arc::new(clock()),
            LIFETIME,
        );

        assert_eq!(notices.execute().await.expect("sent"), 1_007);
    }

    #[tokio::test]
    async fn a_notice_that_could_not_be_written_is_not_marked_sent() {
        let mut store = MockExpiryStore::new();
        store
            .expect_claim_notices()
            .times(1)
            .returning(|_, _, _, _| Ok(claimed(1..4, 4)));
        store
            .expect_mark_notified()
            .withf(|claim, coupons| claim.get() == 9 && coupons == &[1, 3])
            .times(1)
            .returning(|_, coupons| Ok(coupons.len()));
        let mut notifier = MockNotifier::new();
        notifier.expect_notify().returning(|notice| {
            if notice.coupon_id == 2 {
                Err(Unavailable::new("stdout", "closed"))
            } else {
                Ok(())
            }
        });
        let notices = SendExpiryNotices::new(
            Arc::new(store),
            Arc::new(notifier),
            Arc::new(clock()),
            LIFETIME,
        );

        assert_eq!(notices.execute().await.expect("sent"), 2);
    }
}
