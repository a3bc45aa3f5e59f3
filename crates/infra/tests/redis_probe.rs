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
    assert!(started.elapsed() < Duration::from_secs(2));
}
