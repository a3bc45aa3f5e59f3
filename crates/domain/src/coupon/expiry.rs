//! Coupons about to expire: the admin's expiring list and the notice each
//! owner is sent once. The ports that move them are in `ports.rs`.
//!
//! A notice is claimed, written, then marked sent. A run that dies between
//! the claim and the mark leaves a claim that lapses, and a later run writes
//! the notice again under the same [`NoticeId`]: a consumer drops the
//! repeat, and no notice is lost.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::identity::UserId;
use crate::ordering::CouponCode;

use super::models::CampaignId;

/// An issued, unused coupon in an admin's expiring list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringCoupon {
    /// Position in the list, for the cursor.
    pub id: i64,
    pub code: CouponCode,
    pub campaign_id: CampaignId,
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
}

/// The id a consumer of notices deduplicates on. It is derived from the
/// coupon and its expiry, so every writing of one coupon's notice carries
/// the same id, whichever run writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NoticeId(String);

impl NoticeId {
    pub fn of(coupon_id: i64, expires_at: DateTime<Utc>) -> Self {
        Self(format!(
            "coupon-{coupon_id}-{}",
            expires_at.format("%Y%m%dT%H%M%S%.6fZ")
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NoticeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A coupon whose owner must hear it expires soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryNotice {
    /// The coupon's row, which the run marks once the notice is written.
    pub coupon_id: i64,
    pub user_id: UserId,
    pub code: CouponCode,
    pub expires_at: DateTime<Utc>,
}

impl ExpiryNotice {
    pub fn notice_id(&self) -> NoticeId {
        NoticeId::of(self.coupon_id, self.expires_at)
    }
}

/// The token of one run's claim on a batch of notices. Marking checks it, so
/// a run whose claim lapsed and was taken over marks nothing of the new
/// holder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeClaim(i64);

impl NoticeClaim {
    pub const fn new(token: i64) -> Self {
        Self(token)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

/// What one claim took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedNotices {
    pub claim: NoticeClaim,
    /// The claimed coupons that could be read, to be written and marked.
    pub notices: Vec<ExpiryNotice>,
    /// Every coupon claimed, readable or not. An unreadable one stays
    /// claimed and unmarked, so it is tried again when its claim lapses.
    pub claimed: usize,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn notice(coupon_id: i64, second: u32) -> ExpiryNotice {
        ExpiryNotice {
            coupon_id,
            user_id: UserId::new(7),
            code: CouponCode::parse("ABCD-1234").expect("valid"),
            expires_at: Utc
                .with_ymd_and_hms(2026, 12, 4, 9, 30, second)
                .single()
                .expect("valid"),
        }
    }

    #[test]
    fn a_coupons_notice_keeps_its_id_and_another_coupons_differs() {
        assert_eq!(notice(42, 0).notice_id(), notice(42, 0).notice_id());
        assert_eq!(
            notice(42, 0).notice_id().as_str(),
            "coupon-42-20261204T093000.000000Z"
        );
        assert_ne!(notice(42, 0).notice_id(), notice(43, 0).notice_id());
        assert_ne!(notice(42, 0).notice_id(), notice(42, 1).notice_id());
    }
}
