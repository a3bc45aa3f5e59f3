//! What the ordering use cases need from the outside world.

use async_trait::async_trait;

use super::models::{CouponCode, Order, OrderId, PlaceOrderError, PricedOrder};
use crate::error::Unavailable;
use crate::idempotency::{IdempotentOutcome, IdempotentRequest};
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
    /// refusal ([`PlaceOrderError`]) leaves nothing behind but its stored answer.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; nothing was written.
    async fn place(
        &self,
        order: PricedOrder,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<IdempotentOutcome, Unavailable>;

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
