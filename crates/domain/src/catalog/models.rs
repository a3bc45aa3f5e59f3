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

/// A product's version. Every write to the product changes it, a sale's
/// stock decrement included, so an absolute stock set against a version the
/// product has moved on from is refused: it would overwrite units sold in
/// between (a lost update). Served as the product's `ETag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProductVersion(u64);

impl ProductVersion {
    pub const fn new(version: u64) -> Self {
        Self(version)
    }

    pub const fn get(self) -> u64 {
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
    pub version: ProductVersion,
}

/// A product about to be created.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub name: ProductName,
    pub price: Points,
    pub stock: Stock,
}

/// How a patch changes the stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// Adds these units to the stock as it is at that moment (takes them
    /// when negative), so a restock during a sale loses no unit sold.
    By(i64),
    /// Sets the stock; only with [`ProductPatch::if_version`].
    To(Stock),
}

/// An admin's change to a product; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub price: Option<Points>,
    pub stock: Option<StockChange>,
    /// Applies the patch only while the product is at this version.
    pub if_version: Option<ProductVersion>,
}

/// Why a store did not apply a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchRefused {
    NotFound,
    /// The product is no longer at [`ProductPatch::if_version`].
    VersionMoved,
    /// A [`StockChange::By`] would leave the stock below zero.
    StockBelowZero,
    /// A [`StockChange::By`] would take the stock past `i64::MAX`.
    StockAboveMaximum,
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
