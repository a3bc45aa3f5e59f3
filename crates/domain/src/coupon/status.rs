//! Where a coupon stands, and reading that from a client's `?status=`.
//! EXPIRED is derived from a clock, never stored, so a stored row has no
//! status text to read; the store turns a status into its own filter.

use thiserror::Error;

/// Where a coupon stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponStatus {
    Issued,
    Used,
    Expired,
}

/// A status that is none of `ISSUED`, `USED`, `EXPIRED`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be ISSUED, USED or EXPIRED")]
pub struct InvalidCouponStatus;

impl CouponStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "ISSUED",
            Self::Used => "USED",
            Self::Expired => "EXPIRED",
        }
    }

    /// Reads a status as the API writes it (upper case, exactly).
    ///
    /// # Errors
    /// [`InvalidCouponStatus`] for anything else.
    pub fn parse(raw: &str) -> Result<Self, InvalidCouponStatus> {
        match raw {
            "ISSUED" => Ok(Self::Issued),
            "USED" => Ok(Self::Used),
            "EXPIRED" => Ok(Self::Expired),
            _ => Err(InvalidCouponStatus),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_back_what_it_writes_and_nothing_else() {
        for status in [
            CouponStatus::Issued,
            CouponStatus::Used,
            CouponStatus::Expired,
        ] {
            assert_eq!(CouponStatus::parse(status.as_str()), Ok(status));
        }
        for raw in ["", "issued", "Used", "ISSUED ", "REVOKED"] {
            assert_eq!(
                CouponStatus::parse(raw),
                Err(InvalidCouponStatus),
                "{raw:?}"
            );
        }
    }
}
