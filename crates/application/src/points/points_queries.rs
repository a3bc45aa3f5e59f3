//! Reading points: the caller's balance and its ledger history.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::identity::UserId;
use domain::paging::{Page, PageRequest};
use domain::points::{LedgerEntry, PointsStore, Wallet};

/// Balance and ledger reads.
pub struct PointsQueries {
    store: Arc<dyn PointsStore>,
}

impl std::fmt::Debug for PointsQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PointsQueries")
    }
}

impl PointsQueries {
    pub fn new(store: Arc<dyn PointsStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn wallet(&self, user_id: UserId) -> Result<Wallet, Unavailable> {
        self.store.wallet(user_id).await
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn history(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<LedgerEntry>, Unavailable> {
        self.store.history(user_id, page).await
    }
}
