//! An admin creates a coupon campaign: its discount, how long its coupons
//! are valid, and when it issues them. Its pool starts empty.

use std::sync::Arc;

use domain::coupon::{Campaign, CouponStore, NewCampaign};
use domain::error::Unavailable;

pub struct CreateCampaign {
    store: Arc<dyn CouponStore>,
}

impl std::fmt::Debug for CreateCampaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreateCampaign")
    }
}

impl CreateCampaign {
    pub fn new(store: Arc<dyn CouponStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn execute(&self, campaign: NewCampaign) -> Result<Campaign, Unavailable> {
        self.store.create_campaign(campaign).await
    }
}
