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
//!   try-lock every key                           -- batch_keys.rs: in progress
//!   one pipeline: read the keys' records         -- batch_keys.rs: replay, reused
//!     lock products, wallets, coupons FOR UPDATE -- lock.rs: each in key order
//!     draw an order id for every order
//!   decide each order in arrival order           -- domain::ordering::Books: whole or refused
//!   render every answer
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
use domain::ordering::{Books, Order, OrderId, PlaceOrderError, PricedOrder, RowsToLock, Taken};

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

    type Locked = (Books, Vec<NewId>);

    fn request(entry: &Entry) -> &IdempotentRequest<Order, PlaceOrderError> {
        &entry.request
    }

    /// The rows of every order, and an id for each (ids of orders that do
    /// not run are skipped, as a rollback skips them).
    async fn lock(
        &self,
        conn: &AsyncPgConnection,
        entries: &[Entry],
    ) -> Result<(Books, Vec<NewId>), BatchError> {
        let rows = RowsToLock::of(entries.iter().map(|e| &e.order));
        futures_util::future::try_join(lock_books(conn, &rows), new_ids(conn, entries.len())).await
    }

    async fn run(
        &self,
        tx: &mut AsyncPgConnection,
        entries: &[Entry],
        live: &[usize],
        (mut books, ids): (Books, Vec<NewId>),
        answers: &mut Answers<Order, PlaceOrderError>,
    ) -> Result<(), BatchError> {
        let live_orders = || live.iter().map(|&i| &entries[i].order);
        let decided: Vec<Result<Taken, PlaceOrderError>> =
            live_orders().map(|order| books.take(order)).collect();
        let taken_orders = live_orders()
            .zip(&decided)
            .filter_map(|(order, d)| d.is_ok().then_some(order));
        let mut placed = orders_of(taken_orders.collect(), ids)?.into_iter();
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
pub(super) struct NewId {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// `n` order ids and the time the batch places its orders at.
async fn new_ids(conn: &AsyncPgConnection, n: usize) -> Result<Vec<NewId>, BatchError> {
    let ids: Vec<NewId> = prepared(
        "SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id, now() AS at \
           FROM generate_series(1, $1)",
    )
    .bind::<Int8, _>(i64::try_from(n).unwrap_or(i64::MAX))
    .load(&mut &*conn)
    .await?;
    if ids.len() != n {
        return Err(BatchError::inconsistent("fewer order ids than orders"));
    }
    Ok(ids)
}

/// The orders the books took, with the ids drawn for the batch.
fn orders_of(taken: Vec<&PricedOrder>, ids: Vec<NewId>) -> Result<Vec<Order>, BatchError> {
    if ids.len() < taken.len() {
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
