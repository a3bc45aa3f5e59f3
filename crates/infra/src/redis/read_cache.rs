//! A read-through cache that every instance shares, for reads whose answer
//! may be a little old (docs/caching.md says which, and why).
//!
//! One cached read is one [`ReadCache`]: a name (for metrics), a bound
//! (the oldest answer it may give) and Redis. Under a key it keeps, in
//! three keys of one hash tag (so one script takes them on a cluster):
//!
//! - `cache:{K}`: the value, prefixed by the version it was loaded under,
//!   expiring one bound after Redis answered the read that began its load
//!   (the TTL is counted on Redis' clock when the value is stored), so its
//!   age counts from before the database was read;
//! - `cache:{K}:ver`: the version, raised by [`ReadCache::invalidate`]
//!   after a write commits. A load that read the version before the write
//!   stores nothing: its value may predate the write;
//! - `cache:{K}:lease`: the right to refill, `SET NX PX`, so that one
//!   caller in the whole deployment loads a missing or ageing value while
//!   the others serve the old one (still within the bound) or, when there
//!   is none, wait for the new one.
//!
//! A value is fresh for the first half of its bound; in the second half the
//! first reader to ask refills it, and the others keep serving it. Any Redis
//! failure, or a Redis slower than the Redis wait (250 ms by default), sends
//! the read straight to the loader (Postgres), and the next second's reads
//! too: slower, never wrong. An invalidation that cannot reach Redis leaves the value to
//! expire at its bound.

use std::future::Future;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::redis::Script;
use domain::error::Unavailable;

use super::{RedisKeys, RedisPool, unavailable};

/// KEYS: value, version, lease. ARGV[1]: the TTL (ms) above which a value
/// is fresh, ARGV[2]: this caller's lease token, ARGV[3]: the lease (ms).
/// Returns {value or '', state, version, Redis' clock in µs}; states below.
const READ: &str = r"
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local ver = redis.call('GET', KEYS[2]) or '0'
local v = redis.call('GET', KEYS[1])
if v then
  local cut = string.find(v, ':', 1, true)
  if cut and string.sub(v, 1, cut - 1) == ver then
    v = string.sub(v, cut + 1)
  else
    v = false
  end
end
if v and redis.call('PTTL', KEYS[1]) > tonumber(ARGV[1]) then
  return {v, 0, ver, now}
end
local won = redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3])
if v then
  if won then return {v, 1, ver, now} end
  return {v, 2, ver, now}
end
if won then return {'', 3, ver, now} end
return {'', 4, ver, now}";

/// KEYS: value, version, lease. ARGV[1]: the version the load began
/// under, ARGV[2]: the value, ARGV[3]: when it must be gone (µs of Redis'
/// clock), ARGV[4]: the lease token. Stores the value only if no
/// invalidation came since and it has time left; gives the lease back if
/// it is still this caller's. The TTL is counted here, on the clock that
/// expires it, so no delay between the load and this script lengthens it
/// (rounded down, less a millisecond for Redis' own rounding).
const WRITE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = math.floor((tonumber(ARGV[3]) - now) / 1000) - 1
local stored = 0
if ttl > 0 and (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ttl)
  stored = 1
end
if redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return stored";

/// KEYS: value, version, lease. ARGV[1]: how long the version is kept (ms).
/// The lease goes too, so that the next reader refills at once instead of
/// waiting for a load whose value will not be stored.
const INVALIDATE: &str = r"
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
return 1";

static READ_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(READ));
static WRITE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE));
static INVALIDATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INVALIDATE));

/// How long a version outlives its value; far longer than any load.
const VERSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the read script found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A value in the first half of its bound.
    Fresh,
    /// An ageing value; this caller holds the lease and refills it.
    AgeingRefill,
    /// An ageing value that another caller is refilling.
    AgeingServe,
    /// No value; this caller holds the lease and loads it.
    MissingLoad,
    /// No value; another caller is loading it.
    MissingWait,
}

impl Found {
    fn of(state: i64) -> Option<Self> {
        Some(match state {
            0 => Self::Fresh,
            1 => Self::AgeingRefill,
            2 => Self::AgeingServe,
            3 => Self::MissingLoad,
            4 => Self::MissingWait,
            _ => return None,
        })
    }
}

/// How the reads of one cache were answered since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCacheCounts {
    /// From a fresh value.
    pub hits: u64,
    /// From an ageing value, while someone refilled it.
    pub stale: u64,
    /// By loading from the database (a miss, a refill, or a waiter whose
    /// wait ran out).
    pub loads: u64,
    /// After waiting for another caller's load.
    pub waited: u64,
    /// By the database directly because Redis failed.
    pub bypassed: u64,
}

impl ReadCacheCounts {
    /// The counts with their outcome's name, for metrics.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hit", self.hits),
            ("stale", self.stale),
            ("load", self.loads),
            ("waited", self.waited),
            ("bypassed", self.bypassed),
        ]
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    stale: AtomicU64,
    loads: AtomicU64,
    waited: AtomicU64,
    bypassed: AtomicU64,
}

/// How long a read waits for Redis before it asks the database instead,
/// unless [`ReadCache::with_redis_wait`] says otherwise: a hung Redis must
/// not slow the reads it used to leave alone.
pub const REDIS_WAIT: Duration = Duration::from_millis(250);
/// After Redis failed, how long reads go straight to the database before
/// trying it again (one slow failure per second per cache, not per read).
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// What the read script answered.
struct Read {
    bytes: Vec<u8>,
    found: Found,
    version: String,
    /// Redis' clock when it answered, in µs.
    now_micros: u64,
}

/// One cached read, shared by every instance through Redis.
pub struct ReadCache {
    pool: RedisPool,
    keys: RedisKeys,
    name: &'static str,
    bound: Duration,
    lease: Duration,
    patience: Duration,
    redis_wait: Duration,
    counters: Counters,
    /// Until when (ms after `started`) reads skip Redis.
    skip_until_ms: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("name", &self.name)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl ReadCache {
    /// A cache named `name` whose answers are never older than `bound`.
    /// `patience` is the operation timeout of the database behind it: a
    /// load may take that long, so a refill's lease lasts a third of it
    /// (then another caller may take over from one that died), and a caller
    /// waits for another's load up to two thirds of it before it loads.
    ///
    /// # Panics
    /// When `bound` is under 2 ms (half of it must be a whole millisecond).
    pub fn new(
        pool: RedisPool,
        keys: RedisKeys,
        name: &'static str,
        bound: Duration,
        patience: Duration,
    ) -> Self {
        assert!(
            bound >= Duration::from_millis(2),
            "a bound of at least 2 ms"
        );
        Self {
            pool,
            keys,
            name,
            bound,
            lease: (patience / 3).max(Duration::from_millis(10)),
            patience,
            redis_wait: REDIS_WAIT,
            counters: Counters::default(),
            skip_until_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// The same cache, waiting up to `wait` for Redis before a read goes to
    /// the database (the service uses an eighth of its dependency timeout,
    /// 250 ms by default; a test on a busy machine, more).
    #[must_use]
    pub fn with_redis_wait(self, wait: Duration) -> Self {
        Self {
            redis_wait: wait,
            ..self
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The oldest answer this cache gives.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    pub fn counts(&self) -> ReadCacheCounts {
        let c = &self.counters;
        ReadCacheCounts {
            hits: c.hits.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            waited: c.waited.load(Ordering::Relaxed),
            bypassed: c.bypassed.load(Ordering::Relaxed),
        }
    }

    /// The version, lease and value keys of `key` (an id: no braces).
    fn keys_of(&self, key: &str) -> [String; 3] {
        let value = self.keys.key(&format!("cache:{{{}:{key}}}", self.name));
        [format!("{value}:ver"), format!("{value}:lease"), value]
    }

    fn since_start_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The value under `key`: from Redis when it is there and within the
    /// bound, else from `load`, whose result is stored for the others.
    /// `encode` and `decode` turn the value into bytes and back.
    ///
    /// # Errors
    /// What `load` returns.
    pub async fn get<T, F, Fut>(
        &self,
        key: &str,
        load: F,
        encode: impl Fn(&T) -> Vec<u8>,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<T, Unavailable>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Unavailable>>,
    {
        if self.since_start_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            self.counters.bypassed.fetch_add(1, Ordering::Relaxed);
            return load().await;
        }
        let [ver, lease, value] = self.keys_of(key);
        let token = format!("{:032x}", rand::random::<u128>());
        let give_up = Instant::now() + domain::deadline::remaining(self.patience) * 2 / 3;
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        loop {
            let Ok(read) = self.read(&value, &ver, &lease, &token).await else {
                let until = self.since_start_ms() + millis(REDIS_BACKOFF);
                self.skip_until_ms.fetch_max(until, Ordering::Relaxed);
                self.counters.bypassed.fetch_add(1, Ordering::Relaxed);
                return load().await;
            };
            match read.found {
                Found::Fresh | Found::AgeingServe => {
                    if let Some(v) = decode(&read.bytes) {
                        let counter = match (read.found, waited) {
                            (_, true) => &self.counters.waited,
                            (Found::Fresh, false) => &self.counters.hits,
                            _ => &self.counters.stale,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        return Ok(v);
                    }
                    // Written in a format this code does not read (another
                    // release): drop it, so that the next reader refills
                    // it under a lease, and answer from the database.
                    self.invalidate(key).await;
                    self.counters.loads.fetch_add(1, Ordering::Relaxed);
                    return load().await;
                }
                Found::AgeingRefill | Found::MissingLoad => {
                    self.counters.loads.fetch_add(1, Ordering::Relaxed);
                    // Gone one bound after Redis answered, which was before
                    // the load began: the bound counts from before the read.
                    let expires_at = read.now_micros + micros(self.bound);
                    let loaded = load().await;
                    let bytes = loaded.as_ref().ok().map(&encode);
                    let _ = self
                        .write(
                            &value,
                            &ver,
                            &lease,
                            &read.version,
                            bytes,
                            expires_at,
                            &token,
                        )
                        .await;
                    return loaded;
                }
                Found::MissingWait => {
                    if Instant::now() >= give_up {
                        self.counters.loads.fetch_add(1, Ordering::Relaxed);
                        return load().await;
                    }
                    waited = true;
                    let jitter = Duration::from_micros(rand::random::<u64>() % 1_000);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(Duration::from_millis(25));
                }
            }
        }
    }

    /// Drops the value under `key` and makes any load begun before this
    /// call store nothing. Called after the write that changes the answer
    /// has committed (not skipped while reads bypass Redis); a failure is
    /// logged, and the value then ages out at its bound.
    pub async fn invalidate(&self, key: &str) {
        let [ver, lease, value] = self.keys_of(key);
        let done: Result<i64, Unavailable> = async {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            INVALIDATE_SCRIPT
                .key(&value)
                .key(&ver)
                .key(&lease)
                .arg(millis(VERSION_TTL))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)
        }
        .await;
        if let Err(err) = done {
            tracing::warn!(cache = self.name, key, error = %err,
                "cache invalidation failed; the value expires at its bound");
        }
    }

    /// The read script, within the Redis wait.
    async fn read(
        &self,
        value: &str,
        ver: &str,
        lease: &str,
        token: &str,
    ) -> Result<Read, Unavailable> {
        let call = async {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            let (bytes, state, version, now): (Vec<u8>, i64, String, String) = READ_SCRIPT
                .key(value)
                .key(ver)
                .key(lease)
                .arg(millis(self.bound / 2))
                .arg(token)
                .arg(millis(self.lease))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let found = Found::of(state)
                .ok_or_else(|| unavailable(format!("the cache's read script said {state}")))?;
            let now_micros = now
                .parse()
                .map_err(|_| unavailable(format!("the cache's read script said time {now}")))?;
            Ok(Read {
                bytes,
                found,
                version,
                now_micros,
            })
        };
        tokio::time::timeout(self.redis_wait, call)
            .await
            .unwrap_or_else(|_| Err(unavailable("Redis did not answer the cache in time")))
    }

    /// Stores `bytes` (when the load succeeded) until `expires_at` if no
    /// invalidation came since the load began, and gives the lease back
    /// either way, so that after a failure the next caller tries at once.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        value: &str,
        ver: &str,
        lease: &str,
        version: &str,
        bytes: Option<Vec<u8>>,
        expires_at: u64,
        token: &str,
    ) -> Result<i64, Unavailable> {
        // A version that never matches stores nothing.
        let (version, bytes) = match bytes {
            Some(bytes) => (version, bytes),
            None => ("-", Vec::new()),
        };
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        WRITE_SCRIPT
            .key(value)
            .key(ver)
            .key(lease)
            .arg(version)
            .arg(bytes)
            .arg(expires_at)
            .arg(token)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
