//! The distributed lock against a real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use infra::redis::{
    RedisKeys, RedisLock, RedisPoolSettings, connect_pool, credentials_of, forge_release_of,
    release_as,
};
use testkit::{TcpProxy, TestRedis, target_of};

fn lock(redis: &TestRedis) -> (RedisLock, infra::redis::RedisPool) {
    let pool = connect_pool(&RedisPoolSettings {
        url: redis.url.clone(),
        max_size: 32,
        timeout: Duration::from_secs(2),
    })
    .expect("pool");
    (
        RedisLock::new(pool.clone(), RedisKeys::new(redis.prefix.clone())),
        pool,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_contention_at_most_one_holder_at_a_time_and_everyone_gets_a_turn() {
    let redis = TestRedis::create().await;
    let (locks, _) = lock(&redis);
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let turns = Arc::new(AtomicUsize::new(0));

    let workers: Vec<_> = (0..20)
        .map(|_| {
            let (locks, inside, overlaps, turns) = (
                locks.clone(),
                Arc::clone(&inside),
                Arc::clone(&overlaps),
                Arc::clone(&turns),
            );
            tokio::spawn(async move {
                let lease = locks
                    .acquire("critical", Duration::from_secs(5), Duration::from_secs(20))
                    .await
                    .expect("redis answers")
                    .expect("a turn within the wait");
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                inside.store(false, Ordering::SeqCst);
                turns.fetch_add(1, Ordering::SeqCst);
                assert!(
                    lease.release().await.expect("redis answers"),
                    "released our own lock"
                );
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }

    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(turns.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_dead_holders_lock_is_taken_over_after_its_ttl() {
    let redis = TestRedis::create().await;
    let (locks, _) = lock(&redis);
    let holder = locks
        .try_acquire("job", Duration::from_millis(300))
        .await
        .expect("redis")
        .expect("free");
    // The holder dies: its renewal stops, nothing releases the lock.
    drop(holder);

    assert!(
        locks
            .try_acquire("job", Duration::from_secs(5))
            .await
            .expect("redis")
            .is_none(),
        "still held"
    );
    let taken = locks
        .acquire("job", Duration::from_secs(5), Duration::from_secs(2))
        .await
        .expect("redis");

    assert!(taken.is_some(), "taken over once the TTL ran out");
}

#[tokio::test]
async fn only_the_holder_can_release() {
    let redis = TestRedis::create().await;
    let (locks, pool) = lock(&redis);
    let lease = locks
        .try_acquire("mine", Duration::from_secs(5))
        .await
        .expect("redis")
        .expect("free");
    let (key, wrong_token) = forge_release_of(&lease);

    assert!(
        !release_as(&pool, &key, &wrong_token).await.expect("redis"),
        "a stranger cannot release"
    );
    assert!(
        locks
            .try_acquire("mine", Duration::from_secs(5))
            .await
            .expect("redis")
            .is_none()
    );
    assert!(lease.release().await.expect("redis"));
    assert!(
        locks
            .try_acquire("mine", Duration::from_secs(5))
            .await
            .expect("redis")
            .is_some()
    );
}

#[tokio::test]
async fn a_held_lease_renews_itself_past_its_ttl() {
    let redis = TestRedis::create().await;
    let (locks, _) = lock(&redis);
    let lease = locks
        .try_acquire("long", Duration::from_millis(300))
        .await
        .expect("redis")
        .expect("free");

    tokio::time::sleep(Duration::from_millis(900)).await;

    assert!(!lease.is_lost());
    assert!(
        locks
            .try_acquire("long", Duration::from_secs(1))
            .await
            .expect("redis")
            .is_none(),
        "still ours"
    );
    assert!(lease.release().await.expect("redis"));
}

#[tokio::test]
async fn a_holder_whose_lease_expired_cannot_release_the_next_holders_lock() {
    let redis = TestRedis::create().await;
    let (locks, pool) = lock(&redis);
    let old = locks
        .try_acquire("job", Duration::from_millis(200))
        .await
        .expect("redis")
        .expect("free");
    let (key, old_token) = credentials_of(&old);
    drop(old); // stalls: no renewal
    let new = locks
        .acquire("job", Duration::from_secs(5), Duration::from_secs(2))
        .await
        .expect("redis")
        .expect("taken over");

    assert!(
        !release_as(&pool, &key, &old_token).await.expect("redis"),
        "the old holder's release is refused"
    );
    assert!(
        locks
            .try_acquire("job", Duration::from_secs(5))
            .await
            .expect("redis")
            .is_none(),
        "still the new holder's"
    );
    assert!(new.release().await.expect("redis"));
}

#[tokio::test]
async fn a_lease_that_cannot_reach_redis_for_a_whole_ttl_reports_itself_lost() {
    let redis = TestRedis::create().await;
    let proxy = TcpProxy::start(target_of(&redis.url)).await;
    let pool = connect_pool(&RedisPoolSettings {
        url: format!("redis://{}", proxy.addr()),
        max_size: 4,
        timeout: Duration::from_millis(200),
    })
    .expect("pool");
    let locks = RedisLock::new(pool, RedisKeys::new(redis.prefix.clone()));
    let mut lease = locks
        .try_acquire("fragile", Duration::from_millis(600))
        .await
        .expect("redis")
        .expect("free");

    proxy.cut();
    let lost = tokio::time::timeout(Duration::from_secs(3), lease.lost()).await;

    assert!(
        lost.is_ok() && lease.is_lost(),
        "the holder must stop its protected work"
    );
}
