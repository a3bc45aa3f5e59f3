//! The failure every port may report besides its business outcomes.
//!
//! An adapter that cannot reach or use its backing service (pool timeout,
//! closed connection, refused connection, unexpected driver error) reports
//! [`Unavailable`]. It becomes `503 SERVICE_UNAVAILABLE` at the edge, never a
//! 500 with internals, and is never stored as an idempotent outcome: a retry
//! must run again.

use std::error::Error as StdError;
use std::fmt;

/// A backing service (Postgres, Redis, …) failed; the operation had no effect
/// that the caller can rely on and may be retried.
pub struct Unavailable {
    /// Which service failed, for logs and the readiness report.
    service: &'static str,
    /// The adapter's own error, kept for the log line, never shown to clients.
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl Unavailable {
    /// Wraps an adapter error. `service` names the dependency (`"postgres"`, `"redis"`).
    pub fn new(service: &'static str, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            service,
            source: source.into(),
        }
    }

    /// The name of the backing service that failed.
    pub fn service(&self) -> &'static str {
        self.service
    }
}

impl fmt::Debug for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unavailable")
            .field("service", &self.service)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is unavailable", self.service)
    }
}

impl StdError for Unavailable {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_cause_for_logs_but_not_in_the_message() {
        let err = Unavailable::new("postgres", "connection refused (os error 111)");
        assert_eq!(err.to_string(), "postgres is unavailable");
        assert_eq!(err.service(), "postgres");
        let cause = err.source().map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("connection refused (os error 111)"));
    }
}
