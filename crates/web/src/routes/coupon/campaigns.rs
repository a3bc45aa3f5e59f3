//! Campaigns: admins create them and fill their pools with generated codes;
//! anyone signed in sees a campaign and how many codes remain.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain::coupon::{
    Campaign, CampaignId, CampaignName, CampaignView, CodeCount, DiscountKind, DiscountRule,
    IssueWindow, NewCampaign, ValidDays,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CouponApi, DiscountTypeJson};
use crate::extract::{AdminUser, AuthUser, Json};
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewCampaign)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CampaignBody {
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
    #[schema(schema_with = crate::schema::issue_starts)]
    issue_starts_at: Option<DateTime<Utc>>,
    #[schema(schema_with = crate::schema::issue_ends)]
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
#[serde(deny_unknown_fields)]
pub(super) struct CountBody {
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
pub(super) async fn create(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    Json(body): Json<CampaignBody>,
) -> Result<HttpResponse, ApiError> {
    let campaign = api.create_campaign.execute(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(CampaignJson::from(&campaign)))
}

/// A campaign and its pool
///
/// The counts may lag the latest issues by up to the service's read-cache
/// bound (`APP_READ_CACHE_BOUND`, 1 s by default); codes added show at once.
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
pub(super) async fn view(
    api: web::Data<CouponApi>,
    _caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let view = api
        .campaign_queries
        .view(CampaignId::new(id.into_inner()))
        .await?;
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
pub(super) async fn generate(
    api: web::Data<CouponApi>,
    _admin: AdminUser,
    id: web::Path<i64>,
    Json(body): Json<CountBody>,
) -> Result<HttpResponse, ApiError> {
    let id = CampaignId::new(id.into_inner());
    let count = CodeCount::new(body.count).map_err(ApiError::from)?;
    let generated = api.generate_codes.execute(id, count).await?;
    Ok(HttpResponse::Created().json(GeneratedBody {
        campaign_id: id.get(),
        generated,
    }))
}
