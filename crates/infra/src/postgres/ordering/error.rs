//! Why a batch of orders did not commit. Every order in it then answers 503
//! and nothing is stored under its key, so a retry runs again.

/// A batch that must roll back.
#[derive(Debug, thiserror::Error)]
pub(super) enum BatchError {
    /// A statement failed (or the connection did).
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The database disagreed with what the batch decided in memory, or the
    /// batch could not answer every order: a bug, never a business refusal.
    #[error("{0}")]
    Inconsistent(String),
}

impl BatchError {
    pub(super) fn inconsistent(why: impl Into<String>) -> Self {
        Self::Inconsistent(why.into())
    }
}
