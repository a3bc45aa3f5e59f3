//! The [`InvestStore`] on Postgres: one transaction per investment, under the
//! idempotency guard.
//!
//! Inside the guard's savepoint, in this order:
//! 1. the product row, with
//!    `UPDATE … SET current_amount = current_amount + $a WHERE id = $id AND
//!    current_amount + $a <= total_amount AND` the window holds at the
//!    database's clock. The row lock it takes serialises the investments
//!    of one product until commit; no other lock is needed, and an amount is
//!    taken whole or not at all;
//! 2. the investment row, dated by the database's clock, inserted only if
//!    the window still holds at that moment, with whether the user had
//!    invested in the product before. That statement starts after the row
//!    lock was granted, so under READ COMMITTED it sees every earlier
//!    investment of the product (each committed before it released the
//!    lock);
//! 3. for a first investment, `investor_count + 1` on the row already locked.
//!
//! A guarded update that finds no row is a refusal, classified from the row
//! as it is now (not found, closed, full, too little left); the savepoint
//! rolls back and only the refusal's answer is committed.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Int8, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::error::Unavailable;
use domain::idempotency::{IdempotentRequest, Written};
use domain::identity::UserId;
use domain::invest::{
    InvestAmount, InvestError, InvestOrder, InvestProduct, InvestProductId, InvestStore,
    InvestTitle, Investment, InvestmentId, MyInvestment, NewInvestProduct, RecruitingWindow,
};
use domain::money::Points;
use domain::paging::{Page, PageRequest};

use super::idempotency;
use super::paging::page_of;
use super::prepared::prepared;
use super::schema::{invest_products, investments};
use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PgInvestStore {
    db: Postgres,
    retention: Duration,
}

impl std::fmt::Debug for PgInvestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgInvestStore")
    }
}

impl PgInvestStore {
    pub fn new(db: Postgres, retention: Duration) -> Self {
        Self { db, retention }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = invest_products, check_for_backend(diesel::pg::Pg))]
struct ProductRow {
    id: i64,
    title: String,
    total_amount: i64,
    current_amount: i64,
    investor_count: i64,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
}

impl ProductRow {
    fn into_product(self) -> Result<InvestProduct, Unavailable> {
        let id = self.id;
        let corrupt =
            |what: &str| unavailable(format!("invest_products row {id} has an invalid {what}"));
        Ok(InvestProduct {
            id: InvestProductId::new(self.id),
            title: InvestTitle::parse(&self.title).map_err(|_| corrupt("title"))?,
            total: Points::new(self.total_amount).ok_or_else(|| corrupt("total"))?,
            current: Points::new(self.current_amount).ok_or_else(|| corrupt("current"))?,
            investors: self.investor_count,
            window: RecruitingWindow::new(self.started_at, self.finished_at)
                .map_err(|_| corrupt("window"))?,
        })
    }
}

#[derive(Queryable)]
struct MyRow {
    id: i64,
    product_id: i64,
    user_id: i64,
    amount: i64,
    invested_at: DateTime<Utc>,
    title: String,
    total_amount: i64,
}

impl MyRow {
    fn into_mine(self) -> Result<MyInvestment, Unavailable> {
        let id = self.id;
        let corrupt = |what: &str| unavailable(format!("investment {id} has an invalid {what}"));
        Ok(MyInvestment {
            investment: Investment {
                id: InvestmentId::new(self.id),
                product_id: InvestProductId::new(self.product_id),
                user_id: UserId::new(self.user_id),
                amount: InvestAmount::new(self.amount).map_err(|_| corrupt("amount"))?,
                invested_at: self.invested_at,
            },
            title: InvestTitle::parse(&self.title).map_err(|_| corrupt("title"))?,
            total: Points::new(self.total_amount).ok_or_else(|| corrupt("total"))?,
        })
    }
}

#[derive(QueryableByName)]
struct Made {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    invested_at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    seen_before: bool,
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

/// The effect of investing, run inside the guard's savepoint.
///
/// The window is checked with the database's clock, never the caller's, so
/// every instance judges it alike. `clock_timestamp()` rather than `now()`,
/// which is when the transaction began: the update may wait for the row's
/// lock behind other investments, and an update that waited behind a lock
/// that was only held (not a row that was changed) is not re-checked by
/// Postgres. So the insert, which runs while the row lock is held, checks
/// the window again at its own moment and dates the investment with it: a
/// request that reached the row after the close is refused.
async fn invest_in(
    tx: &mut AsyncPgConnection,
    order: &InvestOrder,
) -> QueryResult<Result<Investment, InvestError>> {
    let (product, amount) = (order.product_id.get(), order.amount.get());
    let taken = prepared(
        "UPDATE invest_products SET current_amount = current_amount + $1, updated_at = now() \
          WHERE id = $2 AND current_amount + $3 <= total_amount \
            AND started_at <= clock_timestamp() AND finished_at >= clock_timestamp()",
    )
    .bind::<Int8, _>(amount)
    .bind::<Int8, _>(product)
    .bind::<Int8, _>(amount)
    .execute(tx)
    .await?;
    if taken == 0 {
        return refusal(tx, order).await.map(Err);
    }
    let made: Option<Made> = prepared(
        "WITH clock AS (SELECT clock_timestamp() AS now), \
              prior AS ( \
             SELECT EXISTS (SELECT 1 FROM investments WHERE product_id = $1 AND user_id = $2) AS seen \
         ), made AS ( \
             INSERT INTO investments (product_id, user_id, amount, invested_at) \
             SELECT p.id, $3, $4, clock.now FROM invest_products p, clock \
              WHERE p.id = $5 AND clock.now BETWEEN p.started_at AND p.finished_at \
             RETURNING id, invested_at \
         ) \
         SELECT made.id, made.invested_at, prior.seen AS seen_before FROM made, prior",
    )
    .bind::<Int8, _>(product)
    .bind::<Int8, _>(order.user_id.get())
    .bind::<Int8, _>(order.user_id.get())
    .bind::<Int8, _>(amount)
    .bind::<Int8, _>(product)
    .get_result(tx)
    .await
    .optional()?;
    let Some(made) = made else {
        // The window closed while the investment waited for the row.
        return Ok(Err(InvestError::NotInRecruitingPeriod {
            product_id: order.product_id,
        }));
    };
    if !made.seen_before {
        prepared("UPDATE invest_products SET investor_count = investor_count + 1 WHERE id = $1")
            .bind::<Int8, _>(product)
            .execute(tx)
            .await?;
    }
    Ok(Ok(Investment {
        id: InvestmentId::new(made.id),
        product_id: order.product_id,
        user_id: order.user_id,
        amount: order.amount,
        invested_at: made.invested_at,
    }))
}

/// Why the guarded update found no row, from the row as it is now and the
/// database's clock. What is left only shrinks and windows never move, so
/// the row still shows the reason; should it not, the amount is reported as
/// too large.
async fn refusal(tx: &mut AsyncPgConnection, order: &InvestOrder) -> QueryResult<InvestError> {
    let row = invest_products::table
        .find(order.product_id.get())
        .select(ProductRow::as_select())
        .first(tx)
        .await
        .optional()?;
    let Some(row) = row else {
        return Ok(InvestError::ProductNotFound {
            product_id: order.product_id,
        });
    };
    let now = prepared("SELECT clock_timestamp() AS now")
        .get_result::<Now>(tx)
        .await?
        .now;
    let product = row
        .into_product()
        .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))?;
    Ok(product
        .admit(order.amount, now)
        .err()
        .unwrap_or(InvestError::AmountExceedsRemaining {
            product_id: order.product_id,
            remaining: product.remaining(),
        }))
}

#[async_trait]
impl InvestStore for PgInvestStore {
    async fn create(&self, product: NewInvestProduct) -> Result<InvestProduct, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                diesel::insert_into(invest_products::table)
                    .values((
                        invest_products::title.eq(product.title.as_str()),
                        invest_products::total_amount.eq(product.total.get()),
                        invest_products::started_at.eq(product.window.started_at()),
                        invest_products::finished_at.eq(product.window.finished_at()),
                    ))
                    .returning(ProductRow::as_returning())
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .into_product()
            })
            .await
    }

    async fn get(&self, id: InvestProductId) -> Result<Option<InvestProduct>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                invest_products::table
                    .find(id.get())
                    .select(ProductRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?
                    .map(ProductRow::into_product)
                    .transpose()
            })
            .await
    }

    async fn open_at(
        &self,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<InvestProduct>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let open = || {
                    invest_products::table
                        .filter(invest_products::started_at.le(now))
                        .filter(invest_products::finished_at.ge(now))
                };
                let total: i64 = open()
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let rows = open()
                    .order((
                        invest_products::started_at.desc(),
                        invest_products::id.desc(),
                    ))
                    .offset(page.offset())
                    .limit(page.limit())
                    .select(ProductRow::as_select())
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                page_of(rows, ProductRow::into_product, page, total)
            })
            .await
    }

    async fn invest(
        &self,
        order: InvestOrder,
        request: IdempotentRequest<Investment, InvestError>,
    ) -> Result<Written<Investment, InvestError>, Unavailable> {
        let (order, request) = (&order, &request);
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                idempotency::guarded(&mut conn, request, self.retention, async |tx| {
                    invest_in(tx, order).await
                })
                .await
            })
            .await
    }

    async fn mine(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Page<MyInvestment>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let total: i64 = investments::table
                    .filter(investments::user_id.eq(user.get()))
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let rows: Vec<MyRow> = investments::table
                    .inner_join(invest_products::table)
                    .filter(investments::user_id.eq(user.get()))
                    .order((investments::invested_at.desc(), investments::id.desc()))
                    .offset(page.offset())
                    .limit(page.limit())
                    .select((
                        investments::id,
                        investments::product_id,
                        investments::user_id,
                        investments::amount,
                        investments::invested_at,
                        invest_products::title,
                        invest_products::total_amount,
                    ))
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                page_of(rows, MyRow::into_mine, page, total)
            })
            .await
    }
}
