//! Coupon campaigns: admins create them and fill their pools; anyone signed
//! in sees a campaign and how many codes remain.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use application::coupon::{Campaigns, Coupons, Expiry};
use chrono::{DateTime, Utc};
use domain::coupon::{
    Campaign, CampaignId, CampaignName, CampaignView, CodeCount, Coupon, CouponStatus,
    DiscountKind, DiscountRule, IssueWindow, NewCampaign, RedeemError, ValidDays,
};
use domain::ordering::CouponCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::extract::{AdminUser, AuthUser, Json, PageParams};
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::routes::PageBody;

/// The coupon use cases the routes call.
#[derive(Debug, Clone)]
pub struct CouponApi {
    pub campaigns: Arc<Campaigns>,
    pub coupons: Arc<Coupons>,
    pub expiry: Arc<Expiry>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/coupon-campaigns").route(web::post().to(create)))
        .service(
            web::resource("/admin/coupon-campaigns/{id}/codes").route(web::post().to(generate)),
        )
        .service(
            web::resource("/admin/coupon-campaigns/{id}/codes/import")
                .route(web::post().to(import)),
        )
        .service(web::resource("/coupon-campaigns/{id}").route(web::get().to(view)))
        .service(web::resource("/coupon-campaigns/{id}/issue").route(web::post().to(issue)))
        .service(web::resource("/coupons").route(web::get().to(mine)))
        .service(web::resource("/admin/coupons/expiring").route(web::get().to(expiring)))
        .service(
            web::resource("/admin/jobs/coupon-expiry-notices").route(web::post().to(send_notices)),
        )
        .service(web::resource("/coupons/{code}/use").route(web::post().to(redeem)))
        .service(web::resource("/coupons/{code}/cancel-use").route(web::post().to(cancel_redeem)));
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CampaignBody {
    name: String,
    discount_type: String,
    discount_value: i64,
    max_discount_amount: Option<i64>,
    #[serde(default)]
    min_order_amount: i64,
    valid_days: i64,
    issue_starts_at: Option<DateTime<Utc>>,
    issue_ends_at: Option<DateTime<Utc>>,
}

impl CampaignBody {
    fn try_into_domain(self) -> Result<NewCampaign, ApiError> {
        let kind = DiscountKind::parse(&self.discount_type)
            .ok_or_else(|| ApiError::invalid_field("discountType", "must be AMOUNT or PERCENT"))?;
        Ok(NewCampaign {
            name: CampaignName::parse(&self.name).map_err(ApiError::from)?,
            rule: DiscountRule::new(
                kind,
                self.discount_value,
                self.max_discount_amount,
                self.min_order_amount,
            )
            .map_err(ApiError::from)?,
            valid_days: ValidDays::new(self.valid_days).map_err(ApiError::from)?,
            window: IssueWindow::new(self.issue_starts_at, self.issue_ends_at)
                .map_err(ApiError::from)?,
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CampaignJson {
    id: i64,
    name: String,
    discount_type: &'static str,
    discount_value: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_discount_amount: Option<i64>,
    min_order_amount: i64,
    valid_days: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    issue_starts_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issue_ends_at: Option<DateTime<Utc>>,
}

impl From<&Campaign> for CampaignJson {
    fn from(c: &Campaign) -> Self {
        Self {
            id: c.id.get(),
            name: c.name.as_str().to_owned(),
            discount_type: c.rule.kind().as_str(),
            discount_value: c.rule.value(),
            max_discount_amount: c.rule.max().map(|m| m.get()),
            min_order_amount: c.rule.min_order().get(),
            valid_days: c.valid_days.get(),
            issue_starts_at: c.window.starts_at,
            issue_ends_at: c.window.ends_at,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CampaignViewJson {
    #[serde(flatten)]
    campaign: CampaignJson,
    total_codes: i64,
    issued_count: i64,
    remaining_count: i64,
}

impl From<&CampaignView> for CampaignViewJson {
    fn from(v: &CampaignView) -> Self {
        Self {
            campaign: CampaignJson::from(&v.campaign),
            total_codes: v.total_codes,
            issued_count: v.issued_count,
            remaining_count: v.remaining(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct CountBody {
    count: i64,
}

async fn create(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    Json(body): Json<CampaignBody>,
) -> Result<HttpResponse, ApiError> {
    let campaign = api.campaigns.create(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(CampaignJson::from(&campaign)))
}

async fn view(
    api: web::Data<CouponApi>,
    _caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let view = api.campaigns.view(CampaignId::new(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(CampaignViewJson::from(&view)))
}

async fn generate(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    id: web::Path<i64>,
    Json(body): Json<CountBody>,
) -> Result<HttpResponse, ApiError> {
    let id = CampaignId::new(id.into_inner());
    let count = CodeCount::new(body.count).map_err(ApiError::from)?;
    let generated = api.campaigns.generate(id, count).await?;
    Ok(HttpResponse::Created().json(json!({ "campaignId": id.get(), "generated": generated })))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CouponJson {
    code: String,
    campaign_id: i64,
    campaign_name: String,
    status: &'static str,
    discount_type: &'static str,
    discount_value: i64,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    used_at: Option<DateTime<Utc>>,
}

impl CouponJson {
    fn new(coupon: &Coupon, status: CouponStatus) -> Self {
        Self {
            code: coupon.code.as_str().to_owned(),
            campaign_id: coupon.campaign_id.get(),
            campaign_name: coupon.campaign_name.as_str().to_owned(),
            status: status.as_str(),
            discount_type: coupon.rule.kind().as_str(),
            discount_value: coupon.rule.value(),
            issued_at: coupon.issued_at,
            expires_at: coupon.expires_at,
            used_at: coupon.used_at,
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatusQuery {
    status: Option<String>,
}

/// A code from the path; one that cannot exist is simply not found.
fn code(raw: &str) -> Result<CouponCode, ApiError> {
    CouponCode::parse(raw).map_err(|_| ApiError::from(RedeemError::NotFound))
}

async fn issue(
    api: web::Data<CouponApi>,
    metrics: web::Data<Metrics>,
    AuthUser(caller): AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let issued = api
        .coupons
        .issue(CampaignId::new(id.into_inner()), caller.user_id)
        .await;
    let coupon = match issued {
        Ok(coupon) => {
            metrics.record_coupon_issue(None);
            coupon
        }
        Err(err) => {
            let err = ApiError::from(err);
            if err.status().is_client_error() {
                metrics.record_coupon_issue(Some(err.code()));
            }
            return Err(err);
        }
    };
    Ok(HttpResponse::Created().json(CouponJson::new(&coupon, api.coupons.status_of(&coupon))))
}

async fn mine(
    api: web::Data<CouponApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some("ISSUED") => Some(CouponStatus::Issued),
        Some("USED") => Some(CouponStatus::Used),
        Some("EXPIRED") => Some(CouponStatus::Expired),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "must be ISSUED, USED or EXPIRED",
            ));
        }
    };
    let page = api.coupons.mine(caller.user_id, status, page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, |c| {
        let status = api.coupons.status_of(&c);
        CouponJson::new(&c, status)
    })))
}

async fn redeem(
    api: web::Data<CouponApi>,
    AuthUser(caller): AuthUser,
    raw: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon = api.coupons.redeem(caller.user_id, &code(&raw)?).await??;
    Ok(HttpResponse::Ok().json(CouponJson::new(&coupon, api.coupons.status_of(&coupon))))
}

async fn cancel_redeem(
    api: web::Data<CouponApi>,
    AuthUser(caller): AuthUser,
    raw: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon = api
        .coupons
        .cancel_redeem(caller.user_id, &code(&raw)?)
        .await??;
    Ok(HttpResponse::Ok().json(CouponJson::new(&coupon, api.coupons.status_of(&coupon))))
}

#[derive(Debug, Deserialize)]
struct ExpiringQuery {
    date: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// The cursor is "<expiresAt in microseconds>.<id>": opaque to clients, exact for us.
fn cursor_of(expires_at: DateTime<Utc>, id: i64) -> String {
    format!("{}.{id}", expires_at.timestamp_micros())
}

fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = raw.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

async fn expiring(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    query: web::Query<ExpiringQuery>,
) -> Result<HttpResponse, ApiError> {
    let date = match query.date.as_deref() {
        None => api.expiry.today(),
        Some(raw) => chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| ApiError::invalid_field("date", "must be YYYY-MM-DD"))?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be 1 to 1000"));
    }
    let after = query
        .after
        .as_deref()
        .map(|raw| {
            parse_cursor(raw)
                .ok_or_else(|| ApiError::invalid_field("after", "is not a cursor from this list"))
        })
        .transpose()?;
    let items = api.expiry.expiring_on(date, after, limit).await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|c| cursor_of(c.expires_at, c.id)))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "items": items.iter().map(|c| json!({
            "code": c.code.as_str(),
            "campaignId": c.campaign_id.get(),
            "userId": c.user_id.get(),
            "expiresAt": c.expires_at,
        })).collect::<Vec<_>>(),
        "nextCursor": next_cursor,
    })))
}

async fn send_notices(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
) -> Result<HttpResponse, ApiError> {
    let notified = api.expiry.send_notices().await?;
    Ok(HttpResponse::Ok().json(json!({ "notified": notified })))
}

/// The largest CSV upload accepted: it is streamed, so this bounds time, not memory.
pub const IMPORT_LIMIT: usize = 200 * 1024 * 1024;

async fn import(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    id: web::Path<i64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use futures_util::StreamExt as _;
    let too_large = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = std::rc::Rc::clone(&too_large);
    let mut total = 0usize;
    let chunks = payload.map(move |chunk| {
        let chunk = chunk.map_err(|e| e.to_string())?;
        total += chunk.len();
        if total > IMPORT_LIMIT {
            flag.set(true);
            return Err("the upload is too large".to_owned());
        }
        Ok(chunk.to_vec())
    });
    match api.campaigns.import(CampaignId::new(id.into_inner()), chunks).await {
        Ok(report) => Ok(HttpResponse::Ok().json(json!({
            "imported": report.imported,
            "duplicates": report.duplicates,
            "rejected": report.rejected.iter().map(|r| json!({"line": r.line, "reason": r.reason})).collect::<Vec<_>>(),
            "rejectedCount": report.rejected_count,
        }))),
        Err(_) if too_large.get() => Err(ApiError::payload_too_large(IMPORT_LIMIT)),
        Err(err) => Err(err.into()),
    }
}
