//! The [`OrderStore`] on Postgres: orders are combined into batches, one
//! transaction each, under the idempotency guard.
//!
//! `place` hands the order to one of [`LANES`] lanes, chosen by its first
//! product, and waits for its answer. A lane runs one batch at a time: the
//! orders that arrived while the previous batch ran (up to [`MAX_BATCH`])
//! go into one transaction ([`order_batch`](super::order_batch)). An order
//! that arrives at an idle lane is a batch of one and waits for nobody; a
//! sale's orders for one hot product queue on one lane and share its lock
//! wait and its commit instead of queueing on the product's row lock.
//!
//! Each order is still decided on its own, answered on its own, and durable
//! before it is answered: the reply is sent after the batch commits.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager};
use domain::catalog::{ProductId, ProductName};
use domain::error::Unavailable;
use domain::idempotency::IdempotentRequest;
use domain::identity::UserId;
use domain::money::Points;
use domain::ordering::{
    CouponCode, Order, OrderId, OrderLine, OrderStore, PlaceOrderError, Placement, PricedOrder,
    Quantity,
};
use domain::paging::{Page, PageRequest};
use futures_util::FutureExt as _;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::idempotency::rollback_all;
use super::order_batch::{BatchError, Entry, place_batch};
use super::paging::page_of;
use super::schema::{order_items, orders};
use super::{Postgres, unavailable};

/// How many batches run at once. An order's lane is its lowest product id
/// modulo this, so a sale's orders of one product share a lane; other orders
/// spread over the lanes. Batches of different lanes may lock the same rows
/// and then wait for each other, in one lock order, so never in a cycle.
/// Each running batch holds one connection of the lanes' pool.
pub const LANES: usize = 4;

/// The most orders in one transaction: bounds a batch's statement sizes and
/// the time its first order waits for its last.
pub const MAX_BATCH: usize = 128;

/// Orders waiting for a lane; past this, `place` waits to hand one over.
const LANE_QUEUE: usize = 1024;

/// An order and where its answer goes.
struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<Placement, Unavailable>>,
}

#[derive(Clone)]
pub struct PgOrderStore {
    db: Postgres,
    lanes: Arc<[mpsc::Sender<Job>]>,
}

impl std::fmt::Debug for PgOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgOrderStore")
    }
}

impl PgOrderStore {
    /// Reads through `db`; runs the batches on `lanes`, which should be a
    /// pool of its own with [`LANES`] connections, so that a burst of reads
    /// never keeps a batch waiting for a connection (and the lanes' prepared
    /// statements stay warm). Starts the lanes on the current Tokio runtime;
    /// they stop when the store and its clones are dropped.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(db: Postgres, lanes: &Postgres, retention: Duration) -> Self {
        let lanes: Vec<mpsc::Sender<Job>> = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                tokio::spawn(run_lane(lanes.clone(), retention, rx));
                tx
            })
            .collect();
        Self {
            db,
            lanes: lanes.into(),
        }
    }
}

/// The lane of an order: by its lowest product id (lines are in product-id order).
fn lane_of(order: &PricedOrder) -> usize {
    let first = order
        .lines
        .as_slice()
        .first()
        .map_or(0, |l| l.product_id.get());
    usize::try_from(first.rem_euclid(LANES as i64)).unwrap_or(0)
}

/// Runs the lane's batches until the store is dropped.
async fn run_lane(db: Postgres, retention: Duration, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // A caller that gave up waiting (it answered 503, or its client left)
        // must not be charged later: its order is dropped before it runs.
        let (entries, replies): (Vec<Entry>, Vec<_>) = jobs
            .drain(..)
            .filter(|job| !job.reply.is_closed())
            .map(|job| (job.entry, job.reply))
            .unzip();
        if entries.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        // A panic in a batch must not stop the lane for good.
        let answers = AssertUnwindSafe(db.timed(run_batch(&db, &entries, retention)))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("an order batch panicked; its orders answer 503");
                Err(Unavailable::new("postgres", "the order batch failed"))
            });
        tracing::debug!(
            orders = entries.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = answers.is_ok(),
            "order batch"
        );
        match answers {
            Ok(placements) => {
                for (reply, placement) in replies.into_iter().zip(placements) {
                    // A caller that gave up is answered by its key's record on retry.
                    let _ = reply.send(Ok(placement));
                }
            }
            Err(err) => {
                let reason = err.to_string();
                for reply in replies {
                    let _ = reply.send(Err(Unavailable::new("postgres", reason.clone())));
                }
            }
        }
    }
}

/// One batch in one transaction: committed whole, or rolled back whole.
async fn run_batch(
    db: &Postgres,
    entries: &[Entry],
    retention: Duration,
) -> Result<Vec<Placement>, Unavailable> {
    type Tm = AnsiTransactionManager;
    let mut conn = db.conn().await?;
    let tx: &mut AsyncPgConnection = &mut conn;
    Tm::begin_transaction(tx).await.map_err(unavailable)?;
    match place_batch(tx, entries, retention).await {
        Ok(placements) => {
            if let Err(e) = Tm::commit_transaction(tx).await {
                rollback_all(tx).await;
                return Err(unavailable(e));
            }
            Ok(placements)
        }
        Err(err) => {
            rollback_all(tx).await;
            Err(match err {
                BatchError::Query(e) => unavailable(e),
                BatchError::Inconsistent(why) => {
                    tracing::error!(%why, "an order batch was rolled back");
                    unavailable(why)
                }
            })
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
struct OrderRow {
    id: i64,
    user_id: i64,
    total_amount: i64,
    discount_amount: i64,
    paid_amount: i64,
    coupon_code: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = order_items, check_for_backend(diesel::pg::Pg))]
struct ItemRow {
    order_id: i64,
    product_id: i64,
    name: String,
    quantity: i64,
    unit_price: i64,
    line_total: i64,
}

impl ItemRow {
    fn into_line(self) -> Result<OrderLine, Unavailable> {
        let corrupt = || {
            unavailable(format!(
                "order_items row of order {} is invalid",
                self.order_id
            ))
        };
        Ok(OrderLine {
            product_id: ProductId::new(self.product_id),
            name: ProductName::parse(&self.name).map_err(|_| corrupt())?,
            quantity: Quantity::new(self.quantity).ok_or_else(corrupt)?,
            unit_price: Points::new(self.unit_price).ok_or_else(corrupt)?,
            line_total: Points::new(self.line_total).ok_or_else(corrupt)?,
        })
    }
}

fn order_from(row: OrderRow, items: Vec<ItemRow>) -> Result<Order, Unavailable> {
    let id = row.id;
    let corrupt = || unavailable(format!("orders row {id} is invalid"));
    Ok(Order {
        id: OrderId::new(row.id),
        user_id: UserId::new(row.user_id),
        lines: items
            .into_iter()
            .map(ItemRow::into_line)
            .collect::<Result<_, _>>()?,
        total: Points::new(row.total_amount).ok_or_else(corrupt)?,
        discount: Points::new(row.discount_amount).ok_or_else(corrupt)?,
        paid: Points::new(row.paid_amount).ok_or_else(corrupt)?,
        coupon: row
            .coupon_code
            .map(|code| CouponCode::parse(&code))
            .transpose()
            .map_err(|_| corrupt())?,
        created_at: row.created_at,
    })
}

/// The `order.paid` event, as the data platform receives it.
pub(super) fn order_paid_event(event_id: &str, order: &Order) -> serde_json::Value {
    json!({
        "eventId": event_id,
        "type": "order.paid",
        "occurredAt": order.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "orderId": order.id.get(),
        "userId": order.user_id.get(),
        "items": order.lines.iter().map(|l| json!({
            "productId": l.product_id.get(),
            "quantity": l.quantity.get(),
            "unitPrice": l.unit_price.get(),
            "lineTotal": l.line_total.get(),
        })).collect::<Vec<_>>(),
        "totalAmount": order.total.get(),
        "discountAmount": order.discount.get(),
        "paidAmount": order.paid.get(),
    })
}

async fn items_of(
    conn: &mut AsyncPgConnection,
    order_ids: &[i64],
) -> Result<BTreeMap<i64, Vec<ItemRow>>, Unavailable> {
    let rows: Vec<ItemRow> = order_items::table
        .filter(order_items::order_id.eq_any(order_ids))
        .order((order_items::order_id, order_items::product_id))
        .select(ItemRow::as_select())
        .load(conn)
        .await
        .map_err(unavailable)?;
    let mut by_order: BTreeMap<i64, Vec<ItemRow>> = BTreeMap::new();
    for row in rows {
        by_order.entry(row.order_id).or_default().push(row);
    }
    Ok(by_order)
}

#[async_trait]
impl OrderStore for PgOrderStore {
    async fn place(
        &self,
        order: PricedOrder,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<Placement, Unavailable> {
        let lane = &self.lanes[lane_of(&order)];
        let (reply, answer) = oneshot::channel();
        self.db
            .timed(async {
                lane.send(Job {
                    entry: Entry { order, request },
                    reply,
                })
                .await
                .map_err(|_| unavailable("the order lane has stopped"))?;
                answer
                    .await
                    .map_err(|_| unavailable("the order lane dropped an order"))?
            })
            .await
    }

    async fn get(&self, user_id: UserId, id: OrderId) -> Result<Option<Order>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let Some(row) = orders::table
                    .filter(orders::id.eq(id.get()))
                    .filter(orders::user_id.eq(user_id.get()))
                    .select(OrderRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?
                else {
                    return Ok(None);
                };
                let mut items = items_of(&mut conn, &[row.id]).await?;
                let lines = items.remove(&row.id).unwrap_or_default();
                order_from(row, lines).map(Some)
            })
            .await
    }

    async fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<Order>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let mine = orders::table.filter(orders::user_id.eq(user_id.get()));
                let total: i64 = mine
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let rows: Vec<OrderRow> = mine
                    .order(orders::id.desc())
                    .offset(page.offset())
                    .limit(page.limit())
                    .select(OrderRow::as_select())
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let mut items = items_of(&mut conn, &ids).await?;
                page_of(
                    rows,
                    |row| {
                        let lines = items.remove(&row.id).unwrap_or_default();
                        order_from(row, lines)
                    },
                    page,
                    total,
                )
            })
            .await
    }
}
