//! Reading the catalogue: one product, or a page of them.

use std::sync::Arc;

use domain::catalog::{CatalogStore, Product, ProductId};
use domain::error::Unavailable;
use domain::paging::{Page, PageRequest};

use super::ProductError;

pub struct CatalogQueries {
    store: Arc<dyn CatalogStore>,
}

impl std::fmt::Debug for CatalogQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogQueries")
    }
}

impl CatalogQueries {
    pub fn new(store: Arc<dyn CatalogStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`ProductError::NotFound`] for an unknown id.
    pub async fn get(&self, id: ProductId) -> Result<Product, ProductError> {
        self.store.get(id).await?.ok_or(ProductError::NotFound(id))
    }

    /// A page of products by id, with how many there are in all (two
    /// reads, as two statements were before: the count may be a moment
    /// older than the page, by up to the shared cache's bound).
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn list(&self, page: PageRequest) -> Result<Page<Product>, Unavailable> {
        let total_count = self.store.count().await?;
        let items = self.store.page(page).await?;
        Ok(Page {
            items,
            request: page,
            total_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use domain::catalog::MockCatalogStore;

    use super::*;

    #[tokio::test]
    async fn an_unknown_product_is_not_found() {
        let mut store = MockCatalogStore::new();
        store.expect_get().returning(|_| Ok(None));
        let queries = CatalogQueries::new(Arc::new(store));

        let read = queries.get(ProductId::new(9)).await;

        assert!(matches!(read, Err(ProductError::NotFound(id)) if id.get() == 9));
    }
}
