//! An admin opens an investment product: a title, a target amount and a
//! recruiting window.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::invest::{InvestProduct, InvestStore, NewInvestProduct};

pub struct CreateInvestProduct {
    store: Arc<dyn InvestStore>,
}

impl std::fmt::Debug for CreateInvestProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreateInvestProduct")
    }
}

impl CreateInvestProduct {
    pub fn new(store: Arc<dyn InvestStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn execute(&self, product: NewInvestProduct) -> Result<InvestProduct, Unavailable> {
        self.store.create(product).await
    }
}
