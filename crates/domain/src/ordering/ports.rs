//! What the ordering use cases need from the outside world.

use async_trait::async_trait;

use super::models::{CouponCode, Order, OrderId, PlaceOrderError, PricedOrder, Quantity};
use crate::catalog::ProductId;
use crate::error::Unavailable;
use crate::gate::{Admission, Holder};
use crate::idempotency::{IdempotentRequest, Written};
use crate::identity::UserId;
use crate::money::Points;
use crate::paging::{Page, PageRequest};

/// Orders.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Places the order in one transaction, under the idempotency guard:
    /// takes each line's stock (in product-id order, each guarded by
    /// `stock >= quantity`), debits the balance (guarded by
    /// `balance >= paid`) with a PAYMENT ledger row, consumes the coupon,
    /// writes the order, its lines and its `order.paid` outbox event. A
    /// refusal leaves nothing behind but its stored answer.
    ///
    /// The key is decided first, under its lock: a replay, a reused key or a
    /// key in progress is answered from the key and nothing runs. Otherwise
    /// the store MUST answer `Executed` with `Err(`[`PlaceOrderError::OutOfStock`]`)`
    /// when a line's stock is short, [`PlaceOrderError::InsufficientBalance`]
    /// when the balance is short, and [`PlaceOrderError::CouponNotApplicable`]
    /// when the coupon is not the payer's, used or expired at the moment its
    /// row is locked (the database's clock), checked in that order.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; nothing was written.
    async fn place(
        &self,
        order: PricedOrder,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<Written<Order, PlaceOrderError>, Unavailable>;

    /// The caller's order; `None` for an unknown id or another user's order.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn get(&self, user_id: UserId, id: OrderId) -> Result<Option<Order>, Unavailable>;

    /// The caller's orders, newest first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<Order>, Unavailable>;
}

/// The discount a coupon gives an order. The coupons context implements it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CouponQuotes: Send + Sync {
    /// The discount `code` gives an order of `total` by `user_id`, never more
    /// than `total`; `None` when the coupon is unknown, not the user's, used,
    /// expired, or the order is below its minimum.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn quote(
        &self,
        user_id: UserId,
        code: &CouponCode,
        total: Points,
    ) -> Result<Option<Points>, Unavailable>;
}

/// The fast path in front of the order transaction (Redis counters): it
/// refuses the late majority of a sale without touching Postgres. Postgres
/// stays the final guard, so the gate may err towards admitting.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StockGate: Send + Sync {
    /// Reserves every line at once for `holder`, or nothing, and marks the
    /// holder. A holder marked within the last minute is
    /// [`Admission::Repeated`]; a line with too little stock is
    /// `Refused(product)`; a product the gate does not know is
    /// [`Admission::Bypass`].
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (then nothing was reserved).
    async fn reserve<'a>(
        &self,
        holder: Holder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<Admission<ProductId>, Unavailable>;

    /// Gives back what `reserve` took for `holder` (nothing when it only
    /// marked it) and drops the mark; a second release gives back nothing.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn release<'a>(
        &self,
        holder: Holder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<(), Unavailable>;

    /// The order committed: what `reserve` took for `holder` stays taken
    /// and is no longer a lease that expires (see [`domain::gate`](crate::gate)).
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (the lease then expires
    /// and its units come back: a drift Postgres absorbs).
    async fn confirm<'a>(
        &self,
        holder: Holder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<(), Unavailable>;

    /// Drops what the gate knows about a product, so that its next
    /// reservation starts again from Postgres (after an admin changed the
    /// stock, or when Postgres refused what the gate admitted).
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn forget(&self, product: ProductId) -> Result<(), Unavailable>;
}
