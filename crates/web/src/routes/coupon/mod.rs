//! The coupon routes. Campaigns and their codes are in `campaigns.rs`, the
//! CSV import in `import.rs`, a holder's coupons (issue, list, use, give
//! back) in `holders.rs`, and the admin's expiring list and notice trigger
//! in `expiry.rs`. What they share, the use cases and the discount type,
//! is here.

pub(crate) mod campaigns;
pub(crate) mod expiry;
pub(crate) mod holders;
pub(crate) mod import;

use std::sync::Arc;

use actix_web::web;
use application::coupon::{
    CampaignQueries, CancelCouponUse, CouponQueries, CreateCampaign, ExpiringCoupons,
    GenerateCodes, ImportCodes, IssueCoupon, SendExpiryNotices, UseCoupon,
};
use domain::coupon::DiscountKind;
use serde::Serialize;
use utoipa::ToSchema;

use crate::admission::{Family, bounded};

/// The coupon use cases the routes call.
#[derive(Debug, Clone)]
pub struct CouponApi {
    pub create_campaign: Arc<CreateCampaign>,
    pub generate_codes: Arc<GenerateCodes>,
    pub import_codes: Arc<ImportCodes>,
    pub campaign_queries: Arc<CampaignQueries>,
    pub issue: Arc<IssueCoupon>,
    pub use_coupon: Arc<UseCoupon>,
    pub cancel_use: Arc<CancelCouponUse>,
    pub coupon_queries: Arc<CouponQueries>,
    pub expiring: Arc<ExpiringCoupons>,
    pub send_notices: Arc<SendExpiryNotices>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/coupon-campaigns").route(web::post().to(campaigns::create)))
        .service(
            web::resource("/admin/coupon-campaigns/{id}/codes")
                .route(web::post().to(campaigns::generate)),
        )
        .service(
            web::resource("/admin/coupon-campaigns/{id}/codes/import")
                .route(web::post().to(import::import)),
        )
        .service(web::resource("/coupon-campaigns/{id}").route(web::get().to(campaigns::view)))
        .service(
            web::resource("/coupon-campaigns/{id}/issue").route(
                web::post()
                    .to(holders::issue)
                    .wrap(bounded(Family::CouponIssues)),
            ),
        )
        .service(web::resource("/coupons").route(web::get().to(holders::mine)))
        .service(web::resource("/admin/coupons/expiring").route(web::get().to(expiry::expiring)))
        .service(
            web::resource("/admin/jobs/coupon-expiry-notices")
                .route(web::post().to(expiry::send_notices)),
        )
        .service(web::resource("/coupons/{code}/use").route(web::post().to(holders::redeem)))
        .service(
            web::resource("/coupons/{code}/cancel-use")
                .route(web::post().to(holders::cancel_redeem)),
        );
}

/// How a campaign's coupons discount an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = DiscountType)]
#[serde(rename_all = "UPPERCASE")]
pub(super) enum DiscountTypeJson {
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
