//! An admin changes a product. A change of stock is reflected by the order
//! stock gate at once: the gate forgets the product, and rebuilds its
//! counter from Postgres on the next order.

use std::sync::Arc;

use domain::catalog::{CatalogStore, Product, ProductId, ProductPatch};
use domain::ordering::StockGate;

use super::ProductError;

pub struct UpdateProduct {
    store: Arc<dyn CatalogStore>,
    gate: Arc<dyn StockGate>,
}

impl std::fmt::Debug for UpdateProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpdateProduct")
    }
}

impl UpdateProduct {
    pub fn new(store: Arc<dyn CatalogStore>, gate: Arc<dyn StockGate>) -> Self {
        Self { store, gate }
    }

    /// # Errors
    /// [`ProductError::NotFound`] for an unknown id.
    pub async fn execute(
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
        let update = UpdateProduct::new(Arc::new(store), Arc::new(gate));

        let restock = ProductPatch {
            stock: Some(Stock::new(5).expect("valid")),
            ..ProductPatch::default()
        };
        update
            .execute(ProductId::new(3), restock)
            .await
            .expect("updated");
        let rename = ProductPatch {
            name: Some(ProductName::parse("Green tea").expect("valid")),
            ..ProductPatch::default()
        };
        update
            .execute(ProductId::new(3), rename)
            .await
            .expect("updated");
    }

    #[tokio::test]
    async fn an_unknown_product_is_not_found() {
        let mut store = MockCatalogStore::new();
        store.expect_update().returning(|_, _| Ok(None));
        let update = UpdateProduct::new(Arc::new(store), Arc::new(MockStockGate::new()));

        let result = update
            .execute(ProductId::new(9), ProductPatch::default())
            .await;

        assert!(matches!(result, Err(ProductError::NotFound(_))));
    }
}
