//! Many orders in one transaction: the steps of [`OrderBatch`].
//!
//! One order at a time, a hot product's row lock is held from its stock
//! `UPDATE` to its `COMMIT`, so a sale's orders commit one after another,
//! each waiting for the previous one's WAL flush. A batch pays for one lock
//! wait and one flush for all its orders, and its statements are set-based,
//! so it costs about the same for one order or a hundred:
//!
//! ```text
//! BEGIN
//!   claim every key: try-lock, read its record   -- batch_keys.rs: in progress, replay, reused
//!   lock products, wallets, coupons FOR UPDATE   -- lock.rs: each in key order
//!   decide each order in arrival order           -- domain::ordering::Books: whole or refused
//!   draw the order ids, render every answer
//!   one statement: UPDATE stock, wallets, coupons; INSERT orders, items,
//!     ledger, outbox events and every answer     -- rows.rs, write.rs
//! COMMIT                                         -- durable before anyone is answered
//! ```
//!
//! Every answer, success or refusal, commits with its effect, as under
//! [`guarded`](crate::postgres::idempotency::guarded). A statement that fails
//! fails the whole batch: everything rolls back and every order in it
//! answers 503, so a retry runs again.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Int8, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::idempotency::{IdempotentRequest, Written};
use domain::ordering::{Order, OrderId, PlaceOrderError, PricedOrder, RowsToLock, Taken};

use super::lock::lock_books;
use super::rows::BatchRows;
use super::write::write_batch;
use crate::postgres::batch_keys::Answers;
use crate::postgres::lanes::{Batch, BatchError};
use crate::postgres::prepared::prepared;

/// One order waiting in a batch.
pub(super) struct Entry {
    pub order: PricedOrder,
    pub request: IdempotentRequest<Order, PlaceOrderError>,
}

/// The order store's batch: places the orders its keys leave to run.
pub(super) struct OrderBatch;

impl Batch for OrderBatch {
    type Entry = Entry;
    type Value = Order;
    type Refusal = PlaceOrderError;
    const KIND: &'static str = "order";

    fn request(entry: &Entry) -> &IdempotentRequest<Order, PlaceOrderError> {
        &entry.request
    }

    async fn run(
        &self,
        tx: &mut AsyncPgConnection,
        entries: &[Entry],
        live: &[usize],
        answers: &mut Answers<Order, PlaceOrderError>,
    ) -> Result<(), BatchError> {
        let live_orders = || live.iter().map(|&i| &entries[i].order);
        let mut books = lock_books(tx, &RowsToLock::of(live_orders())).await?;
        let decided: Vec<Result<Taken, PlaceOrderError>> =
            live_orders().map(|order| books.take(order)).collect();
        let taken_orders = live_orders()
            .zip(&decided)
            .filter_map(|(order, d)| d.is_ok().then_some(order));
        let mut placed = orders_of(tx, taken_orders.collect()).await?.into_iter();
        let mut rows = BatchRows::default();
        for (&i, decision) in live.iter().zip(decided) {
            let result = match decision {
                Ok(taken) => {
                    let order = placed
                        .next()
                        .ok_or_else(|| BatchError::inconsistent("an order id went missing"))?;
                    rows.placed(&order, taken);
                    Ok(order)
                }
                Err(refusal) => Err(refusal),
            };
            answers.ran(i, &entries[i].request, result)?;
        }
        rows.answers = answers.rows();
        write_batch(tx, rows).await
    }
}

/// What became of one order of the batch.
pub(super) type Placed = Written<Order, PlaceOrderError>;

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// The orders the books took, with the ids and the time they are placed at.
async fn orders_of(
    tx: &mut AsyncPgConnection,
    taken: Vec<&PricedOrder>,
) -> Result<Vec<Order>, BatchError> {
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<NewId> = prepared(
        "SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id, now() AS at \
           FROM generate_series(1, $1)",
    )
    .bind::<Int8, _>(i64::try_from(taken.len()).unwrap_or(i64::MAX))
    .load(tx)
    .await?;
    if ids.len() != taken.len() {
        return Err(BatchError::inconsistent("fewer order ids than orders"));
    }
    let orders = taken.into_iter().zip(ids).map(|(o, new)| Order {
        id: OrderId::new(new.id),
        user_id: o.user_id,
        lines: o.lines.clone(),
        total: o.total,
        discount: o.discount,
        paid: o.paid,
        coupon: o.coupon.clone(),
        created_at: new.at,
    });
    Ok(orders.collect())
}
