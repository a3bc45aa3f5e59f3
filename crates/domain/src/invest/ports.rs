//! What the invest use cases need from the outside world.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::models::{
    InvestAmount, InvestError, InvestProduct, InvestProductId, Investment, MyInvestment,
    MyProductTotal, NewInvestProduct,
};
use crate::error::Unavailable;
use crate::gate::{Admission, Holder};
use crate::idempotency::{IdempotentRequest, Written};
use crate::identity::UserId;
use crate::money::Points;
use crate::paging::{Page, PageRequest};

/// An investment to make: who, into what, how much. When is the
/// database's clock once the product's row is locked, not the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvestOrder {
    pub user_id: UserId,
    pub product_id: InvestProductId,
    pub amount: InvestAmount,
}

/// Investment products and investments.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait InvestStore: Send + Sync {
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn create(&self, product: NewInvestProduct) -> Result<InvestProduct, Unavailable>;

    /// The product as it is now; `None` for an unknown id.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn get(&self, id: InvestProductId) -> Result<Option<InvestProduct>, Unavailable>;

    /// Products whose window holds `now`, newest `started_at` first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn open_at(
        &self,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<InvestProduct>, Unavailable>;

    /// Makes the investment in one transaction (which other investments may
    /// share, each decided and answered on its own), under the idempotency
    /// guard: adds the amount to the product guarded by `current + amount <= total`
    /// and the window at the database's clock when the product's row is
    /// locked, counts a new investor once, and writes the investment row
    /// dated by that same clock. A refusal leaves nothing behind but its
    /// stored answer.
    ///
    /// A replay, a reused key or a key in progress is answered from the key
    /// and nothing runs. Otherwise the store MUST answer `Executed` with
    /// `Err(`[`InvestError::ProductNotFound`]`)` for an unknown product,
    /// [`InvestError::NotInRecruitingPeriod`] outside the window at that clock,
    /// [`InvestError::SoldOut`] when nothing is left and
    /// [`InvestError::AmountExceedsRemaining`] when too little is.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; nothing was written.
    async fn invest(
        &self,
        order: InvestOrder,
        request: IdempotentRequest<Investment, InvestError>,
    ) -> Result<Written<Investment, InvestError>, Unavailable>;

    /// The user's investments, newest first, one row per investment.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn mine(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Page<MyInvestment>, Unavailable>;

    /// The user's investments summed per product, the product most
    /// recently invested in first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn mine_by_product(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Page<MyProductTotal>, Unavailable>;
}

/// The fast path in front of the investment transaction (a Redis counter of
/// what remains per product). It never takes part of an amount: the check
/// and the reservation are one atomic step, so a refusal never disturbs the
/// counter. Postgres stays the final guard, so the gate may err towards
/// admitting.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait InvestGate: Send + Sync {
    /// Reserves `amount` of the product's remaining amount for `holder`, or
    /// nothing, and marks the holder. A holder marked within the last minute
    /// is [`Admission::Repeated`]; an amount that does not fit is
    /// `Refused(remaining)` (possibly zero); a product the gate does not know
    /// is [`Admission::Bypass`].
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (then nothing was reserved).
    async fn reserve<'a>(
        &self,
        holder: Holder<'a>,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<Admission<Points>, Unavailable>;

    /// Gives back what `reserve` took for `holder` (nothing when it only
    /// marked it) and drops the mark; a second release gives back nothing.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn release<'a>(
        &self,
        holder: Holder<'a>,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<(), Unavailable>;

    /// The investment committed: what `reserve` took for `holder` stays
    /// taken and is no longer a lease that expires (see
    /// [`domain::gate`](crate::gate)).
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (the lease then expires
    /// and its amount comes back: a drift Postgres absorbs).
    async fn confirm<'a>(
        &self,
        holder: Holder<'a>,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<(), Unavailable>;

    /// Drops what the gate knows about a product, so that its next
    /// reservation starts again from Postgres (when Postgres refused what the
    /// gate admitted).
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn forget(&self, product: InvestProductId) -> Result<(), Unavailable>;
}
