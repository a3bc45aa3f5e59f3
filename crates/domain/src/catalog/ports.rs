//! What the catalogue use cases need from storage.

use async_trait::async_trait;

use super::models::{NewProduct, PatchRefused, Product, ProductId, ProductPatch};
use crate::error::Unavailable;
use crate::paging::PageRequest;

/// Products.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn create(&self, product: NewProduct) -> Result<Product, Unavailable>;

    /// Applies the patch in one step: the version check, a stock delta
    /// against the stock as it is then, and the other fields; all or none.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn update(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Result<Product, PatchRefused>, Unavailable>;

    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn get(&self, id: ProductId) -> Result<Option<Product>, Unavailable>;

    /// The products with these ids that exist, in id order.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn get_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, Unavailable>;

    /// How many products there are.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn count(&self) -> Result<u64, Unavailable>;

    /// One page of the products ordered by id.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn page(&self, page: PageRequest) -> Result<Vec<Product>, Unavailable>;
}
