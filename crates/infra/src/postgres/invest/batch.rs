//! Many investments in one transaction: the steps of [`InvestBatch`].
//!
//! One investment at a time, a hot product's row lock is held from its
//! `UPDATE` to its `COMMIT`, so a rush's investments commit one after
//! another, each waiting for the previous one's WAL flush. A batch pays for
//! one lock wait and one flush for all its investments:
//!
//! ```text
//! BEGIN
//!   claim every key: try-lock, read its record   -- batch_keys.rs: in progress, replay, reused
//!   lock the products FOR UPDATE, in id order
//!   read clock_timestamp() once                  -- the clock every window is judged at
//!   which (product, user) pairs invested before  -- one set-based read, after the locks
//!   decide each investment in arrival order      -- domain::invest::Books: whole or refused
//!   draw the investment ids, render every answer
//!   one statement: UPDATE the products (guarded), INSERT the investments
//!     and every answer                            -- write.rs
//! COMMIT                                         -- durable before anyone is answered
//! ```
//!
//! The clock is read after the locks are held, not in the locking statement
//! and not as `now()` (the transaction's start): Postgres re-checks a
//! `WHERE` after a lock wait only when the row was changed, not when it was
//! only locked, so a window judged before or during the wait would admit an
//! investment that reached the row after the close. Whether a user invested
//! before is read after the locks too: under READ COMMITTED that statement
//! sees every investment committed by whoever held the rows before.
//!
//! Every answer, success or refusal, commits with its effect, as under
//! [`guarded`](crate::postgres::idempotency::guarded). A statement that fails
//! fails the whole batch: everything rolls back and every investment in it
//! answers 503, so a retry runs again.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::idempotency::IdempotentRequest;
use domain::identity::UserId;
use domain::invest::{Books, InvestError, InvestOrder, InvestProductId, Investment, InvestmentId};

use super::ProductRow;
use super::write::{BatchRows, write_batch};
use crate::postgres::batch_keys::Answers;
use crate::postgres::lanes::{Batch, BatchError};
use crate::postgres::prepared::prepared;
use crate::postgres::schema::invest_products;

/// One investment waiting in a batch.
pub(super) struct Entry {
    pub order: InvestOrder,
    pub request: IdempotentRequest<Investment, InvestError>,
}

/// The invest store's batch: makes the investments its keys leave to run.
pub(super) struct InvestBatch;

impl Batch for InvestBatch {
    type Entry = Entry;
    type Value = Investment;
    type Refusal = InvestError;
    const KIND: &'static str = "investment";

    fn request(entry: &Entry) -> &IdempotentRequest<Investment, InvestError> {
        &entry.request
    }

    async fn run(
        &self,
        tx: &mut AsyncPgConnection,
        entries: &[Entry],
        live: &[usize],
        answers: &mut Answers<Investment, InvestError>,
    ) -> Result<(), BatchError> {
        let orders: Vec<&InvestOrder> = live.iter().map(|&i| &entries[i].order).collect();
        let mut books = lock_books(tx, &orders).await?;
        let decided: Vec<_> = orders.iter().map(|order| books.take(order)).collect();
        let taken = decided.iter().filter(|d| d.is_ok()).count();
        let mut ids = new_ids(tx, taken).await?.into_iter();
        let mut rows = BatchRows::default();
        for ((&i, order), decision) in live.iter().zip(orders).zip(decided) {
            let result = match decision {
                Ok(taken) => {
                    let id = ids
                        .next()
                        .ok_or_else(|| BatchError::inconsistent("an investment id went missing"))?;
                    let investment = Investment {
                        id: InvestmentId::new(id),
                        product_id: order.product_id,
                        user_id: order.user_id,
                        amount: order.amount,
                        invested_at: books.now(),
                    };
                    rows.made(&investment, taken);
                    Ok(investment)
                }
                Err(refusal) => Err(refusal),
            };
            answers.ran(i, &entries[i].request, result)?;
        }
        rows.answers = answers.rows();
        write_batch(tx, rows).await
    }
}

#[derive(QueryableByName)]
struct Clock {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Pair {
    #[diesel(sql_type = Int8)]
    product_id: i64,
    #[diesel(sql_type = Int8)]
    user_id: i64,
}

/// Locks the products `orders` invest in, in id order (as every batch does,
/// so batches never wait for each other in a cycle), then reads the clock
/// and the earlier investors of the (product, user) pairs, and loads them.
async fn lock_books(
    tx: &mut AsyncPgConnection,
    orders: &[&InvestOrder],
) -> Result<Books, BatchError> {
    let ids: BTreeSet<i64> = orders.iter().map(|o| o.product_id.get()).collect();
    let ids: Vec<i64> = ids.into_iter().collect();
    let locked: Vec<ProductRow> = invest_products::table
        .filter(invest_products::id.eq_any(&ids))
        .order(invest_products::id)
        .for_update()
        .select(ProductRow::as_select())
        .load(tx)
        .await?;
    let now = prepared("SELECT clock_timestamp() AS now")
        .get_result::<Clock>(tx)
        .await?
        .now;
    let mut books = Books::new(now);
    for row in locked {
        let product = row
            .into_product()
            .map_err(|e| BatchError::inconsistent(e.to_string()))?;
        books.product(product);
    }
    let pairs: BTreeSet<(i64, i64)> = orders
        .iter()
        .map(|o| (o.product_id.get(), o.user_id.get()))
        .collect();
    let (products, users): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
    let seen: Vec<Pair> = prepared(
        "SELECT DISTINCT i.product_id, i.user_id FROM investments i \
           JOIN unnest($1::int8[], $2::int8[]) AS t(product_id, user_id) \
             ON i.product_id = t.product_id AND i.user_id = t.user_id",
    )
    .bind::<Array<Int8>, _>(&products)
    .bind::<Array<Int8>, _>(&users)
    .load(tx)
    .await?;
    for pair in seen {
        books.investor(
            InvestProductId::new(pair.product_id),
            UserId::new(pair.user_id),
        );
    }
    Ok(books)
}

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Int8)]
    id: i64,
}

/// `n` ids from the investments' sequence.
async fn new_ids(tx: &mut AsyncPgConnection, n: usize) -> Result<Vec<i64>, BatchError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<NewId> = prepared(
        "SELECT nextval(pg_get_serial_sequence('investments', 'id')) AS id \
           FROM generate_series(1, $1)",
    )
    .bind::<Int8, _>(i64::try_from(n).unwrap_or(i64::MAX))
    .load(tx)
    .await?;
    if ids.len() != n {
        return Err(BatchError::inconsistent(
            "fewer investment ids than investments",
        ));
    }
    Ok(ids.into_iter().map(|r| r.id).collect())
}
