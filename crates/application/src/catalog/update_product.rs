//! An admin changes a product. A change of stock is reflected by the order
//! stock gate at once: the gate forgets the product, and rebuilds its
//! counter from Postgres on the next order.

use std::sync::Arc;

use domain::catalog::{CatalogStore, PatchRefused, Product, ProductId, ProductPatch};
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
            .map_err(|refused| match refused {
                PatchRefused::NotFound => ProductError::NotFound(id),
                PatchRefused::VersionMoved => ProductError::VersionMoved(id),
                PatchRefused::StockBelowZero => ProductError::InsufficientStock(id),
                PatchRefused::StockAboveMaximum => ProductError::StockOverflow(id),
            })?;
        if stock_changed && let Err(err) = self.gate.forget(id).await {
            // The counter may lag until it is rebuilt; Postgres still guards.
            tracing::warn!(error = %err, product = %id, "could not reset the stock counter");
        }
        Ok(product)
    }
}

#[cfg(test)]
mod tests {
    use domain::catalog::{MockCatalogStore, ProductName, Stock, StockChange};
    use domain::money::Points;
    use domain::ordering::MockStockGate;

    use super::*;

    #[tokio::test]
    async fn a_stock_change_resets_the_gate_counter_and_other_changes_do_not() {
        let mut store = MockCatalogStore::new();
        store.expect_update().returning(|id, _| {
            Ok(Ok(Product {
                id,
                name: ProductName::parse("Tea").expect("valid"),
                price: Points::ZERO,
                stock: Stock::new(5).expect("valid"),
                version: Default::default(),
            }))
        });
        let mut gate = MockStockGate::new();
        gate.expect_forget()
            .withf(|id| id.get() == 3)
            .times(1)
            .returning(|_| Ok(()));
        let update = UpdateProduct::new(Arc::new(store), Arc::new(gate));

        let restock = ProductPatch {
            stock: Some(StockChange::By(5)),
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
    async fn each_refusal_of_the_store_is_its_own_error_and_resets_nothing() {
        for (refused, expected) in [
            (PatchRefused::NotFound, "does not exist"),
            (PatchRefused::VersionMoved, "changed since"),
            (PatchRefused::StockBelowZero, "that much stock"),
            (PatchRefused::StockAboveMaximum, "would exceed"),
        ] {
            let mut store = MockCatalogStore::new();
            store
                .expect_update()
                .returning(move |_, _| Ok(Err(refused)));
            // No stock changed, so the gate counter is left alone.
            let update = UpdateProduct::new(Arc::new(store), Arc::new(MockStockGate::new()));
            let patch = ProductPatch {
                stock: Some(StockChange::By(-3)),
                ..ProductPatch::default()
            };

            let err = update
                .execute(ProductId::new(9), patch)
                .await
                .expect_err("refused");

            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
