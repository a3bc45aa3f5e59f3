//! Reading a campaign: its rules and how many of its codes are left.

use std::sync::Arc;

use domain::coupon::{CampaignId, CampaignView, CouponStore};

use super::CampaignError;

/// Campaign reads.
pub struct CampaignQueries {
    store: Arc<dyn CouponStore>,
}

impl std::fmt::Debug for CampaignQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CampaignQueries")
    }
}

impl CampaignQueries {
    pub fn new(store: Arc<dyn CouponStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`CampaignError::NotFound`] for an unknown id.
    pub async fn view(&self, id: CampaignId) -> Result<CampaignView, CampaignError> {
        self.store
            .campaign_view(id)
            .await?
            .ok_or(CampaignError::NotFound(id))
    }
}
