//! What the points use cases need from storage.

use async_trait::async_trait;

use super::models::{ChargeAmount, ChargeError, ChargeReceipt, LedgerEntry, Wallet};
use crate::error::Unavailable;
use crate::idempotency::{IdempotentRequest, Written};
use crate::identity::UserId;
use crate::paging::{Page, PageRequest};

/// Wallets and their ledger.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PointsStore: Send + Sync {
    /// The balance now (0 for a user who never charged).
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn wallet(&self, user_id: UserId) -> Result<Wallet, Unavailable>;

    /// Ledger entries, newest first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn history(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<LedgerEntry>, Unavailable>;

    /// Adds `amount` to the user's balance and writes the ledger row, in one
    /// transaction with the idempotency record: at most once per key.
    ///
    /// A charge that would push the balance over the limit changes nothing
    /// and renders [`ChargeError::BalanceLimitExceeded`]; that answer is stored
    /// and replayed like a success.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails; then nothing was written, the
    /// idempotency record included, so a retry runs again.
    async fn charge(
        &self,
        amount: ChargeAmount,
        request: IdempotentRequest<ChargeReceipt, ChargeError>,
    ) -> Result<Written<ChargeReceipt, ChargeError>, Unavailable>;
}
