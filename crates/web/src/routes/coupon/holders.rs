//! A holder's coupons: issuing one first come first served, the caller's
//! list, using a coupon and giving it back.

use actix_web::{HttpResponse, web};
use application::throttle::{Attempt, Throttle};
use chrono::{DateTime, Utc};
use domain::coupon::{CampaignId, Coupon, CouponStatus, RedeemError};
use domain::ordering::CouponCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{CouponApi, DiscountTypeJson};
use crate::extract::{AuthUser, PageParams, PageQuery};
use crate::metrics::Metrics;
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};
use crate::routes::PageBody;

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
pub(super) struct StatusQuery {
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
pub(super) async fn issue(
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
        .issue
        .execute(CampaignId::new(id.into_inner()), caller.user_id)
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
    Ok(HttpResponse::Created().json(CouponJson::new(
        &coupon,
        api.coupon_queries.status_of(&coupon),
    )))
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
pub(super) async fn mine(
    api: web::Data<CouponApi>,
    AuthUser(caller): AuthUser,
    PageParams(page): PageParams,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(CouponStatus::parse)
        .transpose()
        .map_err(|e| ApiError::invalid_field("status", e.to_string()))?;
    let page = api
        .coupon_queries
        .mine(caller.user_id, status, page)
        .await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, |c| {
        let status = api.coupon_queries.status_of(&c);
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
pub(super) async fn redeem(
    api: web::Data<CouponApi>,
    AuthUser(caller): AuthUser,
    raw: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon = api.use_coupon.execute(caller.user_id, &code(&raw)?).await?;
    Ok(HttpResponse::Ok().json(CouponJson::new(
        &coupon,
        api.coupon_queries.status_of(&coupon),
    )))
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
pub(super) async fn cancel_redeem(
    api: web::Data<CouponApi>,
    AuthUser(caller): AuthUser,
    raw: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon = api.cancel_use.execute(caller.user_id, &code(&raw)?).await?;
    Ok(HttpResponse::Ok().json(CouponJson::new(
        &coupon,
        api.coupon_queries.status_of(&coupon),
    )))
}
