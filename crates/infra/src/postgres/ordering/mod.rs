//! The [`OrderStore`] on Postgres: orders are combined into batches, one
//! transaction each, under the idempotency guard.
//!
//! `place` hands the order to one of the store's
//! [`lanes`](crate::postgres::lanes), chosen by its first product, and
//! waits for its answer. A lane runs the orders that arrived while its
//! previous batch ran as one transaction ([`batch`]): a sale's orders for
//! one hot product queue on one lane and share its lock wait and its commit
//! instead of queueing on the product's row lock.
//!
//! Each order is still decided on its own, answered on its own, and durable
//! before it is answered: the reply is sent after the batch commits.
//!
//! The files of this adapter import each other in one direction only:
//! `batch` (the steps of one batch) uses `lock` (lock the rows, load the
//! domain's books), `rows` (one struct per table row) and `write` (the one
//! statement, which uses `rows`); `rows` uses `event` (the outbox payload).
//! `read` serves `get` and `list`. What every batched write shares sits
//! beside this module: `lanes` (the queues, the transaction, `BatchError`)
//! and `batch_keys` (claim and answer the idempotency keys).

mod batch;
mod event;
mod lock;
mod read;
mod rows;
mod write;

use std::time::Duration;

use async_trait::async_trait;
use domain::error::Unavailable;
use domain::idempotency::IdempotentRequest;
use domain::identity::UserId;
use domain::ordering::{Order, OrderId, OrderStore, PlaceOrderError, PricedOrder};
use domain::paging::{Page, PageRequest};

use self::batch::{Entry, OrderBatch, Placed};
use super::Postgres;
use super::lanes::Lanes;

#[derive(Clone)]
pub struct PgOrderStore {
    db: Postgres,
    lanes: Lanes<OrderBatch>,
}

impl std::fmt::Debug for PgOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgOrderStore")
    }
}

impl PgOrderStore {
    /// Reads through `db`; runs the batches on `lanes`, which should be a
    /// pool of its own with [`LANES`](super::lanes::LANES) connections, so
    /// that a burst of reads never keeps a batch waiting for a connection
    /// (and the lanes' prepared statements stay warm). Starts the lanes on
    /// the current Tokio runtime; they stop when the store and its clones are
    /// dropped.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(db: Postgres, lanes: &Postgres, retention: Duration) -> Self {
        Self {
            db,
            lanes: Lanes::start(OrderBatch, lanes, retention),
        }
    }
}

/// The lane key of an order: its lowest product id (lines are in product-id
/// order), so a sale's orders of one product share a lane; other orders
/// spread over the lanes.
fn lane_of(order: &PricedOrder) -> i64 {
    order
        .lines
        .as_slice()
        .first()
        .map_or(0, |l| l.product_id.get())
}

#[async_trait]
impl OrderStore for PgOrderStore {
    async fn place(
        &self,
        order: PricedOrder,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<Placed, Unavailable> {
        let lane = lane_of(&order);
        self.db
            .timed(self.lanes.submit(lane, Entry { order, request }))
            .await
    }
    async fn get(&self, user_id: UserId, id: OrderId) -> Result<Option<Order>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                read::find(&mut conn, user_id, id).await
            })
            .await
    }

    async fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<Order>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                read::page(&mut conn, user_id, page).await
            })
            .await
    }
}
