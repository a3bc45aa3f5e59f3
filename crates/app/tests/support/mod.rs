//! Starts the real application on port 0 with its own database and Redis
//! prefix, and talks to it over HTTP.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use app::{Application, Config};
use serde_json::{Value, json};
use testkit::{TestDb, TestRedis};
use tokio::sync::oneshot;

/// The JWT secret every test app uses, so tests can forge tokens on purpose.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
pub const ADMIN_LOGIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password";
/// The trusted gateway's shared secret, sent as `X-Gateway-Secret`.
pub const GATEWAY_SECRET: &str = "test-gateway-secret-0123456789abcdef";

/// Knobs for one test app; the defaults suit most tests.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub trusted_user_header: Option<String>,
    /// Reach the test database through this address (a `TcpProxy`).
    pub postgres_via: Option<std::net::SocketAddr>,
    /// Reach Redis through this address (a `TcpProxy`).
    pub redis_via: Option<std::net::SocketAddr>,
    pub extra: Vec<(String, String)>,
}

impl Options {
    /// For a test that fires hundreds of requests at once and asserts that
    /// every one succeeds: waits for a connection or a lane may take long on
    /// a busy machine (a newcomer's laptop mid-build), and the default 2 s
    /// dependency timeout would turn them into 503s that say nothing about
    /// what the test checks.
    pub fn headroom() -> Self {
        Self {
            extra: vec![("APP_DEPENDENCY_TIMEOUT".into(), "30s".into())],
            ..Self::default()
        }
    }
}

/// A running app and what it runs against.
pub struct TestApp {
    pub base: String,
    /// The configuration the app was started with (for siblings and the binary).
    pub vars: HashMap<String, String>,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub redis: TestRedis,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        Self::spawn_on(options, TestRedis::create().await).await
    }

    /// Like [`spawn_with`](Self::spawn_with), on a Redis prefix the test
    /// prepared beforehand.
    pub async fn spawn_on(options: Options, redis: TestRedis) -> Self {
        let db = TestDb::create().await;
        let mut vars: HashMap<String, String> = HashMap::from([
            (
                "DATABASE_URL".into(),
                options
                    .postgres_via
                    .map_or_else(|| db.url.clone(), |a| db.url_via(a)),
            ),
            (
                "REDIS_URL".into(),
                options
                    .redis_via
                    .map_or_else(|| redis.url.clone(), |a| redis.url_via(a)),
            ),
            ("APP_HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("APP_JWT_SECRET".into(), JWT_SECRET.into()),
            ("APP_ADMIN_LOGIN_ID".into(), ADMIN_LOGIN.into()),
            ("APP_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("APP_REDIS_KEY_PREFIX".into(), redis.prefix.clone()),
            ("APP_WORKERS".into(), "2".into()),
            ("APP_DB_POOL_SIZE".into(), "8".into()),
            ("APP_SHUTDOWN_TIMEOUT".into(), "5s".into()),
        ]);
        if let Some(header) = &options.trusted_user_header {
            vars.insert("APP_TRUSTED_USER_HEADER".into(), header.clone());
            vars.insert("APP_TRUSTED_GATEWAY_SECRET".into(), GATEWAY_SECRET.into());
        }
        for (k, v) in options.extra {
            vars.insert(k, v);
        }
        let (base, tx, server) = start(&vars).await;
        Self {
            base,
            vars,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client"),
            db,
            redis,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Another instance of the same service: same database, same Redis
    /// prefix, its own port. Stops when the returned handle is dropped.
    pub async fn spawn_sibling(&self) -> Sibling {
        let (base, tx, server) = start(&self.vars).await;
        Sibling {
            base,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Reply {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// Signs up `login` with a valid password and returns the token.
    pub async fn sign_up(&self, login: &str) -> String {
        let reply = self
            .post(
                "/api/v1/auth/signup",
                &json!({"loginId": login, "password": "password-123"}),
                None,
            )
            .await;
        assert_eq!(reply.status, 201, "sign-up of {login}: {}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    /// Signs in the bootstrap admin and returns the token.
    pub async fn admin_token(&self) -> String {
        let reply = self
            .post(
                "/api/v1/auth/signin",
                &json!({"loginId": ADMIN_LOGIN, "password": ADMIN_PASSWORD}),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "admin sign-in: {}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    /// Sends `method path` with extra headers and, when given, a raw body
    /// (sent as is, with whatever `content-type` the headers say).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.body(body.to_owned());
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// PATCHes `body` as JSON with the token.
    pub async fn patch(&self, path: &str, body: &Value, token: &str) -> Reply {
        let req = self
            .http
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body);
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// POSTs `body` with an `Idempotency-Key`.
    pub async fn post_idempotent(&self, path: &str, key: &str, body: &Value, token: &str) -> Reply {
        let req = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body);
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// Creates a product as the admin and returns its id.
    pub async fn create_product(&self, name: &str, price: i64, stock: i64) -> i64 {
        let admin = self.admin_token().await;
        let reply = self
            .post(
                "/api/v1/admin/products",
                &json!({"name": name, "price": price, "stock": stock}),
                Some(&admin),
            )
            .await;
        assert_eq!(reply.status, 201, "create product: {}", reply.text);
        reply.body["id"].as_i64().unwrap()
    }

    /// Charges `amount` points to the token's user.
    pub async fn charge(&self, token: &str, amount: i64) {
        let key = format!("charge-{}", testkit_suffix());
        let reply = self
            .post_idempotent(
                "/api/v1/points/charge",
                &key,
                &json!({"amount": amount}),
                token,
            )
            .await;
        assert_eq!(reply.status, 200, "charge: {}", reply.text);
    }

    /// One `bigint` from a query on the test database (`SELECT … AS n`).
    /// Asserts that nothing is stored under any of `keys` (a shed write).
    pub async fn assert_no_record_under(&self, keys: &[&str]) {
        let list = keys
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            self.scalar(&format!(
                "SELECT count(*) AS n FROM idempotency_keys WHERE key IN ({list})"
            ))
            .await,
            0,
            "a shed request left a record under its key"
        );
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        use diesel::QueryableByName;
        use diesel_async::RunQueryDsl as _;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.db.connect().await;
        diesel::sql_query(sql)
            .get_result::<N>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .n
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(server) => server.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

type Started = (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

async fn start(vars: &HashMap<String, String>) -> Started {
    let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("test config is valid");
    let application = Application::build(config).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", application.port());
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = rx.await;
    }));
    (base, tx, server)
}

/// A second instance started by [`TestApp::spawn_sibling`].
pub struct Sibling {
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Sibling {
    /// Stops it gracefully and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(res: reqwest::Response) -> Self {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts `400 VALIDATION_FAILED` whose detail names `field`.
    pub fn assert_invalid_field(&self, field: &str) {
        self.assert_problem(400, "VALIDATION_FAILED");
        let detail = self.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(field),
            "the detail should name {field}: {}",
            self.text
        );
    }

    /// Asserts an RFC 9457 problem with this status and code, and no internals.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        let lower = self.text.to_lowercase();
        for leak in [
            "panicked",
            "backtrace",
            "diesel",
            "select ",
            "sqlstate",
            "src/",
        ] {
            assert!(
                !lower.contains(leak),
                "problem leaks internals ({leak}): {}",
                self.text
            );
        }
    }
}

/// A unique suffix for keys and names within one test process.
pub fn testkit_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
