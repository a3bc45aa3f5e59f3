//! Reading orders: one of the caller's orders, or a page of them.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::identity::UserId;
use domain::ordering::{Order, OrderId, OrderStore};
use domain::paging::{Page, PageRequest};

/// The caller's orders.
pub struct OrderQueries {
    store: Arc<dyn OrderStore>,
}

impl std::fmt::Debug for OrderQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderQueries")
    }
}

impl OrderQueries {
    pub fn new(store: Arc<dyn OrderStore>) -> Self {
        Self { store }
    }

    /// `None` for an unknown order or another user's.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn get(&self, user_id: UserId, id: OrderId) -> Result<Option<Order>, Unavailable> {
        self.store.get(user_id, id).await
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn list(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<Order>, Unavailable> {
        self.store.list(user_id, page).await
    }
}
