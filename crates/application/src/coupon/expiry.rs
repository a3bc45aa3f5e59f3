//! Expiring coupons: the admin's list by date, and the notice sent once to
//! every owner whose coupon expires within three days.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use domain::clock::Clock;
use domain::coupon::{ExpiringCoupon, ExpiryStore, Notifier};
use domain::error::Unavailable;

/// How far ahead the notice looks.
pub const NOTICE_AHEAD: Duration = Duration::days(3);
const NOTICE_BATCH: usize = 1_000;

pub struct Expiry {
    store: Arc<dyn ExpiryStore>,
    notifier: Arc<dyn Notifier>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expiry")
    }
}

impl Expiry {
    pub fn new(
        store: Arc<dyn ExpiryStore>,
        notifier: Arc<dyn Notifier>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            notifier,
            clock,
        }
    }

    /// Today in UTC, the default date of the list.
    pub fn today(&self) -> NaiveDate {
        self.clock.now().date_naive()
    }

    /// Issued, unused coupons expiring on `date` (UTC), after the cursor.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn expiring_on(
        &self,
        date: NaiveDate,
        after: Option<(DateTime<Utc>, i64)>,
        limit: usize,
    ) -> Result<Vec<ExpiringCoupon>, Unavailable> {
        let from = date.and_time(chrono::NaiveTime::MIN).and_utc();
        self.store
            .expiring(from, from + Duration::days(1), after, limit)
            .await
    }

    /// Notifies every owner of an issued, unused coupon expiring within
    /// three days that was not notified yet. Returns how many were notified.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails (the notified part stays notified).
    pub async fn send_notices(&self) -> Result<usize, Unavailable> {
        let now = self.clock.now();
        let mut total = 0;
        loop {
            let sent = self
                .store
                .notify_due(
                    now,
                    now + NOTICE_AHEAD,
                    NOTICE_BATCH,
                    Arc::clone(&self.notifier),
                )
                .await?;
            total += sent;
            if sent < NOTICE_BATCH {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use domain::clock::MockClock;
    use domain::coupon::{MockExpiryStore, MockNotifier};

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

    #[tokio::test]
    async fn notices_look_three_days_ahead_from_now_in_batches() {
        let mut store = MockExpiryStore::new();
        let mut calls = 0;
        store
            .expect_notify_due()
            .withf(|now, until, limit, _| *until - *now == Duration::days(3) && *limit == 1_000)
            .times(2)
            .returning(move |_, _, _, _| {
                calls += 1;
                Ok(if calls == 1 { 1_000 } else { 7 })
            });
        let expiry = Expiry::new(
            Arc::new(store),
            Arc::new(MockNotifier::new()),
            Arc::new(clock()),
        );

        assert_eq!(expiry.send_notices().await.expect("sent"), 1_007);
    }

    #[tokio::test]
    async fn the_list_covers_one_utc_day() {
        let mut store = MockExpiryStore::new();
        store
            .expect_expiring()
            .withf(|from, until, after, limit| {
                from.to_rfc3339() == "2026-11-23T00:00:00+00:00"
                    && *until - *from == Duration::days(1)
                    && after.is_none()
                    && *limit == 50
            })
            .returning(|_, _, _, _| Ok(vec![]));
        let expiry = Expiry::new(
            Arc::new(store),
            Arc::new(MockNotifier::new()),
            Arc::new(clock()),
        );

        let today = expiry.today();
        assert!(
            expiry
                .expiring_on(today, None, 50)
                .await
                .expect("listed")
                .is_empty()
        );
    }
}
