//! Redis, the fast path: the connection pool, the readiness probe and the key
//! namespace. Nothing here is a source of truth; every value can be rebuilt
//! from Postgres.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deadpool_redis::Runtime;
use domain::error::Unavailable;
use domain::health::HealthProbe;

mod counter;
mod invest_gate;
mod issue_gate;
mod lock;
mod pool;
mod ranking;
mod rate_limit;
mod read_cache;
mod refusals;
pub mod slots;
mod stock_gate;
mod stream;

pub use counter::{COUNTER_TTL, RESERVATION_LEASE};
pub use invest_gate::RedisInvestGate;
pub use issue_gate::RedisIssueGate;
pub use lock::{Lease, RedisLock, credentials_of, forge_release_of, release_as};
pub use pool::{Connection as RedisConnection, RedisPool};
pub use ranking::RedisSalesRanking;
pub use rate_limit::{LocalRateLimiter, RedisRateLimiter};
pub use read_cache::{REDIS_WAIT as READ_CACHE_REDIS_WAIT, ReadCache, ReadCacheCounts};
pub use refusals::{REFUSAL_QUEUE, RedisRefusals, RefusalWriter, write_behind};
pub use stock_gate::RedisStockGate;
pub use stream::{ORDER_EVENTS, RedisEventStream, StreamEntry};

/// Wraps any Redis-side failure (pool, connection, command) as `Unavailable`.
pub fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Unavailable {
    let err = err.into();
    pool::note_failure();
    tracing::warn!(error = %err, "redis operation failed");
    Unavailable::new("redis", err)
}

/// How the pool connects and how long anyone waits for it.
#[derive(Debug, Clone)]
pub struct RedisPoolSettings {
    pub url: String,
    /// The most connections one thread's set opens.
    pub max_size: usize,
    /// Bounds connecting, waiting for a free connection and recycling one each.
    pub timeout: Duration,
}

/// Builds the pool (a set of up to `max_size` connections per thread that
/// uses it, `pool.rs`). Connections are opened lazily, so this succeeds while
/// Redis is down. Getting a connection (in all: waiting, checking, connecting)
/// and each command's reply are each bounded by `settings.timeout` (redis-rs'
/// own reply timeout would otherwise be a hidden 500 ms).
///
/// # Errors
/// When the URL is unusable.
pub fn connect_pool(settings: &RedisPoolSettings) -> anyhow::Result<RedisPool> {
    let connection = deadpool_redis::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout));
    let timeout = settings.timeout;
    let settings = settings.clone();
    let set = move || -> anyhow::Result<deadpool::managed::Pool<pool::Manager>> {
        let manager =
            deadpool_redis::Manager::new_with_config(settings.url.as_str(), connection.clone())
                .context("REDIS_URL is not a valid Redis URL")?;
        deadpool::managed::Pool::builder(pool::Manager::new(manager))
            .max_size(settings.max_size)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .context("building the Redis pool")
    };
    // Checked once here, so that building another thread's set cannot fail.
    set()?;
    Ok(RedisPool::new(
        move || set().expect("the same settings built a pool before"),
        timeout,
    ))
}

/// Builds a pool of cluster connections to the Redis Cluster that `nodes`
/// (`host:port`, any of its nodes) belong to, one per thread that uses it,
/// each opened on first use. Connecting and each reply are bounded by
/// `timeout`; a command is retried a few times (a `MOVED` after a
/// failover, a node that is reconnecting) within that bound.
///
/// # Errors
/// When a node address is unusable.
pub fn connect_cluster(nodes: &[String], timeout: Duration) -> anyhow::Result<RedisPool> {
    let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
    let client = redis::cluster::ClusterClient::builder(urls)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .overall_response_timeout(Some(timeout))
        .retries(3)
        .min_retry_wait(20)
        .max_retry_wait(500)
        .build()
        .context("APP_REDIS_CLUSTER_NODES is not a list of host:port")?;
    Ok(RedisPool::cluster(client, timeout))
}

/// The key namespace of one deployment (or one test): every key this service
/// writes starts with the prefix, so tests can share one Redis server.
#[derive(Debug, Clone, Default)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The full key for `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Readiness probe: one `PING` through the pool.
#[derive(Clone)]
pub struct RedisProbe {
    pool: RedisPool,
}

impl std::fmt::Debug for RedisProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisProbe")
    }
}

impl RedisProbe {
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl HealthProbe for RedisProbe {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let _: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RedisKeys;

    #[test]
    fn keys_carry_the_prefix() {
        assert_eq!(RedisKeys::new("t:1:").key("stock:7"), "t:1:stock:7");
        assert_eq!(RedisKeys::default().key("stock:7"), "stock:7");
    }
}
