//! Value types of the coupon context.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::money::Points;
use crate::ordering::CouponCode;

use super::status::CouponStatus;

/// Database id of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignId(i64);

impl CampaignId {
    pub const fn new(raw: i64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a coupon discounts an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscountKind {
    /// A fixed number of points off.
    Amount,
    /// A percentage (1..=100) of the order total, rounded down.
    Percent,
}

impl DiscountKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Amount => "AMOUNT",
            Self::Percent => "PERCENT",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "AMOUNT" => Some(Self::Amount),
            "PERCENT" => Some(Self::Percent),
            _ => None,
        }
    }
}

/// A campaign field that does not make sense; names the field.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct InvalidCampaign {
    pub field: &'static str,
    pub message: &'static str,
}

fn invalid(field: &'static str, message: &'static str) -> InvalidCampaign {
    InvalidCampaign { field, message }
}

/// A campaign's discount: kind and value, an optional cap, a minimum order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscountRule {
    kind: DiscountKind,
    value: i64,
    max: Option<Points>,
    min_order: Points,
}

impl DiscountRule {
    /// # Errors
    /// [`InvalidCampaign`] for a value that is not positive, a percentage over
    /// 100, or a cap that is not positive.
    pub fn new(
        kind: DiscountKind,
        value: i64,
        max: Option<i64>,
        min_order: i64,
    ) -> Result<Self, InvalidCampaign> {
        if value <= 0 {
            return Err(invalid("discountValue", "must be greater than 0"));
        }
        if kind == DiscountKind::Percent && value > 100 {
            return Err(invalid("discountValue", "a percentage must be 1 to 100"));
        }
        let max = match max {
            None => None,
            Some(m) if m > 0 => Points::new(m),
            Some(_) => return Err(invalid("maxDiscountAmount", "must be greater than 0")),
        };
        let min_order =
            Points::new(min_order).ok_or_else(|| invalid("minOrderAmount", "must be 0 or more"))?;
        Ok(Self {
            kind,
            value,
            max,
            min_order,
        })
    }

    pub fn kind(&self) -> DiscountKind {
        self.kind
    }

    pub fn value(&self) -> i64 {
        self.value
    }

    pub fn max(&self) -> Option<Points> {
        self.max
    }

    pub fn min_order(&self) -> Points {
        self.min_order
    }

    /// The discount on an order of `total`: `None` below the minimum order;
    /// otherwise the amount, or the percentage rounded down, capped by the
    /// maximum, and never more than the total.
    pub fn discount_for(&self, total: Points) -> Option<Points> {
        if total < self.min_order {
            return None;
        }
        let raw = match self.kind {
            DiscountKind::Amount => self.value,
            // total <= i64::MAX and value <= 100: widen to avoid overflow.
            DiscountKind::Percent => {
                i64::try_from(i128::from(total.get()) * i128::from(self.value) / 100)
                    .unwrap_or(i64::MAX)
            }
        };
        let capped = self.max.map_or(raw, |m| raw.min(m.get()));
        Points::new(capped.min(total.get()))
    }
}

/// How long an issued coupon stays valid: 1..=3,650 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidDays(i32);

impl ValidDays {
    /// # Errors
    /// [`InvalidCampaign`] outside 1..=3,650.
    pub fn new(days: i64) -> Result<Self, InvalidCampaign> {
        match i32::try_from(days) {
            Ok(d) if (1..=3650).contains(&d) => Ok(Self(d)),
            _ => Err(invalid("validDays", "must be 1 to 3650")),
        }
    }

    pub const fn get(self) -> i32 {
        self.0
    }

    /// When a coupon issued at `issued_at` expires.
    pub fn expiry_from(self, issued_at: DateTime<Utc>) -> DateTime<Utc> {
        issued_at + chrono::Duration::days(i64::from(self.0))
    }
}

/// When codes may be issued; open-ended on either side when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IssueWindow {
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

impl IssueWindow {
    /// # Errors
    /// [`InvalidCampaign`] when the window ends before it starts.
    pub fn new(
        starts_at: Option<DateTime<Utc>>,
        ends_at: Option<DateTime<Utc>>,
    ) -> Result<Self, InvalidCampaign> {
        if let (Some(s), Some(e)) = (starts_at, ends_at)
            && s >= e
        {
            return Err(invalid("issueEndsAt", "must be after issueStartsAt"));
        }
        Ok(Self { starts_at, ends_at })
    }

    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.starts_at.is_none_or(|s| s <= now) && self.ends_at.is_none_or(|e| now < e)
    }
}

/// A campaign name: 1..=200 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignName(String);

impl CampaignName {
    /// # Errors
    /// [`InvalidCampaign`] when empty, too long or holding control characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidCampaign> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > 200 || trimmed.chars().any(char::is_control) {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A campaign about to be created.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: CampaignName,
    pub rule: DiscountRule,
    pub valid_days: ValidDays,
    pub window: IssueWindow,
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: CampaignId,
    pub name: CampaignName,
    pub rule: DiscountRule,
    pub valid_days: ValidDays,
    pub window: IssueWindow,
}

/// A campaign with the state of its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignView {
    pub campaign: Campaign,
    pub total_codes: i64,
    pub issued_count: i64,
}

impl CampaignView {
    pub fn remaining(&self) -> i64 {
        (self.total_codes - self.issued_count).max(0)
    }
}

/// How many codes to generate in one call: 1..=1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeCount(usize);

impl CodeCount {
    pub const MAX: usize = 1_000_000;

    /// # Errors
    /// [`InvalidCampaign`] outside 1..=1,000,000.
    pub fn new(count: i64) -> Result<Self, InvalidCampaign> {
        match usize::try_from(count) {
            Ok(c) if (1..=Self::MAX).contains(&c) => Ok(Self(c)),
            _ => Err(invalid("count", "must be 1 to 1000000")),
        }
    }

    pub const fn get(self) -> usize {
        self.0
    }
}

/// A coupon as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub code: CouponCode,
    pub campaign_id: CampaignId,
    pub campaign_name: CampaignName,
    pub rule: DiscountRule,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

impl Coupon {
    pub fn status(&self, now: DateTime<Utc>) -> CouponStatus {
        if self.used_at.is_some() {
            CouponStatus::Used
        } else if now >= self.expires_at {
            CouponStatus::Expired
        } else {
            CouponStatus::Issued
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn pts(n: i64) -> Points {
        Points::new(n).expect("non-negative")
    }

    #[test]
    fn an_amount_discount_is_never_more_than_the_total() {
        let rule = DiscountRule::new(DiscountKind::Amount, 3_000, None, 0).expect("valid");
        assert_eq!(rule.discount_for(pts(10_000)), Some(pts(3_000)));
        assert_eq!(rule.discount_for(pts(2_000)), Some(pts(2_000)));
    }

    #[test]
    fn a_percent_discount_rounds_down_and_is_capped() {
        let rule = DiscountRule::new(DiscountKind::Percent, 15, Some(2_000), 0).expect("valid");
        assert_eq!(rule.discount_for(pts(9_999)), Some(pts(1_499)));
        assert_eq!(rule.discount_for(pts(100_000)), Some(pts(2_000)), "capped");
        let uncapped = DiscountRule::new(DiscountKind::Percent, 100, None, 0).expect("valid");
        assert_eq!(uncapped.discount_for(pts(5_000)), Some(pts(5_000)));
        assert_eq!(
            uncapped.discount_for(pts(i64::MAX)),
            Some(pts(i64::MAX)),
            "no overflow"
        );
    }

    #[test]
    fn below_the_minimum_order_nothing_applies() {
        let rule = DiscountRule::new(DiscountKind::Amount, 1_000, None, 10_000).expect("valid");
        assert_eq!(rule.discount_for(pts(9_999)), None);
        assert_eq!(rule.discount_for(pts(10_000)), Some(pts(1_000)));
    }

    #[test]
    fn rules_refuse_nonsense_naming_the_field() {
        assert_eq!(
            DiscountRule::new(DiscountKind::Percent, 101, None, 0).map_err(|e| e.field),
            Err("discountValue")
        );
        assert_eq!(
            DiscountRule::new(DiscountKind::Amount, 0, None, 0).map_err(|e| e.field),
            Err("discountValue")
        );
        assert_eq!(
            DiscountRule::new(DiscountKind::Amount, 5, Some(0), 0).map_err(|e| e.field),
            Err("maxDiscountAmount")
        );
        assert_eq!(
            DiscountRule::new(DiscountKind::Amount, 5, None, -1).map_err(|e| e.field),
            Err("minOrderAmount")
        );
        assert_eq!(ValidDays::new(0).map_err(|e| e.field), Err("validDays"));
        assert_eq!(CodeCount::new(1_000_001).map_err(|e| e.field), Err("count"));
    }

    #[test]
    fn the_window_is_half_open_and_status_follows_the_clock() {
        let at = |h| {
            Utc.with_ymd_and_hms(2026, 11, 23, h, 0, 0)
                .single()
                .expect("valid")
        };
        let window = IssueWindow::new(Some(at(9)), Some(at(18))).expect("valid");
        assert!(!window.is_open(at(8)) && window.is_open(at(9)) && !window.is_open(at(18)));
        assert!(IssueWindow::new(Some(at(9)), Some(at(9))).is_err());

        let coupon = Coupon {
            code: CouponCode::parse("ABCD-1234").expect("valid"),
            campaign_id: CampaignId::new(1),
            campaign_name: CampaignName::parse("c").expect("valid"),
            rule: DiscountRule::new(DiscountKind::Amount, 1, None, 0).expect("valid"),
            issued_at: at(1),
            expires_at: at(10),
            used_at: None,
        };
        assert_eq!(coupon.status(at(9)), CouponStatus::Issued);
        assert_eq!(coupon.status(at(10)), CouponStatus::Expired);
        assert_eq!(
            Coupon {
                used_at: Some(at(2)),
                ..coupon
            }
            .status(at(12)),
            CouponStatus::Used
        );
    }
}
