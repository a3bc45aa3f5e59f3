//! Order events: every paid order reaches the Redis stream `events:orders`,
//! promptly, exactly once in normal operation, and even when Redis was down
//! at the time of the order.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use infra::redis::{RedisEventStream, RedisKeys, RedisPoolSettings, StreamEntry, connect_pool};
use serde_json::{Value, json};
use support::{Options, TestApp};
use testkit::{TcpProxy, target_of};
use tokio::io::{AsyncBufReadExt as _, BufReader};

fn stream(app: &TestApp) -> RedisEventStream {
    let pool = connect_pool(&RedisPoolSettings {
        url: app.redis.url.clone(),
        max_size: 2,
        timeout: Duration::from_secs(2),
    })
    .expect("pool");
    RedisEventStream::new(pool, &RedisKeys::new(app.redis.prefix.clone()), 1_000_000)
}

/// Reads the stream until it holds `n` entries or `within` passes.
async fn read_events(app: &TestApp, n: usize, within: Duration) -> Vec<StreamEntry> {
    let stream = stream(app);
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut last = "0".to_owned();
    while seen.len() < n && Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let Ok(batch) = stream
            .read_after(&last, wait.min(Duration::from_millis(200)), 100)
            .await
        else {
            // A loaded machine may miss a reply deadline: poll again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Some(entry) = batch.last() {
            last = entry.id.clone();
        }
        seen.extend(batch);
    }
    seen
}

async fn shop(app: &TestApp, stock: i64) -> (i64, String) {
    let product = app.create_product("Widget", 1_000, stock).await;
    let token = app
        .sign_up(&format!("buyer-{}", support::testkit_suffix()))
        .await;
    app.charge(&token, 100_000).await;
    (product, token)
}

async fn order(app: &TestApp, token: &str, product: i64, key: &str) -> Value {
    let reply = app
        .post_idempotent(
            "/api/v1/orders",
            key,
            &json!({"items": [{"productId": product, "quantity": 1}]}),
            token,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_reaches_the_stream() {
    let app = TestApp::spawn().await;
    let (product, token) = shop(&app, 5).await;

    let placed = order(&app, &token, product, "e-1").await;
    // An outcome, not a speed (that is the load generator's): the deadline
    // only bounds a wait on a busy machine.
    let events = read_events(&app, 1, Duration::from_secs(30)).await;

    assert_eq!(events.len(), 1);
    let event: Value = serde_json::from_str(&events[0].payload).expect("json payload");
    assert_eq!(event["type"], "order.paid");
    assert_eq!(event["orderId"], placed["orderId"]);
    assert_eq!(event["paidAmount"], placed["paidAmount"]);
    assert_eq!(event["items"][0]["productId"], product);
    assert!(
        event["occurredAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    // The relay marks the row after the stream took the event: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let published = loop {
        let published = app
            .scalar("SELECT count(*) AS n FROM outbox WHERE published_at IS NOT NULL")
            .await;
        if published == 1 || Instant::now() > deadline {
            break published;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(published, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_while_redis_is_down_reaches_the_stream_when_it_returns() {
    let services = testkit::services().await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.addr()),
        ..Options::default()
    })
    .await;
    let (product, token) = shop(&app, 5).await;

    redis.cut();
    let placed = order(&app, &token, product, "while-down").await;
    // Read the stream directly, not through the cut proxy: nothing yet.
    assert!(
        read_events(&app, 1, Duration::from_millis(1_200))
            .await
            .is_empty()
    );

    redis.restore();
    let events = read_events(&app, 1, Duration::from_secs(10)).await;

    assert_eq!(events.len(), 1, "published once Redis is back");
    let event: Value = serde_json::from_str(&events[0].payload).expect("json");
    assert_eq!(event["orderId"], placed["orderId"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_publish_each_event_once() {
    let app = TestApp::spawn().await;
    let sibling = app.spawn_sibling().await;
    let (product, token) = shop(&app, 50).await;

    for i in 0..20 {
        order(&app, &token, product, &format!("k-{i}")).await;
    }
    let events = read_events(&app, 20, Duration::from_secs(10)).await;
    // Give a second relay, if there were one, time to publish duplicates.
    tokio::time::sleep(Duration::from_millis(600)).await;

    assert_eq!(events.len(), 20);
    assert_eq!(
        stream(&app).entry_count().await.expect("xlen"),
        20,
        "no event published twice"
    );
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.payload).expect("json")["eventId"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    sibling.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_each_event_as_a_json_line() {
    let app = TestApp::spawn().await;
    let (product, token) = shop(&app, 5).await;
    let placed = order(&app, &token, product, "tailed").await;
    assert_eq!(read_events(&app, 1, Duration::from_secs(5)).await.len(), 1);

    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["events", "tail", "--from-start"])
        .env("REDIS_URL", &app.redis.url)
        .env("APP_REDIS_KEY_PREFIX", &app.redis.prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .expect("readable")
        .expect("one line");
    let _ = tail.kill().await;

    let event: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["orderId"], placed["orderId"]);
    assert_eq!(event["type"], "order.paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lock_holder_relays_and_a_standby_takes_over() {
    // Another "instance" holds the relay lock before this one starts.
    let redis = testkit::TestRedis::create().await;
    let pool = connect_pool(&RedisPoolSettings {
        url: redis.url.clone(),
        max_size: 2,
        timeout: Duration::from_secs(2),
    })
    .expect("pool");
    let locks = infra::redis::RedisLock::new(pool, RedisKeys::new(redis.prefix.clone()));
    let held = locks
        .try_acquire("outbox-relay", Duration::from_secs(30))
        .await
        .expect("redis answers")
        .expect("free before the app starts");
    let app = TestApp::spawn_on(Options::default(), redis).await;
    let (product, token) = shop(&app, 5).await;

    order(&app, &token, product, "held").await;
    assert!(
        read_events(&app, 1, Duration::from_millis(1_500))
            .await
            .is_empty(),
        "nobody relays while another instance holds the lock"
    );

    assert!(held.release().await.expect("redis answers"));
    let events = read_events(&app, 1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "the standby took over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_follows_events_that_arrive_after_it_starts() {
    let app = TestApp::spawn().await;
    let (product, token) = shop(&app, 5).await;
    let before = order(&app, &token, product, "before").await;
    assert_eq!(read_events(&app, 1, Duration::from_secs(5)).await.len(), 1);

    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["events", "tail"])
        .env("REDIS_URL", &app.redis.url)
        .env("APP_REDIS_KEY_PREFIX", &app.redis.prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    // Give it time to start following, then order twice in quick succession.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let first = order(&app, &token, product, "after-1").await;
    let second = order(&app, &token, product, "after-2").await;

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .expect("readable")
            .expect("a line");
        seen.push(serde_json::from_str::<Value>(&line).expect("JSON")["orderId"].clone());
    }
    let _ = tail.kill().await;

    assert_eq!(seen, [first["orderId"].clone(), second["orderId"].clone()]);
    assert!(
        !seen.contains(&before["orderId"]),
        "only events after the start"
    );
}
