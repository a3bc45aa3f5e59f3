//! The rate limiter against a real Redis: one budget for every instance,
//! exact under concurrency, and a local fallback when Redis is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::throttle::{Admission, Quota, RateLimiter};
use infra::redis::{RedisKeys, RedisPoolSettings, RedisRateLimiter, connect_pool};
use testkit::{TcpProxy, TestRedis, target_of};

fn limiter(url: &str, prefix: &str, timeout: Duration) -> RedisRateLimiter {
    let pool = connect_pool(&RedisPoolSettings {
        url: url.to_owned(),
        max_size: 16,
        timeout,
    })
    .expect("pool");
    RedisRateLimiter::new(pool, RedisKeys::new(prefix.to_owned()))
}

fn quota(limit: u32, period: Duration) -> Quota {
    Quota::new(limit, period).expect("valid quota")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_firing_at_once_share_one_budget_exactly() {
    let redis = TestRedis::create().await;
    let instances = [
        Arc::new(limiter(&redis.url, &redis.prefix, Duration::from_secs(2))),
        Arc::new(limiter(&redis.url, &redis.prefix, Duration::from_secs(2))),
    ];
    let q = quota(50, Duration::from_secs(600));

    let attempts: Vec<_> = (0..300)
        .map(|i| {
            let limiter = Arc::clone(&instances[i % 2]);
            tokio::spawn(async move { limiter.admit("order:1", q).await })
        })
        .collect();
    let mut admitted = 0;
    let mut waits = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("task") {
            Admission::Admitted => admitted += 1,
            Admission::Limited { retry_after } => waits.push(retry_after),
        }
    }

    assert_eq!(admitted, 50, "exactly the burst, across both instances");
    assert_eq!(waits.len(), 250);
    // The next slot frees up one interval (600 s / 50 = 12 s) after now.
    assert!(
        waits
            .iter()
            .all(|w| *w > Duration::from_secs(11) && *w <= Duration::from_secs(12)),
        "{:?}",
        waits.iter().max()
    );
    // Another subject has its own budget.
    assert_eq!(instances[0].admit("order:2", q).await, Admission::Admitted);
}

#[tokio::test]
async fn a_slot_frees_up_after_one_interval_and_release_gives_one_back() {
    let redis = TestRedis::create().await;
    let limiter = limiter(&redis.url, &redis.prefix, Duration::from_secs(2));
    let q = quota(2, Duration::from_millis(600)); // one every 300 ms

    for _ in 0..2 {
        assert_eq!(
            limiter.admit("signin-login:a", q).await,
            Admission::Admitted
        );
    }
    assert!(matches!(
        limiter.admit("signin-login:a", q).await,
        Admission::Limited { .. }
    ));
    limiter.release("signin-login:a", q).await;
    assert_eq!(
        limiter.admit("signin-login:a", q).await,
        Admission::Admitted
    );
    assert!(matches!(
        limiter.admit("signin-login:a", q).await,
        Admission::Limited { .. }
    ));

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        limiter.admit("signin-login:a", q).await,
        Admission::Admitted
    );

    // The cell expires with what it holds: nothing is left behind in Redis.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut conn = redis.connect().await;
    let left: Vec<String> = deadpool_redis::redis::cmd("KEYS")
        .arg(format!("{}rl:*", redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn with_redis_gone_the_limits_hold_in_process_and_nobody_waits_or_is_refused_for_it() {
    let redis = TestRedis::create().await;
    let proxy = TcpProxy::start(target_of(&redis.url)).await;
    let limiter = limiter(
        &redis.url_via(proxy.addr()),
        &redis.prefix,
        Duration::from_millis(300),
    );
    let q = quota(5, Duration::from_secs(600));
    assert_eq!(limiter.admit("issue:9", q).await, Admission::Admitted);

    proxy.cut();
    let started = Instant::now();
    let mut admitted = 0;
    for _ in 0..20 {
        if limiter.admit("issue:9", q).await == Admission::Admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5, "the local budget, counted from zero");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "each attempt is bounded by the pool timeout"
    );

    proxy.restore();
    // Back on Redis, where one slot of five was taken before the outage.
    let mut back = 0;
    for _ in 0..10 {
        if limiter.admit("issue:9", q).await == Admission::Admitted {
            back += 1;
        }
    }
    assert_eq!(back, 4);
}
