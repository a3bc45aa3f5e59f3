//! The service's HTTP API as the load generator uses it: an admin signed in
//! with a token, and users who are provisioned by the trusted-gateway header
//! on first sight (so 20,000 users cost no password hashing).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// One answer: status, and the JSON body when there is one.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// One answer as the fault mode sees it: also whether it was a replay.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub body: Value,
    /// `Idempotent-Replayed: true`: the stored answer of an earlier request.
    pub replayed: bool,
    /// The answer carried a `Retry-After` header.
    pub retry_after: bool,
}

impl Answer {
    /// The problem `code` of an error answer ("" for a success, whose body
    /// may have a `code` of its own, a coupon's say).
    pub fn code(&self) -> &str {
        if self.status < 400 {
            return "";
        }
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// How often a setup request (a user's charge) is tried when the service
/// answers that it is busy (a pool wait, or a charge shed at its in-flight
/// bound: that one was not run, so it is always safe to send again).
const SETUP_ATTEMPTS: u64 = 20;

/// Which answers' bodies are parsed as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bodies {
    All,
    /// Only those of 4xx and 5xx answers, for their `code`.
    Errors,
}

#[derive(Debug, Clone)]
pub struct Api {
    /// One instance's base URL, or several: each request goes to one of
    /// them at random.
    bases: Arc<[String]>,
    http: reqwest::Client,
    /// The admin's token, replaced when it expires (a soak outlives it).
    admin: Arc<std::sync::RwLock<String>>,
    /// The admin's login id and password, to sign in again.
    admin_credentials: Arc<(String, String)>,
    user_header: String,
    /// Sent as `X-Gateway-Secret` with each request that names its user in
    /// `user_header`.
    gateway_secret: String,
}

impl Api {
    /// A client keeping up to `connections` keep-alive connections open,
    /// giving up on any request after `timeout`. `base` is one URL, or
    /// several separated by commas (instances of one deployment, each
    /// request sent to one of them at random).
    ///
    /// # Errors
    /// When the admin cannot sign in.
    pub async fn connect(
        base: &str,
        connections: usize,
        timeout: Duration,
        admin_login: &str,
        admin_password: &str,
        user_header: &str,
        gateway_secret: &str,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            // Below actix's keep-alive (5 s): a connection the server is
            // closing for idleness is never reused, so a POST cannot race
            // the close and come back as a broken connection.
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .build()?;
        let api = Self {
            bases: base
                .split(',')
                .map(|b| b.trim().trim_end_matches('/').to_owned())
                .filter(|b| !b.is_empty())
                .collect(),
            http,
            admin: Arc::default(),
            admin_credentials: Arc::new((admin_login.to_owned(), admin_password.to_owned())),
            user_header: user_header.to_owned(),
            gateway_secret: gateway_secret.to_owned(),
        };
        anyhow::ensure!(!api.bases.is_empty(), "--base names no URL");
        api.sign_in_admin().await?;
        Ok(api)
    }

    /// Signs the admin in (again) and keeps the token.
    async fn sign_in_admin(&self) -> anyhow::Result<()> {
        let (login, password) = &*self.admin_credentials;
        let signed_in = self
            .send(
                reqwest::Method::POST,
                "/api/v1/auth/signin",
                None,
                None,
                Some(&json!({"loginId": login, "password": password})),
                Bodies::All,
            )
            .await
            .context("is the service running? (--base)")?;
        if signed_in.status != 200 {
            bail!(
                "the admin could not sign in ({}): start the app with APP_ADMIN_LOGIN_ID / \
                 APP_ADMIN_PASSWORD matching --admin-login / --admin-password",
                signed_in.status
            );
        }
        let token = signed_in.body["token"]
            .as_str()
            .context("no token in the sign-in answer")?
            .to_owned();
        *self
            .admin
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
        Ok(())
    }

    /// Checks that users can be provisioned through the gateway header.
    ///
    /// # Errors
    /// When the app was not started in trusted-gateway mode.
    pub async fn check_gateway(&self, user: &str) -> anyhow::Result<()> {
        let me = self
            .user(reqwest::Method::GET, "/api/v1/me", user, None, None)
            .await?;
        if me.status != 200 {
            bail!(
                "a user could not be provisioned through {} ({}): start the app with \
                 APP_TRUSTED_USER_HEADER={} and APP_TRUSTED_GATEWAY_SECRET equal to \
                 --gateway-secret (LOADTEST_GATEWAY_SECRET)",
                self.user_header,
                me.status,
                self.user_header
            );
        }
        Ok(())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<(&str, &str)>,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
        bodies: Bodies,
    ) -> anyhow::Result<Answer> {
        let raw = self
            .send_raw(method, path, auth, idempotency_key, body, bodies)
            .await?;
        Ok(Answer {
            status: raw.status,
            body: raw.body,
        })
    }

    async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<(&str, &str)>,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
        bodies: Bodies,
    ) -> Result<RawAnswer, reqwest::Error> {
        // At random, not in turn: a scenario that cycles through kinds of
        // request would otherwise send each kind to one instance.
        let base = &self.bases[rand::random_range(0..self.bases.len())];
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some((name, value)) = auth {
            req = req.header(name, value);
            if name.eq_ignore_ascii_case(&self.user_header) {
                req = req.header("X-Gateway-Secret", &self.gateway_secret);
            }
        }
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let replayed = res
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let retry_after = res.headers().contains_key("retry-after");
        let bytes = res.bytes().await?;
        let body = if bodies == Bodies::All || status >= 400 {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        Ok(RawAnswer {
            status,
            body,
            replayed,
            retry_after,
        })
    }

    /// A request as the user `login`, with the transport error itself (so
    /// that a timeout can be told from a refused connection).
    ///
    /// # Errors
    /// The transport error when no answer came.
    pub async fn user_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        login: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<RawAnswer, reqwest::Error> {
        self.send_raw(
            method,
            path,
            Some((&self.user_header, login)),
            idempotency_key,
            body,
            Bodies::All,
        )
        .await
    }

    /// Like [`user_raw`](Self::user_raw), parsing only an error answer's
    /// body (for its code), as [`fire_user`](Self::fire_user) does.
    ///
    /// # Errors
    /// The transport error when no answer came.
    pub async fn fire_user_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        login: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<RawAnswer, reqwest::Error> {
        self.send_raw(
            method,
            path,
            Some((&self.user_header, login)),
            idempotency_key,
            body,
            Bodies::Errors,
        )
        .await
    }

    /// A request as the user `login` while firing: the status, and the body
    /// of an error answer (for its code); a success's body is read but not
    /// parsed. The load generator shares the cores with the service, and
    /// parsing a page of products per answer would cost the catalogue
    /// scenario more than its ceiling (`health`, a tiny body) pays.
    ///
    /// # Errors
    /// When the request cannot be sent or answered.
    pub async fn fire_user(
        &self,
        method: reqwest::Method,
        path: &str,
        login: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let user = Some((self.user_header.as_str(), login));
        self.send(method, path, user, idempotency_key, body, Bodies::Errors)
            .await
    }

    /// A request as the admin.
    ///
    /// # Errors
    /// When the request cannot be sent or answered.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let token = || {
            self.admin
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        let bearer = format!("Bearer {}", token());
        let answer = self
            .send(
                method.clone(),
                path,
                Some(("authorization", bearer.as_str())),
                None,
                body,
                Bodies::All,
            )
            .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        // The token expired (APP_JWT_TTL, an hour by default): sign in again.
        self.sign_in_admin().await?;
        let bearer = format!("Bearer {}", token());
        self.send(
            method,
            path,
            Some(("authorization", bearer.as_str())),
            None,
            body,
            Bodies::All,
        )
        .await
    }

    /// A request as the user `login` (provisioned on first sight).
    ///
    /// # Errors
    /// When the request cannot be sent or answered.
    pub async fn user(
        &self,
        method: reqwest::Method,
        path: &str,
        login: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let user = Some((self.user_header.as_str(), login));
        self.send(method, path, user, idempotency_key, body, Bodies::All)
            .await
    }

    /// An unauthenticated GET (health, metrics).
    ///
    /// # Errors
    /// When the request cannot be sent or answered.
    pub async fn public(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(reqwest::Method::GET, path, None, None, None, Bodies::Errors)
            .await
    }

    /// Creates a product as the admin; returns its id.
    ///
    /// # Errors
    /// When the service refuses.
    pub async fn create_product(&self, name: &str, price: i64, stock: i64) -> anyhow::Result<i64> {
        let a = self
            .admin(
                reqwest::Method::POST,
                "/api/v1/admin/products",
                Some(&json!({"name": name, "price": price, "stock": stock})),
            )
            .await?;
        if a.status != 201 {
            bail!("creating a product: {} {}", a.status, a.body);
        }
        a.body["id"].as_i64().context("product id")
    }

    /// Charges `amount` to `login`'s balance.
    ///
    /// # Errors
    /// When the service refuses.
    pub async fn charge(&self, login: &str, amount: i64) -> anyhow::Result<()> {
        // One key per user: a retry is answered from the first charge's
        // record, so retrying a 503 (a cold app's pool wait while hundreds
        // of users are prepared at once) or an in-progress key never
        // charges twice.
        let key = format!("charge-{login}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let a = self
                .user(
                    reqwest::Method::POST,
                    "/api/v1/points/charge",
                    login,
                    Some(&key),
                    Some(&json!({"amount": amount})),
                )
                .await?;
            let transient = a.status == 503 || a.code() == "IDEMPOTENCY_IN_PROGRESS";
            if a.status == 200 {
                return Ok(());
            }
            if !transient || attempt >= SETUP_ATTEMPTS {
                bail!("charging {login}: {} {}", a.status, a.body);
            }
            tokio::time::sleep(Duration::from_millis((200 * attempt).min(1_000))).await;
        }
    }

    /// `login`'s balance.
    ///
    /// # Errors
    /// When the service refuses.
    pub async fn balance(&self, login: &str) -> anyhow::Result<i64> {
        let a = self
            .user(reqwest::Method::GET, "/api/v1/points", login, None, None)
            .await?;
        a.body["balance"].as_i64().context("balance")
    }
}
