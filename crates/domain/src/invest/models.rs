//! Value types of the invest context.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::identity::UserId;
use crate::money::Points;

/// Database id of an investment product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvestProductId(i64);

impl InvestProductId {
    pub const fn new(raw: i64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for InvestProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Database id of one investment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvestmentId(i64);

impl InvestmentId {
    pub const fn new(raw: i64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for InvestmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A field of a new product that does not make sense; names the field.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct InvalidInvestProduct {
    pub field: &'static str,
    pub message: &'static str,
}

fn invalid(field: &'static str, message: &'static str) -> InvalidInvestProduct {
    InvalidInvestProduct { field, message }
}

/// A product title: 1..=200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvestTitle(String);

impl InvestTitle {
    pub const MAX_CHARS: usize = 200;

    /// # Errors
    /// [`InvalidInvestProduct`] when empty after trimming, too long or holding
    /// control characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidInvestProduct> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS || trimmed.chars().any(char::is_control) {
            return Err(invalid(
                "title",
                "must be 1 to 200 characters without control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount of money invested or recruited: 1 ..= 1,000,000,000,000 KRW.
///
/// The upper bound keeps `current + amount` far from `i64` overflow in SQL
/// and in the gate's Lua (whose numbers are doubles, exact up to 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InvestAmount(i64);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be between 1 and {max}")]
pub struct InvalidInvestAmount {
    pub max: i64,
}

impl InvestAmount {
    pub const MAX: i64 = 1_000_000_000_000;

    /// # Errors
    /// [`InvalidInvestAmount`] outside 1..=[`Self::MAX`].
    pub fn new(value: i64) -> Result<Self, InvalidInvestAmount> {
        if (1..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(InvalidInvestAmount { max: Self::MAX })
        }
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn points(self) -> Points {
        Points::new(self.0).unwrap_or(Points::ZERO)
    }
}

/// When a product recruits: from `started_at` to `finished_at`, both
/// included, and never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecruitingWindow {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
}

impl RecruitingWindow {
    /// # Errors
    /// [`InvalidInvestProduct`] naming `finishedAt` unless it is after `startedAt`.
    pub fn new(
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    ) -> Result<Self, InvalidInvestProduct> {
        if finished_at <= started_at {
            return Err(invalid("finishedAt", "must be after startedAt"));
        }
        Ok(Self {
            started_at,
            finished_at,
        })
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    pub fn finished_at(&self) -> DateTime<Utc> {
        self.finished_at
    }

    /// `started_at <= now <= finished_at`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.started_at <= now && now <= self.finished_at
    }
}

/// What an admin creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvestProduct {
    pub title: InvestTitle,
    pub total: InvestAmount,
    pub window: RecruitingWindow,
}

/// Whether a product still takes money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvestStatus {
    Ongoing,
    /// The target is reached.
    Complete,
}

impl InvestStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ongoing => "ONGOING",
            Self::Complete => "COMPLETE",
        }
    }
}

/// An investment product as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvestProduct {
    pub id: InvestProductId,
    pub title: InvestTitle,
    /// The target.
    pub total: Points,
    /// What is invested so far; never more than `total`.
    pub current: Points,
    /// Distinct investors.
    pub investors: i64,
    pub window: RecruitingWindow,
}

impl InvestProduct {
    /// What can still be invested.
    pub fn remaining(&self) -> Points {
        self.total.checked_sub(self.current).unwrap_or(Points::ZERO)
    }

    pub fn status(&self) -> InvestStatus {
        if self.remaining() == Points::ZERO {
            InvestStatus::Complete
        } else {
            InvestStatus::Ongoing
        }
    }

    /// Whether `amount` may be invested at `now`: inside the window (checked
    /// first: a closed product is closed, full or not), something left, and
    /// no more than what is left. Never partly accepted.
    ///
    /// # Errors
    /// The [`InvestError`] that refuses it.
    pub fn admit(&self, amount: InvestAmount, now: DateTime<Utc>) -> Result<(), InvestError> {
        if !self.window.is_open(now) {
            return Err(InvestError::NotInRecruitingPeriod {
                product_id: self.id,
            });
        }
        refusal_for(self.id, amount, self.remaining()).map_or(Ok(()), Err)
    }
}

/// The refusal for `amount` when `remaining` is left, if any: [`InvestError::SoldOut`]
/// when nothing is left, [`InvestError::AmountExceedsRemaining`] when too little.
pub fn refusal_for(
    product_id: InvestProductId,
    amount: InvestAmount,
    remaining: Points,
) -> Option<InvestError> {
    if remaining == Points::ZERO {
        Some(InvestError::SoldOut { product_id })
    } else if amount.get() > remaining.get() {
        Some(InvestError::AmountExceedsRemaining {
            product_id,
            remaining,
        })
    } else {
        None
    }
}

/// One accepted investment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Investment {
    pub id: InvestmentId,
    pub product_id: InvestProductId,
    pub user_id: UserId,
    pub amount: InvestAmount,
    pub invested_at: DateTime<Utc>,
}

/// One of the caller's investments, with its product's title and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyInvestment {
    pub investment: Investment,
    pub title: InvestTitle,
    pub total: Points,
}

/// What a user put into one product, all investments together (the
/// first-generation "my investments" view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyProductTotal {
    pub product_id: InvestProductId,
    pub title: InvestTitle,
    /// The product's target.
    pub total: Points,
    /// The sum of the user's investments in it.
    pub mine: Points,
    /// When the user last invested in it.
    pub last_invested_at: DateTime<Utc>,
}

/// Why an investment was refused. Each is stored under the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvestError {
    #[error("investment product {product_id} does not exist")]
    ProductNotFound { product_id: InvestProductId },
    #[error("investment product {product_id} is not recruiting now")]
    NotInRecruitingPeriod { product_id: InvestProductId },
    #[error("investment product {product_id} has reached its target")]
    SoldOut { product_id: InvestProductId },
    #[error("only {remaining} can still be invested in product {product_id}")]
    AmountExceedsRemaining {
        product_id: InvestProductId,
        remaining: Points,
    },
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, hour, minute, second)
            .single()
            .expect("valid")
    }

    fn amount(v: i64) -> InvestAmount {
        InvestAmount::new(v).expect("valid amount")
    }

    fn product(total: i64, current: i64) -> InvestProduct {
        InvestProduct {
            id: InvestProductId::new(7),
            title: InvestTitle::parse("Solar farm").expect("valid"),
            total: Points::new(total).expect("valid"),
            current: Points::new(current).expect("valid"),
            investors: 0,
            window: RecruitingWindow::new(at(9, 0, 0), at(18, 0, 0)).expect("valid"),
        }
    }

    #[test]
    fn a_window_must_not_be_empty() {
        assert_eq!(
            RecruitingWindow::new(at(9, 0, 0), at(9, 0, 0)),
            Err(invalid("finishedAt", "must be after startedAt"))
        );
        assert!(RecruitingWindow::new(at(10, 0, 0), at(9, 0, 0)).is_err());
        assert!(RecruitingWindow::new(at(9, 0, 0), at(9, 0, 1)).is_ok());
    }

    #[test]
    fn the_window_includes_both_edges() {
        let p = product(100, 0);
        assert_eq!(p.admit(amount(1), at(9, 0, 0)), Ok(()));
        assert_eq!(p.admit(amount(1), at(18, 0, 0)), Ok(()));
        let closed = Err(InvestError::NotInRecruitingPeriod { product_id: p.id });
        assert_eq!(p.admit(amount(1), at(8, 59, 59)), closed);
        assert_eq!(p.admit(amount(1), at(18, 0, 1)), closed);
    }

    #[test]
    fn exactly_what_remains_is_accepted_and_one_more_is_refused() {
        let p = product(5_000, 4_000);
        assert_eq!(p.admit(amount(1_000), at(12, 0, 0)), Ok(()));
        assert_eq!(
            p.admit(amount(1_001), at(12, 0, 0)),
            Err(InvestError::AmountExceedsRemaining {
                product_id: p.id,
                remaining: Points::new(1_000).expect("valid"),
            })
        );
    }

    #[test]
    fn a_full_product_is_sold_out_and_complete() {
        let p = product(5_000, 5_000);
        assert_eq!(p.status(), InvestStatus::Complete);
        assert_eq!(
            p.admit(amount(1), at(12, 0, 0)),
            Err(InvestError::SoldOut { product_id: p.id })
        );
        assert_eq!(product(5_000, 4_999).status(), InvestStatus::Ongoing);
        // Closed wins over full: the product is no longer recruiting at all.
        assert_eq!(
            p.admit(amount(1), at(19, 0, 0)),
            Err(InvestError::NotInRecruitingPeriod { product_id: p.id })
        );
    }

    #[test]
    fn amounts_and_titles_are_bounded() {
        assert!(InvestAmount::new(0).is_err());
        assert!(InvestAmount::new(-5).is_err());
        assert!(InvestAmount::new(1).is_ok());
        assert!(InvestAmount::new(InvestAmount::MAX).is_ok());
        assert!(InvestAmount::new(InvestAmount::MAX + 1).is_err());
        assert_eq!(
            InvestTitle::parse("  Wind  ").map(|t| t.as_str().to_owned()),
            Ok("Wind".to_owned())
        );
        assert!(InvestTitle::parse("   ").is_err());
        assert!(InvestTitle::parse(&"t".repeat(201)).is_err());
        assert!(InvestTitle::parse("line\nbreak").is_err());
    }
}
