//! Catalogue use cases: admins create and change products; anyone reads
//! them and the popular ones. One file per use case, named after its type.

mod catalog_queries;
mod create_product;
mod popular_products;
mod update_product;

pub use catalog_queries::CatalogQueries;
pub use create_product::CreateProduct;
pub use popular_products::PopularProducts;
pub use update_product::UpdateProduct;

use domain::catalog::ProductId;
use domain::error::Unavailable;
use thiserror::Error;

/// Why a product could not be read or changed.
#[derive(Debug, Error)]
pub enum ProductError {
    #[error("product {0} does not exist")]
    NotFound(ProductId),
    /// The patch named a version the product has moved on from.
    #[error("product {0} changed since the version the request names")]
    VersionMoved(ProductId),
    /// A stock delta would leave the stock below zero.
    #[error("product {0} does not have that much stock to take")]
    InsufficientStock(ProductId),
    /// A stock delta would take the stock past what it can hold.
    #[error("the stock of product {0} would exceed 9223372036854775807")]
    StockOverflow(ProductId),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}
