//! Many investments in one transaction: the steps of [`InvestBatch`].
//!
//! One investment at a time, a hot product's row lock is held from its
//! `UPDATE` to its `COMMIT`, so a rush's investments commit one after
//! another, each waiting for the previous one's WAL flush. A batch pays for
//! one lock wait and one flush for all its investments:
//!
//! ```text
//! BEGIN
//!   try-lock every key                           -- batch_keys.rs: in progress
//!   one pipeline: read the keys' records         -- batch_keys.rs: replay, reused
//!     lock the products FOR UPDATE, in id order
//!   once the locks are held, one pipeline:
//!     read clock_timestamp() once                -- the clock every window is judged at
//!     which (product, user) pairs invested before -- one set-based read
//!     draw an investment id for every investment
//!   decide each investment in arrival order      -- domain::invest::Books: whole or refused
//!   render every answer
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

    type Locked = (Books, Vec<i64>);

    fn request(entry: &Entry) -> &IdempotentRequest<Investment, InvestError> {
        &entry.request
    }

    /// The products and earlier investors of every investment, the clock,
    /// and an id for each investment (ids of investments that do not run
    /// are skipped, as a rollback skips them).
    async fn lock(
        &self,
        conn: &AsyncPgConnection,
        entries: &[Entry],
    ) -> Result<(Books, Vec<i64>), BatchError> {
        let orders: Vec<&InvestOrder> = entries.iter().map(|e| &e.order).collect();
        lock_books(conn, &orders).await
    }

    async fn run(
        &self,
        tx: &mut AsyncPgConnection,
        entries: &[Entry],
        live: &[usize],
        (mut books, ids): (Books, Vec<i64>),
        answers: &mut Answers<Investment, InvestError>,
    ) -> Result<(), BatchError> {
        let orders: Vec<&InvestOrder> = live.iter().map(|&i| &entries[i].order).collect();
        let decided: Vec<_> = orders.iter().map(|order| books.take(order)).collect();
        let mut ids = ids.into_iter();
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
/// so batches never wait for each other in a cycle); once they are held,
/// reads the clock, the earlier investors of the (product, user) pairs and
/// an id per order in one pipeline, and loads them.
async fn lock_books(
    conn: &AsyncPgConnection,
    orders: &[&InvestOrder],
) -> Result<(Books, Vec<i64>), BatchError> {
    let ids: BTreeSet<i64> = orders.iter().map(|o| o.product_id.get()).collect();
    let ids: Vec<i64> = ids.into_iter().collect();
    let locked: Vec<ProductRow> = invest_products::table
        .filter(invest_products::id.eq_any(&ids))
        .order(invest_products::id)
        .for_update()
        .select(ProductRow::as_select())
        .load(&mut &*conn)
        .await?;
    let pairs: BTreeSet<(i64, i64)> = orders
        .iter()
        .map(|o| (o.product_id.get(), o.user_id.get()))
        .collect();
    let (products, users): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
    let clock = prepared("SELECT clock_timestamp() AS now").get_result::<Clock>(&mut &*conn);
    // One index probe per pair, stopping at the first investment found. The
    // batch pool plans each statement once per connection, on whatever the
    // table held then: a join written as `investments JOIN unnest(...)`,
    // first planned on an empty table, stayed a hash join over a scan of
    // every investment, and a soak's investments grew 12 ms → 43 ms in ten
    // minutes (docs/reliability.md, "Soak"). A `LATERAL … LIMIT 1` has no
    // such plan.
    let seen = prepared(
        "SELECT t.product_id, t.user_id \
           FROM unnest($1::int8[], $2::int8[]) AS t(product_id, user_id) \
           CROSS JOIN LATERAL (SELECT 1 FROM investments i \
                                WHERE i.product_id = t.product_id AND i.user_id = t.user_id \
                                LIMIT 1) AS earlier",
    )
    .bind::<Array<Int8>, _>(&products)
    .bind::<Array<Int8>, _>(&users)
    .load::<Pair>(&mut &*conn);
    let (clock, seen, new_ids) = futures_util::future::try_join3(
        async { clock.await.map_err(BatchError::from) },
        async { seen.await.map_err(BatchError::from) },
        new_ids(conn, orders.len()),
    )
    .await?;
    let mut books = Books::new(clock.now);
    for row in locked {
        let product = row
            .into_product()
            .map_err(|e| BatchError::inconsistent(e.to_string()))?;
        books.product(product);
    }
    for pair in seen {
        books.investor(
            InvestProductId::new(pair.product_id),
            UserId::new(pair.user_id),
        );
    }
    Ok((books, new_ids))
}

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Int8)]
    id: i64,
}

/// `n` ids from the investments' sequence.
async fn new_ids(conn: &AsyncPgConnection, n: usize) -> Result<Vec<i64>, BatchError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<NewId> = prepared(
        "SELECT nextval(pg_get_serial_sequence('investments', 'id')) AS id \
           FROM generate_series(1, $1)",
    )
    .bind::<Int8, _>(i64::try_from(n).unwrap_or(i64::MAX))
    .load(&mut &*conn)
    .await?;
    if ids.len() != n {
        return Err(BatchError::inconsistent(
            "fewer investment ids than investments",
        ));
    }
    Ok(ids.into_iter().map(|r| r.id).collect())
}
