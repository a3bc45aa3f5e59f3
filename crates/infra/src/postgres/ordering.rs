//! The [`OrderStore`] on Postgres: one transaction per order, under the
//! idempotency guard.
//!
//! Inside the guard's savepoint, in this order:
//! 1. each line's stock, in product-id order (two orders never lock the same
//!    rows in opposite orders, so they never deadlock), with
//!    `UPDATE … SET stock = stock - q WHERE id = $id AND stock >= q`;
//! 2. the wallet, with `UPDATE … SET balance = balance - paid WHERE balance >= paid`;
//! 3. the order, its items, the coupon (guarded: unused, unexpired, the
//!    caller's), the PAYMENT ledger row and the `order.paid` outbox event.
//!
//! A guard that finds no row is a refusal (`OUT_OF_STOCK` naming the product,
//! `INSUFFICIENT_BALANCE`): the savepoint rolls back what was taken before it,
//! and only the refusal's answer is committed.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
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
use domain::points::LedgerKind;
use serde_json::json;

use super::idempotency;
use super::paging::page_of;
use super::schema::{order_items, orders, point_ledger, products};
use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PgOrderStore {
    db: Postgres,
    retention: Duration,
}

impl std::fmt::Debug for PgOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgOrderStore")
    }
}

impl PgOrderStore {
    pub fn new(db: Postgres, retention: Duration) -> Self {
        Self { db, retention }
    }
}

#[derive(QueryableByName)]
struct Balance {
    #[diesel(sql_type = Int8)]
    balance: i64,
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
fn order_paid_event(event_id: &str, order: &Order) -> serde_json::Value {
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

/// The effect of placing `order`, run inside the guard's savepoint.
async fn place_in(
    tx: &mut AsyncPgConnection,
    order: &PricedOrder,
) -> QueryResult<Result<Order, PlaceOrderError>> {
    for line in &order.lines {
        let taken = diesel::update(
            products::table
                .filter(products::id.eq(line.product_id.get()))
                .filter(products::stock.ge(line.quantity.get())),
        )
        .set((
            products::stock.eq(products::stock - line.quantity.get()),
            products::updated_at.eq(diesel::dsl::now),
        ))
        .execute(tx)
        .await?;
        if taken == 0 {
            return Ok(Err(PlaceOrderError::OutOfStock {
                product_id: line.product_id,
            }));
        }
    }
    let user_id = order.user_id.get();
    let mut balance_after = None;
    if order.paid > Points::ZERO {
        let debited = diesel::sql_query(
            "UPDATE wallets SET balance = balance - $2, updated_at = now() \
              WHERE user_id = $1 AND balance >= $2 RETURNING balance",
        )
        .bind::<Int8, _>(user_id)
        .bind::<Int8, _>(order.paid.get())
        .get_result::<Balance>(tx)
        .await
        .optional()?;
        match debited {
            Some(b) => balance_after = Some(b.balance),
            None => return Ok(Err(PlaceOrderError::InsufficientBalance)),
        }
    }
    let row: OrderRow = diesel::insert_into(orders::table)
        .values((
            orders::user_id.eq(user_id),
            orders::total_amount.eq(order.total.get()),
            orders::discount_amount.eq(order.discount.get()),
            orders::paid_amount.eq(order.paid.get()),
            orders::coupon_code.eq(order.coupon.as_ref().map(CouponCode::as_str)),
        ))
        .returning(OrderRow::as_returning())
        .get_result(tx)
        .await?;
    let items: Vec<ItemRow> = order
        .lines
        .iter()
        .map(|l| ItemRow {
            order_id: row.id,
            product_id: l.product_id.get(),
            name: l.name.as_str().to_owned(),
            quantity: l.quantity.get(),
            unit_price: l.unit_price.get(),
            line_total: l.line_total.get(),
        })
        .collect();
    diesel::insert_into(order_items::table)
        .values(&items)
        .execute(tx)
        .await?;
    if let Some(code) = &order.coupon {
        // Consumed in the order's transaction, guarded again: of two orders
        // racing for one coupon, one gets it and the other is refused.
        let consumed = diesel::sql_query(
            "UPDATE coupons SET used_at = now(), used_order_id = $3 \
              WHERE code = $1 AND owner_id = $2 AND used_at IS NULL AND expires_at > now()",
        )
        .bind::<Text, _>(code.as_str())
        .bind::<Int8, _>(user_id)
        .bind::<Int8, _>(row.id)
        .execute(tx)
        .await?;
        if consumed == 0 {
            return Ok(Err(PlaceOrderError::CouponNotApplicable));
        }
    }
    if let Some(balance) = balance_after {
        diesel::insert_into(point_ledger::table)
            .values((
                point_ledger::user_id.eq(user_id),
                point_ledger::kind.eq(LedgerKind::Payment.as_str()),
                point_ledger::amount.eq(order.paid.get()),
                point_ledger::balance_after.eq(balance),
                point_ledger::order_id.eq(row.id),
            ))
            .execute(tx)
            .await?;
    }
    let placed = Order {
        id: OrderId::new(row.id),
        user_id: order.user_id,
        lines: order.lines.clone(),
        total: order.total,
        discount: order.discount,
        paid: order.paid,
        coupon: order.coupon.clone(),
        created_at: row.created_at,
    };
    let event_id = uuid::Uuid::new_v4().to_string();
    diesel::sql_query("INSERT INTO outbox (event_id, event_type, payload) VALUES ($1::uuid, 'order.paid', $2::jsonb)")
        .bind::<Text, _>(&event_id)
        .bind::<Text, _>(order_paid_event(&event_id, &placed).to_string())
        .execute(tx)
        .await?;
    Ok(Ok(placed))
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
        let (order, request) = (&order, &request);
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let (outcome, ran) =
                    idempotency::guarded(&mut conn, request, self.retention, async |tx| {
                        place_in(tx, order).await
                    })
                    .await?;
                Ok(Placement {
                    outcome,
                    ran: ran.map(|result| result.map(|order| order.id)),
                })
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
