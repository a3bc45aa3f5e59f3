//! Money: whole points (1 point = 1 KRW, no minor units) as a newtype over
//! `i64` with checked arithmetic, so an overflow is an error, never a wrap.

use std::fmt;

/// An amount of points. May be zero; never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Points(i64);

impl Points {
    pub const ZERO: Self = Self(0);

    /// `None` for a negative value.
    pub const fn new(value: i64) -> Option<Self> {
        if value < 0 { None } else { Some(Self(value)) }
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `None` when the result would be negative.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).and_then(Self::new)
    }

    /// `None` on overflow.
    pub fn checked_mul(self, factor: i64) -> Option<Self> {
        self.0.checked_mul(factor).and_then(Self::new)
    }
}

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked() {
        let a = Points::new(5).expect("non-negative");
        let b = Points::new(7).expect("non-negative");
        assert_eq!(a.checked_add(b).map(Points::get), Some(12));
        assert_eq!(b.checked_sub(a).map(Points::get), Some(2));
        assert_eq!(a.checked_sub(b), None, "never negative");
        assert_eq!(
            Points::new(i64::MAX).and_then(|m| m.checked_add(a)),
            None,
            "no wrap"
        );
        assert_eq!(a.checked_mul(3).map(Points::get), Some(15));
        assert_eq!(Points::new(-1), None);
    }
}
