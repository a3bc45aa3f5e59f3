//! How Postgres failures become domain errors: the business cases (a unique
//! constraint) are matched by the repositories by constraint name; everything
//! else a repository did not expect is [`Unavailable`] and answers 503.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use domain::error::Unavailable;

/// Wraps any Postgres-side failure (pool, connection, query) as `Unavailable`.
pub fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Unavailable {
    let err = err.into();
    tracing::warn!(error = %err, "postgres operation failed");
    Unavailable::new("postgres", err)
}

/// True when `err` is a unique violation of the named constraint.
pub(crate) fn is_unique_violation(err: &DieselError, constraint: &str) -> bool {
    matches!(
        err,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(constraint)
    )
}
