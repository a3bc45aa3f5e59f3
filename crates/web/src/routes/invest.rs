//! Investments: admins open products; anyone signed in reads the open ones
//! and invests (idempotent); each user reads their own investments.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use application::invest::{Invest, InvestCommand, InvestProducts};
use chrono::{DateTime, Utc};
use domain::idempotency::IdempotentRequest;
use domain::invest::{
    InvestAmount, InvestError, InvestProduct, InvestProductId, InvestTitle, Investment,
    MyInvestment, NewInvestProduct, RecruitingWindow,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::extract::{AdminUser, AuthUser, IdempotentJson, Json, PageParams, render, respond};
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::routes::PageBody;

/// The invest use cases the routes call.
#[derive(Debug, Clone)]
pub struct InvestApi {
    pub products: Arc<InvestProducts>,
    pub invest: Arc<Invest>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/invest-products").route(web::post().to(create)))
        .service(web::resource("/invest-products").route(web::get().to(list)))
        .service(web::resource("/invest-products/{id}").route(web::get().to(detail)))
        .service(web::resource("/investments").route(web::post().to(invest)))
        .service(web::resource("/investments/me").route(web::get().to(mine)));
}

fn amount(field: &str, raw: i64) -> Result<InvestAmount, ApiError> {
    InvestAmount::new(raw).map_err(|e| ApiError::invalid_field(field, e))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    title: String,
    total_investing_amount: i64,
    started_at: DateTime<Utc>,
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProductBody {
    product_id: i64,
    title: String,
    total_investing_amount: i64,
    current_investing_amount: i64,
    investing_cnt: i64,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    invest_status: &'static str,
}

impl From<InvestProduct> for ProductBody {
    fn from(p: InvestProduct) -> Self {
        Self {
            product_id: p.id.get(),
            invest_status: p.status().as_str(),
            title: p.title.as_str().to_owned(),
            total_investing_amount: p.total.get(),
            current_investing_amount: p.current.get(),
            investing_cnt: p.investors,
            started_at: p.window.started_at(),
            finished_at: p.window.finished_at(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvestBody {
    product_id: i64,
    invest_amount: i64,
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
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

async fn create(
    api: web::Data<InvestApi>,
    _admin: AdminUser,
    Json(body): Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let product = api.products.create(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(ProductBody::from(product)))
}

async fn list(
    api: web::Data<InvestApi>,
    _caller: AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.products.open_now(page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, ProductBody::from)))
}

async fn detail(
    api: web::Data<InvestApi>,
    _caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let product_id = InvestProductId::new(id.into_inner());
    match api.products.get(product_id).await? {
        Some(product) => Ok(HttpResponse::Ok().json(ProductBody::from(product))),
        None => Err(InvestError::ProductNotFound { product_id }.into()),
    }
}

async fn invest(
    api: web::Data<InvestApi>,
    metrics: web::Data<Metrics>,
    AuthUser(caller): AuthUser,
    write: IdempotentJson<InvestBody>,
) -> Result<HttpResponse, ApiError> {
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
    let outcome = api.invest.execute(command, request).await?;
    metrics.record_investment(&outcome, command.amount.get());
    respond(outcome)
}

async fn mine(
    api: web::Data<InvestApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.products.mine(caller.user_id, page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, MyInvestmentBody::from)))
}
