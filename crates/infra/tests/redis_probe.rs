//! The Redis pool and readiness probe against a real server.

use std::time::{Duration, Instant};

use domain::health::HealthProbe;
use infra::redis::{RedisPoolSettings, RedisProbe, connect_pool};
use testkit::TestRedis;

#[tokio::test]
async fn a_live_redis_is_ready_and_a_dead_one_fails_fast() {
    let redis = TestRedis::create().await;
    let live = RedisProbe::new(
        connect_pool(&RedisPoolSettings {
            url: redis.url.clone(),
            max_size: 2,
            timeout: Duration::from_secs(1),
        })
        .expect("pool"),
    );
    let dead = RedisProbe::new(
        connect_pool(&RedisPoolSettings {
            url: "redis://127.0.0.1:1".into(),
            max_size: 2,
            timeout: Duration::from_millis(500),
        })
        .expect("pool builds lazily"),
    );

    live.check().await.expect("live Redis answers PING");
    let started = Instant::now();
    let err = dead.check().await.expect_err("nothing listens on port 1");

    assert_eq!(err.service(), "redis");
    // Refused, not hung (generous: a busy machine is slow, never stuck).
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Each thread that uses the pool opens connections of its own, so a
/// connection's driver task runs on the thread its commands come from: with
/// at most one connection per set, two threads that each use the pool
/// twice end with two connections open (one shared set would hold one).
#[test]
fn each_thread_keeps_connections_of_its_own() {
    let redis = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(TestRedis::create())
    })
    .join()
    .expect("redis");
    let pool = connect_pool(&RedisPoolSettings {
        url: redis.url.clone(),
        max_size: 1,
        timeout: Duration::from_secs(2),
    })
    .expect("pool");
    let use_on_a_thread = |pool: infra::redis::RedisPool| {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                for _ in 0..2 {
                    let mut conn = pool.get().await.expect("a connection");
                    let pong: String = redis::cmd("PING")
                        .query_async(&mut conn)
                        .await
                        .expect("PING");
                    assert_eq!(pong, "PONG");
                }
            });
            // The set lives on with the pool; its driver task ends with this runtime.
        })
    };
    let threads = [use_on_a_thread(pool.clone()), use_on_a_thread(pool.clone())];
    for t in threads {
        t.join().expect("thread");
    }

    // max_size 1 per set: one pool for both threads would have had one.
    assert_eq!(pool.status().size, 2, "one connection per thread");
}
