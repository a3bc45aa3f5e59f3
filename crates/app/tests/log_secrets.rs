//! No secret reaches a log line: the real binary runs with every log at
//! `debug`, through sign-up, sign-in, failed sign-ins, the admin bootstrap,
//! charges, orders and coupon issue, with the bearer token and the gateway
//! header; then its standard error and output are searched for the JWT
//! secret, every password, every token and the raw Authorization header.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{TestDb, TestRedis};
use tokio::io::AsyncReadExt as _;

const JWT_SECRET: &str = "log-secret-test-0123456789-abcdefghij-SECRET";
const ADMIN_PASSWORD: &str = "admin-pass-LEAK-CHECK-1";
const GATEWAY_SECRET: &str = "gateway-LEAK-CHECK-secret-0123456789";
const USER_PASSWORD: &str = "user-pass-LEAK-CHECK-2";
const WRONG_PASSWORD: &str = "wrong-pass-LEAK-CHECK-3";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_password_or_token_is_ever_logged() {
    let db = TestDb::create().await;
    let redis = TestRedis::create().await;
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", &redis.url)
        .env("APP_REDIS_KEY_PREFIX", &redis.prefix)
        .env("APP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("APP_JWT_SECRET", JWT_SECRET)
        .env("APP_ADMIN_LOGIN_ID", "logadmin")
        .env("APP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("APP_TRUSTED_USER_HEADER", "X-USER-ID")
        .env("APP_TRUSTED_GATEWAY_SECRET", GATEWAY_SECRET)
        .env("RUST_LOG", "debug")
        .env("APP_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    // Read both pipes from the start: a full pipe would block the server.
    let read_all = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut text = String::new();
            pipe.read_to_string(&mut text).await.expect("read a pipe");
            text
        })
    };
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "the binary did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everything a client does with a secret in hand.
    let (status, signed_up) = json_of(
        http.post(format!("{base}/api/v1/auth/signup"))
            .json(&json!({"loginId": "logged", "password": USER_PASSWORD}))
            .send()
            .await
            .expect("sign-up"),
    )
    .await;
    assert_eq!(status, 201, "{signed_up}");
    let user_token = signed_up["token"].as_str().expect("token").to_owned();
    for password in [WRONG_PASSWORD, USER_PASSWORD] {
        http.post(format!("{base}/api/v1/auth/signin"))
            .json(&json!({"loginId": "logged", "password": password}))
            .send()
            .await
            .expect("sign-in");
    }
    let (_, admin) = json_of(
        http.post(format!("{base}/api/v1/auth/signin"))
            .json(&json!({"loginId": "logadmin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("admin sign-in"),
    )
    .await;
    let admin_token = admin["token"].as_str().expect("admin token").to_owned();
    let product: Value = http
        .post(format!("{base}/api/v1/admin/products"))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "Logged lamp", "price": 1_000, "stock": 5}))
        .send()
        .await
        .expect("product")
        .json()
        .await
        .expect("product body");
    http.post(format!("{base}/api/v1/points/charge"))
        .bearer_auth(&user_token)
        .header("Idempotency-Key", "log-charge")
        .json(&json!({"amount": 10_000}))
        .send()
        .await
        .expect("charge");
    http.post(format!("{base}/api/v1/orders"))
        .bearer_auth(&user_token)
        .header("Idempotency-Key", "log-order")
        .json(&json!({"items": [{"productId": product["id"], "quantity": 1}]}))
        .send()
        .await
        .expect("order");
    http.get(format!("{base}/api/v1/me"))
        .header("authorization", format!("Bearer {user_token}x"))
        .send()
        .await
        .expect("a tampered token");
    http.get(format!("{base}/api/v1/me"))
        .header("X-USER-ID", "gateway-user")
        .header("X-Gateway-Secret", GATEWAY_SECRET)
        .send()
        .await
        .expect("gateway");

    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    drop(http); // its keep-alive connections would hold the graceful shutdown
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    let _ = child.kill().await;
    let logs = format!(
        "{}{}",
        stderr.await.expect("stderr read"),
        stdout.await.expect("stdout read")
    );

    assert!(
        logs.lines().count() > 20 && logs.contains("/api/v1/orders"),
        "the run logged its requests at debug: {} lines",
        logs.lines().count()
    );
    let jwt_signature = |token: &str| token.rsplit('.').next().unwrap_or_default().to_owned();
    for (what, secret) in [
        ("the JWT secret", JWT_SECRET.to_owned()),
        ("the admin password", ADMIN_PASSWORD.to_owned()),
        ("the gateway secret", GATEWAY_SECRET.to_owned()),
        ("a user's password", USER_PASSWORD.to_owned()),
        ("a wrong password", WRONG_PASSWORD.to_owned()),
        ("a user's token", user_token.clone()),
        ("the admin's token", admin_token.clone()),
        ("a token's signature", jwt_signature(&user_token)),
        ("a bearer header", "Bearer ey".to_owned()),
    ] {
        let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(&secret)).collect();
        assert!(leaks.is_empty(), "{what} was logged: {leaks:?}");
    }
}
