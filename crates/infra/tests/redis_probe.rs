//! The Redis pool and readiness probe against a real server.

use std::time::{Duration, Instant};

use domain::health::HealthProbe;
use infra::redis::{RedisPoolSettings, RedisProbe, connect_pool};
use testkit::{TcpProxy, TestRedis, target_of};

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

/// On a hung Redis, a `get` after a failure checks the idle connections one
/// after another, each check taking the whole timeout; the pool bounds the
/// `get` in all by its timeout (the fault runner's `redis-hang` saw requests
/// wait three timeouts).
#[tokio::test]
async fn a_get_on_a_hung_redis_takes_the_timeout_at_most_whatever_it_has_to_check() {
    let redis = TestRedis::create().await;
    let proxy = TcpProxy::start(target_of(&redis.url)).await;
    let timeout = Duration::from_millis(300);
    let pool = connect_pool(&RedisPoolSettings {
        url: redis.url_via(proxy.addr()),
        max_size: 16,
        timeout,
    })
    .expect("pool");
    // Sixteen idle connections, all open: checked one after another, they
    // would take 16 × 300 ms.
    let mut conns = Vec::new();
    for _ in 0..16 {
        conns.push(pool.get().await.expect("a connection"));
    }
    for conn in &mut conns {
        let _: String = redis::cmd("PING").query_async(conn).await.expect("PING");
    }
    drop(conns);

    proxy.stall();
    // A command times out: every idle connection is now checked on its next
    // get. (Failures are noted process-wide, so when another test of this
    // binary has just seen a dead Redis, the checks have begun already and
    // this first get fails its check instead: the same state either way.)
    if let Ok(mut conn) = pool.get().await {
        let err = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .expect_err("a hung Redis does not answer");
        assert!(err.is_timeout(), "{err}");
    }

    let started = Instant::now();
    let got = pool.get().await;
    let took = started.elapsed();
    assert!(got.is_err(), "no connection passes its check");
    // Bounded by the timeout, with room for a busy machine, far below the
    // 4.8 s of sixteen checks in a row.
    assert!(
        took < Duration::from_secs(2),
        "a get took {took:?}: each idle connection's check waited the {timeout:?} timeout"
    );

    // Back again: the pool serves without a restart.
    proxy.restore();
    let mut conn = pool.get().await.expect("a connection after the hang");
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING after the hang");
    assert_eq!(pong, "PONG");
}
