//! Coupon campaigns: admins create them and fill their pools; anyone signed
//! in sees a campaign and how many codes remain.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use application::coupon::{Campaigns, Coupons, Expiry};
use application::throttle::{Attempt, Throttle};
use chrono::{DateTime, Utc};
use domain::coupon::{
    Campaign, CampaignId, CampaignName, CampaignView, CodeCount, Coupon, CouponStatus,
    DiscountKind, DiscountRule, IssueWindow, NewCampaign, RedeemError, ValidDays,
};
use domain::ordering::CouponCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{AdminUser, AuthUser, Json, PageParams, PageQuery};
use crate::metrics::Metrics;
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};
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

/// How a campaign's coupons discount an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = DiscountType)]
#[serde(rename_all = "UPPERCASE")]
enum DiscountTypeJson {
    /// `discountValue` points off.
    Amount,
    /// `discountValue` percent off, at most `maxDiscountAmount`.
    Percent,
}

impl From<DiscountKind> for DiscountTypeJson {
    fn from(kind: DiscountKind) -> Self {
        match kind {
            DiscountKind::Amount => Self::Amount,
            DiscountKind::Percent => Self::Percent,
        }
    }
}

/// A coupon's state at the moment of the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = CouponStatus)]
#[serde(rename_all = "UPPERCASE")]
enum CouponStatusJson {
    Issued,
    Used,
    Expired,
}

impl From<CouponStatus> for CouponStatusJson {
    fn from(status: CouponStatus) -> Self {
        match status {
            CouponStatus::Issued => Self::Issued,
            CouponStatus::Used => Self::Used,
            CouponStatus::Expired => Self::Expired,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewCampaign)]
#[serde(rename_all = "camelCase")]
struct CampaignBody {
    #[schema(schema_with = crate::schema::campaign_name)]
    name: String,
    /// `AMOUNT` or `PERCENT`.
    #[schema(value_type = DiscountTypeJson)]
    discount_type: String,
    /// Points off (`AMOUNT`) or percent off (`PERCENT`, 1 to 100).
    #[schema(minimum = 1, example = 3_000)]
    discount_value: i64,
    /// The cap of a `PERCENT` discount.
    #[schema(minimum = 1)]
    max_discount_amount: Option<i64>,
    /// The smallest order total a coupon applies to; 0 when left out.
    #[serde(default)]
    #[schema(minimum = 0, default = 0)]
    min_order_amount: i64,
    /// A coupon expires this many days after it is issued.
    #[schema(minimum = 1, maximum = 3_650, example = 30)]
    valid_days: i64,
    /// Coupons are issued from then on; from now when left out.
    issue_starts_at: Option<DateTime<Utc>>,
    /// Coupons are issued until then; without end when left out.
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

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Campaign)]
#[serde(rename_all = "camelCase")]
struct CampaignJson {
    id: i64,
    name: String,
    discount_type: DiscountTypeJson,
    discount_value: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    max_discount_amount: Option<i64>,
    min_order_amount: i64,
    valid_days: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    issue_starts_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    issue_ends_at: Option<DateTime<Utc>>,
}

impl From<&Campaign> for CampaignJson {
    fn from(c: &Campaign) -> Self {
        Self {
            id: c.id.get(),
            name: c.name.as_str().to_owned(),
            discount_type: c.rule.kind().into(),
            discount_value: c.rule.value(),
            max_discount_amount: c.rule.max().map(|m| m.get()),
            min_order_amount: c.rule.min_order().get(),
            valid_days: c.valid_days.get(),
            issue_starts_at: c.window.starts_at,
            issue_ends_at: c.window.ends_at,
        }
    }
}

/// A campaign and how many codes its pool holds, issued and left.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CampaignView)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = GenerateCodesRequest)]
struct CountBody {
    /// How many codes to add to the pool: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000, example = 1_000)]
    count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GeneratedCodes)]
#[serde(rename_all = "camelCase")]
struct GeneratedBody {
    campaign_id: i64,
    /// How many codes were added.
    generated: usize,
}

/// A CSV line that was not imported.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RejectedLine)]
struct RejectedBody {
    /// The line number in the file, counting the header as line 1.
    line: u64,
    reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ImportReport)]
#[serde(rename_all = "camelCase")]
struct ImportBody {
    /// Codes added to the pool.
    imported: usize,
    /// Codes already in the pool (or repeated in the file).
    duplicates: usize,
    /// The first rejected lines (a bounded list).
    rejected: Vec<RejectedBody>,
    /// How many lines were rejected in all.
    rejected_count: u64,
}

/// An issued, unused coupon that expires on the day asked for.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ExpiringCoupon)]
#[serde(rename_all = "camelCase")]
struct ExpiringBody {
    code: String,
    campaign_id: i64,
    user_id: i64,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ExpiringCoupons)]
#[serde(rename_all = "camelCase")]
struct ExpiringPageBody {
    items: Vec<ExpiringBody>,
    /// Pass as `after` for the next page; null on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NoticesSent)]
struct NoticesBody {
    /// How many coupons were told now.
    notified: usize,
}

/// Create a coupon campaign (admin)
#[utoipa::path(
    post,
    path = "/api/v1/admin/coupon-campaigns",
    operation_id = "createCouponCampaign",
    tag = "coupons",
    request_body = CampaignBody,
    responses(
        (status = 201, description = "Created; its pool is empty until codes are generated or imported", body = CampaignJson),
        (status = 400, description = "`VALIDATION_FAILED` naming the field", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn create(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    Json(body): Json<CampaignBody>,
) -> Result<HttpResponse, ApiError> {
    let campaign = api.campaigns.create(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(CampaignJson::from(&campaign)))
}

/// A campaign and its pool
#[utoipa::path(
    get,
    path = "/api/v1/coupon-campaigns/{id}",
    operation_id = "getCouponCampaign",
    tag = "coupons",
    params(("id" = i64, Path, description = "The campaign id")),
    responses(
        (status = 200, description = "The campaign with `totalCodes`, `issuedCount` and `remainingCount`", body = CampaignViewJson),
        (status = 400, description = "`VALIDATION_FAILED`: the id is not an integer", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`CAMPAIGN_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn view(
    api: web::Data<CouponApi>,
    _caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let view = api.campaigns.view(CampaignId::new(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(CampaignViewJson::from(&view)))
}

/// Generate codes (admin)
///
/// Adds `count` random, unguessable codes (16 characters of Crockford base32)
/// to the campaign's pool.
#[utoipa::path(
    post,
    path = "/api/v1/admin/coupon-campaigns/{id}/codes",
    operation_id = "generateCouponCodes",
    tag = "coupons",
    params(("id" = i64, Path, description = "The campaign id")),
    request_body = CountBody,
    responses(
        (status = 201, description = "Generated", body = GeneratedBody),
        (status = 400, description = "`VALIDATION_FAILED`: count must be 1..=1,000,000", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`CAMPAIGN_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn generate(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    id: web::Path<i64>,
    Json(body): Json<CountBody>,
) -> Result<HttpResponse, ApiError> {
    let id = CampaignId::new(id.into_inner());
    let count = CodeCount::new(body.count).map_err(ApiError::from)?;
    let generated = api.campaigns.generate(id, count).await?;
    Ok(HttpResponse::Created().json(GeneratedBody {
        campaign_id: id.get(),
        generated,
    }))
}

/// A coupon held by a user; it expires `validDays` after it is issued.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Coupon)]
#[serde(rename_all = "camelCase")]
struct CouponJson {
    #[schema(example = "7K3M9QX2VD4HN8TB")]
    code: String,
    campaign_id: i64,
    campaign_name: String,
    status: CouponStatusJson,
    discount_type: DiscountTypeJson,
    discount_value: i64,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    used_at: Option<DateTime<Utc>>,
}

impl CouponJson {
    fn new(coupon: &Coupon, status: CouponStatus) -> Self {
        Self {
            code: coupon.code.as_str().to_owned(),
            campaign_id: coupon.campaign_id.get(),
            campaign_name: coupon.campaign_name.as_str().to_owned(),
            status: status.into(),
            discount_type: coupon.rule.kind().into(),
            discount_value: coupon.rule.value(),
            issued_at: coupon.issued_at,
            expires_at: coupon.expires_at,
            used_at: coupon.used_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// Only coupons in this state; all when left out.
    #[param(inline, value_type = Option<CouponStatusJson>)]
    status: Option<String>,
}

/// A code from the path; one that cannot exist is simply not found.
fn code(raw: &str) -> Result<CouponCode, ApiError> {
    CouponCode::parse(raw).map_err(|_| ApiError::from(RedeemError::NotFound))
}

/// Issue a coupon to the caller
///
/// First come, first served: one code of the campaign's pool, at most one
/// per user and campaign.
#[utoipa::path(
    post,
    path = "/api/v1/coupon-campaigns/{id}/issue",
    operation_id = "issueCoupon",
    tag = "coupons",
    params(("id" = i64, Path, description = "The campaign id")),
    responses(
        (status = 201, description = "Issued", body = CouponJson),
        (status = 400, description = "`VALIDATION_FAILED`: the id is not an integer", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`CAMPAIGN_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`COUPON_SOLD_OUT`, `COUPON_ALREADY_ISSUED`, `CAMPAIGN_NOT_ACTIVE` (outside the issue window)", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 429, description = "`RATE_LIMITED`: too many attempts by this user; `Retry-After` gives the seconds to wait", body = ProblemSchema, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds until the next attempt is admitted"))),
    ),
    security(("bearer" = [])),
)]
async fn issue(
    api: web::Data<CouponApi>,
    metrics: web::Data<Metrics>,
    throttle: web::Data<Throttle>,
    AuthUser(caller): AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    throttle
        .attempt(caller.user_id, Attempt::CouponIssue)
        .await?;
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

/// The caller's coupons
///
/// Ordered by `expiresAt`, soonest first.
#[utoipa::path(
    get,
    path = "/api/v1/coupons",
    operation_id = "listMyCoupons",
    tag = "coupons",
    params(PageQuery, StatusQuery),
    responses(
        (status = 200, description = "A page of coupons", body = PageBody<CouponJson>),
        (status = 400, description = "`VALIDATION_FAILED`: page, size or status out of range", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
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

/// Use a coupon
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{code}/use",
    operation_id = "useCoupon",
    tag = "coupons",
    params(("code" = String, Path, description = "The coupon code")),
    responses(
        (status = 200, description = "The coupon, now USED", body = CouponJson),
        (status = 404, description = "`COUPON_NOT_FOUND`, also for another user's code", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`COUPON_ALREADY_USED`, `COUPON_EXPIRED`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn redeem(
    api: web::Data<CouponApi>,
    AuthUser(caller): AuthUser,
    raw: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon = api.coupons.redeem(caller.user_id, &code(&raw)?).await??;
    Ok(HttpResponse::Ok().json(CouponJson::new(&coupon, api.coupons.status_of(&coupon))))
}

/// Cancel the use of a coupon
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{code}/cancel-use",
    operation_id = "cancelCouponUse",
    tag = "coupons",
    params(("code" = String, Path, description = "The coupon code")),
    responses(
        (status = 200, description = "The coupon, issued again", body = CouponJson),
        (status = 404, description = "`COUPON_NOT_FOUND`, also for another user's code", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`COUPON_NOT_USED`; `COUPON_ALREADY_USED` when an order consumed it (it comes back only with that order)", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExpiringQuery {
    /// The day (UTC) the coupons expire on; today when left out.
    #[param(format = Date, example = "2026-11-23")]
    date: Option<String>,
    /// Items per page.
    #[param(minimum = 1, maximum = 1_000, default = 100)]
    limit: Option<usize>,
    /// The `nextCursor` of the previous page (opaque: pass it back as it came).
    #[param(pattern = "^[0-9]{1,18}\\.[0-9]{1,18}$")]
    after: Option<String>,
}

/// The cursor is "<expiresAt in microseconds>.<id>": opaque to clients, exact for us.
fn cursor_of(expires_at: DateTime<Utc>, id: i64) -> String {
    format!("{}.{id}", expires_at.timestamp_micros())
}

/// Reads only what [`cursor_of`] writes for a coupon expiring after 1970:
/// two runs of 1 to 18 digits (`EXPIRING_CURSOR_PATTERN`), so the instant is
/// one Postgres can compare with. A wider reading once let `-999999999999999999.1`
/// through to Postgres, whose "timestamp out of range" answered 503.
fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = raw.split_once('.')?;
    let digits = |s: &str| (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(micros) || !digits(id) {
        return None;
    }
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// A day as RFC 3339 writes it, `YYYY-MM-DD` with a four-digit year (what
/// the parameter's `format: date` promises). chrono's `%Y` alone also reads
/// `-4800-01-01`, a day before the earliest Postgres timestamp, which then
/// failed in the query and answered 503.
fn parse_day(raw: &str) -> Option<chrono::NaiveDate> {
    let b = raw.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()
}

/// Coupons expiring on a day (admin)
///
/// Issued, unused coupons whose `expiresAt` falls on `date` (UTC),
/// cursor-paginated.
#[utoipa::path(
    get,
    path = "/api/v1/admin/coupons/expiring",
    operation_id = "listExpiringCoupons",
    tag = "coupons",
    params(ExpiringQuery),
    responses(
        (status = 200, description = "A page of expiring coupons", body = ExpiringPageBody),
        (status = 400, description = "`VALIDATION_FAILED`: date, limit or after cannot be read", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn expiring(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    query: web::Query<ExpiringQuery>,
) -> Result<HttpResponse, ApiError> {
    let date = match query.date.as_deref() {
        None => api.expiry.today(),
        Some(raw) => {
            parse_day(raw).ok_or_else(|| ApiError::invalid_field("date", "must be YYYY-MM-DD"))?
        }
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
    Ok(HttpResponse::Ok().json(ExpiringPageBody {
        items: items
            .iter()
            .map(|c| ExpiringBody {
                code: c.code.as_str().to_owned(),
                campaign_id: c.campaign_id.get(),
                user_id: c.user_id.get(),
                expires_at: c.expires_at,
            })
            .collect(),
        next_cursor,
    }))
}

/// Send expiry notices now (admin)
///
/// Every issued, unused coupon that expires within the next 3 days and has
/// not been told yet gets one notice (a JSON line on standard output).
/// Also runs once a day by itself.
#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/coupon-expiry-notices",
    operation_id = "sendCouponExpiryNotices",
    tag = "coupons",
    responses((status = 200, description = "Notices sent", body = NoticesBody)),
    security(("bearer" = [])),
)]
async fn send_notices(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
) -> Result<HttpResponse, ApiError> {
    let notified = api.expiry.send_notices().await?;
    Ok(HttpResponse::Ok().json(NoticesBody { notified }))
}

/// The body of an import, for the OpenAPI document (the handler streams it).
#[derive(Debug)]
struct CsvUpload;

impl utoipa::PartialSchema for CsvUpload {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        crate::schema::csv_upload()
    }
}

impl utoipa::ToSchema for CsvUpload {}

/// The largest CSV upload accepted: it is streamed, so this bounds time, not memory.
pub const IMPORT_LIMIT: usize = 200 * 1024 * 1024;

/// Import codes from CSV (admin)
///
/// A header line `code`, then one code per line (4 to 64 of `[A-Z0-9-]`).
/// Streamed: files of 100,000+ lines import in a few seconds with bounded
/// memory. Invalid lines are reported, not fatal.
#[utoipa::path(
    post,
    path = "/api/v1/admin/coupon-campaigns/{id}/codes/import",
    operation_id = "importCouponCodes",
    tag = "coupons",
    params(("id" = i64, Path, description = "The campaign id")),
    request_body(content = inline(CsvUpload), content_type = "text/csv", description = "`code` then one code per line", example = "code\nWINTER-0001\nWINTER-0002\n"),
    responses(
        (status = 200, description = "What was imported", body = ImportBody),
        (status = 400, description = "`VALIDATION_FAILED`: the header line is not `code`, or the upload cannot be read", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 404, description = "`CAMPAIGN_NOT_FOUND`", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: over 200 MiB", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
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
    match api
        .campaigns
        .import(CampaignId::new(id.into_inner()), chunks)
        .await
    {
        Ok(report) => Ok(HttpResponse::Ok().json(ImportBody {
            imported: report.imported,
            duplicates: report.duplicates,
            rejected: report
                .rejected
                .iter()
                .map(|r| RejectedBody {
                    line: r.line,
                    reason: r.reason,
                })
                .collect(),
            rejected_count: report.rejected_count,
        })),
        Err(_) if too_large.get() => Err(ApiError::payload_too_large(IMPORT_LIMIT)),
        Err(err) => Err(err.into()),
    }
}
