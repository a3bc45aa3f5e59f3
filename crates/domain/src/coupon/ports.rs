//! What the coupon use cases need from the outside world.

use async_trait::async_trait;
use thiserror::Error;

use super::models::{Campaign, CampaignId, CampaignView, NewCampaign};
use crate::error::Unavailable;
use crate::ordering::CouponCode;

/// What adding codes to a pool did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddedCodes {
    pub inserted: usize,
    /// Codes that already existed (in this campaign or another).
    pub duplicates: usize,
}

#[derive(Debug, Error)]
pub enum AddCodesError {
    #[error("campaign {0} does not exist")]
    CampaignNotFound(CampaignId),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Campaigns and their pools of codes.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CouponStore: Send + Sync {
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn create_campaign(&self, campaign: NewCampaign) -> Result<Campaign, Unavailable>;

    /// The campaign and its pool's counts; `None` for an unknown id.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn campaign_view(&self, id: CampaignId) -> Result<Option<CampaignView>, Unavailable>;

    /// Adds codes to the campaign's pool in one short transaction; codes that
    /// exist anywhere already are skipped and counted, not an error.
    ///
    /// # Errors
    /// [`AddCodesError::CampaignNotFound`]; [`AddCodesError::Unavailable`].
    async fn add_codes(
        &self,
        campaign: CampaignId,
        codes: Vec<CouponCode>,
    ) -> Result<AddedCodes, AddCodesError>;
}

/// Fresh random codes: 16 characters of Crockford base32 from a CSPRNG.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait CodeGenerator: Send + Sync {
    fn generate(&self, count: usize) -> Vec<CouponCode>;
}
