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
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}
