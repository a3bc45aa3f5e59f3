//! Points: the caller's balance, charging it (idempotent), and its ledger.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use application::points::{ChargePoints, PointsQueries};
use chrono::{DateTime, Utc};
use domain::idempotency::IdempotentRequest;
use domain::points::{ChargeError, ChargeReceipt, LedgerEntry, LedgerKind, Wallet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::admission::{Family, bounded};
use crate::extract::{
    AuthUser, IdempotencyKeyHeader, IdempotentJson, PageParams, PageQuery, render, respond,
    write_failed,
};
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};
use crate::routes::PageBody;

/// The points use cases the routes call.
#[derive(Debug, Clone)]
pub struct PointsApi {
    pub charge: Arc<ChargePoints>,
    pub queries: Arc<PointsQueries>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/points").route(web::get().to(balance)))
        .service(
            web::resource("/points/charge")
                .route(web::post().to(charge).wrap(bounded(Family::Charges))),
        )
        .service(web::resource("/points/history").route(web::get().to(history)));
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ChargeRequest)]
#[serde(deny_unknown_fields)]
struct ChargeBody {
    /// Points to add: 1,000 to 1,000,000 per charge.
    #[schema(minimum = 1_000, maximum = 1_000_000, example = 10_000)]
    amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Balance)]
#[serde(rename_all = "camelCase")]
struct BalanceBody {
    user_id: i64,
    #[schema(minimum = 0, maximum = 100_000_000)]
    balance: i64,
}

impl From<&Wallet> for BalanceBody {
    fn from(wallet: &Wallet) -> Self {
        Self {
            user_id: wallet.user_id.get(),
            balance: wallet.balance.get(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ChargeReceipt)]
#[serde(rename_all = "camelCase")]
struct ChargeReceiptBody {
    user_id: i64,
    /// The balance after the charge.
    balance: i64,
    charged_amount: i64,
}

impl From<&ChargeReceipt> for ChargeReceiptBody {
    fn from(r: &ChargeReceipt) -> Self {
        Self {
            user_id: r.user_id.get(),
            balance: r.balance.get(),
            charged_amount: r.charged.get(),
        }
    }
}

/// What moved the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = LedgerKind)]
#[serde(rename_all = "UPPERCASE")]
enum LedgerKindJson {
    Charge,
    Payment,
    Refund,
}

impl From<LedgerKind> for LedgerKindJson {
    fn from(kind: LedgerKind) -> Self {
        match kind {
            LedgerKind::Charge => Self::Charge,
            LedgerKind::Payment => Self::Payment,
            LedgerKind::Refund => Self::Refund,
        }
    }
}

/// One change of the balance; `amount` is always positive, `kind` says which way.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LedgerEntry)]
#[serde(rename_all = "camelCase")]
struct LedgerBody {
    id: i64,
    kind: LedgerKindJson,
    amount: i64,
    balance_after: i64,
    /// The order of a PAYMENT or REFUND.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    order_id: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<LedgerEntry> for LedgerBody {
    fn from(entry: LedgerEntry) -> Self {
        Self {
            id: entry.id,
            kind: entry.kind.into(),
            amount: entry.amount.get(),
            balance_after: entry.balance_after.get(),
            order_id: entry.order_id,
            created_at: entry.created_at,
        }
    }
}

/// The caller's balance
#[utoipa::path(
    get,
    path = "/api/v1/points",
    operation_id = "getBalance",
    tag = "points",
    responses((status = 200, description = "The balance", body = BalanceBody)),
    security(("bearer" = [])),
)]
async fn balance(
    api: web::Data<PointsApi>,
    AuthUser(caller): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let wallet = api.queries.wallet(caller.user_id).await?;
    Ok(HttpResponse::Ok().json(BalanceBody::from(&wallet)))
}

/// Charge points (idempotent)
///
/// Adds to the caller's prepaid balance. A repeat with the same
/// `Idempotency-Key` and body answers the first answer again.
#[utoipa::path(
    post,
    path = "/api/v1/points/charge",
    operation_id = "chargePoints",
    tag = "points",
    params(IdempotencyKeyHeader),
    request_body = ChargeBody,
    responses(
        (status = 200, description = "Charged (or the replay of the first charge with this key)", body = ChargeReceiptBody,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is a replayed answer"))),
        (status = 400, description = "`INVALID_CHARGE_AMOUNT` (1,000..=1,000,000), `IDEMPOTENCY_KEY_REQUIRED`, `VALIDATION_FAILED`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`BALANCE_LIMIT_EXCEEDED` (carries `maxBalance`), `IDEMPOTENCY_IN_PROGRESS`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key came with another body", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn charge(
    api: web::Data<PointsApi>,
    AuthUser(caller): AuthUser,
    write: IdempotentJson<ChargeBody>,
) -> Result<HttpResponse, ApiError> {
    let request = IdempotentRequest {
        user_id: caller.user_id,
        key: write.key,
        fingerprint: write.fingerprint,
        render: render(
            StatusCode::OK,
            |r: &ChargeReceipt| {
                serde_json::to_value(ChargeReceiptBody::from(r)).unwrap_or(Value::Null)
            },
            |e: &ChargeError| ApiError::from(*e),
        ),
    };
    let outcome = api
        .charge
        .execute(write.body.amount, request)
        .await
        .map_err(write_failed)?;
    respond(outcome)
}

/// The caller's balance history
///
/// Newest first.
#[utoipa::path(
    get,
    path = "/api/v1/points/history",
    operation_id = "listPointsHistory",
    tag = "points",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of ledger entries", body = PageBody<LedgerBody>),
        (status = 400, description = "`VALIDATION_FAILED`: page or size out of range", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn history(
    api: web::Data<PointsApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.queries.history(caller.user_id, page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, LedgerBody::from)))
}
