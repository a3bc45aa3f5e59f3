//! The admin's list of coupons expiring on a day: issued, unused, in one
//! UTC day, paged by a cursor.

use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use domain::clock::Clock;
use domain::coupon::{ExpiringCoupon, ExpiringCursor, ExpiryStore};
use domain::error::Unavailable;

/// Expiring coupon reads.
pub struct ExpiringCoupons {
    store: Arc<dyn ExpiryStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ExpiringCoupons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExpiringCoupons")
    }
}

impl ExpiringCoupons {
    pub fn new(store: Arc<dyn ExpiryStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
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
        after: Option<ExpiringCursor>,
        limit: usize,
    ) -> Result<Vec<ExpiringCoupon>, Unavailable> {
        let from = date.and_time(chrono::NaiveTime::MIN).and_utc();
        self.store
            .expiring(from, from + Duration::days(1), after, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use domain::clock::MockClock;
    use domain::coupon::MockExpiryStore;

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
        let expiring = ExpiringCoupons::new(Arc::new(store), Arc::new(clock()));

        let today = expiring.today();
        assert!(
            expiring
                .expiring_on(today, None, 50)
                .await
                .expect("listed")
                .is_empty()
        );
    }
}
