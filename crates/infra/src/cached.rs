//! Store ports whose expensive reads go through the shared cache
//! ([`ReadCache`]); every other method passes through. The use cases see the
//! same ports and do not know a cache is there. docs/caching.md gives each
//! read's decision, bound and invalidation.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::catalog::{CatalogStore, NewProduct, PatchRefused, Product, ProductId, ProductPatch};
use domain::coupon::{
    AddCodesError, AddedCodes, Campaign, CampaignId, CampaignView, Coupon, CouponStatus,
    CouponStore, IssueError, NewCampaign, RedeemError,
};
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::ordering::CouponCode;
use domain::paging::{Page, PageRequest};

use crate::redis::ReadCache;

/// The products, with how many there are shared through the cache.
///
/// Counting the table is the one part of a page of products that grows
/// with the catalogue (every row is visited), and it changes only when a
/// product is created, which invalidates it. The rows themselves carry
/// the live stock, so they are read from the database every time.
pub struct CachedCatalog {
    inner: Arc<dyn CatalogStore>,
    count: Arc<ReadCache>,
}

impl std::fmt::Debug for CachedCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCatalog")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl CachedCatalog {
    /// The one key the product count is kept under.
    const KEY: &'static str = "all";

    pub fn new(inner: Arc<dyn CatalogStore>, count: Arc<ReadCache>) -> Self {
        Self { inner, count }
    }
}

#[async_trait]
impl CatalogStore for CachedCatalog {
    async fn create(&self, product: NewProduct) -> Result<Product, Unavailable> {
        let created = self.inner.create(product).await;
        // Also after a failure: the insert may have committed before it.
        self.count.invalidate(Self::KEY).await;
        created
    }

    async fn update(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Result<Product, PatchRefused>, Unavailable> {
        self.inner.update(id, patch).await
    }

    async fn get(&self, id: ProductId) -> Result<Option<Product>, Unavailable> {
        self.inner.get(id).await
    }

    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, Unavailable> {
        self.inner.get_many(ids).await
    }

    async fn count(&self) -> Result<u64, Unavailable> {
        let inner = &self.inner;
        self.count
            .get(
                Self::KEY,
                || inner.count(),
                |n: &u64| n.to_string().into_bytes(),
                |b| std::str::from_utf8(b).ok()?.parse().ok(),
            )
            .await
    }

    async fn page(&self, page: PageRequest) -> Result<Vec<Product>, Unavailable> {
        self.inner.page(page).await
    }
}

/// A campaign's pool counts as the cache keeps them: `total,issued`.
fn encode_counts(&(total, issued): &(i64, i64)) -> Vec<u8> {
    format!("{total},{issued}").into_bytes()
}

fn decode_counts(bytes: &[u8]) -> Option<(i64, i64)> {
    let (total, issued) = std::str::from_utf8(bytes).ok()?.split_once(',')?;
    Some((total.parse().ok()?, issued.parse().ok()?))
}

/// Coupons, with the campaign view's pool counts shared through the cache.
///
/// The counts cost a pass over the campaign's whole pool (a million index
/// entries for a million codes), and during a rush every issue changes
/// them. So they are cached with a short bound (`counts.bound()`), not
/// invalidated by issues: the remaining count a sale page shows may lag
/// the issues by up to the bound. Adding codes invalidates them, so a pool
/// that grew shows it on the next read. The campaign itself never changes
/// and comes from the store's own cache.
pub struct CachedCoupons {
    inner: Arc<dyn CouponStore>,
    counts: Arc<ReadCache>,
}

impl std::fmt::Debug for CachedCoupons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCoupons")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl CachedCoupons {
    pub fn new(inner: Arc<dyn CouponStore>, counts: Arc<ReadCache>) -> Self {
        Self { inner, counts }
    }
}

#[async_trait]
impl CouponStore for CachedCoupons {
    async fn create_campaign(&self, campaign: NewCampaign) -> Result<Campaign, Unavailable> {
        self.inner.create_campaign(campaign).await
    }

    async fn campaign_view(&self, id: CampaignId) -> Result<Option<CampaignView>, Unavailable> {
        let Some(campaign) = self.inner.campaign(id).await? else {
            return Ok(None);
        };
        let inner = &self.inner;
        let (total_codes, issued_count) = self
            .counts
            .get(
                &id.to_string(),
                || async move {
                    Ok(inner
                        .campaign_view(id)
                        .await?
                        .map_or((0, 0), |v| (v.total_codes, v.issued_count)))
                },
                encode_counts,
                decode_counts,
            )
            .await?;
        Ok(Some(CampaignView {
            campaign,
            total_codes,
            issued_count,
        }))
    }

    async fn add_codes(
        &self,
        campaign: CampaignId,
        codes: Vec<CouponCode>,
    ) -> Result<AddedCodes, AddCodesError> {
        let added = self.inner.add_codes(campaign, codes).await;
        // Whatever the answer, some codes may have been committed (a
        // timeout after the commit): the next read counts again.
        self.counts.invalidate(&campaign.to_string()).await;
        added
    }

    async fn issue(&self, campaign: &Campaign, user: UserId) -> Result<Coupon, IssueError> {
        self.inner.issue(campaign, user).await
    }

    async fn mine(
        &self,
        user: UserId,
        status: Option<CouponStatus>,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<Coupon>, Unavailable> {
        self.inner.mine(user, status, now, page).await
    }

    async fn redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable> {
        self.inner.redeem(user, code).await
    }

    async fn cancel_redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable> {
        self.inner.cancel_redeem(user, code).await
    }

    async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable> {
        self.inner.campaign(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_the_round_trip_and_garbage_does_not_decode() {
        assert_eq!(
            decode_counts(&encode_counts(&(1_000_000, 7))),
            Some((1_000_000, 7))
        );
        for bad in [&b""[..], b"12", b"a,b", b"1,2,3", b"\xff,1"] {
            assert_eq!(decode_counts(bad), None, "{bad:?}");
        }
    }
}
