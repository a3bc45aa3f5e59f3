//! The second step of a batch: lock the rows its orders are decided against
//! and load them into the domain's [`Books`].
//!
//! Products, then wallets, then coupons, each kind in key order, as every
//! batch does: batches of different lanes can meet on the same rows, and one
//! lock order means they never wait for each other in a cycle. The rows stay
//! locked until the commit, so the decisions taken on them in memory hold
//! when they are written.

use diesel::QueryableByName;
use diesel::sql_types::{Array, Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::catalog::{ProductId, Stock};
use domain::identity::UserId;
use domain::money::Points;
use domain::ordering::{Books, CouponCode, RowsToLock};

use crate::postgres::lanes::BatchError;
use crate::postgres::prepared::prepared;

#[derive(QueryableByName)]
struct IdAmount {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Int8)]
    amount: i64,
}

#[derive(QueryableByName)]
struct UsableCoupon {
    #[diesel(sql_type = Text)]
    code: String,
    #[diesel(sql_type = Int8)]
    owner_id: i64,
}

/// Locks `rows` and loads what they hold. Its statements are pipelined:
/// sent in order (products, wallets, coupons) without waiting for each
/// answer, and run by Postgres in that order.
pub(super) async fn lock_books(
    conn: &AsyncPgConnection,
    rows: &RowsToLock,
) -> Result<Books, BatchError> {
    let product_ids: Vec<i64> = rows.products.iter().map(|p| p.get()).collect();
    let payer_ids: Vec<i64> = rows.payers.iter().map(|u| u.get()).collect();
    let codes: Vec<&str> = rows.coupons.iter().map(CouponCode::as_str).collect();
    let products = lock_amounts(
        conn,
        "SELECT id, stock AS amount FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &product_ids,
    );
    let wallets = lock_amounts(
        conn,
        "SELECT user_id AS id, balance AS amount FROM wallets \
          WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
        &payer_ids,
    );
    // Expiry is judged by the database clock at the moment each row lock
    // is held, not by `now()` (the start of the transaction, which may be
    // long before a lock wait ends). And it is judged after the lock: a
    // `FOR UPDATE` evaluates its `WHERE` before it waits, and in READ
    // COMMITTED evaluates it again only if the row was updated meanwhile.
    // A coupon that another transaction merely held locked, and that
    // expired while this batch waited, would pass a `WHERE` check. So the
    // locking query is a materialised CTE and the expiry filter sits
    // above it, on rows already locked (`clock_timestamp()` is read per
    // row, as each lock is taken). Owner and use are in the `WHERE`: a
    // transaction that changes them updates the row, and the lock wait
    // then re-reads it. Each code is locked through its own index probe, in
    // the order of `codes` (sorted, as every batch sorts them, so batches
    // never wait for each other in a cycle): a `code = ANY($1)` first
    // planned on a pool of one coupon read the whole index of issued
    // coupons (`plan_audit`).
    let coupons = async {
        if codes.is_empty() {
            return Ok::<_, diesel::result::Error>(Vec::new());
        }
        prepared(
            "WITH locked AS MATERIALIZED ( \
               SELECT c.code, c.owner_id, c.expires_at \
                 FROM unnest($1::text[]) WITH ORDINALITY AS want(code, n) \
                 CROSS JOIN LATERAL ( \
                   SELECT code, owner_id, expires_at FROM coupons \
                    WHERE code = want.code AND owner_id IS NOT NULL AND used_at IS NULL \
                    LIMIT 1 FOR UPDATE) AS c \
                ORDER BY want.n) \
             SELECT code, owner_id FROM locked WHERE expires_at > clock_timestamp()",
        )
        .bind::<Array<Text>, _>(&codes)
        .load::<UsableCoupon>(&mut &*conn)
        .await
    };
    let (products, wallets, coupons) =
        futures_util::future::try_join3(products, wallets, coupons).await?;
    let mut books = Books::new();
    for r in products {
        let stock = Stock::new(r.amount).map_err(|_| corrupt("products", r.id))?;
        books.stock(ProductId::new(r.id), stock);
    }
    for r in wallets {
        let balance = Points::new(r.amount).ok_or_else(|| corrupt("wallets", r.id))?;
        books.wallet(UserId::new(r.id), balance);
    }
    for c in coupons {
        let code = CouponCode::parse(&c.code).map_err(|_| corrupt("coupons", c.code))?;
        books.usable_coupon(code, UserId::new(c.owner_id));
    }
    Ok(books)
}

/// Locks and reads the (id, amount) rows `sql` selects for `ids`; no
/// statement for no ids.
async fn lock_amounts(
    conn: &AsyncPgConnection,
    sql: &'static str,
    ids: &[i64],
) -> diesel::QueryResult<Vec<IdAmount>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    prepared(sql)
        .bind::<Array<Int8>, _>(ids)
        .load::<IdAmount>(&mut &*conn)
        .await
}

fn corrupt(table: &str, key: impl std::fmt::Display) -> BatchError {
    BatchError::inconsistent(format!("{table} row {key} is invalid"))
}
