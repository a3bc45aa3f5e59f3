//! Readiness of the backing services, as a port: the web edge asks each probe
//! and answers `/health/ready` with which one failed.

use async_trait::async_trait;

use crate::error::Unavailable;

/// One backing service that must answer for the instance to take traffic.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// A short stable name (`"postgres"`, `"redis"`) shown in the readiness report.
    fn name(&self) -> &'static str;

    /// Round-trips to the service.
    ///
    /// # Errors
    /// [`Unavailable`] when the service does not answer. Callers bound the wait
    /// with their own timeout; adapters need not.
    async fn check(&self) -> Result<(), Unavailable>;
}
