//! Reading investments: one product, the products recruiting now, and the
//! caller's own investments.

use std::sync::Arc;

use domain::clock::Clock;
use domain::error::Unavailable;
use domain::identity::UserId;
use domain::invest::{InvestProduct, InvestProductId, InvestStore, MyInvestment, MyProductTotal};
use domain::paging::{Page, PageRequest};

/// Investment product and investment reads.
pub struct InvestQueries {
    store: Arc<dyn InvestStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InvestQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvestQueries")
    }
}

impl InvestQueries {
    pub fn new(store: Arc<dyn InvestStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
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

    /// The caller's investments summed per product, the most recent first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn mine_by_product(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Page<MyProductTotal>, Unavailable> {
        self.store.mine_by_product(user, page).await
    }
}
