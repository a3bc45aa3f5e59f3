//! Value types of the points context.

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::identity::UserId;
use crate::money::Points;

/// The most points one wallet may hold.
pub const MAX_BALANCE: Points = match Points::new(100_000_000) {
    Some(p) => p,
    None => Points::ZERO,
};

/// An amount for one charge: 1,000..=1,000,000 points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeAmount(Points);

#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[error("a charge must be between {min} and {max} points")]
pub struct InvalidChargeAmount {
    pub min: i64,
    pub max: i64,
}

impl ChargeAmount {
    pub const MIN: i64 = 1_000;
    pub const MAX: i64 = 1_000_000;

    /// # Errors
    /// [`InvalidChargeAmount`] outside 1,000..=1,000,000.
    pub fn new(amount: i64) -> Result<Self, InvalidChargeAmount> {
        match Points::new(amount) {
            Some(points) if (Self::MIN..=Self::MAX).contains(&amount) => Ok(Self(points)),
            _ => Err(InvalidChargeAmount {
                min: Self::MIN,
                max: Self::MAX,
            }),
        }
    }

    pub fn points(self) -> Points {
        self.0
    }
}

/// A user's balance at the moment of the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wallet {
    pub user_id: UserId,
    pub balance: Points,
}

/// What a successful charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeReceipt {
    pub user_id: UserId,
    pub balance: Points,
    pub charged: Points,
}

/// Why a charge was refused. Either way the refusal is stored under the
/// idempotency key and replayed.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum ChargeError {
    /// The amount is outside 1,000..=1,000,000.
    #[error(transparent)]
    InvalidAmount(#[from] InvalidChargeAmount),
    /// The balance would exceed [`MAX_BALANCE`].
    #[error("the balance would exceed {max} points")]
    BalanceLimitExceeded { max: i64 },
}

/// Why the balance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    Charge,
    Payment,
    Refund,
}

impl LedgerKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "CHARGE",
            Self::Payment => "PAYMENT",
            Self::Refund => "REFUND",
        }
    }

    /// `None` for an unknown name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "CHARGE" => Some(Self::Charge),
            "PAYMENT" => Some(Self::Payment),
            "REFUND" => Some(Self::Refund),
            _ => None,
        }
    }
}

/// One change of a balance. `amount` is always positive; `kind` says which way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: LedgerKind,
    pub amount: Points,
    pub balance_after: Points,
    pub order_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_amounts_are_bounded() {
        assert!(ChargeAmount::new(1_000).is_ok());
        assert!(ChargeAmount::new(1_000_000).is_ok());
        assert!(ChargeAmount::new(999).is_err());
        assert!(ChargeAmount::new(1_000_001).is_err());
        assert!(ChargeAmount::new(-5_000).is_err());
        assert_eq!(MAX_BALANCE.get(), 100_000_000);
    }

    #[test]
    fn ledger_kinds_round_trip() {
        for kind in [LedgerKind::Charge, LedgerKind::Payment, LedgerKind::Refund] {
            assert_eq!(LedgerKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(LedgerKind::parse("GIFT"), None);
    }
}
