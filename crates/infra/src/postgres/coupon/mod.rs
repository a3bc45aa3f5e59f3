//! The coupon context on Postgres. [`PgCouponStore`] is the
//! [`CouponStore`]: its campaign half lives in `campaigns.rs`, its holder
//! half (issue, list, use, give back) in `holders.rs`. The expiring list and
//! the notice claims are [`PgExpiryStore`] (`expiry.rs`); ordering's view of
//! a coupon is [`PgCouponQuotes`] (`quotes.rs`).

mod campaigns;
mod expiry;
mod holders;
mod quotes;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::coupon::{
    AddCodesError, AddedCodes, Campaign, CampaignId, CampaignView, Coupon, CouponStatus,
    CouponStore, IssueError, NewCampaign, RedeemError,
};
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::ordering::CouponCode;
use domain::paging::{Page, PageRequest};

pub use expiry::PgExpiryStore;
pub use quotes::PgCouponQuotes;

use super::Postgres;

/// How many campaigns [`PgCouponStore`] keeps in memory.
const CAMPAIGNS_CACHED: usize = 10_000;

#[derive(Clone)]
pub struct PgCouponStore {
    db: Postgres,
    /// Campaigns read before. A campaign never changes once created (its
    /// name, discount, windows and validity are fixed; its pool's counts are
    /// not part of it), so a cached one is exactly what Postgres holds, and
    /// a rush's refusals (which answer an unknown or closed campaign before
    /// sold out) read it from here instead of from Postgres. An unknown id
    /// is never cached: the campaign may be created a moment later.
    campaigns: std::sync::Arc<quick_cache::sync::Cache<CampaignId, Campaign>>,
}

impl std::fmt::Debug for PgCouponStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCouponStore")
    }
}

impl PgCouponStore {
    pub fn new(db: Postgres) -> Self {
        Self {
            db,
            campaigns: std::sync::Arc::new(quick_cache::sync::Cache::new(CAMPAIGNS_CACHED)),
        }
    }
}

#[async_trait]
impl CouponStore for PgCouponStore {
    async fn create_campaign(&self, campaign: NewCampaign) -> Result<Campaign, Unavailable> {
        campaigns::create_campaign(&self.db, campaign).await
    }

    async fn campaign_view(&self, id: CampaignId) -> Result<Option<CampaignView>, Unavailable> {
        campaigns::campaign_view(&self.db, id).await
    }

    async fn add_codes(
        &self,
        campaign: CampaignId,
        codes: Vec<CouponCode>,
    ) -> Result<AddedCodes, AddCodesError> {
        campaigns::add_codes(&self.db, campaign, codes).await
    }

    async fn issue(&self, campaign: &Campaign, user: UserId) -> Result<Coupon, IssueError> {
        holders::issue(&self.db, campaign, user).await
    }

    async fn mine(
        &self,
        user: UserId,
        status: Option<CouponStatus>,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<Coupon>, Unavailable> {
        holders::mine(&self.db, user, status, now, page).await
    }

    async fn redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable> {
        holders::redeem(&self.db, user, code).await
    }

    async fn cancel_redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable> {
        holders::cancel_redeem(&self.db, user, code).await
    }

    async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable> {
        if let Some(campaign) = self.campaigns.get(&id) {
            return Ok(Some(campaign));
        }
        let found = campaigns::campaign(&self.db, id).await?;
        if let Some(campaign) = &found {
            self.campaigns.insert(id, campaign.clone());
        }
        Ok(found)
    }
}
