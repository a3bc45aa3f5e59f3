//! Catalogue use cases: admins create and change products; anyone reads them.
//!
//! A change of stock is reflected by the order stock gate at once: the gate
//! forgets the product, and rebuilds its counter from Postgres on the next order.

mod popular;

pub use popular::PopularProducts;

use std::sync::Arc;

use domain::catalog::{CatalogStore, NewProduct, Product, ProductId, ProductPatch};
use domain::error::Unavailable;
use domain::ordering::StockGate;
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
    gate: Arc<dyn StockGate>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl Catalog {
    pub fn new(store: Arc<dyn CatalogStore>, gate: Arc<dyn StockGate>) -> Self {
        Self { store, gate }
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
        let stock_changed = patch.stock.is_some();
        let product = self
            .store
            .update(id, patch)
            .await?
            .ok_or(ProductError::NotFound(id))?;
        if stock_changed && let Err(err) = self.gate.forget(id).await {
            // The counter may lag until it is rebuilt; Postgres still guards.
            tracing::warn!(error = %err, product = %id, "could not reset the stock counter");
        }
        Ok(product)
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
    use domain::catalog::{MockCatalogStore, ProductName, Stock};
    use domain::money::Points;
    use domain::ordering::MockStockGate;

    use super::*;

    #[tokio::test]
    async fn a_stock_change_resets_the_gate_counter_and_other_changes_do_not() {
        let mut store = MockCatalogStore::new();
        store.expect_update().returning(|id, _| {
            Ok(Some(Product {
                id,
                name: ProductName::parse("Tea").expect("valid"),
                price: Points::ZERO,
                stock: Stock::new(5).expect("valid"),
            }))
        });
        let mut gate = MockStockGate::new();
        gate.expect_forget()
            .withf(|id| id.get() == 3)
            .times(1)
            .returning(|_| Ok(()));
        let catalog = Catalog::new(Arc::new(store), Arc::new(gate));

        let restock = ProductPatch {
            stock: Some(Stock::new(5).expect("valid")),
            ..ProductPatch::default()
        };
        catalog
            .update(ProductId::new(3), restock)
            .await
            .expect("updated");
        let rename = ProductPatch {
            name: Some(ProductName::parse("Green tea").expect("valid")),
            ..ProductPatch::default()
        };
        catalog
            .update(ProductId::new(3), rename)
            .await
            .expect("updated");
    }

    #[tokio::test]
    async fn an_unknown_product_is_not_found_on_read_and_on_update() {
        let mut store = MockCatalogStore::new();
        store.expect_get().returning(|_| Ok(None));
        store.expect_update().returning(|_, _| Ok(None));
        let catalog = Catalog::new(Arc::new(store), Arc::new(MockStockGate::new()));

        let read = catalog.get(ProductId::new(9)).await;
        let update = catalog
            .update(ProductId::new(9), ProductPatch::default())
            .await;

        assert!(matches!(read, Err(ProductError::NotFound(id)) if id.get() == 9));
        assert!(matches!(update, Err(ProductError::NotFound(_))));
    }
}
