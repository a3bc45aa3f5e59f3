//! Read-side of identity: the caller's profile and the admin's user list.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::identity::{User, UserId, UserRepository};
use domain::paging::{Page, PageRequest};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProfileError {
    /// The token is valid but its user no longer exists.
    #[error("user not found")]
    NotFound,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Profile and user list reads.
pub struct UserQueries {
    users: Arc<dyn UserRepository>,
}

impl std::fmt::Debug for UserQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserQueries")
    }
}

impl UserQueries {
    pub fn new(users: Arc<dyn UserRepository>) -> Self {
        Self { users }
    }

    /// # Errors
    /// [`ProfileError::NotFound`] when the user is gone; `Unavailable` when the store fails.
    pub async fn profile(&self, id: UserId) -> Result<User, ProfileError> {
        self.users
            .find_by_id(id)
            .await?
            .ok_or(ProfileError::NotFound)
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn list(&self, page: PageRequest) -> Result<Page<User>, Unavailable> {
        self.users.list(page).await
    }
}
