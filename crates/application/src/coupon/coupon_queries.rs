//! Reading a holder's coupons, and the status of a coupon at this moment
//! (EXPIRED is derived from the clock, never stored).

use std::sync::Arc;

use domain::clock::Clock;
use domain::coupon::{Coupon, CouponStatus, CouponStore};
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::paging::{Page, PageRequest};

/// A holder's coupon reads.
pub struct CouponQueries {
    store: Arc<dyn CouponStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CouponQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CouponQueries")
    }
}

impl CouponQueries {
    pub fn new(store: Arc<dyn CouponStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The user's coupons, soonest expiry first; `status` filters by the
    /// status at this moment (EXPIRED is derived from the clock).
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn mine(
        &self,
        user: UserId,
        status: Option<CouponStatus>,
        page: PageRequest,
    ) -> Result<Page<Coupon>, Unavailable> {
        self.store.mine(user, status, self.clock.now(), page).await
    }

    /// The status of a coupon at this moment.
    pub fn status_of(&self, coupon: &Coupon) -> CouponStatus {
        coupon.status(self.clock.now())
    }
}
