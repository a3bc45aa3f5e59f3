//! Invest use cases: admins open products, everyone reads the open ones,
//! users invest (idempotent) and read their own investments.

mod make_investment;

pub use make_investment::{Invest, InvestCommand};

use std::sync::Arc;

use domain::clock::Clock;
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::invest::{InvestProduct, InvestProductId, InvestStore, MyInvestment, NewInvestProduct};
use domain::paging::{Page, PageRequest};

/// Creating and reading investment products, and the caller's investments.
pub struct InvestProducts {
    store: Arc<dyn InvestStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InvestProducts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvestProducts")
    }
}

impl InvestProducts {
    pub fn new(store: Arc<dyn InvestStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn create(&self, product: NewInvestProduct) -> Result<InvestProduct, Unavailable> {
        self.store.create(product).await
    }

    /// The product as it is now, open or not; `None` for an unknown id.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn get(&self, id: InvestProductId) -> Result<Option<InvestProduct>, Unavailable> {
        self.store.get(id).await
    }

    /// Products recruiting now, newest start first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn open_now(&self, page: PageRequest) -> Result<Page<InvestProduct>, Unavailable> {
        self.store.open_at(self.clock.now(), page).await
    }

    /// The caller's investments, newest first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn mine(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Page<MyInvestment>, Unavailable> {
        self.store.mine(user, page).await
    }
}
