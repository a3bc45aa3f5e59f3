//! The system clock adapter of the [`Clock`] port.

use chrono::{DateTime, Utc};
use domain::clock::Clock;

/// Reads the machine's UTC time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
