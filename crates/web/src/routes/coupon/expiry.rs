//! The admin's list of coupons expiring on a day, and the trigger that
//! sends the expiry notices now.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain::coupon::ExpiringCursor;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::CouponApi;
use crate::extract::AdminUser;
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};

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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ExpiringQuery {
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

/// A day as RFC 3339 writes it, `YYYY-MM-DD` with a four-digit year (what
/// the parameter's `format: date` promises). chrono's `%Y` alone also reads
/// signed and five-digit years, days outside what Postgres can hold, and
/// those must be the client's 400, not a failed query.
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
pub(super) async fn expiring(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    query: web::Query<ExpiringQuery>,
) -> Result<HttpResponse, ApiError> {
    let date = match query.date.as_deref() {
        None => api.expiring.today(),
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
            ExpiringCursor::parse(raw).map_err(|e| ApiError::invalid_field("after", e.to_string()))
        })
        .transpose()?;
    let items = api.expiring.expiring_on(date, after, limit).await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|c| ExpiringCursor::after(c).to_string()))
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
/// not been told yet gets a notice: a JSON line on standard output with a
/// stable `noticeId`. A line is repeated only after a run died between
/// writing and recording it, and then with the same `noticeId`. Also runs
/// once a day by itself.
#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/coupon-expiry-notices",
    operation_id = "sendCouponExpiryNotices",
    tag = "coupons",
    responses((status = 200, description = "Notices sent", body = NoticesBody)),
    security(("bearer" = [])),
)]
pub(super) async fn send_notices(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
) -> Result<HttpResponse, ApiError> {
    let notified = api.send_notices.execute().await?;
    Ok(HttpResponse::Ok().json(NoticesBody { notified }))
}
