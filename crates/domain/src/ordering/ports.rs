//! What the ordering use cases need from the outside world.

use async_trait::async_trait;

use super::models::{CouponCode, Order, OrderId, PlaceOrderError, PricedOrder, Quantity};
use crate::catalog::ProductId;
use crate::error::Unavailable;
use crate::idempotency::{IdempotencyKey, IdempotentOutcome, IdempotentRequest};
use crate::identity::UserId;
use crate::money::Points;
use crate::paging::{Page, PageRequest};

/// What became of an order handed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The answer, as for any idempotent write.
    pub outcome: IdempotentOutcome,
    /// What ran now: the placed order or its refusal. `None` when nothing ran
    /// (a replay, a reused key, a key in progress).
    pub ran: Option<Result<OrderId, PlaceOrderError>>,
}

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
    ) -> Result<Placement, Unavailable>;

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

/// What the stock gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Every line's quantity is reserved; give it back if the order fails.
    Reserved,
    /// This product has too little stock left: refuse without a transaction.
    SoldOut(ProductId),
    /// The gate cannot decide (a product it does not know): nothing was
    /// reserved, let Postgres decide.
    Bypass,
    /// This idempotency key came through the gate a moment ago (a retry, a
    /// double click, a replay): nothing is reserved again and the store
    /// answers it from the key. Above all, it is not refused as sold out
    /// because its own first request holds the last units.
    Repeated,
}

/// Who a reservation is for: the request's idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct GateHolder<'a> {
    pub user_id: UserId,
    pub key: &'a IdempotencyKey,
}

/// The fast path in front of the order transaction (Redis counters): it
/// refuses the late majority of a sale without touching Postgres. Postgres
/// stays the final guard, so the gate may err towards admitting.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StockGate: Send + Sync {
    /// Reserves every line at once for `holder`, or nothing. A holder that
    /// reserved (or bypassed) within the last minute is [`GateDecision::Repeated`].
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails (then nothing was reserved).
    async fn reserve<'a>(
        &self,
        holder: GateHolder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<GateDecision, Unavailable>;

    /// Gives back a reservation whose order did not go through.
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn release(&self, lines: &[(ProductId, Quantity)]) -> Result<(), Unavailable>;

    /// Drops what the gate knows about a product, so that its next
    /// reservation starts again from Postgres (after an admin changed the
    /// stock, or when Postgres refused what the gate admitted).
    ///
    /// # Errors
    /// [`Unavailable`] when the gate's store fails.
    async fn forget(&self, product: ProductId) -> Result<(), Unavailable>;
}
