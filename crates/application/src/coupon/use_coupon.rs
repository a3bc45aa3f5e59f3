//! Use a coupon: the holder spends it now, by the store's clock; an expired,
//! used or unknown coupon is refused.

use std::sync::Arc;

use domain::coupon::{Coupon, CouponStore};
use domain::identity::UserId;
use domain::ordering::CouponCode;

use super::RedeemCouponError;

pub struct UseCoupon {
    store: Arc<dyn CouponStore>,
}

impl std::fmt::Debug for UseCoupon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UseCoupon")
    }
}

impl UseCoupon {
    pub fn new(store: Arc<dyn CouponStore>) -> Self {
        Self { store }
    }

    /// Uses the coupon now, by the store's clock.
    ///
    /// # Errors
    /// [`RedeemCouponError::Refused`] with the store's refusal;
    /// [`RedeemCouponError::Unavailable`] when the store fails.
    pub async fn execute(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Coupon, RedeemCouponError> {
        Ok(self.store.redeem(user, code).await??)
    }
}

#[cfg(test)]
mod tests {
    use domain::coupon::{MockCouponStore, RedeemError};

    use super::*;

    #[tokio::test]
    async fn using_an_expired_coupon_passes_the_stores_refusal_on() {
        let mut store = MockCouponStore::new();
        store
            .expect_redeem()
            .withf(|user, code| user.get() == 1 && code.as_str() == "ABCD-1234")
            .returning(|_, _| Ok(Err(RedeemError::Expired)));
        let use_coupon = UseCoupon::new(Arc::new(store));

        let result = use_coupon
            .execute(
                UserId::new(1),
                &CouponCode::parse("ABCD-1234").expect("valid"),
            )
            .await;

        assert!(matches!(
            result,
            Err(RedeemCouponError::Refused(RedeemError::Expired))
        ));
    }
}
