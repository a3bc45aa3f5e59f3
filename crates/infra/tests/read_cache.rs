//! The shared read cache against a real Redis. Each `ReadCache` here stands
//! for one instance of the service: its own pool, the same key namespace.
//! The loader stands for the database: it counts its calls and answers the
//! source's current value.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use domain::error::Unavailable;
use infra::redis::{ReadCache, RedisKeys, RedisPoolSettings, connect_pool};
use testkit::{TcpProxy, TestRedis, target_of};
use tokio::sync::Notify;

const PATIENCE: Duration = Duration::from_secs(7);

fn instance(redis: &TestRedis, url: &str, bound: Duration) -> ReadCache {
    let pool = connect_pool(&RedisPoolSettings {
        url: url.to_owned(),
        max_size: 16,
        timeout: Duration::from_secs(2),
    })
    .expect("pool");
    ReadCache::new(
        pool,
        RedisKeys::new(redis.prefix.clone()),
        "test",
        bound,
        PATIENCE,
    )
    // A busy machine may take a while to run a script; only the hung-Redis
    // test needs the service's short wait.
    .with_redis_wait(Duration::from_secs(2))
}

/// The database: a value that writes change, and the loads it answered.
#[derive(Default)]
struct Source {
    value: AtomicI64,
    loads: AtomicUsize,
}

impl Source {
    async fn load(&self, delay: Duration) -> Result<i64, Unavailable> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let value = self.value.load(Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        Ok(value)
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

fn encode(v: &i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn decode(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

async fn read(cache: &ReadCache, key: &str, source: &Source) -> i64 {
    cache
        .get(key, || source.load(Duration::ZERO), encode, decode)
        .await
        .expect("the source answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_simultaneous_misses_over_two_instances_load_once() {
    let redis = TestRedis::create().await;
    let bound = Duration::from_secs(30);
    let instances = Arc::new([
        instance(&redis, &redis.url, bound),
        instance(&redis, &redis.url, bound),
    ]);
    let source = Arc::new(Source::default());
    source.value.store(42, Ordering::SeqCst);
    let start = Arc::new(tokio::sync::Barrier::new(100));

    let readers: Vec<_> = (0..100)
        .map(|i| {
            let (instances, source, start) = (
                Arc::clone(&instances),
                Arc::clone(&source),
                Arc::clone(&start),
            );
            tokio::spawn(async move {
                start.wait().await;
                instances[i % 2]
                    .get(
                        "hot",
                        // Long enough that every reader arrives while it runs.
                        || source.load(Duration::from_millis(300)),
                        encode,
                        decode,
                    )
                    .await
                    .expect("answered")
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), 42);
    }

    assert_eq!(source.loads(), 1, "one load for the whole deployment");
    let counted: u64 = instances
        .iter()
        .map(|c| {
            let n = c.counts();
            n.hits + n.stale + n.loads + n.waited
        })
        .sum();
    assert_eq!(counted, 100, "every read counted once");
}

#[tokio::test]
async fn a_value_loaded_by_one_instance_is_served_by_the_other() {
    let redis = TestRedis::create().await;
    let bound = Duration::from_secs(30);
    let (a, b) = (
        instance(&redis, &redis.url, bound),
        instance(&redis, &redis.url, bound),
    );
    let source = Source::default();
    source.value.store(7, Ordering::SeqCst);

    assert_eq!(read(&a, "k", &source).await, 7);
    source.value.store(8, Ordering::SeqCst);
    // Not invalidated: within its bound the cached answer stands.
    assert_eq!(read(&b, "k", &source).await, 7);
    assert_eq!(read(&a, "k", &source).await, 7);
    assert_eq!(source.loads(), 1);
    assert_eq!(b.counts().hits, 1);
    // Another key is another value.
    assert_eq!(read(&b, "other", &source).await, 8);
}

#[tokio::test]
async fn after_an_invalidation_the_next_read_on_any_instance_sees_the_write() {
    let redis = TestRedis::create().await;
    let bound = Duration::from_secs(30);
    let (a, b) = (
        instance(&redis, &redis.url, bound),
        instance(&redis, &redis.url, bound),
    );
    let source = Source::default();
    source.value.store(1, Ordering::SeqCst);
    assert_eq!(read(&a, "k", &source).await, 1);
    assert_eq!(read(&b, "k", &source).await, 1);

    // The write commits, then invalidates (on instance a).
    source.value.store(2, Ordering::SeqCst);
    a.invalidate("k").await;

    assert_eq!(read(&b, "k", &source).await, 2);
    assert_eq!(read(&a, "k", &source).await, 2);
    assert_eq!(source.loads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_that_began_before_an_invalidation_stores_nothing() {
    let redis = TestRedis::create().await;
    let bound = Duration::from_secs(30);
    let (a, b) = (
        Arc::new(instance(&redis, &redis.url, bound)),
        instance(&redis, &redis.url, bound),
    );
    let source = Arc::new(Source::default());
    source.value.store(1, Ordering::SeqCst);
    let (loaded, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));

    // A reads the old value from the database, then stalls before storing it.
    let slow = tokio::spawn({
        let (a, source, loaded, resume) = (
            Arc::clone(&a),
            Arc::clone(&source),
            Arc::clone(&loaded),
            Arc::clone(&resume),
        );
        async move {
            a.get(
                "k",
                || async {
                    let old = source.load(Duration::ZERO).await;
                    loaded.notify_one();
                    resume.notified().await;
                    old
                },
                encode,
                decode,
            )
            .await
            .expect("answered")
        }
    });
    loaded.notified().await;
    // Meanwhile a write commits and invalidates.
    source.value.store(2, Ordering::SeqCst);
    b.invalidate("k").await;
    resume.notify_one();
    assert_eq!(
        slow.await.expect("reader"),
        1,
        "its caller gets what it read"
    );

    // The old value was not stored: the next read loads the new one.
    assert_eq!(read(&b, "k", &source).await, 2);
    assert_eq!(read(&a, "k", &source).await, 2);
    assert_eq!(source.loads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_answer_is_older_than_the_bound_while_the_source_keeps_changing() {
    let redis = TestRedis::create().await;
    let bound = Duration::from_millis(300);
    // Each load takes half the bound, so a value spends half its life being
    // loaded: a bound counted from the store, not from the read, would
    // let answers reach one and a half bounds.
    let load_time = bound / 2;
    let instances = Arc::new([
        instance(&redis, &redis.url, bound),
        instance(&redis, &redis.url, bound),
    ]);
    // The source's value is the moment it was read (µs since `epoch`), so
    // every answer tells its own age.
    let epoch = Instant::now();
    let loads = Arc::new(AtomicUsize::new(0));
    let micros =
        move |at: Instant| i64::try_from(at.duration_since(epoch).as_micros()).unwrap_or(i64::MAX);

    let readers: Vec<_> = (0..8)
        .map(|i| {
            let (instances, loads) = (Arc::clone(&instances), Arc::clone(&loads));
            tokio::spawn(async move {
                let mut oldest = Duration::ZERO;
                let mut reads = 0;
                while epoch.elapsed() < bound * 10 {
                    let asked = Instant::now();
                    let read_at = instances[i % 2]
                        .get(
                            "clock",
                            || async {
                                loads.fetch_add(1, Ordering::SeqCst);
                                let read_at = micros(Instant::now());
                                tokio::time::sleep(load_time).await;
                                Ok(read_at)
                            },
                            encode,
                            decode,
                        )
                        .await
                        .expect("answered");
                    // The answer was in Redis, unexpired, at some moment after
                    // `asked`; so its age when asked is under the bound.
                    let age =
                        Duration::from_micros(u64::try_from(micros(asked) - read_at).unwrap_or(0));
                    oldest = oldest.max(age);
                    reads += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (oldest, reads)
            })
        })
        .collect();
    let mut reads = 0;
    let mut oldest = Duration::ZERO;
    for reader in readers {
        let (old, n) = reader.await.expect("reader");
        oldest = oldest.max(old);
        reads += n;
    }
    assert!(oldest < bound, "an answer {oldest:?} old, bound {bound:?}");
    let loads = loads.load(Ordering::SeqCst);
    // The cache was doing its job: most answers came from Redis, not one
    // load per read.
    assert!(reads >= 5 * loads, "{reads} reads, {loads} loads");
    assert!(
        oldest > bound / 2,
        "ageing values were served while refilled (oldest {oldest:?})"
    );
}

#[tokio::test]
async fn with_redis_hung_reads_are_answered_by_the_source() {
    let redis = TestRedis::create().await;
    let proxy = TcpProxy::start(target_of(&redis.url)).await;
    let cache = instance(
        &redis,
        &redis.url_via(proxy.addr()),
        Duration::from_secs(30),
    );
    let source = Source::default();
    source.value.store(3, Ordering::SeqCst);
    assert_eq!(read(&cache, "k", &source).await, 3);
    proxy.stall();
    source.value.store(4, Ordering::SeqCst);

    // A hang is told from an answer by a generous deadline; the cache gives
    // up on Redis long before it.
    let answered = tokio::time::timeout(Duration::from_secs(10), read(&cache, "k", &source))
        .await
        .expect("answered despite the hung Redis");
    assert_eq!(answered, 4, "from the source");
    assert_eq!(cache.counts().bypassed, 1);
    proxy.restore();
}

#[tokio::test]
async fn with_redis_unreachable_every_read_is_answered_by_the_source() {
    let redis = TestRedis::create().await;
    // Nothing listens on port 1.
    let cache = instance(&redis, "redis://127.0.0.1:1", Duration::from_secs(30));
    let source = Source::default();
    source.value.store(5, Ordering::SeqCst);

    assert_eq!(read(&cache, "k", &source).await, 5);
    source.value.store(6, Ordering::SeqCst);
    assert_eq!(read(&cache, "k", &source).await, 6, "fresh, not cached");
    cache.invalidate("k").await; // logged, not an error
    assert_eq!(source.loads(), 2);
    assert_eq!(cache.counts().bypassed, 2);
}
