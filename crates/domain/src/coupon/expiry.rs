//! Coupons about to expire: the admin's expiring list (and its cursor) and
//! the notice each owner is sent. The ports that move them are in `ports.rs`.
//!
//! A notice is claimed, written, then marked sent. A run that dies between
//! the claim and the mark leaves a claim that lapses, and a later run writes
//! the notice again under the same [`NoticeId`]: a consumer drops the
//! repeat, and no notice is lost.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

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

/// A position in the expiring list: just after the coupon that expires at
/// `expires_at` with row `id`. Clients see it as `<expiresAt in µs>.<id>`,
/// an opaque string to pass back as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiringCursor {
    expires_at: DateTime<Utc>,
    id: i64,
}

/// A cursor this list never wrote.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("is not a cursor from this list")]
pub struct InvalidCursor;

impl ExpiringCursor {
    /// The position just after `coupon`.
    pub fn after(coupon: &ExpiringCoupon) -> Self {
        Self {
            expires_at: coupon.expires_at,
            id: coupon.id,
        }
    }

    /// Reads only what [`Display`](fmt::Display) writes for a coupon
    /// expiring after 1970: two runs of 1 to 18 digits. That keeps the
    /// instant inside what Postgres can compare with, so a forged cursor is
    /// a client's mistake, never a failed query.
    ///
    /// # Errors
    /// [`InvalidCursor`] for anything else.
    pub fn parse(raw: &str) -> Result<Self, InvalidCursor> {
        let (micros, id) = raw.split_once('.').ok_or(InvalidCursor)?;
        let digits = |s: &str| (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(micros) || !digits(id) {
            return Err(InvalidCursor);
        }
        let micros = micros.parse().map_err(|_| InvalidCursor)?;
        Ok(Self {
            expires_at: DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?,
            id: id.parse().map_err(|_| InvalidCursor)?,
        })
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    pub fn id(&self) -> i64 {
        self.id
    }
}

impl fmt::Display for ExpiringCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.expires_at.timestamp_micros(), self.id)
    }
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

    #[test]
    fn a_cursor_reads_back_the_position_it_was_written_from() {
        let coupon = ExpiringCoupon {
            id: 17,
            code: CouponCode::parse("ABCD-1234").expect("valid"),
            campaign_id: CampaignId::new(1),
            user_id: UserId::new(7),
            expires_at: Utc
                .with_ymd_and_hms(2030, 1, 2, 0, 5, 0)
                .single()
                .expect("valid"),
        };
        let cursor = ExpiringCursor::after(&coupon);

        let read = ExpiringCursor::parse(&cursor.to_string()).expect("readable");

        assert_eq!(read, cursor);
        assert_eq!((read.expires_at(), read.id()), (coupon.expires_at, 17));
    }

    #[test]
    fn a_cursor_outside_what_the_list_writes_is_refused() {
        for raw in [
            "",
            "12",
            "1.",
            ".1",
            "-999999999999999999.1",
            "1.-1",
            "1234567890123456789.1",
            "1.2.3",
            "1e3.4",
        ] {
            assert_eq!(ExpiringCursor::parse(raw), Err(InvalidCursor), "{raw:?}");
        }
        assert!(ExpiringCursor::parse("999999999999999999.999999999999999999").is_ok());
        assert!(ExpiringCursor::parse("0.0").is_ok());
    }
}
