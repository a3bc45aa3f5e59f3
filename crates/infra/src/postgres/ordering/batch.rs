//! Many orders in one transaction: the statements of [`place_batch`].
//!
//! One order at a time, a hot product's row lock is held from its stock
//! `UPDATE` to its `COMMIT`, so a sale's orders commit one after another
//! (about 600 a second here, each waiting for the previous one's WAL flush).
//! A batch pays for one lock wait and one flush for all its orders, and its
//! statements are set-based, so it costs about the same for one order or a
//! hundred:
//!
//! ```text
//! BEGIN
//!   try-lock every key (advisory, transaction-scoped)  -- taken elsewhere → InProgress
//!   read the keys' records                              -- fresh → Replayed / KeyReused
//!   lock products, wallets, coupons FOR UPDATE, each in key order (no deadlocks)
//!   decide each order in arrival order (Books::take)    -- whole or refused
//!   draw the order ids, render every answer
//!   one statement: UPDATE stock, wallets, coupons; INSERT orders, items,
//!     ledger, outbox events and every answer under its key
//! COMMIT                                                -- durable before anyone is answered
//! ```
//!
//! Every answer, success or refusal, commits with its effect, as under
//! [`guarded`](super::idempotency::guarded). A statement that fails fails the
//! whole batch: everything rolls back and every order in it answers 503, so
//! a retry runs again. The `UPDATE`s repeat the guards that were decided in
//! memory and the batch fails if a row count disagrees, so a bug here cannot
//! oversell or overdraw.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Bool, Bytea, Double, Int2, Int8, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::idempotency::{IdempotentOutcome, IdempotentRequest};
use domain::ordering::{Order, OrderId, PlaceOrderError, Placement, PricedOrder};

use super::idempotency::{StoredRow, lock_name};
use super::order_books::Books;
use super::ordering::order_paid_event;
use super::prepared::prepared;

/// One order waiting in a batch.
pub(super) struct Entry {
    pub order: PricedOrder,
    pub request: IdempotentRequest<Order, PlaceOrderError>,
}

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
pub(super) enum BatchError {
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("{0}")]
    Inconsistent(String),
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Int8)]
    n: i64,
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(QueryableByName)]
struct Record {
    #[diesel(sql_type = Int8)]
    n: i64,
    #[diesel(embed)]
    record: StoredRow,
}

#[derive(QueryableByName)]
struct IdAmount {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Int8)]
    amount: i64,
}

#[derive(QueryableByName)]
struct FreeCoupon {
    #[diesel(sql_type = Text)]
    code: String,
    #[diesel(sql_type = Int8)]
    owner_id: i64,
}

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// Places `entries` in the transaction open on `tx`; answers them in order.
/// The caller begins and commits (or rolls back) the transaction.
pub(super) async fn place_batch(
    tx: &mut AsyncPgConnection,
    entries: &[Entry],
    retention: Duration,
) -> Result<Vec<Placement>, BatchError> {
    let mut answers: Vec<Option<Placement>> = vec![None; entries.len()];
    let live = claim_keys(tx, entries, retention, &mut answers).await?;
    let mut books = lock_books(tx, entries, &live).await?;
    let decided: Vec<(usize, Result<Option<i64>, PlaceOrderError>)> = live
        .iter()
        .map(|&i| (i, books.take(&entries[i].order)))
        .collect();
    let taken: Vec<(usize, Option<i64>)> = decided
        .iter()
        .filter_map(|(i, d)| d.as_ref().ok().map(|after| (*i, *after)))
        .collect();
    let placed = orders_of(tx, entries, &taken).await?;
    let mut w = Writes::default();
    for (i, balance_after) in &taken {
        w.add(&placed[i], *balance_after);
    }
    for (i, decision) in decided {
        let result = match decision {
            Ok(_) => Ok(placed[&i].clone()),
            Err(refusal) => Err(refusal),
        };
        let response = (entries[i].request.render)(&result);
        if response.status >= 500 {
            return Err(BatchError::Inconsistent(format!(
                "refusing to store a {} response under an idempotency key",
                response.status
            )));
        }
        w.answer(&entries[i].request, &response);
        answers[i] = Some(Placement {
            outcome: IdempotentOutcome::Executed(response),
            ran: Some(result.map(|order| order.id)),
        });
    }
    if !w.key_user.is_empty() {
        w.write(tx).await?;
    }
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| BatchError::Inconsistent("an order went unanswered".into())))
        .collect()
}

/// Takes each key's lock and reads its record. Answers the entries that must
/// not run (key in progress, replay, reused key) and returns the others.
async fn claim_keys(
    tx: &mut AsyncPgConnection,
    entries: &[Entry],
    retention: Duration,
    answers: &mut [Option<Placement>],
) -> Result<Vec<usize>, BatchError> {
    let not_run = |outcome| Placement { outcome, ran: None };
    // Advisory locks are re-entrant within a session: a second entry with a
    // key already in this batch is a concurrent duplicate, so it is in progress.
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if seen.insert(lock_name(e.request.user_id, &e.request.key)) {
            firsts.push(i);
        } else {
            answers[i] = Some(not_run(IdempotentOutcome::InProgress));
        }
    }
    let names: Vec<String> = firsts
        .iter()
        .map(|&i| lock_name(entries[i].request.user_id, &entries[i].request.key))
        .collect();
    let locks: Vec<Locked> = prepared(
        "SELECT n, pg_try_advisory_xact_lock(hashtextextended(k, 0)) AS locked \
           FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
    )
    .bind::<Array<Text>, _>(&names)
    .load(tx)
    .await?;
    let mut held = Vec::with_capacity(firsts.len());
    for lock in &locks {
        let i = firsts[position(lock.n)];
        if lock.locked {
            held.push(i);
        } else {
            answers[i] = Some(not_run(IdempotentOutcome::InProgress));
        }
    }
    if held.is_empty() {
        return Ok(held);
    }
    let users: Vec<i64> = held
        .iter()
        .map(|&i| entries[i].request.user_id.get())
        .collect();
    let keys: Vec<&str> = held
        .iter()
        .map(|&i| entries[i].request.key.as_str())
        .collect();
    let records: Vec<Record> = prepared(
        "SELECT t.n, k.fingerprint, k.response_status, k.response_content_type, k.response_body, \
                k.created_at > now() - make_interval(secs => $1) AS fresh \
           FROM unnest($2::int8[], $3::text[]) WITH ORDINALITY AS t(user_id, key, n) \
           JOIN idempotency_keys k ON k.user_id = t.user_id AND k.key = t.key",
    )
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<Array<Int8>, _>(&users)
    .bind::<Array<Text>, _>(&keys)
    .load(tx)
    .await?;
    let mut stale = Vec::new();
    for r in records {
        let i = held[position(r.n)];
        if r.record.fresh {
            let fingerprint = &entries[i].request.fingerprint;
            answers[i] = Some(not_run(r.record.into_outcome(fingerprint)));
        } else {
            stale.push(i); // kept past the retention, not yet purged: a new request
        }
    }
    if !stale.is_empty() {
        let users: Vec<i64> = stale
            .iter()
            .map(|&i| entries[i].request.user_id.get())
            .collect();
        let keys: Vec<&str> = stale
            .iter()
            .map(|&i| entries[i].request.key.as_str())
            .collect();
        prepared(
            "DELETE FROM idempotency_keys k USING unnest($1::int8[], $2::text[]) AS t(user_id, key) \
              WHERE k.user_id = t.user_id AND k.key = t.key",
        )
        .bind::<Array<Int8>, _>(&users)
        .bind::<Array<Text>, _>(&keys)
        .execute(tx)
        .await?;
    }
    Ok(held.into_iter().filter(|&i| answers[i].is_none()).collect())
}

/// An ordinality (1-based) as an index.
fn position(n: i64) -> usize {
    usize::try_from(n - 1).unwrap_or(usize::MAX)
}

/// Locks the rows the live orders decide on, products first, then wallets,
/// then coupons, each in key order, as every batch does.
async fn lock_books(
    tx: &mut AsyncPgConnection,
    entries: &[Entry],
    live: &[usize],
) -> Result<Books, BatchError> {
    let orders = || live.iter().map(|&i| &entries[i].order);
    let products: BTreeSet<i64> = orders()
        .flat_map(|o| o.lines.iter().map(|l| l.product_id.get()))
        .collect();
    let payers: BTreeSet<i64> = orders()
        .filter(|o| o.paid.get() > 0)
        .map(|o| o.user_id.get())
        .collect();
    let codes: BTreeSet<&str> = orders()
        .filter_map(|o| o.coupon.as_ref().map(|c| c.as_str()))
        .collect();
    let mut books = Books::default();
    if !products.is_empty() {
        let ids: Vec<i64> = products.into_iter().collect();
        let rows: Vec<IdAmount> = prepared(
            "SELECT id, stock AS amount FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind::<Array<Int8>, _>(&ids)
        .load(tx)
        .await?;
        books.stock = rows.into_iter().map(|r| (r.id, r.amount)).collect();
    }
    if !payers.is_empty() {
        let ids: Vec<i64> = payers.into_iter().collect();
        let rows: Vec<IdAmount> = prepared(
            "SELECT user_id AS id, balance AS amount FROM wallets \
              WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
        )
        .bind::<Array<Int8>, _>(&ids)
        .load(tx)
        .await?;
        books.balance = rows.into_iter().map(|r| (r.id, r.amount)).collect();
    }
    if !codes.is_empty() {
        let codes: Vec<&str> = codes.into_iter().collect();
        let rows: Vec<FreeCoupon> = prepared(
            "SELECT code, owner_id FROM coupons \
              WHERE code = ANY($1) AND owner_id IS NOT NULL AND used_at IS NULL \
                AND expires_at > now() \
              ORDER BY code FOR UPDATE",
        )
        .bind::<Array<Text>, _>(&codes)
        .load(tx)
        .await?;
        books.coupons = rows.into_iter().map(|r| (r.code, r.owner_id)).collect();
    }
    Ok(books)
}

/// The orders that were taken, with the ids and the time they are placed at.
async fn orders_of(
    tx: &mut AsyncPgConnection,
    entries: &[Entry],
    taken: &[(usize, Option<i64>)],
) -> Result<HashMap<usize, Order>, BatchError> {
    let mut placed = HashMap::with_capacity(taken.len());
    if taken.is_empty() {
        return Ok(placed);
    }
    let ids: Vec<NewId> = prepared(
        "SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id, now() AS at \
           FROM generate_series(1, $1)",
    )
    .bind::<Int8, _>(i64::try_from(taken.len()).unwrap_or(i64::MAX))
    .load(tx)
    .await?;
    for (&(i, _), new) in taken.iter().zip(&ids) {
        let o = &entries[i].order;
        placed.insert(
            i,
            Order {
                id: OrderId::new(new.id),
                user_id: o.user_id,
                lines: o.lines.clone(),
                total: o.total,
                discount: o.discount,
                paid: o.paid,
                coupon: o.coupon.clone(),
                created_at: new.at,
            },
        );
    }
    Ok(placed)
}

/// The rows of a batch's writes, column by column, for `unnest`.
#[derive(Default)]
struct Writes {
    order_id: Vec<i64>,
    user_id: Vec<i64>,
    total: Vec<i64>,
    discount: Vec<i64>,
    paid: Vec<i64>,
    coupon: Vec<Option<String>>,
    item_order: Vec<i64>,
    item_product: Vec<i64>,
    item_name: Vec<String>,
    item_quantity: Vec<i64>,
    item_price: Vec<i64>,
    item_total: Vec<i64>,
    payer: Vec<i64>,
    payment: Vec<i64>,
    balance_after: Vec<i64>,
    payment_order: Vec<i64>,
    coupon_code: Vec<String>,
    coupon_owner: Vec<i64>,
    coupon_order: Vec<i64>,
    event_id: Vec<String>,
    event: Vec<String>,
    key_user: Vec<i64>,
    key: Vec<String>,
    fingerprint: Vec<String>,
    status: Vec<i16>,
    content_type: Vec<String>,
    body: Vec<Vec<u8>>,
}

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Int8)]
    products: i64,
    #[diesel(sql_type = Int8)]
    wallets: i64,
    #[diesel(sql_type = Int8)]
    coupons: i64,
}

impl Writes {
    fn add(&mut self, order: &Order, balance_after: Option<i64>) {
        let id = order.id.get();
        self.order_id.push(id);
        self.user_id.push(order.user_id.get());
        self.total.push(order.total.get());
        self.discount.push(order.discount.get());
        self.paid.push(order.paid.get());
        self.coupon
            .push(order.coupon.as_ref().map(|c| c.as_str().to_owned()));
        for line in &order.lines {
            self.item_order.push(id);
            self.item_product.push(line.product_id.get());
            self.item_name.push(line.name.as_str().to_owned());
            self.item_quantity.push(line.quantity.get());
            self.item_price.push(line.unit_price.get());
            self.item_total.push(line.line_total.get());
        }
        if let Some(after) = balance_after {
            self.payer.push(order.user_id.get());
            self.payment.push(order.paid.get());
            self.balance_after.push(after);
            self.payment_order.push(id);
        }
        if let Some(code) = &order.coupon {
            self.coupon_code.push(code.as_str().to_owned());
            self.coupon_owner.push(order.user_id.get());
            self.coupon_order.push(id);
        }
        let event_id = uuid::Uuid::new_v4().to_string();
        self.event
            .push(order_paid_event(&event_id, order).to_string());
        self.event_id.push(event_id);
    }

    /// Stores an answer under its key. A plain INSERT: if a lock were ever
    /// bypassed, the primary key would fail the batch.
    fn answer(
        &mut self,
        request: &IdempotentRequest<Order, PlaceOrderError>,
        response: &domain::idempotency::StoredResponse,
    ) {
        self.key_user.push(request.user_id.get());
        self.key.push(request.key.as_str().to_owned());
        self.fingerprint
            .push(request.fingerprint.as_str().to_owned());
        self.status
            .push(i16::try_from(response.status).unwrap_or(500));
        self.content_type.push(response.content_type.clone());
        self.body.push(response.body.clone());
    }

    /// Every write of the batch in one statement: one round trip however
    /// many orders. Data-modifying CTEs all run to completion; the foreign
    /// keys (items → orders) are checked at the end of the statement. Stock,
    /// balances and coupons are taken again under the same guards as one
    /// order's UPDATEs, and the counts must match what was decided.
    async fn write(&self, tx: &mut AsyncPgConnection) -> Result<(), BatchError> {
        let written: Written = prepared(
            "WITH stock AS ( \
               UPDATE products p SET stock = p.stock - t.q, updated_at = now() \
                 FROM (SELECT id, sum(q)::int8 AS q FROM unnest($1::int8[], $2::int8[]) AS u(id, q) \
                        GROUP BY id) AS t \
                WHERE p.id = t.id AND p.stock >= t.q RETURNING 1), \
             pay AS ( \
               UPDATE wallets w SET balance = w.balance - t.a, updated_at = now() \
                 FROM (SELECT u, sum(a)::int8 AS a FROM unnest($3::int8[], $4::int8[]) AS v(u, a) \
                        GROUP BY u) AS t \
                WHERE w.user_id = t.u AND w.balance >= t.a RETURNING 1), \
             placed AS ( \
               INSERT INTO orders (id, user_id, total_amount, discount_amount, paid_amount, coupon_code) \
               OVERRIDING SYSTEM VALUE \
               SELECT * FROM unnest($5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], \
                                    $10::text[]) \
               RETURNING 1), \
             items AS ( \
               INSERT INTO order_items (order_id, product_id, name, quantity, unit_price, line_total) \
               SELECT * FROM unnest($11::int8[], $12::int8[], $13::text[], $14::int8[], $15::int8[], \
                                    $16::int8[]) \
               RETURNING 1), \
             ledger AS ( \
               INSERT INTO point_ledger (user_id, kind, amount, balance_after, order_id) \
               SELECT u, 'PAYMENT', a, b, o \
                 FROM unnest($17::int8[], $18::int8[], $19::int8[], $20::int8[]) AS t(u, a, b, o) \
               RETURNING 1), \
             used AS ( \
               UPDATE coupons c SET used_at = now(), used_order_id = t.o \
                 FROM unnest($21::text[], $22::int8[], $23::int8[]) AS t(code, owner, o) \
                WHERE c.code = t.code AND c.owner_id = t.owner AND c.used_at IS NULL \
                  AND c.expires_at > now() \
               RETURNING 1), \
             events AS ( \
               INSERT INTO outbox (event_id, event_type, payload) \
               SELECT e::uuid, 'order.paid', p::jsonb FROM unnest($24::text[], $25::text[]) AS t(e, p) \
               RETURNING 1), \
             answers AS ( \
               INSERT INTO idempotency_keys \
                   (user_id, key, fingerprint, response_status, response_content_type, response_body) \
               SELECT * FROM unnest($26::int8[], $27::text[], $28::text[], $29::int2[], $30::text[], \
                                    $31::bytea[]) \
               RETURNING 1) \
           SELECT (SELECT count(*) FROM stock) AS products, (SELECT count(*) FROM pay) AS wallets, \
                  (SELECT count(*) FROM used) AS coupons",
        )
        .bind::<Array<Int8>, _>(&self.item_product)
        .bind::<Array<Int8>, _>(&self.item_quantity)
        .bind::<Array<Int8>, _>(&self.payer)
        .bind::<Array<Int8>, _>(&self.payment)
        .bind::<Array<Int8>, _>(&self.order_id)
        .bind::<Array<Int8>, _>(&self.user_id)
        .bind::<Array<Int8>, _>(&self.total)
        .bind::<Array<Int8>, _>(&self.discount)
        .bind::<Array<Int8>, _>(&self.paid)
        .bind::<Array<Nullable<Text>>, _>(&self.coupon)
        .bind::<Array<Int8>, _>(&self.item_order)
        .bind::<Array<Int8>, _>(&self.item_product)
        .bind::<Array<Text>, _>(&self.item_name)
        .bind::<Array<Int8>, _>(&self.item_quantity)
        .bind::<Array<Int8>, _>(&self.item_price)
        .bind::<Array<Int8>, _>(&self.item_total)
        .bind::<Array<Int8>, _>(&self.payer)
        .bind::<Array<Int8>, _>(&self.payment)
        .bind::<Array<Int8>, _>(&self.balance_after)
        .bind::<Array<Int8>, _>(&self.payment_order)
        .bind::<Array<Text>, _>(&self.coupon_code)
        .bind::<Array<Int8>, _>(&self.coupon_owner)
        .bind::<Array<Int8>, _>(&self.coupon_order)
        .bind::<Array<Text>, _>(&self.event_id)
        .bind::<Array<Text>, _>(&self.event)
        .bind::<Array<Int8>, _>(&self.key_user)
        .bind::<Array<Text>, _>(&self.key)
        .bind::<Array<Text>, _>(&self.fingerprint)
        .bind::<Array<Int2>, _>(&self.status)
        .bind::<Array<Text>, _>(&self.content_type)
        .bind::<Array<Bytea>, _>(&self.body)
        .get_result(tx)
        .await?;
        let distinct = |v: &[i64]| v.iter().collect::<BTreeSet<_>>().len();
        expect_rows("products", written.products, distinct(&self.item_product))?;
        expect_rows("wallets", written.wallets, distinct(&self.payer))?;
        expect_rows("coupons", written.coupons, self.coupon_code.len())?;
        Ok(())
    }
}

fn expect_rows(table: &str, got: i64, want: usize) -> Result<(), BatchError> {
    if usize::try_from(got) == Ok(want) {
        Ok(())
    } else {
        Err(BatchError::Inconsistent(format!(
            "{table}: {got} rows passed the guard, {want} were decided"
        )))
    }
}
