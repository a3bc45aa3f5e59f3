//! An admin adds a product to the catalogue.

use std::sync::Arc;

use domain::catalog::{CatalogStore, NewProduct, Product};
use domain::error::Unavailable;

pub struct CreateProduct {
    store: Arc<dyn CatalogStore>,
}

impl std::fmt::Debug for CreateProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreateProduct")
    }
}

impl CreateProduct {
    pub fn new(store: Arc<dyn CatalogStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn execute(&self, product: NewProduct) -> Result<Product, Unavailable> {
        self.store.create(product).await
    }
}
