//! Value types of ordering.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::catalog::{ProductId, ProductName};
use crate::identity::UserId;
use crate::money::Points;

/// Database id of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(i64);

impl OrderId {
    pub const fn new(raw: i64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many units of one product: 1..=1,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 1_000;

    /// `None` outside 1..=1,000.
    pub fn new(units: i64) -> Option<Self> {
        (1..=Self::MAX).contains(&units).then_some(Self(units))
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

/// What a client asked for: 1..=50 distinct products, each with a quantity,
/// kept in product-id order (the order stock is taken in, so two orders can
/// never deadlock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    lines: Vec<(ProductId, Quantity)>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidOrderRequest {
    #[error("an order needs at least one item")]
    Empty,
    #[error("an order may hold at most {max} products")]
    TooManyItems { max: usize },
    #[error("product {0} appears more than once")]
    DuplicateProduct(ProductId),
}

impl OrderRequest {
    pub const MAX_ITEMS: usize = 50;

    /// # Errors
    /// [`InvalidOrderRequest`] for no items, more than 50, or a product twice.
    pub fn new(lines: Vec<(ProductId, Quantity)>) -> Result<Self, InvalidOrderRequest> {
        if lines.is_empty() {
            return Err(InvalidOrderRequest::Empty);
        }
        if lines.len() > Self::MAX_ITEMS {
            return Err(InvalidOrderRequest::TooManyItems {
                max: Self::MAX_ITEMS,
            });
        }
        let mut seen = BTreeSet::new();
        for (id, _) in &lines {
            if !seen.insert(*id) {
                return Err(InvalidOrderRequest::DuplicateProduct(*id));
            }
        }
        let mut lines = lines;
        lines.sort_by_key(|(id, _)| *id);
        Ok(Self { lines })
    }

    pub fn lines(&self) -> &[(ProductId, Quantity)] {
        &self.lines
    }

    pub fn product_ids(&self) -> Vec<ProductId> {
        self.lines.iter().map(|(id, _)| *id).collect()
    }
}

/// A coupon code: 4..=64 of `[A-Z0-9-]`, case-insensitive. It is read in
/// any (ASCII) case and always held, stored and shown in upper case, so
/// `abcd-1234` and `ABCD-1234` are the same code wherever one is given
/// (import, use, cancel-use, an order's `couponCode`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CouponCode(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be 4 to 64 characters of A-Z, 0-9 or '-'")]
pub struct InvalidCouponCode;

impl CouponCode {
    /// Reads a code in any ASCII case and upper-cases it: the one place
    /// where a code is normalised, so every path that takes one agrees.
    ///
    /// # Errors
    /// [`InvalidCouponCode`] outside the code alphabet (letters in either
    /// case, digits, '-') or length.
    pub fn parse(raw: &str) -> Result<Self, InvalidCouponCode> {
        let ok = (4..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(Self(raw.to_ascii_uppercase()))
        } else {
            Err(InvalidCouponCode)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub name: ProductName,
    pub quantity: Quantity,
    pub unit_price: Points,
    pub line_total: Points,
}

/// An order with its prices and discount worked out, ready to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedOrder {
    pub user_id: UserId,
    /// In product-id order.
    pub lines: Vec<OrderLine>,
    pub total: Points,
    pub discount: Points,
    pub paid: Points,
    pub coupon: Option<CouponCode>,
}

/// A paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub lines: Vec<OrderLine>,
    pub total: Points,
    pub discount: Points,
    pub paid: Points,
    pub coupon: Option<CouponCode>,
    pub created_at: DateTime<Utc>,
}

/// Why an order was refused. Each is stored under the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlaceOrderError {
    #[error("product {product_id} does not exist")]
    ProductNotFound { product_id: ProductId },
    #[error("product {product_id} does not have enough stock")]
    OutOfStock { product_id: ProductId },
    #[error("the balance is lower than the amount to pay")]
    InsufficientBalance,
    #[error("the coupon cannot be applied to this order")]
    CouponNotApplicable,
    #[error("the order total is too large")]
    TotalTooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: i64, q: i64) -> (ProductId, Quantity) {
        (
            ProductId::new(id),
            Quantity::new(q).expect("valid quantity"),
        )
    }

    #[test]
    fn requests_are_sorted_by_product_and_bounded() {
        let r = OrderRequest::new(vec![line(9, 1), line(2, 3)]).expect("valid");
        assert_eq!(r.product_ids(), [ProductId::new(2), ProductId::new(9)]);
        assert_eq!(OrderRequest::new(vec![]), Err(InvalidOrderRequest::Empty));
        let many = (1..=51).map(|i| line(i, 1)).collect();
        assert_eq!(
            OrderRequest::new(many),
            Err(InvalidOrderRequest::TooManyItems { max: 50 })
        );
        assert!(OrderRequest::new((1..=50).map(|i| line(i, 1)).collect()).is_ok());
    }

    #[test]
    fn a_product_may_appear_only_once() {
        assert_eq!(
            OrderRequest::new(vec![line(3, 1), line(4, 1), line(3, 2)]),
            Err(InvalidOrderRequest::DuplicateProduct(ProductId::new(3)))
        );
    }

    #[test]
    fn quantities_are_one_to_a_thousand() {
        assert!(Quantity::new(0).is_none());
        assert!(Quantity::new(1).is_some());
        assert!(Quantity::new(1_000).is_some());
        assert!(Quantity::new(1_001).is_none());
    }

    #[test]
    fn coupon_codes_follow_the_alphabet() {
        assert!(CouponCode::parse("ABCD-1234").is_ok());
        assert!(CouponCode::parse("ABC").is_err());
        assert!(CouponCode::parse("ABC_1").is_err());
        assert!(CouponCode::parse("ABCD 1234").is_err());
    }

    #[test]
    fn coupon_codes_are_case_insensitive_and_held_in_upper_case() {
        let upper = CouponCode::parse("ABCD-1234").expect("valid");
        for raw in ["abcd-1234", "AbCd-1234", "ABCD-1234"] {
            let code = CouponCode::parse(raw).expect("valid");
            assert_eq!(code.as_str(), "ABCD-1234", "{raw}");
            assert_eq!(code, upper, "{raw}");
        }
        // Only ASCII letters fold: no other character becomes one.
        assert!(CouponCode::parse("ABC\u{131}").is_err(), "dotless i");
        assert!(CouponCode::parse("STRA\u{df}E").is_err(), "sharp s");
    }
}
