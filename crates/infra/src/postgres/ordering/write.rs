//! The last step of a batch: every write in one statement, one round trip
//! however many orders.
//!
//! Data-modifying CTEs all run to completion, and the foreign keys (items →
//! orders, ledger → orders) are checked at the end of the statement. Stock,
//! balances and coupons are taken again under the guards of one order's
//! `UPDATE`s, and the rows that pass them must be exactly the rows the books
//! decided on, so a bug in the decision cannot oversell or overdraw: the
//! batch fails instead. The tables' `CHECK` constraints stay the last word.

use diesel::QueryableByName;
use diesel::sql_types::Int8;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::rows::{
    BatchRows, CouponUse, LedgerRow, NewItemRow, NewOrderRow, OutboxRow, StockTake, WalletDebit,
};
use crate::postgres::batch_keys::AnswerRow;
use crate::postgres::lanes::BatchError;
use crate::postgres::prepared::prepared;

/// Each table's placeholders are consecutive, in the order its row struct
/// binds its columns, and each table comes in the order `write_batch` binds
/// it. The answers are plain `INSERT`s: if a key's lock were ever bypassed,
/// the primary key would fail the batch. A coupon's expiry is checked
/// against `now()`, the transaction's start: never later than the clock the
/// batch decided on when it locked the coupon, so this repeats that guard
/// without refusing what it accepted. A coupon is found by its code's index
/// and updated by its row id (the batch holds its lock since `lock_books`,
/// so the row id cannot change): an `UPDATE … FROM unnest(…)` first planned
/// on a pool of one coupon read the whole index of issued coupons
/// (`plan_audit`).
const WRITE: &str = "\
WITH stock AS ( \
   UPDATE products p SET stock = p.stock - take.quantity, updated_at = now() \
     FROM unnest($1::int8[], $2::int8[]) AS take(product_id, quantity) \
    WHERE p.id = take.product_id AND p.stock >= take.quantity RETURNING 1), \
 pay AS ( \
   UPDATE wallets w SET balance = w.balance - debit.amount, updated_at = now() \
     FROM unnest($3::int8[], $4::int8[]) AS debit(user_id, amount) \
    WHERE w.user_id = debit.user_id AND w.balance >= debit.amount RETURNING 1), \
 placed AS ( \
   INSERT INTO orders (id, user_id, total_amount, discount_amount, paid_amount, coupon_code) \
   OVERRIDING SYSTEM VALUE \
   SELECT * FROM unnest($5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::text[]) \
   RETURNING 1), \
 items AS ( \
   INSERT INTO order_items (order_id, product_id, name, quantity, unit_price, line_total) \
   SELECT * FROM unnest($11::int8[], $12::int8[], $13::text[], $14::int8[], $15::int8[], \
                        $16::int8[]) \
   RETURNING 1), \
 ledger AS ( \
   INSERT INTO point_ledger (user_id, kind, amount, balance_after, order_id) \
   SELECT payment.user_id, 'PAYMENT', payment.amount, payment.balance_after, payment.order_id \
     FROM unnest($17::int8[], $18::int8[], $19::int8[], $20::int8[]) \
          AS payment(user_id, amount, balance_after, order_id) \
   RETURNING 1), \
 used AS ( \
   UPDATE coupons c SET used_at = now(), used_order_id = found.order_id \
     FROM (SELECT coupon_use.order_id, k.row \
             FROM unnest($21::text[], $22::int8[], $23::int8[]) \
                  AS coupon_use(code, owner_id, order_id) \
             CROSS JOIN LATERAL (SELECT ctid AS row FROM coupons \
                                  WHERE code = coupon_use.code AND owner_id = coupon_use.owner_id \
                                  LIMIT 1) AS k \
          ) AS found \
    WHERE c.ctid = found.row AND c.used_at IS NULL AND c.expires_at > now() \
   RETURNING 1), \
 events AS ( \
   INSERT INTO outbox (event_id, event_type, payload) \
   SELECT new_event.event_id::uuid, 'order.paid', new_event.payload::jsonb \
     FROM unnest($24::text[], $25::text[]) AS new_event(event_id, payload) \
   RETURNING 1), \
 answers AS ( \
   INSERT INTO idempotency_keys \
       (user_id, key, fingerprint, response_status, response_content_type, response_body) \
   SELECT * FROM unnest($26::int8[], $27::text[], $28::text[], $29::int2[], $30::text[], \
                        $31::bytea[]) \
   RETURNING 1) \
SELECT (SELECT count(*) FROM stock) AS products, (SELECT count(*) FROM pay) AS wallets, \
       (SELECT count(*) FROM used) AS coupons";

/// How many rows passed each guard.
#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Int8)]
    products: i64,
    #[diesel(sql_type = Int8)]
    wallets: i64,
    #[diesel(sql_type = Int8)]
    coupons: i64,
}

/// Writes `rows` in the batch's transaction; fails if a guard disagrees
/// with what was decided.
pub(super) async fn write_batch(
    tx: &mut AsyncPgConnection,
    rows: BatchRows,
) -> Result<(), BatchError> {
    let takes = rows.stock_takes();
    let debits = rows.wallet_debits();
    let want = (takes.len(), debits.len(), rows.coupon_uses.len());
    let statement = prepared(WRITE);
    let statement = StockTake::bind_all(takes, statement);
    let statement = WalletDebit::bind_all(debits, statement);
    let statement = NewOrderRow::bind_all(rows.orders, statement);
    let statement = NewItemRow::bind_all(rows.items, statement);
    let statement = LedgerRow::bind_all(rows.ledger, statement);
    let statement = CouponUse::bind_all(rows.coupon_uses, statement);
    let statement = OutboxRow::bind_all(rows.events, statement);
    let statement = AnswerRow::bind_all(rows.answers, statement);
    let written: Written = statement.get_result(tx).await?;
    BatchError::unless_rows("products", written.products, want.0)?;
    BatchError::unless_rows("wallets", written.wallets, want.1)?;
    BatchError::unless_rows("coupons", written.coupons, want.2)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::unnest::assert_columns_in_bind_order;

    /// `WRITE` names each row struct's columns, in field order, where it
    /// reads that struct's arrays, and the tables come in the order
    /// `write_batch` binds them.
    #[test]
    fn the_statement_reads_each_row_structs_columns_in_bind_order() {
        let bound_in_order: [(&str, &[&str]); 8] = [
            ("AS take", StockTake::COLUMNS),
            ("AS debit", WalletDebit::COLUMNS),
            ("INSERT INTO orders", NewOrderRow::COLUMNS),
            ("INSERT INTO order_items", NewItemRow::COLUMNS),
            ("AS payment", LedgerRow::COLUMNS),
            ("AS coupon_use", CouponUse::COLUMNS),
            ("AS new_event", OutboxRow::COLUMNS),
            ("INSERT INTO idempotency_keys", AnswerRow::COLUMNS),
        ];

        assert_columns_in_bind_order(WRITE, &bound_in_order);
    }
}
