//! The service as an operator runs it: start-up checks, graceful shutdown.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::TestApp;
use testkit::{TestDb, TestRedis};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Writes one raw HTTP/1.1 sign-up and returns the status line's code.
async fn raw_sign_up(port: u16, login: String) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let body = format!(r#"{{"loginId":"{login}","password":"password-123"}}"#);
    let request = format!(
        "POST /api/v1/auth/signup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_in_flight_requests_then_returns() {
    let app = TestApp::spawn().await;
    let port: u16 = app
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    // Sign-ups hash with argon2 two at a time, so eight of them keep the
    // server busy for a while: some are in flight when the stop comes.
    let requests: Vec<_> = (0..8)
        .map(|i| tokio::spawn(raw_sign_up(port, format!("drain-{i}"))))
        .collect();
    // Stop once the first sign-up has committed: by then all eight
    // connections were accepted and the rest are still hashing.
    let mut conn = app.db.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while user_count(&mut conn).await < 2 {
        assert!(Instant::now() < deadline, "no sign-up was processed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stopped = tokio::spawn(app.stop());

    for request in requests {
        let status = request.await.expect("joined").expect("answered, not reset");
        assert_eq!(status, 201);
    }
    stopped.await.expect("joined").expect("clean stop");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "no longer accepting"
    );
}

async fn user_count(conn: &mut diesel_async::AsyncPgConnection) -> i64 {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl as _;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM users")
        .get_result::<Count>(conn)
        .await
        .map_or(0, |c| c.n)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn the_binary_serves_and_exits_0_on_sigterm() {
    let db = TestDb::create().await;
    let redis = TestRedis::create().await;
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", &redis.url)
        .env("APP_REDIS_KEY_PREFIX", &redis.prefix)
        .env("APP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the binary did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_its_name() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .env("APP_JWT_SECRET", "only-twenty-bytes-xx")
        .env("APP_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .await
        .expect("binary runs");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("APP_JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
}
