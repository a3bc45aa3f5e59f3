//! What the coupon use cases need from the outside world.

use async_trait::async_trait;
use thiserror::Error;

use chrono::{DateTime, Utc};

use super::expiry::{ClaimedNotices, ExpiringCoupon, ExpiringCursor, ExpiryNotice, NoticeClaim};
use super::models::{Campaign, CampaignId, CampaignView, Coupon, NewCampaign};
use super::status::CouponStatus;
use crate::error::Unavailable;
use crate::gate::{Admission, Holder};
use crate::identity::UserId;
use crate::ordering::CouponCode;
use crate::paging::{Page, PageRequest};

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

/// Why a code could not be issued.
#[derive(Debug, Error)]
pub enum IssueError {
    #[error("the campaign's issue window is closed")]
    NotActive,
    #[error("no free code is left")]
    SoldOut,
    #[error("this user already holds a code of the campaign")]
    AlreadyIssued,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a coupon could not be used or given back.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RedeemError {
    /// Unknown, or another user's.
    #[error("no such coupon of yours")]
    NotFound,
    #[error("the coupon is already used")]
    AlreadyUsed,
    #[error("the coupon is not used")]
    NotUsed,
    #[error("the coupon has expired")]
    Expired,
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

    /// Hands the lowest free code of the campaign to `user`. Concurrent
    /// calls never get the same code (`FOR UPDATE SKIP LOCKED`) and a user
    /// never gets two (unique index). The store's clock decides, in the
    /// same statement, whether the campaign's issue window is open, and
    /// stamps `issued_at`; the coupon expires `valid_days` after that.
    ///
    /// # Errors
    /// [`IssueError::NotActive`] when the window is closed at the store's
    /// clock, [`IssueError::SoldOut`], [`IssueError::AlreadyIssued`], or
    /// `Unavailable`.
    async fn issue(&self, campaign: &Campaign, user: UserId) -> Result<Coupon, IssueError>;

    /// The user's coupons by expiry, soonest first, optionally only those
    /// with `status` at `now`.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn mine(
        &self,
        user: UserId,
        status: Option<CouponStatus>,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<Coupon>, Unavailable>;

    /// Marks the user's unexpired, unused coupon used, in one guarded
    /// update: two concurrent uses never both succeed. Expiry is judged, and
    /// `used_at` stamped, by the store's clock at the moment the coupon's
    /// row is held, so a use that waited on the row past the expiry is
    /// refused.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails. Refusals are `Ok(Err(_))`:
    /// [`RedeemError::NotFound`] for an unknown or another user's code,
    /// [`RedeemError::AlreadyUsed`], [`RedeemError::Expired`].
    async fn redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable>;

    /// Gives a used coupon back to its owner (unused again).
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; refusals are `Ok(Err(_))`.
    async fn cancel_redeem(
        &self,
        user: UserId,
        code: &CouponCode,
    ) -> Result<Result<Coupon, RedeemError>, Unavailable>;

    /// The campaign, without its pool's counts.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable>;
}

/// Fresh random codes: 16 characters of Crockford base32 from a CSPRNG.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait CodeGenerator: Send + Sync {
    fn generate(&self, count: usize) -> Vec<CouponCode>;
}

/// Why the issue gate refused a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueRefusal {
    SoldOut,
    AlreadyIssued,
}

/// The fast path in front of coupon issue (Redis): refuses the late majority
/// of a rush without touching Postgres. Postgres stays the final guard, so
/// the gate may err towards admitting. Its holder is the user: holding a
/// code of the campaign is the mark, so a user's second issue is refused
/// as [`IssueRefusal::AlreadyIssued`] and never [`Admission::Repeated`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait IssueGate: Send + Sync {
    /// Holds one code of the campaign for the holder's user, or refuses.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (nothing was held).
    async fn reserve<'a>(
        &self,
        holder: Holder<'a>,
        campaign: CampaignId,
    ) -> Result<Admission<IssueRefusal>, Unavailable>;

    /// Gives back what [`reserve`](Self::reserve) held for an issue that
    /// failed; a second release gives back nothing.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn release<'a>(
        &self,
        holder: Holder<'a>,
        campaign: CampaignId,
    ) -> Result<(), Unavailable>;

    /// The issue committed: the code held for the holder's user stays
    /// taken and is no longer a lease that expires (see
    /// [`domain::gate`](crate::gate)).
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (the lease then expires
    /// and the code counts as free again: a drift Postgres absorbs).
    async fn confirm<'a>(
        &self,
        holder: Holder<'a>,
        campaign: CampaignId,
    ) -> Result<(), Unavailable>;

    /// Drops what the gate knows of a campaign (new codes, or Postgres
    /// disagreed); it is rebuilt from Postgres on the next issue.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn forget(&self, campaign: CampaignId) -> Result<(), Unavailable>;
}

/// Delivers expiry notices (one JSON line each on standard output today).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Notifier: Send + Sync {
    /// Writes one notice, with its [`ExpiryNotice::notice_id`].
    ///
    /// # Errors
    /// [`Unavailable`] when the notice could not be written; the run then
    /// leaves it unmarked, to be written again when its claim lapses.
    fn notify(&self, notice: &ExpiryNotice) -> Result<(), Unavailable>;
}

/// Coupons by expiry, for admins and the notice job.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ExpiryStore: Send + Sync {
    /// Issued, unused coupons expiring in `[from, until)`, by expiry then id,
    /// after the cursor position `after`, at most `limit`.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn expiring(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<ExpiringCursor>,
        limit: usize,
    ) -> Result<Vec<ExpiringCoupon>, Unavailable>;

    /// Claims up to `limit` issued, unused coupons expiring in `(now, until]`
    /// whose notice is not yet marked sent and not claimed, or claimed longer
    /// than `lifetime` ago, in one short transaction; concurrent runs skip
    /// each other's rows (`FOR UPDATE SKIP LOCKED`). The claim is taken and
    /// judged by the store's clock.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails (a claim that committed anyway
    /// lapses after `lifetime`).
    async fn claim_notices(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
        lifetime: std::time::Duration,
    ) -> Result<ClaimedNotices, Unavailable>;

    /// Marks the notices of `coupons` sent, for those `claim` still holds.
    /// Returns how many were marked.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails (the notices are written again,
    /// with the same id, once the claim lapses).
    async fn mark_notified(
        &self,
        claim: NoticeClaim,
        coupons: Vec<i64>,
    ) -> Result<usize, Unavailable>;
}
