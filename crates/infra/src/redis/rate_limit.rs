//! The rate limiter: one GCRA cell per subject in Redis (`rl:{subject}`,
//! holding its theoretical arrival time in microseconds of Redis' own clock,
//! so every instance counts against one budget), with an in-process fallback.
//!
//! The scripts mirror `domain::throttle::{admit, release}`; the tests below
//! hold them together. When Redis cannot be reached the same rules run in
//! this process ([`LocalRateLimiter`]): limits then hold per instance instead
//! of per deployment, and nobody is refused because Redis is down.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use super::RedisPool;
use async_trait::async_trait;
use deadpool_redis::redis::Script;
use domain::error::Unavailable;
use domain::throttle::{self, Admission, Quota, RateLimiter};

use super::{RedisKeys, unavailable};

/// ARGV[1]: the interval, ARGV[2]: the burst tolerance (µs). Returns 0 when
/// admitted, else the µs to wait. Values are written with `%d`: Lua's own
/// number formatting would round a 16-digit instant.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next = tat + interval
local allowed_at = next - tonumber(ARGV[2])
if allowed_at > now then return allowed_at - now end
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000))
return 0";

/// ARGV[1]: the interval (µs).
const RELEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local back = tat - tonumber(ARGV[1])
if back > now then
  redis.call('SET', KEYS[1], string.format('%d', back), 'PX', math.ceil((back - now) / 1000))
else
  redis.call('DEL', KEYS[1])
end
return 1";

static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// The deployment-wide limiter.
pub struct RedisRateLimiter {
    pool: RedisPool,
    keys: RedisKeys,
    local: LocalRateLimiter,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    pub fn new(pool: RedisPool, keys: RedisKeys) -> Self {
        Self {
            pool,
            keys,
            local: LocalRateLimiter::default(),
        }
    }

    /// Runs `script` on `key`'s cell; a failure is logged by `unavailable`.
    async fn run(&self, script: &Script, key: &str, args: &[u64]) -> Result<u64, Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let mut invocation = script.key(self.keys.key(&format!("rl:{key}")));
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn admit(&self, key: &str, quota: Quota) -> Admission {
        let tolerance = quota.interval_micros() * u64::from(quota.limit());
        match self
            .run(&ADMIT_SCRIPT, key, &[quota.interval_micros(), tolerance])
            .await
        {
            Ok(0) => Admission::Admitted,
            Ok(wait) => Admission::Limited {
                retry_after: std::time::Duration::from_micros(wait),
            },
            Err(_) => self.local.admit(key, quota).await,
        }
    }

    async fn release(&self, key: &str, quota: Quota) {
        if self
            .run(&RELEASE_SCRIPT, key, &[quota.interval_micros()])
            .await
            .is_err()
        {
            self.local.release(key, quota).await;
        }
    }
}

/// The same cells in this process, on a monotonic clock. Cells that no
/// longer hold anything are swept when the map has doubled since the last
/// sweep (from [`Self::SWEEP_AT`] up), so memory stays bounded by the
/// subjects active within one period and a sweep costs O(1) per attempt
/// amortized, however many subjects are active.
#[derive(Debug)]
pub struct LocalRateLimiter {
    epoch: Instant,
    cells: Mutex<Cells>,
}

#[derive(Debug)]
struct Cells {
    tat: HashMap<String, u64>,
    sweep_at: usize,
}

impl Default for LocalRateLimiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            cells: Mutex::new(Cells {
                tat: HashMap::new(),
                sweep_at: Self::SWEEP_AT,
            }),
        }
    }
}

impl LocalRateLimiter {
    const SWEEP_AT: usize = 100_000;

    fn now(&self) -> u64 {
        // Starts at one period past zero so a fresh cell never underflows.
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX) + 86_400_000_000
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn admit(&self, key: &str, quota: Quota) -> Admission {
        let now = self.now();
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        if cells.tat.len() >= cells.sweep_at {
            cells.tat.retain(|_, tat| *tat > now);
            cells.sweep_at = (cells.tat.len() * 2).max(Self::SWEEP_AT);
        }
        match throttle::admit(now, cells.tat.get(key).copied(), quota) {
            Ok(next) => {
                cells.tat.insert(key.to_owned(), next);
                Admission::Admitted
            }
            Err(retry_after) => Admission::Limited { retry_after },
        }
    }

    async fn release(&self, key: &str, quota: Quota) {
        let now = self.now();
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        match throttle::release(now, cells.tat.get(key).copied(), quota) {
            Some(back) => {
                cells.tat.insert(key.to_owned(), back);
            }
            None => {
                cells.tat.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_local_limiter_admits_a_burst_then_limits_and_releases() {
        let limiter = LocalRateLimiter::default();
        let quota = Quota::new(3, Duration::from_secs(60)).expect("valid");
        for _ in 0..3 {
            assert_eq!(limiter.admit("a", quota).await, Admission::Admitted);
        }
        let Admission::Limited { retry_after } = limiter.admit("a", quota).await else {
            panic!("the fourth attempt must be limited");
        };
        assert!(
            retry_after > Duration::from_secs(19) && retry_after <= Duration::from_secs(20),
            "{retry_after:?}"
        );
        assert_eq!(limiter.admit("b", quota).await, Admission::Admitted);
        limiter.release("a", quota).await;
        assert_eq!(limiter.admit("a", quota).await, Admission::Admitted);
    }
}
