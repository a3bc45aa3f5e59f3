//! Orders: place one (idempotent), list the caller's, read one.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use application::ordering::{OrderQueries, PlaceOrder, PlaceOrderCommand};
use application::throttle::{Attempt, Throttle};
use chrono::{DateTime, Utc};
use domain::idempotency::IdempotentRequest;
use domain::ordering::{CouponCode, Order, OrderId, OrderRequest, PlaceOrderError, Quantity};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::admission::{Family, bounded};
use crate::extract::{
    AuthUser, IdempotencyKeyHeader, IdempotentJson, PageParams, PageQuery, render, respond,
    write_failed,
};
use crate::metrics::Metrics;
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};
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
            .route(web::post().to(place).wrap(bounded(Family::Orders)))
            .route(web::get().to(list)),
    )
    .service(web::resource("/orders/{id}").route(web::get().to(detail)));
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = OrderItemRequest)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ItemBody {
    #[schema(minimum = 1, example = 1)]
    product_id: i64,
    #[schema(minimum = 1, maximum = 1_000, example = 1)]
    quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PlaceOrderRequest)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PlaceBody {
    /// 1 to 50 lines, each of a distinct product (a `productId` twice is
    /// refused; `uniqueItems` says the part JSON Schema can).
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<ItemBody>,
    /// A coupon of the caller's to apply (any case: codes are
    /// case-insensitive); left out or null, none.
    #[schema(pattern = "^[A-Za-z0-9-]{4,64}$", default = json!(null))]
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

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderLine)]
#[serde(rename_all = "camelCase")]
struct LineBody {
    product_id: i64,
    name: String,
    quantity: i64,
    unit_price: i64,
    line_total: i64,
}

/// An order's state: every order this service keeps is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
enum OrderStatus {
    Paid,
}

/// A paid order: `paidAmount = totalAmount - discountAmount`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
#[serde(rename_all = "camelCase")]
struct OrderBody {
    order_id: i64,
    status: OrderStatus,
    items: Vec<LineBody>,
    total_amount: i64,
    discount_amount: i64,
    paid_amount: i64,
    /// The coupon applied, null when none.
    #[schema(required = true)]
    coupon_code: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> Self {
        Self {
            order_id: order.id.get(),
            status: OrderStatus::Paid,
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

/// Place an order (idempotent)
///
/// One atomic step: the stock of every item, the caller's balance and the
/// coupon are all taken, or none is. A repeat with the same
/// `Idempotency-Key` and body answers the first answer again.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    operation_id = "placeOrder",
    tag = "orders",
    params(IdempotencyKeyHeader),
    request_body = PlaceBody,
    responses(
        (status = 201, description = "Paid (or the replay of the first answer with this key)", body = OrderBody,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is a replayed answer"))),
        (status = 400, description = "`VALIDATION_FAILED` (1..=50 distinct products, quantity 1..=1,000 each), `IDEMPOTENCY_KEY_REQUIRED`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`PRODUCT_NOT_FOUND` (carries `productId`)", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`OUT_OF_STOCK` (carries `productId`), `INSUFFICIENT_BALANCE`, `COUPON_NOT_APPLICABLE`, `IDEMPOTENCY_IN_PROGRESS`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key came with another body", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 429, description = "`RATE_LIMITED`: too many attempts by this user; `Retry-After` gives the seconds to wait", body = ProblemSchema, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds until the next attempt is admitted"))),
    ),
    security(("bearer" = [])),
)]
async fn place(
    api: web::Data<OrderingApi>,
    metrics: web::Data<Metrics>,
    throttle: web::Data<Throttle>,
    AuthUser(caller): AuthUser,
    write: IdempotentJson<PlaceBody>,
) -> Result<HttpResponse, ApiError> {
    throttle.attempt(caller.user_id, Attempt::Order).await?;
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
    let outcome = api
        .place
        .execute(command, request)
        .await
        .map_err(write_failed)?;
    metrics.record_order(&outcome);
    respond(outcome)
}

/// The caller's orders
///
/// Newest first.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    operation_id = "listOrders",
    tag = "orders",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of orders", body = PageBody<OrderBody>),
        (status = 400, description = "`VALIDATION_FAILED`: page or size out of range", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn list(
    api: web::Data<OrderingApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.queries.list(caller.user_id, page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, |o| OrderBody::from(&o))))
}

/// One of the caller's orders
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    operation_id = "getOrder",
    tag = "orders",
    params(("id" = i64, Path, description = "The order id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 400, description = "`VALIDATION_FAILED`: the id is not an integer", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`ORDER_NOT_FOUND`, also for another user's order", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
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
