//! Points: the caller's balance, charging it (idempotent), and its ledger.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use application::points::{ChargePoints, PointsQueries};
use chrono::{DateTime, Utc};
use domain::idempotency::IdempotentRequest;
use domain::points::{ChargeError, ChargeReceipt, LedgerEntry};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::extract::{AuthUser, IdempotentJson, PageParams, render, respond};
use crate::problem::ApiError;
use crate::routes::PageBody;

/// The points use cases the routes call.
#[derive(Debug, Clone)]
pub struct PointsApi {
    pub charge: Arc<ChargePoints>,
    pub queries: Arc<PointsQueries>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/points").route(web::get().to(balance)))
        .service(web::resource("/points/charge").route(web::post().to(charge)))
        .service(web::resource("/points/history").route(web::get().to(history)));
}

#[derive(Debug, Deserialize)]
struct ChargeBody {
    amount: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LedgerBody {
    id: i64,
    kind: &'static str,
    amount: i64,
    balance_after: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<LedgerEntry> for LedgerBody {
    fn from(entry: LedgerEntry) -> Self {
        Self {
            id: entry.id,
            kind: entry.kind.as_str(),
            amount: entry.amount.get(),
            balance_after: entry.balance_after.get(),
            order_id: entry.order_id,
            created_at: entry.created_at,
        }
    }
}

async fn balance(
    api: web::Data<PointsApi>,
    AuthUser(caller): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let wallet = api.queries.wallet(caller.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "userId": wallet.user_id.get(),
        "balance": wallet.balance.get(),
    })))
}

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
                json!({
                    "userId": r.user_id.get(),
                    "balance": r.balance.get(),
                    "chargedAmount": r.charged.get(),
                })
            },
            |e: &ChargeError| ApiError::from(*e),
        ),
    };
    let outcome = api.charge.execute(write.body.amount, request).await?;
    respond(outcome)
}

async fn history(
    api: web::Data<PointsApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.queries.history(caller.user_id, page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, LedgerBody::from)))
}
