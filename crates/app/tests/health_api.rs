//! Liveness, readiness, and how the service answers while a dependency is down.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Options, TestApp};
use testkit::{TcpProxy, target_of};

/// How long an answer may take before the test calls it a hang. Generous,
/// so that a busy machine passes: these tests prove an outage is answered
/// (503, not a hang or a 500) and recovers without a restart. How fast
/// (within the dependency timeout plus 1 s, under load) is measured by the
/// fault runner's hang faults (`tests/faults`, docs/reliability.md).
const NOT_A_HANG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn live_and_ready_answer_200_when_everything_is_up() {
    let app = TestApp::spawn().await;

    let live = app.get("/health/live", None).await;
    let ready = app.get("/health/ready", None).await;

    assert_eq!(live.status, 200);
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(
        ready.body["checks"],
        json!({"postgres": "UP", "redis": "UP"})
    );
}

/// Polls readiness until it answers `status`, failing after `within`.
async fn wait_for_ready_status(app: &TestApp, status: u16, within: Duration) -> support::Reply {
    let deadline = Instant::now() + within;
    loop {
        let reply = app.get("/health/ready", None).await;
        if reply.status == status || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_postgres_and_redis_going_away_and_coming_back() {
    let services = testkit::services().await;
    let pg = TcpProxy::start(target_of(&services.postgres_url)).await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        postgres_via: Some(pg.addr()),
        redis_via: Some(redis.addr()),
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/health/ready", None).await.status, 200);

    pg.cut();
    let started = Instant::now();
    let down = app.get("/health/ready", None).await;
    let took = started.elapsed();
    down.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        down.body["checks"],
        json!({"postgres": "DOWN", "redis": "UP"})
    );
    assert!(took < NOT_A_HANG, "readiness took {took:?}");

    // A request that needs Postgres answers 503 quickly too, never 500 or a hang.
    let started = Instant::now();
    let sign_up = app
        .post(
            "/api/v1/auth/signup",
            &json!({"loginId": "while-down", "password": "password-123"}),
            None,
        )
        .await;
    sign_up.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert!(
        started.elapsed() < NOT_A_HANG,
        "took {:?}",
        started.elapsed()
    );

    pg.restore();
    let back = wait_for_ready_status(&app, 200, Duration::from_secs(10)).await;
    assert_eq!(
        back.status, 200,
        "recovered without a restart: {}",
        back.text
    );
    app.sign_up("after-recovery").await;

    redis.cut();
    let started = Instant::now();
    let down = app.get("/health/ready", None).await;
    down.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        down.body["checks"],
        json!({"postgres": "UP", "redis": "DOWN"})
    );
    assert!(started.elapsed() < NOT_A_HANG);

    redis.restore();
    let back = wait_for_ready_status(&app, 200, Duration::from_secs(10)).await;
    assert_eq!(back.status, 200, "{}", back.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_dependency_gets_503_in_bounded_time_not_a_hang() {
    let services = testkit::services().await;
    let pg = TcpProxy::start(target_of(&services.postgres_url)).await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        postgres_via: Some(pg.addr()),
        redis_via: Some(redis.addr()),
        extra: vec![
            ("APP_DEPENDENCY_TIMEOUT".into(), "1s".into()),
            ("APP_STATEMENT_TIMEOUT".into(), "1s".into()),
        ],
        ..Options::default()
    })
    .await;
    app.sign_up("before-the-hang").await;

    // Postgres stops answering but keeps every connection open.
    pg.stall();
    let started = Instant::now();
    let ready = app.get("/health/ready", None).await;
    assert!(
        started.elapsed() < NOT_A_HANG,
        "readiness took {:?}",
        started.elapsed()
    );
    ready.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(ready.body["checks"]["postgres"], "DOWN");
    assert_eq!(ready.header("retry-after"), Some("1"));

    let started = Instant::now();
    let me = app
        .post(
            "/api/v1/auth/signin",
            &json!({"loginId": "before-the-hang", "password": "password-123"}),
            None,
        )
        .await;
    me.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert!(
        started.elapsed() < NOT_A_HANG,
        "sign-in took {:?}",
        started.elapsed()
    );

    pg.restore();
    let back = wait_for_ready_status(&app, 200, Duration::from_secs(15)).await;
    assert_eq!(back.status, 200, "{}", back.text);

    redis.stall();
    let started = Instant::now();
    let ready = app.get("/health/ready", None).await;
    assert!(
        started.elapsed() < NOT_A_HANG,
        "readiness took {:?}",
        started.elapsed()
    );
    ready.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(ready.body["checks"]["redis"], "DOWN");
    redis.restore();
    let back = wait_for_ready_status(&app, 200, Duration::from_secs(15)).await;
    assert_eq!(back.status, 200, "{}", back.text);
}
