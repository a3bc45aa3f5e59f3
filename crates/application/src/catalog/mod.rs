//! Catalogue use cases: admins create and change products; anyone reads them.

use std::sync::Arc;

use domain::catalog::{CatalogStore, NewProduct, Product, ProductId, ProductPatch};
use domain::error::Unavailable;
use domain::paging::{Page, PageRequest};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProductError {
    #[error("product {0} does not exist")]
    NotFound(ProductId),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Product management and reads.
pub struct Catalog {
    store: Arc<dyn CatalogStore>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl Catalog {
    pub fn new(store: Arc<dyn CatalogStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn create(&self, product: NewProduct) -> Result<Product, Unavailable> {
        self.store.create(product).await
    }

    /// # Errors
    /// [`ProductError::NotFound`] for an unknown id.
    pub async fn update(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, ProductError> {
        self.store
            .update(id, patch)
            .await?
            .ok_or(ProductError::NotFound(id))
    }

    /// # Errors
    /// [`ProductError::NotFound`] for an unknown id.
    pub async fn get(&self, id: ProductId) -> Result<Product, ProductError> {
        self.store.get(id).await?.ok_or(ProductError::NotFound(id))
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn list(&self, page: PageRequest) -> Result<Page<Product>, Unavailable> {
        self.store.list(page).await
    }
}

#[cfg(test)]
mod tests {
    use domain::catalog::MockCatalogStore;

    use super::*;

    #[tokio::test]
    async fn an_unknown_product_is_not_found_on_read_and_on_update() {
        let mut store = MockCatalogStore::new();
        store.expect_get().returning(|_| Ok(None));
        store.expect_update().returning(|_, _| Ok(None));
        let catalog = Catalog::new(Arc::new(store));

        let read = catalog.get(ProductId::new(9)).await;
        let update = catalog
            .update(ProductId::new(9), ProductPatch::default())
            .await;

        assert!(matches!(read, Err(ProductError::NotFound(id)) if id.get() == 9));
        assert!(matches!(update, Err(ProductError::NotFound(_))));
    }
}
