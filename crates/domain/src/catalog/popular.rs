//! Popular products: the best sellers of the last 72 hours.

use async_trait::async_trait;

use super::models::{Product, ProductId};
use crate::error::Unavailable;

/// How far back "popular" looks.
pub const POPULAR_WINDOW_HOURS: i64 = 72;
/// How many products "popular" lists at most.
pub const POPULAR_LIMIT: usize = 5;

/// Units of one product sold in paid orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductSales {
    pub product_id: ProductId,
    pub sold: i64,
}

/// A best seller, with its catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopularProduct {
    pub product: Product,
    pub sold: i64,
}

/// Sales counts over the popular window.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SalesRanking: Send + Sync {
    /// The `limit` best-selling products of the last 72 hours, most sold
    /// first, ties by lower id.
    ///
    /// # Errors
    /// [`Unavailable`] when the ranking's store fails.
    async fn top(&self, limit: usize) -> Result<Vec<ProductSales>, Unavailable>;
}

/// Orders sales most sold first, ties by lower id, and keeps `limit`.
pub fn rank(mut sales: Vec<ProductSales>, limit: usize) -> Vec<ProductSales> {
    sales.retain(|s| s.sold > 0);
    sales.sort_by(|a, b| b.sold.cmp(&a.sold).then(a.product_id.cmp(&b.product_id)));
    sales.truncate(limit);
    sales
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: i64, sold: i64) -> ProductSales {
        ProductSales {
            product_id: ProductId::new(id),
            sold,
        }
    }

    #[test]
    fn most_sold_first_ties_by_lower_id_top_limit_only() {
        let ranked = rank(
            vec![
                s(9, 3),
                s(2, 5),
                s(4, 3),
                s(1, 1),
                s(7, 0),
                s(3, 2),
                s(5, 2),
            ],
            5,
        );
        let ids: Vec<i64> = ranked.iter().map(|r| r.product_id.get()).collect();
        assert_eq!(ids, [2, 4, 9, 3, 5]);
    }
}
