//! How often one subject may try something: failed sign-ins per login and
//! per client address, order, issue and invest attempts per user.
//!
//! A [`Quota`] of `limit` per `period` is a generic cell rate (GCRA, the
//! algorithm of token-bucket limiters such as redis-cell and governor): a
//! burst of `limit` at once, then one more every `period / limit`. The state
//! of one subject is a single instant, its theoretical arrival time (TAT);
//! [`admit`] and [`release`] are the pure rules, which the Redis script
//! mirrors and the in-process fallback calls.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

/// `limit` attempts per `period`: a burst of `limit`, then one every
/// `period / limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidQuota {
    #[error("a quota needs a limit of at least 1")]
    ZeroLimit,
    #[error("a quota's period must be 1 ms to 1 day")]
    Period,
    #[error("a quota must allow at most one attempt per microsecond")]
    TooFine,
}

impl Quota {
    /// # Errors
    /// A zero limit, a period outside 1 ms..=1 day, or more than one attempt
    /// per microsecond.
    pub fn new(limit: u32, period: Duration) -> Result<Self, InvalidQuota> {
        if limit == 0 {
            return Err(InvalidQuota::ZeroLimit);
        }
        if period < Duration::from_millis(1) || period > Duration::from_secs(86_400) {
            return Err(InvalidQuota::Period);
        }
        if period.as_micros() < u128::from(limit) {
            return Err(InvalidQuota::TooFine);
        }
        Ok(Self { limit, period })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The time one attempt costs: `period / limit`, in whole microseconds.
    pub fn interval_micros(&self) -> u64 {
        // The period is at most a day, so this fits; `new` keeps it ≥ 1.
        u64::try_from(self.period.as_micros() / u128::from(self.limit)).unwrap_or(u64::MAX)
    }

    /// How far ahead of now the TAT may run: the whole burst.
    fn tolerance_micros(&self) -> u64 {
        self.interval_micros() * u64::from(self.limit)
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per {:?}", self.limit, self.period)
    }
}

/// What a limiter decided about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The attempt took one slot of the quota.
    Admitted,
    /// Over the quota; the next slot frees up after `retry_after`.
    Limited { retry_after: Duration },
}

/// The rule of one attempt at `now` (microseconds on the limiter's clock)
/// against the subject's TAT (`None`: never seen, or expired).
///
/// # Errors
/// When the quota is used up: how long until the next slot frees up.
pub fn admit(now: u64, tat: Option<u64>, quota: Quota) -> Result<u64, Duration> {
    let tat = tat.unwrap_or(now).max(now);
    let next = tat.saturating_add(quota.interval_micros());
    let allowed_at = next.saturating_sub(quota.tolerance_micros());
    if allowed_at > now {
        Err(Duration::from_micros(allowed_at - now))
    } else {
        Ok(next)
    }
}

/// Gives one slot back: the TAT after an admitted attempt is undone, or
/// `None` when nothing is held any more (the state can be dropped).
pub fn release(now: u64, tat: Option<u64>, quota: Quota) -> Option<u64> {
    let back = tat?.saturating_sub(quota.interval_micros());
    (back > now).then_some(back)
}

/// Counts attempts per subject (`key`) against a quota.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one slot of `key`'s quota, or says when the next one frees up.
    /// Never fails: an adapter whose store is unreachable counts in process
    /// instead, so a limiter outage never refuses anyone.
    async fn admit(&self, key: &str, quota: Quota) -> Admission;

    /// Gives back one slot `admit` took (a sign-in that succeeded).
    async fn release(&self, key: &str, quota: Quota);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u32, secs: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(secs)).expect("valid quota")
    }

    /// Runs `attempts` at `now` and counts the admitted ones.
    fn burst(tat: &mut Option<u64>, now: u64, attempts: u32, quota: Quota) -> u32 {
        let mut admitted = 0;
        for _ in 0..attempts {
            if let Ok(next) = admit(now, *tat, quota) {
                *tat = Some(next);
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn a_full_burst_is_admitted_at_once_and_no_more() {
        let q = quota(10, 60);
        let mut tat = None;
        assert_eq!(burst(&mut tat, 1_000_000, 25, q), 10);
    }

    #[test]
    fn one_slot_frees_up_every_interval_and_the_wait_says_when() {
        let q = quota(10, 60); // one every 6 s
        let start = 5_000_000;
        let mut tat = None;
        burst(&mut tat, start, 10, q);
        let wait = admit(start, tat, q).expect_err("limited");
        assert_eq!(wait, Duration::from_secs(6));
        assert!(admit(start + 5_999_999, tat, q).is_err());
        assert!(admit(start + 6_000_000, tat, q).is_ok());
        // A long pause refills the whole burst, never more.
        assert_eq!(burst(&mut tat, start + 3_600_000_000, 25, q), 10);
    }

    #[test]
    fn release_gives_back_exactly_one_slot() {
        let q = quota(3, 30);
        let now = 1_000_000;
        let mut tat = None;
        burst(&mut tat, now, 3, q);
        assert!(admit(now, tat, q).is_err());
        tat = release(now, tat, q);
        assert_eq!(burst(&mut tat, now, 5, q), 1);
        // Releasing everything empties the state.
        for _ in 0..3 {
            tat = release(now, tat, q);
        }
        assert_eq!(tat, None);
        assert_eq!(release(now, None, q), None);
    }

    #[test]
    fn quotas_refuse_what_cannot_be_counted() {
        assert_eq!(
            Quota::new(0, Duration::from_secs(1)),
            Err(InvalidQuota::ZeroLimit)
        );
        assert_eq!(Quota::new(1, Duration::ZERO), Err(InvalidQuota::Period));
        assert_eq!(
            Quota::new(1, Duration::from_secs(86_401)),
            Err(InvalidQuota::Period)
        );
        assert_eq!(
            Quota::new(2_000, Duration::from_millis(1)),
            Err(InvalidQuota::TooFine)
        );
        assert_eq!(quota(300, 60).interval_micros(), 200_000);
    }
}
