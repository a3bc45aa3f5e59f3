//! A mixed load for a fixed time, shared by `overload` and `soak`: what it
//! sets up, what one request is, and the firing.
//!
//! Everything is sized so that nothing runs out however long it fires:
//! products of 100,000,000 units at a price of 1 point, users charged
//! 1,000,000 points each, investment products of 10^12, and coupon
//! campaigns created as the issues go (each campaign has one code per
//! user, and the n-th issue goes to user `n % users` of campaign
//! `n / users`, so no user is issued twice by one campaign and no campaign
//! sells out). Every order, investment and charge carries a fresh
//! `Idempotency-Key` (`{run}-{phase}-{i}`), so a shot can be sent again
//! with its key from its number alone.
//!
//! Firing is closed-loop: each of `connections` workers sends its next
//! request when its last is answered. After a `503` with `Retry-After` it
//! waits as told (or as `--shed-pause-ms` says), as a well-behaved client
//! would; a worker that got a `503` and sent again at once would measure the
//! load generator's own loop, on the cores the service shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::api::{Api, RawAnswer};
use crate::scenarios::Ctx;

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Order,
    Invest,
    Issue,
    Charge,
    Read,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Invest => "invest",
            Self::Issue => "coupon issue",
            Self::Charge => "charge",
            Self::Read => "read",
        }
    }
}

/// The share of each kind, in percent (they add up to 100).
#[derive(Debug, Clone, Copy)]
pub struct Weights {
    pub order: u64,
    pub invest: u64,
    pub issue: u64,
    pub charge: u64,
}

impl Weights {
    fn kind(self, roll: u64) -> Kind {
        let roll = roll % 100;
        let mut edge = self.order;
        if roll < edge {
            return Kind::Order;
        }
        edge += self.invest;
        if roll < edge {
            return Kind::Invest;
        }
        edge += self.issue;
        if roll < edge {
            return Kind::Issue;
        }
        edge += self.charge;
        if roll < edge {
            return Kind::Charge;
        }
        Kind::Read
    }
}

/// What the setup created.
#[derive(Debug)]
pub struct Mix {
    pub products: Vec<i64>,
    pub invest: Vec<i64>,
    pub users: Vec<String>,
    pub weights: Weights,
    /// Campaigns in the order they are used (see the module header).
    campaigns: RwLock<Vec<i64>>,
    issues: AtomicUsize,
}

/// Units of each product, its price, and what each user is charged.
pub const STOCK: i64 = 100_000_000;
pub const PRICE: i64 = 1;
const CHARGED: i64 = 1_000_000;
/// Each investment product's target.
const INVEST_TOTAL: i64 = 1_000_000_000_000;

impl Mix {
    /// Creates `products` products, 8 investment products, `users` users
    /// (charged), and the first coupon campaign when `weights` issue any.
    ///
    /// # Errors
    /// When the service refuses a setup request.
    pub async fn set_up(
        ctx: &Ctx,
        tag: &str,
        products: usize,
        users: usize,
        weights: Weights,
    ) -> anyhow::Result<Arc<Self>> {
        let mut ids = Vec::new();
        for p in 0..products {
            ids.push(
                ctx.api
                    .create_product(&format!("{tag} {} {p}", ctx.run), PRICE, STOCK)
                    .await?,
            );
        }
        let now = chrono::Utc::now();
        let mut invest = Vec::new();
        for k in 0..8 {
            let created = ctx
                .api
                .admin(
                    Method::POST,
                    "/api/v1/admin/invest-products",
                    Some(&json!({
                        "title": format!("{tag} {} {k}", ctx.run),
                        "totalInvestingAmount": INVEST_TOTAL,
                        "startedAt": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                        "finishedAt": (now + chrono::Duration::days(7)).to_rfc3339(),
                    })),
                )
                .await?;
            anyhow::ensure!(created.status == 201, "invest product: {}", created.body);
            invest.push(
                created.body["productId"]
                    .as_i64()
                    .context("invest product id")?,
            );
        }
        let users = ctx.users(tag, users, Some(CHARGED)).await?;
        let mix = Arc::new(Self {
            products: ids,
            invest,
            users,
            weights,
            campaigns: RwLock::new(Vec::new()),
            issues: AtomicUsize::new(0),
        });
        if weights.issue > 0 {
            mix.add_campaign(&ctx.api, &ctx.run).await?;
        }
        Ok(mix)
    }

    /// Creates the next campaign, with one code per user.
    async fn add_campaign(&self, api: &Api, run: &str) -> anyhow::Result<()> {
        let n = self.campaigns.read().await.len();
        let created = api
            .admin(
                Method::POST,
                "/api/v1/admin/coupon-campaigns",
                Some(&json!({"name": format!("mix {run} {n}"), "discountType": "AMOUNT", "discountValue": 1, "validDays": 7})),
            )
            .await?;
        anyhow::ensure!(created.status == 201, "campaign: {}", created.body);
        let id = created.body["id"].as_i64().context("campaign id")?;
        let generated = api
            .admin(
                Method::POST,
                &format!("/api/v1/admin/coupon-campaigns/{id}/codes"),
                Some(&json!({"count": self.users.len()})),
            )
            .await?;
        anyhow::ensure!(generated.status < 300, "codes: {}", generated.body);
        self.campaigns.write().await.push(id);
        Ok(())
    }

    /// Keeps two campaigns ahead of the issues until `until`.
    pub async fn keep_campaigns(self: Arc<Self>, api: Arc<Api>, run: String, until: Instant) {
        while Instant::now() < until {
            let used = self.issues.load(Ordering::Relaxed) / self.users.len().max(1);
            if self.campaigns.read().await.len() < used + 3 {
                if let Err(err) = self.add_campaign(&api, &run).await {
                    eprintln!("   creating a campaign: {err:#}");
                    // Not in a tight loop: the next try after a pause.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The campaign and user of the next coupon issue.
    async fn next_issue(&self) -> (i64, usize) {
        let n = self.issues.fetch_add(1, Ordering::Relaxed);
        let (campaign, user) = (n / self.users.len(), n % self.users.len());
        loop {
            if let Some(id) = self.campaigns.read().await.get(campaign) {
                return (*id, user);
            }
            // The keeper is behind: wait for it rather than repeat a user.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One planned request, from its number alone.
#[derive(Debug, Clone, Copy)]
pub struct Shot {
    pub i: usize,
    pub kind: Kind,
    target: usize,
    user: usize,
    pub amount: i64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Shot {
    pub fn plan(mix: &Mix, i: usize) -> Self {
        let h = splitmix(i as u64);
        Self {
            i,
            kind: mix.weights.kind(h),
            target: (h >> 8) as usize,
            user: ((h >> 24) % mix.users.len() as u64) as usize,
            amount: 1 + ((h >> 44) % 1_000) as i64,
        }
    }

    /// The product an order buys.
    pub fn product(&self, mix: &Mix) -> i64 {
        mix.products[self.target % mix.products.len()]
    }

    /// The investment product an investment goes to.
    pub fn invest_product(&self, mix: &Mix) -> i64 {
        mix.invest[self.target % mix.invest.len()]
    }

    fn key(&self, run: &str, phase: &str) -> String {
        format!("{run}-{phase}-{}", self.i)
    }

    /// Sends it (again, with the same key and body, when called again).
    ///
    /// # Errors
    /// The transport error when no answer came.
    pub async fn send(
        &self,
        api: &Api,
        mix: &Mix,
        run: &str,
        phase: &str,
    ) -> Result<RawAnswer, reqwest::Error> {
        let login = &mix.users[self.user];
        let key = self.key(run, phase);
        match self.kind {
            Kind::Order => {
                let body = json!({"items": [{"productId": self.product(mix), "quantity": 1}]});
                api.fire_user_raw(
                    Method::POST,
                    "/api/v1/orders",
                    login,
                    Some(&key),
                    Some(&body),
                )
                .await
            }
            Kind::Invest => {
                let body =
                    json!({"productId": self.invest_product(mix), "investAmount": self.amount});
                api.fire_user_raw(
                    Method::POST,
                    "/api/v1/investments",
                    login,
                    Some(&key),
                    Some(&body),
                )
                .await
            }
            Kind::Charge => {
                let body = json!({"amount": 1_000});
                api.fire_user_raw(
                    Method::POST,
                    "/api/v1/points/charge",
                    login,
                    Some(&key),
                    Some(&body),
                )
                .await
            }
            Kind::Issue => {
                let (campaign, user) = mix.next_issue().await;
                api.fire_user_raw(
                    Method::POST,
                    &format!("/api/v1/coupon-campaigns/{campaign}/issue"),
                    &mix.users[user],
                    None,
                    None,
                )
                .await
            }
            Kind::Read => {
                let path = match self.target % 4 {
                    0 => format!("/api/v1/products/{}", self.product(mix)),
                    1 => format!("/api/v1/products?page={}&size=20", self.target % 3),
                    2 => "/api/v1/points".to_owned(),
                    _ => format!("/api/v1/invest-products/{}", self.invest_product(mix)),
                };
                api.fire_user_raw(Method::GET, &path, login, None, None)
                    .await
            }
        }
    }
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Sent {
    pub shot: Shot,
    /// When it was sent, after the phase's start.
    pub at: Duration,
    pub latency: Duration,
    /// `None`: no answer (`timeout` tells a client timeout from a broken
    /// or refused connection).
    pub status: Option<u16>,
    pub timeout: bool,
    /// The problem code of an error answer.
    pub code: String,
    pub retry_after: bool,
    /// A `503` of admission control (its detail says it was not run), as
    /// opposed to one of a backing service.
    pub shed: bool,
}

impl Sent {
    pub fn is(&self, status: u16) -> bool {
        self.status == Some(status)
    }

    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// "201", "503 SERVICE_UNAVAILABLE", "timeout", …
    pub fn class(&self) -> String {
        match self.status {
            Some(s) if self.code.is_empty() => s.to_string(),
            Some(s) => format!("{s} {}", self.code),
            None if self.timeout => "timeout".to_owned(),
            None => "no answer".to_owned(),
        }
    }
}

/// One phase of firing.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Part of every key of the phase, so phases never share keys.
    pub tag: String,
    pub connections: usize,
    pub duration: Duration,
    /// How long a worker waits after a `503` (`None`: its `Retry-After`).
    pub shed_pause: Option<Duration>,
    /// Keep every answer (`false`: only the observer sees them).
    pub keep: bool,
}

/// Sees each answer as it comes.
pub type Observer = Arc<dyn Fn(&Sent) + Send + Sync>;

/// What a phase got: every answer (when kept), and how long it ran until
/// its last answer.
#[derive(Debug)]
pub struct Fired {
    pub sent: Vec<Sent>,
    pub elapsed: Duration,
}

/// Fires the mix through `phase.connections` workers until its duration
/// has passed; requests in flight then are still answered.
pub async fn fire_for(
    api: &Arc<Api>,
    mix: &Arc<Mix>,
    run: &str,
    phase: &Phase,
    observer: Option<Observer>,
) -> Fired {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + phase.duration;
    let workers: Vec<_> = (0..phase.connections.max(1))
        .map(|_| {
            let (api, mix, next) = (Arc::clone(api), Arc::clone(mix), Arc::clone(&next));
            let (run, phase, observer) = (run.to_owned(), phase.clone(), observer.clone());
            tokio::spawn(async move {
                let mut kept = Vec::new();
                while Instant::now() < deadline {
                    let shot = Shot::plan(&mix, next.fetch_add(1, Ordering::Relaxed));
                    let sent_at = Instant::now();
                    let result = shot.send(&api, &mix, &run, &phase.tag).await;
                    let latency = sent_at.elapsed();
                    let sent = match result {
                        Ok(a) => Sent {
                            shot,
                            at: sent_at - started,
                            latency,
                            status: Some(a.status),
                            timeout: false,
                            code: a.body["code"].as_str().unwrap_or_default().to_owned(),
                            retry_after: a.retry_after,
                            shed: a.status == 503
                                && a.body["detail"]
                                    .as_str()
                                    .is_some_and(|d| d.contains("was not run")),
                        },
                        Err(e) => Sent {
                            shot,
                            at: sent_at - started,
                            latency,
                            status: None,
                            timeout: e.is_timeout(),
                            code: String::new(),
                            retry_after: false,
                            shed: false,
                        },
                    };
                    if let Some(observer) = &observer {
                        observer(&sent);
                    }
                    let pause = match sent.status {
                        Some(503) => phase.shed_pause.unwrap_or(if sent.retry_after {
                            // Every Retry-After of this service is 1 s.
                            Duration::from_secs(1)
                        } else {
                            Duration::ZERO
                        }),
                        None => Duration::from_millis(100),
                        Some(_) => Duration::ZERO,
                    };
                    if phase.keep {
                        kept.push(sent);
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(
                            pause.min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                    }
                }
                kept
            })
        })
        .collect();
    let mut sent = Vec::new();
    for worker in workers {
        if let Ok(kept) = worker.await {
            sent.extend(kept);
        }
    }
    Fired {
        sent,
        elapsed: started.elapsed(),
    }
}

/// A latency quantile of some answers, in ms (0 when there are none).
pub fn quantile_ms<'a>(answers: impl Iterator<Item = &'a Sent>, q: f64) -> f64 {
    let mut hist =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    for a in answers {
        let micros = u64::try_from(a.latency.as_micros()).unwrap_or(u64::MAX);
        let _ = hist.record(micros.clamp(1, 120_000_000));
    }
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

/// Answers counted by class ("201", "503 SERVICE_UNAVAILABLE", …).
pub fn classes<'a>(
    answers: impl Iterator<Item = &'a Sent>,
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for a in answers {
        *out.entry(a.class()).or_insert(0) += 1;
    }
    out
}

/// The JSON of a count map, for the notes.
pub fn describe(map: &std::collections::BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    parts.join(", ")
}

/// Resident memory of a process (kB), and its open sockets.
pub fn process_sample(pid: u32) -> (Option<u64>, Option<usize>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        });
    (rss, sockets)
}

/// A JSON value for the reports.
pub fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
