//! Investments: admins open products; anyone signed in reads the open ones
//! and invests (idempotent); each user reads their own investments.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use application::invest::{CreateInvestProduct, InvestCommand, InvestQueries, MakeInvestment};
use application::throttle::{Attempt, Throttle};
use chrono::{DateTime, Utc};
use domain::idempotency::IdempotentRequest;
use domain::invest::{
    InvestAmount, InvestError, InvestProduct, InvestProductId, InvestStatus, InvestTitle,
    Investment, MyInvestment, NewInvestProduct, RecruitingWindow,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::admission::{Family, bounded};
use crate::extract::{
    AdminUser, AuthUser, IdempotencyKeyHeader, IdempotentJson, Json, PageParams, PageQuery, render,
    respond, write_failed,
};
use crate::metrics::Metrics;
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};
use crate::routes::PageBody;

/// The invest use cases the routes call.
#[derive(Debug, Clone)]
pub struct InvestApi {
    pub create: Arc<CreateInvestProduct>,
    pub invest: Arc<MakeInvestment>,
    pub queries: Arc<InvestQueries>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/invest-products").route(web::post().to(create)))
        .service(web::resource("/invest-products").route(web::get().to(list)))
        .service(web::resource("/invest-products/{id}").route(web::get().to(detail)))
        .service(
            web::resource("/investments")
                .route(web::post().to(invest).wrap(bounded(Family::Investments))),
        )
        .service(web::resource("/investments/me").route(web::get().to(mine)));
}

fn amount(field: &str, raw: i64) -> Result<InvestAmount, ApiError> {
    InvestAmount::new(raw).map_err(|e| ApiError::invalid_field(field, e))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewInvestProduct)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    #[schema(schema_with = crate::schema::invest_title)]
    title: String,
    /// The amount to recruit.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 100_000_000)]
    total_investing_amount: i64,
    #[schema(schema_with = crate::schema::recruiting_starts)]
    started_at: DateTime<Utc>,
    #[schema(schema_with = crate::schema::recruiting_ends)]
    finished_at: DateTime<Utc>,
}

impl CreateBody {
    fn try_into_domain(self) -> Result<NewInvestProduct, ApiError> {
        Ok(NewInvestProduct {
            title: InvestTitle::parse(&self.title).map_err(ApiError::from)?,
            total: amount("totalInvestingAmount", self.total_investing_amount)?,
            window: RecruitingWindow::new(self.started_at, self.finished_at)
                .map_err(ApiError::from)?,
        })
    }
}

/// Whether an investment product can still take money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = InvestStatus)]
#[serde(rename_all = "UPPERCASE")]
enum InvestStatusJson {
    /// Something remains to invest.
    Ongoing,
    /// `currentInvestingAmount` reached `totalInvestingAmount`.
    Complete,
}

impl From<InvestStatus> for InvestStatusJson {
    fn from(status: InvestStatus) -> Self {
        match status {
            InvestStatus::Ongoing => Self::Ongoing,
            InvestStatus::Complete => Self::Complete,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = InvestProduct)]
#[serde(rename_all = "camelCase")]
struct ProductBody {
    product_id: i64,
    title: String,
    total_investing_amount: i64,
    /// Never more than `totalInvestingAmount`.
    current_investing_amount: i64,
    /// How many distinct users invested.
    investing_cnt: i64,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    invest_status: InvestStatusJson,
}

impl From<InvestProduct> for ProductBody {
    fn from(p: InvestProduct) -> Self {
        Self {
            product_id: p.id.get(),
            invest_status: p.status().into(),
            title: p.title.as_str().to_owned(),
            total_investing_amount: p.total.get(),
            current_investing_amount: p.current.get(),
            investing_cnt: p.investors,
            started_at: p.window.started_at(),
            finished_at: p.window.finished_at(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = InvestRequest)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InvestBody {
    #[schema(minimum = 1, example = 1)]
    product_id: i64,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 50_000)]
    invest_amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Investment)]
#[serde(rename_all = "camelCase")]
struct InvestmentBody {
    investment_id: i64,
    product_id: i64,
    invest_amount: i64,
    invested_at: DateTime<Utc>,
}

impl From<&Investment> for InvestmentBody {
    fn from(i: &Investment) -> Self {
        Self {
            investment_id: i.id.get(),
            product_id: i.product_id.get(),
            invest_amount: i.amount.get(),
            invested_at: i.invested_at,
        }
    }
}

/// One investment of the caller's (several in one product are separate rows).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MyInvestment)]
#[serde(rename_all = "camelCase")]
struct MyInvestmentBody {
    investment_id: i64,
    product_id: i64,
    title: String,
    total_investing_amount: i64,
    my_investing_amount: i64,
    invested_at: DateTime<Utc>,
}

impl From<MyInvestment> for MyInvestmentBody {
    fn from(m: MyInvestment) -> Self {
        Self {
            investment_id: m.investment.id.get(),
            product_id: m.investment.product_id.get(),
            title: m.title.as_str().to_owned(),
            total_investing_amount: m.total.get(),
            my_investing_amount: m.investment.amount.get(),
            invested_at: m.investment.invested_at,
        }
    }
}

/// Open an investment product (admin)
#[utoipa::path(
    post,
    path = "/api/v1/admin/invest-products",
    operation_id = "createInvestProduct",
    tag = "investments",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = ProductBody),
        (status = 400, description = "`VALIDATION_FAILED` naming the field", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn create(
    api: web::Data<InvestApi>,
    _admin: AdminUser,
    Json(body): Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let product = api.create.execute(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(ProductBody::from(product)))
}

/// Investment products open now
///
/// Products whose `startedAt <= now <= finishedAt`, newest `startedAt` first.
#[utoipa::path(
    get,
    path = "/api/v1/invest-products",
    operation_id = "listInvestProducts",
    tag = "investments",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of products", body = PageBody<ProductBody>),
        (status = 400, description = "`VALIDATION_FAILED`: page or size out of range", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn list(
    api: web::Data<InvestApi>,
    _caller: AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.queries.open_now(page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, ProductBody::from)))
}

/// One investment product
#[utoipa::path(
    get,
    path = "/api/v1/invest-products/{id}",
    operation_id = "getInvestProduct",
    tag = "investments",
    params(("id" = i64, Path, description = "The investment product id")),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 400, description = "`VALIDATION_FAILED`: the id is not an integer", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`INVEST_PRODUCT_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn detail(
    api: web::Data<InvestApi>,
    _caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let product_id = InvestProductId::new(id.into_inner());
    match api.queries.get(product_id).await? {
        Some(product) => Ok(HttpResponse::Ok().json(ProductBody::from(product))),
        None => Err(InvestError::ProductNotFound { product_id }.into()),
    }
}

/// Invest (idempotent)
///
/// A repeat with the same `Idempotency-Key` and body answers the first
/// answer again.
#[utoipa::path(
    post,
    path = "/api/v1/investments",
    operation_id = "invest",
    tag = "investments",
    params(IdempotencyKeyHeader),
    request_body = InvestBody,
    responses(
        (status = 201, description = "Invested (or the replay of the first answer with this key)", body = InvestmentBody,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is a replayed answer"))),
        (status = 400, description = "`VALIDATION_FAILED` (amount ≥ 1), `IDEMPOTENCY_KEY_REQUIRED`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`INVEST_PRODUCT_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`SOLD_OUT` (nothing remains), `AMOUNT_EXCEEDS_REMAINING` (carries `remainingAmount`), `NOT_IN_RECRUITING_PERIOD`, `IDEMPOTENCY_IN_PROGRESS`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the key came with another body", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 429, description = "`RATE_LIMITED`: too many attempts by this user; `Retry-After` gives the seconds to wait", body = ProblemSchema, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds until the next attempt is admitted"))),
    ),
    security(("bearer" = [])),
)]
async fn invest(
    api: web::Data<InvestApi>,
    metrics: web::Data<Metrics>,
    throttle: web::Data<Throttle>,
    AuthUser(caller): AuthUser,
    write: IdempotentJson<InvestBody>,
) -> Result<HttpResponse, ApiError> {
    throttle
        .attempt(caller.user_id, Attempt::Investment)
        .await?;
    let command = InvestCommand {
        user_id: caller.user_id,
        product_id: InvestProductId::new(write.body.product_id),
        amount: amount("investAmount", write.body.invest_amount)?,
    };
    let request = IdempotentRequest {
        user_id: caller.user_id,
        key: write.key,
        fingerprint: write.fingerprint,
        render: render(
            StatusCode::CREATED,
            |i: &Investment| serde_json::to_value(InvestmentBody::from(i)).unwrap_or(Value::Null),
            |e: &InvestError| ApiError::from(e.clone()),
        ),
    };
    let outcome = api
        .invest
        .execute(command, request)
        .await
        .map_err(write_failed)?;
    metrics.record_investment(&outcome, command.amount.get());
    respond(outcome)
}

/// The caller's investments
///
/// Newest first; one row per investment.
#[utoipa::path(
    get,
    path = "/api/v1/investments/me",
    operation_id = "listMyInvestments",
    tag = "investments",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of investments", body = PageBody<MyInvestmentBody>),
        (status = 400, description = "`VALIDATION_FAILED`: page or size out of range", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn mine(
    api: web::Data<InvestApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.queries.mine(caller.user_id, page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, MyInvestmentBody::from)))
}
