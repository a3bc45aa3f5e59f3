//! Rebuilding a gate's counter from Postgres, shared by the stock and invest
//! gates: one instance at a time builds it (a lock), the others wait for it
//! briefly, and it lives at most [`COUNTER_TTL`] so that a drifted counter
//! heals.

use std::future::Future;
use std::time::Duration;

use deadpool_redis::Pool;
use deadpool_redis::redis::cmd;
use domain::error::Unavailable;

use super::{RedisKeys, RedisLock, unavailable};
use crate::postgres::Postgres;

/// How long a counter lives before it is rebuilt from Postgres: bounds how
/// long a drifted counter can refuse what Postgres would accept.
pub const COUNTER_TTL: Duration = Duration::from_secs(30);

/// The gate keys whose values count reservations: stock and invest
/// counters, a campaign's codes left and its holders.
const RESERVATION_PATTERNS: [&str; 4] = [
    "stock:*",
    "invest:*:left",
    "coupon:*:left",
    "coupon:*:users",
];

/// Drops every gate counter under `keys`, so each is rebuilt from Postgres
/// on its next use. Called when an instance starts: a process that was
/// killed took reservations with it that only it would have given back, and
/// they would otherwise refuse what Postgres has until the counters expire
/// (up to [`COUNTER_TTL`]), with those refusals stored under their keys.
/// Reservations of instances still running are forgotten too; that errs on
/// the safe side, since Postgres refuses whatever a too-high counter admits.
/// Holder marks and locks are kept. Returns how many keys were dropped.
///
/// # Errors
/// [`Unavailable`] when Redis cannot be reached (an empty Redis needs no reset).
pub async fn forget_reservations(pool: &Pool, keys: &RedisKeys) -> Result<usize, Unavailable> {
    let mut conn = pool.get().await.map_err(unavailable)?;
    let escaped: String = keys
        .prefix()
        .chars()
        .flat_map(|c| {
            let escape = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
            escape.into_iter().chain(std::iter::once(c))
        })
        .collect();
    let mut dropped = 0;
    for pattern in RESERVATION_PATTERNS {
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{escaped}{pattern}"))
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !found.is_empty() {
                let n: usize = cmd("UNLINK")
                    .arg(&found)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                dropped += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(dropped)
}

/// What a rebuild found.
pub(crate) enum Rebuilt {
    /// The counter exists now.
    Ready,
    /// Postgres has no such row.
    Unknown,
    /// Another instance is rebuilding it and did not finish in time.
    Busy,
}

/// What a counter gate runs on: Redis for the counters, Postgres to rebuild
/// them from, and a lock so that one instance rebuilds at a time.
#[derive(Clone)]
pub(crate) struct Counters {
    pool: Pool,
    keys: RedisKeys,
    lock: RedisLock,
    pg: Postgres,
}

impl Counters {
    pub(crate) fn new(pool: Pool, keys: RedisKeys, pg: Postgres) -> Self {
        let lock = RedisLock::new(pool.clone(), keys.clone());
        Self {
            pool,
            keys,
            lock,
            pg,
        }
    }

    /// The full key of `name` under the service's prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        self.keys.key(name)
    }

    pub(crate) fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    pub(crate) fn pg(&self) -> &Postgres {
        &self.pg
    }

    /// A pooled Redis connection.
    pub(crate) async fn connection(&self) -> Result<deadpool_redis::Connection, Unavailable> {
        self.pool.get().await.map_err(unavailable)
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, Unavailable> {
        let mut conn = self.connection().await?;
        cmd("EXISTS")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Drops the counter: the next use rebuilds it from Postgres.
    pub(crate) async fn forget(&self, key: &str) -> Result<(), Unavailable> {
        let mut conn = self.connection().await?;
        let _: i64 = cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Sets `key` to what `load` reads from Postgres, under the lock
    /// `lock_name`. Requests that arrive meanwhile poll for the counter (up
    /// to 2 s) rather than fall through to Postgres: the first burst of a
    /// sale is when the gate matters.
    pub(crate) async fn rebuild<F, Fut>(
        &self,
        key: &str,
        lock_name: &str,
        load: F,
    ) -> Result<Rebuilt, Unavailable>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<i64>, Unavailable>>,
    {
        let Some(lease) = self
            .lock
            .try_acquire(lock_name, Duration::from_secs(5))
            .await?
        else {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline {
                if self.exists(key).await? {
                    return Ok(Rebuilt::Ready);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return Ok(Rebuilt::Busy);
        };
        if self.exists(key).await? {
            let _ = lease.release().await;
            return Ok(Rebuilt::Ready);
        }
        let result = match load().await {
            Ok(Some(value)) => self.set(key, value).await.map(|()| Rebuilt::Ready),
            Ok(None) => Ok(Rebuilt::Unknown),
            Err(e) => Err(e),
        };
        let _ = lease.release().await;
        result
    }

    async fn set(&self, key: &str, value: i64) -> Result<(), Unavailable> {
        let mut conn = self.connection().await?;
        let _: Option<String> = cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg(COUNTER_TTL.as_secs())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
