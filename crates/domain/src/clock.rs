//! Time as a port, so that expiry, token lifetimes and recruiting windows are
//! testable with a fixed clock. The system adapter lives in `infra::clock`.

use chrono::{DateTime, Utc};

/// The source of "now" for every use case.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}
