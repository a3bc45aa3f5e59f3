//! Orders: place one (idempotent), list the caller's, read one.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use application::ordering::{OrderQueries, PlaceOrder, PlaceOrderCommand};
use chrono::{DateTime, Utc};
use domain::idempotency::IdempotentRequest;
use domain::ordering::{CouponCode, Order, OrderId, OrderRequest, PlaceOrderError, Quantity};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::extract::{AuthUser, IdempotentJson, PageParams, render, respond};
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::routes::PageBody;
use crate::routes::catalog::product_id;

/// The ordering use cases the routes call.
#[derive(Debug, Clone)]
pub struct OrderingApi {
    pub place: Arc<PlaceOrder>,
    pub queries: Arc<OrderQueries>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/orders")
            .route(web::post().to(place))
            .route(web::get().to(list)),
    )
    .service(web::resource("/orders/{id}").route(web::get().to(detail)));
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemBody {
    product_id: i64,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlaceBody {
    items: Vec<ItemBody>,
    coupon_code: Option<String>,
}

impl PlaceBody {
    fn try_into_domain(
        self,
        caller: &domain::identity::Caller,
    ) -> Result<PlaceOrderCommand, ApiError> {
        let lines = self
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let quantity = Quantity::new(item.quantity).ok_or_else(|| {
                    ApiError::invalid_field(
                        &format!("items[{i}].quantity"),
                        "must be between 1 and 1000",
                    )
                })?;
                Ok((product_id(item.product_id), quantity))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(PlaceOrderCommand {
            user_id: caller.user_id,
            items: OrderRequest::new(lines).map_err(|e| ApiError::invalid_field("items", e))?,
            coupon: self
                .coupon_code
                .as_deref()
                .map(CouponCode::parse)
                .transpose()
                .map_err(|e| ApiError::invalid_field("couponCode", e))?,
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LineBody {
    product_id: i64,
    name: String,
    quantity: i64,
    unit_price: i64,
    line_total: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderBody {
    order_id: i64,
    status: &'static str,
    items: Vec<LineBody>,
    total_amount: i64,
    discount_amount: i64,
    paid_amount: i64,
    coupon_code: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> Self {
        Self {
            order_id: order.id.get(),
            status: "PAID",
            items: order
                .lines
                .iter()
                .map(|l| LineBody {
                    product_id: l.product_id.get(),
                    name: l.name.as_str().to_owned(),
                    quantity: l.quantity.get(),
                    unit_price: l.unit_price.get(),
                    line_total: l.line_total.get(),
                })
                .collect(),
            total_amount: order.total.get(),
            discount_amount: order.discount.get(),
            paid_amount: order.paid.get(),
            coupon_code: order.coupon.as_ref().map(|c| c.as_str().to_owned()),
            created_at: order.created_at,
        }
    }
}

async fn place(
    api: web::Data<OrderingApi>,
    metrics: web::Data<Metrics>,
    AuthUser(caller): AuthUser,
    write: IdempotentJson<PlaceBody>,
) -> Result<HttpResponse, ApiError> {
    let command = write.body.try_into_domain(&caller)?;
    let request = IdempotentRequest {
        user_id: caller.user_id,
        key: write.key,
        fingerprint: write.fingerprint,
        render: render(
            StatusCode::CREATED,
            |order: &Order| serde_json::to_value(OrderBody::from(order)).unwrap_or(Value::Null),
            |e: &PlaceOrderError| ApiError::from(e.clone()),
        ),
    };
    let outcome = api.place.execute(command, request).await?;
    metrics.record_order(&outcome);
    respond(outcome)
}

async fn list(
    api: web::Data<OrderingApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.queries.list(caller.user_id, page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, |o| OrderBody::from(&o))))
}

async fn detail(
    api: web::Data<OrderingApi>,
    AuthUser(caller): AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = OrderId::new(id.into_inner());
    match api.queries.get(caller.user_id, id).await? {
        Some(order) => Ok(HttpResponse::Ok().json(OrderBody::from(&order))),
        None => Err(ApiError::not_found(
            "ORDER_NOT_FOUND",
            format!("no order {id} of yours"),
        )),
    }
}
