//! What the invest use cases need from the outside world.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::models::{
    InvestAmount, InvestError, InvestProduct, InvestProductId, Investment, MyInvestment,
    NewInvestProduct,
};
use crate::error::Unavailable;
use crate::idempotency::{IdempotentOutcome, IdempotentRequest};
use crate::identity::UserId;
use crate::money::Points;
use crate::paging::{Page, PageRequest};

/// An investment to make: who, into what, how much, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvestOrder {
    pub user_id: UserId,
    pub product_id: InvestProductId,
    pub amount: InvestAmount,
    /// The instant the window is checked at and the investment is dated.
    pub at: DateTime<Utc>,
}

/// What became of an investment handed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvestPlacement {
    /// The answer, as for any idempotent write.
    pub outcome: IdempotentOutcome,
    /// What ran now: the investment or its refusal. `None` when nothing ran
    /// (a replay, a reused key, a key in progress).
    pub ran: Option<Result<Investment, InvestError>>,
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

    /// Makes the investment in one transaction, under the idempotency guard:
    /// adds the amount to the product guarded by `current + amount <= total`
    /// and the window at `order.at`, counts a new investor once, and writes
    /// the investment row. A refusal ([`InvestError`]) leaves nothing behind
    /// but its stored answer.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; nothing was written.
    async fn invest(
        &self,
        order: InvestOrder,
        request: IdempotentRequest<Investment, InvestError>,
    ) -> Result<InvestPlacement, Unavailable>;

    /// The user's investments, newest first, one row per investment.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn mine(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Page<MyInvestment>, Unavailable>;
}

/// What the invest gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvestAdmission {
    /// The amount is reserved; give it back if the investment does not commit.
    Reserved,
    /// Less than the amount is left (`remaining`, possibly zero): refuse
    /// without a transaction. Nothing was reserved.
    Refused { remaining: Points },
    /// The gate cannot decide (it does not know the product, or another
    /// instance is building its counter): nothing was reserved, let Postgres
    /// decide.
    Bypass,
}

/// The fast path in front of the investment transaction (a Redis counter of
/// what remains per product). It never takes part of an amount: the check
/// and the reservation are one atomic step, so a refusal never disturbs the
/// counter. Postgres stays the final guard, so the gate may err towards
/// admitting.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait InvestGate: Send + Sync {
    /// Reserves `amount` of the product's remaining amount, or nothing.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (then nothing was reserved).
    async fn reserve(
        &self,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<InvestAdmission, Unavailable>;

    /// Gives back a reservation whose investment did not commit.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn release(
        &self,
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
