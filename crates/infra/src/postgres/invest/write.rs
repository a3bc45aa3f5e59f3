//! The last step of an investment batch: every write in one statement, one
//! round trip however many investments.
//!
//! What the batch takes from a product is summed here, one row per product,
//! and taken again under one investment's guard (`current_amount + sum <=
//! total_amount`); the rows that pass it must be exactly the products the
//! books took from, so a bug in the decision cannot exceed a target: the
//! batch fails instead. The table's `CHECK` constraint stays the last word.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Int8, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::invest::{Investment, Taken};

use crate::postgres::batch_keys::AnswerRow;
use crate::postgres::lanes::BatchError;
use crate::postgres::prepared::prepared;
use crate::postgres::unnest::unnest_rows;

unnest_rows! {
    /// What a batch adds to one product.
    pub(super) struct Raise {
        product_id: i64 as Int8,
        amount: i64 as Int8,
        /// Investors new to the product.
        investors: i64 as Int8,
    }
}

unnest_rows! {
    /// A row of `investments`; its id was drawn from the table's sequence.
    pub(super) struct NewInvestmentRow {
        id: i64 as Int8,
        product_id: i64 as Int8,
        user_id: i64 as Int8,
        amount: i64 as Int8,
        /// The database's clock read once the batch held its products.
        invested_at: DateTime<Utc> as Timestamptz,
    }
}

/// Every row of a batch's write, table by table.
#[derive(Default)]
pub(super) struct BatchRows {
    /// Product id → (amount, new investors) of the whole batch.
    raised: BTreeMap<i64, (i64, i64)>,
    investments: Vec<NewInvestmentRow>,
    /// Every investment's answer under its key
    /// ([`Answers`](crate::postgres::batch_keys::Answers)).
    pub answers: Vec<AnswerRow>,
}

impl BatchRows {
    /// Adds the rows of an investment the books took.
    pub fn made(&mut self, investment: &Investment, taken: Taken) {
        let product_id = investment.product_id.get();
        let raised = self.raised.entry(product_id).or_default();
        raised.0 += investment.amount.get();
        raised.1 += i64::from(taken.new_investor);
        self.investments.push(NewInvestmentRow {
            id: investment.id.get(),
            product_id,
            user_id: investment.user_id.get(),
            amount: investment.amount.get(),
            invested_at: investment.invested_at,
        });
    }

    /// One row per product the batch invests in, in id order.
    fn raises(&self) -> Vec<Raise> {
        let raise = |(&product_id, &(amount, investors))| Raise {
            product_id,
            amount,
            investors,
        };
        self.raised.iter().map(raise).collect()
    }
}

/// Each table's placeholders are consecutive, in the order its row struct
/// binds its columns, and each table comes in the order `write_batch` binds
/// it. The answers are plain `INSERT`s: if a key's lock were ever bypassed,
/// the primary key would fail the batch.
const WRITE: &str = "\
WITH raised AS ( \
   UPDATE invest_products p SET current_amount = p.current_amount + raise.amount, \
          investor_count = p.investor_count + raise.investors, updated_at = now() \
     FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS raise(product_id, amount, investors) \
    WHERE p.id = raise.product_id AND p.current_amount + raise.amount <= p.total_amount \
   RETURNING 1), \
 made AS ( \
   INSERT INTO investments (id, product_id, user_id, amount, invested_at) \
   OVERRIDING SYSTEM VALUE \
   SELECT * FROM unnest($4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::timestamptz[]) \
   RETURNING 1), \
 answers AS ( \
   INSERT INTO idempotency_keys \
       (user_id, key, fingerprint, response_status, response_content_type, response_body) \
   SELECT * FROM unnest($9::int8[], $10::text[], $11::text[], $12::int2[], $13::text[], \
                        $14::bytea[]) \
   RETURNING 1) \
SELECT (SELECT count(*) FROM raised) AS products, (SELECT count(*) FROM made) AS investments";

/// How many rows passed the guard, and were inserted.
#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Int8)]
    products: i64,
    #[diesel(sql_type = Int8)]
    investments: i64,
}

/// Writes `rows` in the batch's transaction; fails if the guard disagrees
/// with what was decided.
pub(super) async fn write_batch(
    tx: &mut AsyncPgConnection,
    rows: BatchRows,
) -> Result<(), BatchError> {
    let raises = rows.raises();
    let want = (raises.len(), rows.investments.len());
    let statement = prepared(WRITE);
    let statement = Raise::bind_all(raises, statement);
    let statement = NewInvestmentRow::bind_all(rows.investments, statement);
    let statement = AnswerRow::bind_all(rows.answers, statement);
    let written: Written = statement.get_result(tx).await?;
    BatchError::unless_rows("invest_products", written.products, want.0)?;
    BatchError::unless_rows("investments", written.investments, want.1)?;
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
        let bound_in_order: [(&str, &[&str]); 3] = [
            ("AS raise", Raise::COLUMNS),
            ("INSERT INTO investments", NewInvestmentRow::COLUMNS),
            ("INSERT INTO idempotency_keys", AnswerRow::COLUMNS),
        ];

        assert_columns_in_bind_order(WRITE, &bound_in_order);
    }
}
