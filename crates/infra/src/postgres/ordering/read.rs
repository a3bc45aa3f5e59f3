//! Reading placed orders back (`get`, `list`): the Diesel rows of `orders`
//! and `order_items` and their conversion into domain orders. Writing them
//! is the batch's job ([`batch`](super::batch)).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::catalog::{ProductId, ProductName};
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::money::Points;
use domain::ordering::{CouponCode, Order, OrderId, OrderLine, Quantity};
use domain::paging::{Page, PageRequest};

use crate::postgres::paging::page_of;
use crate::postgres::schema::{order_items, orders};
use crate::postgres::unavailable;

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

#[derive(Queryable, Selectable)]
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

/// `user_id`'s order `id`; `None` for an unknown id or another user's order.
pub(super) async fn find(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    id: OrderId,
) -> Result<Option<Order>, Unavailable> {
    let Some(row) = orders::table
        .filter(orders::id.eq(id.get()))
        .filter(orders::user_id.eq(user_id.get()))
        .select(OrderRow::as_select())
        .first(conn)
        .await
        .optional()
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let mut items = items_of(conn, &[row.id]).await?;
    let lines = items.remove(&row.id).unwrap_or_default();
    order_from(row, lines).map(Some)
}

/// One page of `user_id`'s orders, newest first.
pub(super) async fn page(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    page: PageRequest,
) -> Result<Page<Order>, Unavailable> {
    let mine = orders::table.filter(orders::user_id.eq(user_id.get()));
    let total: i64 = mine.count().get_result(conn).await.map_err(unavailable)?;
    let rows: Vec<OrderRow> = mine
        .order(orders::id.desc())
        .offset(page.offset())
        .limit(page.limit())
        .select(OrderRow::as_select())
        .load(conn)
        .await
        .map_err(unavailable)?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut items = items_of(conn, &ids).await?;
    page_of(
        rows,
        |row| {
            let lines = items.remove(&row.id).unwrap_or_default();
            order_from(row, lines)
        },
        page,
        total,
    )
}
