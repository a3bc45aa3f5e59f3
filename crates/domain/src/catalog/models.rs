//! Value types of the catalogue.

use std::fmt;

use thiserror::Error;

use crate::money::Points;

/// Database id of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(i64);

impl ProductId {
    pub const fn new(raw: i64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A product name: 1..=200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be 1 to 200 characters without control characters")]
pub struct InvalidProductName;

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    /// # Errors
    /// [`InvalidProductName`] when empty after trimming, too long or holding control characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidProductName> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS || trimmed.chars().any(char::is_control) {
            return Err(InvalidProductName);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units in stock: never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stock(i64);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("must be 0 or more")]
pub struct InvalidStock;

impl Stock {
    /// # Errors
    /// [`InvalidStock`] for a negative value.
    pub fn new(units: i64) -> Result<Self, InvalidStock> {
        if units < 0 {
            Err(InvalidStock)
        } else {
            Ok(Self(units))
        }
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

/// A product as it is at the moment of the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: ProductName,
    pub price: Points,
    pub stock: Stock,
}

/// A product about to be created.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub name: ProductName,
    pub price: Points,
    pub stock: Stock,
}

/// An admin's change to a product; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub price: Option<Points>,
    pub stock: Option<Stock>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            ProductName::parse("  Tea  ").map(|n| n.as_str().to_owned()),
            Ok("Tea".into())
        );
        assert!(ProductName::parse(&"가".repeat(200)).is_ok());
        assert_eq!(
            ProductName::parse(&"가".repeat(201)),
            Err(InvalidProductName)
        );
        assert_eq!(ProductName::parse(" "), Err(InvalidProductName));
    }

    #[test]
    fn stock_is_never_negative() {
        assert!(Stock::new(0).is_ok());
        assert_eq!(Stock::new(-1), Err(InvalidStock));
    }
}
