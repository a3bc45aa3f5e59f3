//! A distributed lock on Redis, for work that must run on one instance at a
//! time (the outbox relay, rebuilding a counter from Postgres).
//!
//! - acquire: `SET key token NX PX ttl`, the token random per holder;
//! - release and extend: Lua compare-and-delete / compare-and-expire, so only
//!   the holder can release or extend, never someone whose lease expired;
//! - a lease renews itself every third of its TTL while held, and reports
//!   when renewal fails (the lock was lost: stop the protected work);
//! - waiting is bounded, with backoff.
//!
//! It is a lease, not a fence: a holder that stalls longer than its TTL can
//! overlap with the next one. Work protected by it must therefore be safe to
//! repeat (the relay's publishing is at-least-once; rebuilding a counter uses
//! `SET NX`). Postgres stays the final guard for every invariant.

use std::time::Duration;

use super::RedisPool;
use deadpool_redis::redis::{Script, cmd};
use domain::error::Unavailable;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{RedisKeys, unavailable};

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Hands out leases on named locks.
#[derive(Clone)]
pub struct RedisLock {
    pool: RedisPool,
    keys: RedisKeys,
}

impl std::fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLock")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

impl RedisLock {
    pub fn new(pool: RedisPool, keys: RedisKeys) -> Self {
        Self { pool, keys }
    }

    /// Takes the lock if it is free.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn try_acquire(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Unavailable> {
        let key = self.keys.key(&format!("lock:{name}"));
        let token = format!("{:032x}", rand::random::<u128>());
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let set: Option<String> = cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(set.map(|_| Lease::start(self.pool.clone(), key, token, ttl)))
    }

    /// Waits up to `max_wait` for the lock, retrying with backoff.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        max_wait: Duration,
    ) -> Result<Option<Lease>, Unavailable> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut backoff = Duration::from_millis(5);
        loop {
            if let Some(lease) = self.try_acquire(name, ttl).await? {
                return Ok(Some(lease));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Jitter keeps waiters from retrying in lockstep.
            let jitter = Duration::from_millis(rand::random::<u64>() % 5);
            tokio::time::sleep((backoff + jitter).min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A held lock. It renews itself until released or dropped; dropping it
/// stops the renewal without releasing, so the lock then expires after its TTL.
pub struct Lease {
    pool: RedisPool,
    key: String,
    token: String,
    lost: watch::Receiver<bool>,
    renewal: JoinHandle<()>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Lease {
    fn start(pool: RedisPool, key: String, token: String, ttl: Duration) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let renewal = tokio::spawn({
            let (pool, key, token) = (pool.clone(), key.clone(), token.clone());
            async move {
                let every = ttl / 3;
                let mut renewed = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(every).await;
                    match extend(&pool, &key, &token, ttl).await {
                        Ok(true) => renewed = tokio::time::Instant::now(),
                        // Someone else holds it now, or Redis lost it.
                        Ok(false) => {
                            let _ = lost_tx.send(true);
                            return;
                        }
                        // Redis unreachable: once a whole TTL has passed without
                        // a renewal the lock may have expired and been taken.
                        Err(_) if renewed.elapsed() >= ttl => {
                            let _ = lost_tx.send(true);
                            return;
                        }
                        Err(_) => {}
                    }
                }
            }
        });
        Self {
            pool,
            key,
            token,
            lost,
            renewal,
        }
    }

    /// True once renewal found the lock held by someone else.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lock is lost.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Extends the lease now; `false` when it is no longer ours.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn extend(&self, ttl: Duration) -> Result<bool, Unavailable> {
        extend(&self.pool, &self.key, &self.token, ttl).await
    }

    /// Releases the lock if it is still ours; `false` when it was not.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn release(self) -> Result<bool, Unavailable> {
        self.renewal.abort();
        release(&self.pool, &self.key, &self.token).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

async fn extend(
    pool: &RedisPool,
    key: &str,
    token: &str,
    ttl: Duration,
) -> Result<bool, Unavailable> {
    let mut conn = pool.get().await.map_err(unavailable)?;
    let done: i64 = Script::new(EXTEND)
        .key(key)
        .arg(token)
        .arg(millis(ttl))
        .invoke_async(&mut conn)
        .await
        .map_err(unavailable)?;
    Ok(done == 1)
}

/// Compare-and-delete: only the token's holder can release.
///
/// # Errors
/// [`Unavailable`] when Redis fails.
pub(crate) async fn release(pool: &RedisPool, key: &str, token: &str) -> Result<bool, Unavailable> {
    let mut conn = pool.get().await.map_err(unavailable)?;
    let done: i64 = Script::new(RELEASE)
        .key(key)
        .arg(token)
        .invoke_async(&mut conn)
        .await
        .map_err(unavailable)?;
    Ok(done == 1)
}

/// For tests: a lease's key and real token, to act as its holder after it expired.
#[doc(hidden)]
pub fn credentials_of(lease: &Lease) -> (String, String) {
    (lease.key.clone(), lease.token.clone())
}

/// For tests: a lease's key and token, to try releasing it as someone else.
#[doc(hidden)]
pub fn forge_release_of(lease: &Lease) -> (String, String) {
    (lease.key.clone(), format!("not-{}", lease.token))
}

#[doc(hidden)]
pub async fn release_as(pool: &RedisPool, key: &str, token: &str) -> Result<bool, Unavailable> {
    release(pool, key, token).await
}
