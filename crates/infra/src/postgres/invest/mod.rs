//! The [`InvestStore`] on Postgres: investments are combined into batches,
//! one transaction each, under the idempotency guard, and simultaneous
//! reads of one product share a query.
//!
//! `invest` hands the investment to one of the store's
//! [`lanes`](crate::postgres::lanes), chosen by its product, and waits for
//! its answer; a lane runs the investments that arrived while its previous
//! batch ran as one transaction ([`batch`]). A rush's investments in one
//! product queue on one lane and share its lock wait and its commit instead
//! of queueing on the product's row lock. Each investment is still decided
//! on its own (in arrival order, at the database's clock read under the
//! lock), answered on its own, and durable before it is answered.
//!
//! `get` (which the invest use case calls for every request) goes through a
//! [`Coalescer`]: reads of one product that arrive together share the next
//! query for it, never one already running, so a read still sees every
//! investment committed before it arrived.
//!
//! `batch` (the steps of one batch) uses `write` (the one statement and its
//! rows); what every batched write shares is in `lanes` and `batch_keys`.

mod batch;
mod write;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::idempotency::{IdempotentRequest, Written};
use domain::identity::UserId;
use domain::invest::{
    InvestAmount, InvestError, InvestOrder, InvestProduct, InvestProductId, InvestStore,
    InvestTitle, Investment, InvestmentId, MyInvestment, MyProductTotal, NewInvestProduct,
    RecruitingWindow,
};
use domain::money::Points;
use domain::paging::{Page, PageRequest};

use self::batch::{Entry, InvestBatch};
use super::lanes::Lanes;
use super::paging::page_of;
use super::prepared::prepared;
use super::schema::{invest_products, investments};
use super::{Postgres, unavailable};
use crate::coalesce::Coalescer;

#[derive(Clone)]
pub struct PgInvestStore {
    db: Postgres,
    lanes: Lanes<InvestBatch>,
    /// Reads of one product that arrive together share a query.
    products: Arc<Coalescer<InvestProductId, Option<InvestProduct>>>,
}

impl std::fmt::Debug for PgInvestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgInvestStore")
    }
}

impl PgInvestStore {
    /// Reads and runs the investment batches through `db`. See
    /// [`with_lanes`](Self::with_lanes) for a pool of the batches' own.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(db: Postgres, retention: Duration) -> Self {
        let lanes = db.clone();
        Self::with_lanes(db, &lanes, retention)
    }

    /// Reads through `db`; runs the batches on `lanes`, which should be a
    /// pool of its own with [`LANES`](super::LANES) connections, so that a
    /// burst of reads never keeps a batch waiting for a connection (as for
    /// [`PgOrderStore`](super::PgOrderStore)). Starts the lanes on the
    /// current Tokio runtime; they stop when the store and its clones are
    /// dropped.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn with_lanes(db: Postgres, lanes: &Postgres, retention: Duration) -> Self {
        let patience = db.op_timeout();
        Self {
            db,
            lanes: Lanes::start(InvestBatch, lanes, retention),
            products: Arc::new(Coalescer::new("postgres").within(patience)),
        }
    }
}

/// A row of `invest_products`.
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

/// A user's investments in one product, summed.
#[derive(diesel::QueryableByName)]
struct ProductTotalRow {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    product_id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    title: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    total_amount: i64,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    mine: i64,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    last_invested_at: DateTime<Utc>,
}

impl ProductTotalRow {
    fn into_total(self) -> Result<MyProductTotal, Unavailable> {
        let id = self.product_id;
        let corrupt =
            |what: &str| unavailable(format!("investment product {id} has an invalid {what}"));
        Ok(MyProductTotal {
            product_id: InvestProductId::new(self.product_id),
            title: InvestTitle::parse(&self.title).map_err(|_| corrupt("title"))?,
            total: Points::new(self.total_amount).ok_or_else(|| corrupt("total"))?,
            mine: Points::new(self.mine).ok_or_else(|| corrupt("sum of investments"))?,
            last_invested_at: self.last_invested_at,
        })
    }
}

#[derive(diesel::QueryableByName)]
struct CountRow {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    n: i64,
}

/// The product as it is now; `None` for an unknown id.
async fn product(db: &Postgres, id: InvestProductId) -> Result<Option<InvestProduct>, Unavailable> {
    let mut conn = db.conn().await?;
    invest_products::table
        .find(id.get())
        .select(ProductRow::as_select())
        .first(&mut *conn)
        .await
        .optional()
        .map_err(unavailable)?
        .map(ProductRow::into_product)
        .transpose()
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
        let db = self.db.clone();
        self.products
            .read(id, move || {
                let db = db.clone();
                async move { db.timed(product(&db, id)).await }
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
        let lane = order.product_id.get();
        self.db
            .timed(self.lanes.submit(lane, Entry { order, request }))
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

    async fn mine_by_product(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Page<MyProductTotal>, Unavailable> {
        use diesel::sql_types::Int8;
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let total: CountRow = prepared(
                    "SELECT count(DISTINCT product_id) AS n FROM investments WHERE user_id = $1",
                )
                .bind::<Int8, _>(user.get())
                .get_result(&mut *conn)
                .await
                .map_err(unavailable)?;
                let rows: Vec<ProductTotalRow> = prepared(
                    "SELECT i.product_id, p.title, p.total_amount, \
                            sum(i.amount)::int8 AS mine, max(i.invested_at) AS last_invested_at \
                       FROM investments i JOIN invest_products p ON p.id = i.product_id \
                      WHERE i.user_id = $1 \
                      GROUP BY i.product_id, p.title, p.total_amount \
                      ORDER BY last_invested_at DESC, i.product_id DESC \
                     OFFSET $2 LIMIT $3",
                )
                .bind::<Int8, _>(user.get())
                .bind::<Int8, _>(page.offset())
                .bind::<Int8, _>(page.limit())
                .load(&mut *conn)
                .await
                .map_err(unavailable)?;
                page_of(rows, ProductTotalRow::into_total, page, total.n)
            })
            .await
    }
}
