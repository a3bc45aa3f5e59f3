//! Cancel the use of a coupon: the holder gives a used coupon back, unless
//! an order consumed it.

use std::sync::Arc;

use domain::coupon::{Coupon, CouponStore};
use domain::identity::UserId;
use domain::ordering::CouponCode;

use super::RedeemCouponError;

pub struct CancelCouponUse {
    store: Arc<dyn CouponStore>,
}

impl std::fmt::Debug for CancelCouponUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CancelCouponUse")
    }
}

impl CancelCouponUse {
    pub fn new(store: Arc<dyn CouponStore>) -> Self {
        Self { store }
    }

    /// Gives a used coupon back.
    ///
    /// # Errors
    /// [`RedeemCouponError::Refused`] with the store's refusal;
    /// [`RedeemCouponError::Unavailable`] when the store fails.
    pub async fn execute(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Coupon, RedeemCouponError> {
        Ok(self.store.cancel_redeem(user, code).await??)
    }
}

#[cfg(test)]
mod tests {
    use domain::coupon::{MockCouponStore, RedeemError};

    use super::*;

    #[tokio::test]
    async fn giving_back_a_coupon_passes_the_stores_refusal_on() {
        let mut store = MockCouponStore::new();
        store
            .expect_cancel_redeem()
            .withf(|user, code| user.get() == 1 && code.as_str() == "ABCD-1234")
            .times(1)
            .returning(|_, _| Ok(Err(RedeemError::NotUsed)));
        let cancel = CancelCouponUse::new(Arc::new(store));

        let result = cancel
            .execute(
                UserId::new(1),
                &CouponCode::parse("ABCD-1234").expect("valid"),
            )
            .await;

        assert!(matches!(
            result,
            Err(RedeemCouponError::Refused(RedeemError::NotUsed))
        ));
    }
}
