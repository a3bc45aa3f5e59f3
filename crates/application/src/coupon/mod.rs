//! Coupon use cases: campaigns and their pools of codes; issuing, listing,
//! using and giving back coupons; the expiring list and its notices. One
//! file per use case, named after its type.

mod campaign_queries;
mod cancel_coupon_use;
mod code_csv;
mod coupon_queries;
mod create_campaign;
mod expiring_coupons;
mod generate_codes;
mod import_codes;
mod issue_coupon;
mod send_expiry_notices;
mod use_coupon;

pub use campaign_queries::CampaignQueries;
pub use cancel_coupon_use::CancelCouponUse;
pub use code_csv::{CodeRows, Row as CsvRow};
pub use coupon_queries::CouponQueries;
pub use create_campaign::CreateCampaign;
pub use expiring_coupons::ExpiringCoupons;
pub use generate_codes::GenerateCodes;
pub use import_codes::{
    ImportCodes, ImportError, ImportReport, MAX_LINE, MAX_LISTED_REJECTIONS, Rejected, import_codes,
};
pub use issue_coupon::{IssueCoupon, IssueCouponError};
pub use send_expiry_notices::{NOTICE_AHEAD, SendExpiryNotices};
pub use use_coupon::UseCoupon;

use domain::coupon::{AddCodesError, CampaignId, RedeemError};
use domain::error::Unavailable;
use thiserror::Error;

/// Codes are written in batches of this many, each its own short
/// transaction: a million codes never sit in one transaction's memory.
pub const CODE_BATCH: usize = 10_000;

/// Why a coupon could not be used or given back: the store's refusal, or a
/// failure of the store.
#[derive(Debug, Error)]
pub enum RedeemCouponError {
    #[error(transparent)]
    Refused(#[from] RedeemError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a campaign could not be read or its pool filled.
#[derive(Debug, Error)]
pub enum CampaignError {
    #[error("campaign {0} does not exist")]
    NotFound(CampaignId),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<AddCodesError> for CampaignError {
    fn from(err: AddCodesError) -> Self {
        match err {
            AddCodesError::CampaignNotFound(id) => Self::NotFound(id),
            AddCodesError::Unavailable(u) => Self::Unavailable(u),
        }
    }
}
