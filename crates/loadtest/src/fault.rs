//! `loadtest fault`: a steady mixed load for a fixed time, while the fault
//! runner (`tests/faults/run.sh`) stops and starts a dependency, or kills
//! the app and starts it again.
//!
//! Unlike the scenarios, nothing here aborts on a failed request: every
//! answer is classified (2xx, 4xx by code, 503, other 5xx, timeout, refused
//! or broken connection) and counted in 100 ms buckets, so that the outage
//! and the recovery can be read off the timeline. The runner writes what it
//! did, when, to a marks file (`NAME EPOCH_MS` lines: `fault` when it
//! starts the fault, `back` when the dependency answers again), which this
//! reads after the firing.
//!
//! The mix, all at once, every request drawn at random:
//! - 40% orders of one unit of a "shelf" product (plenty of stock),
//! - 20% orders of one unit of a "hot" product, whose stocks double from
//!   25 (25, 50, … 6,400), so that some sell out before the fault, some
//!   during it and some after, whatever the request rate,
//! - 20% coupon issues on campaigns whose pools double from 25,
//! - 20% investments of 1..=1,000 into products whose targets double from
//!   10,000.
//!
//! Orders and investments carry a fresh `Idempotency-Key` each. After the
//! firing, every key whose answer was in doubt (503, a timeout, a broken or
//! refused connection, `IDEMPOTENCY_IN_PROGRESS`) is retried with the same
//! body until it gets a definite answer (or the settle time runs out: a key
//! stuck in progress fails the run). With every key settled, what was sold
//! and invested must match the 201s exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{Api, RawAnswer};
use crate::fire::Check;
use crate::scenarios::{Ctx, product_stock};

/// What the fault mode is told on the command line.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// The fault's name, for the report (`redis`, `postgres`, `app-kill`).
    pub name: String,
    pub duration: Duration,
    /// The client timeout of every request: an answer slower than this is
    /// counted as a hang.
    pub timeout: Duration,
    /// Written (with the start time) when the measured firing begins.
    pub ready_file: Option<PathBuf>,
    /// Read after the firing: the runner's `NAME EPOCH_MS` lines.
    pub marks: Option<PathBuf>,
    /// The JSON report.
    pub report: Option<PathBuf>,
    /// The app itself goes away (refused and broken connections are then
    /// expected, not failures).
    pub expect_disconnects: bool,
    /// The outage must be answered with 503s (a Postgres outage).
    pub expect_503: bool,
    /// The longest recovery (seconds after `back`) that passes.
    pub recovery_within: f64,
    /// How long in-doubt keys are retried after the firing.
    pub settle: Duration,
    /// How long after the fault a stale refusal (a sold-out answer while
    /// the resource still had room) may come, in seconds: a killed
    /// instance's reservations are leases that come back within their
    /// lease. `None`: no stale refusal at all.
    pub stale_refusals_within: Option<f64>,
    /// The longest any request may wait for its answer (the app's timeouts
    /// plus a margin): a request that takes longer fails the run even when
    /// it is answered within the client timeout.
    pub max_wait: Option<Duration>,
    /// Every request sent this long after `back` must be served (no 503, no
    /// transport error): the dependency's connections work again.
    pub clean_after: Option<Duration>,
}

/// How long a worker pauses after a 503 or a transport error, like a client
/// honouring `Retry-After` (shortened), so that an outage is not a busy loop.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(100);
/// The timeline's resolution.
const BUCKET_MS: u64 = 100;
/// Recovery: the first full second after `back` with at least this share of
/// the answers per second before the fault.
const RECOVERED_SHARE: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
enum Kind {
    Shelf,
    Hot,
    Coupon,
    Invest,
}

/// One planned request.
#[derive(Debug, Clone, Copy)]
struct Shot {
    i: usize,
    kind: Kind,
    /// Index into the kind's targets.
    target: usize,
    /// Index into the buyers (orders) or the other users.
    user: usize,
    amount: i64,
}

/// What came back.
#[derive(Debug, Clone)]
enum Got {
    Answer {
        status: u16,
        code: String,
        replayed: bool,
        /// `orderId`, coupon `code` or `investmentId` of a 201.
        created: Option<Value>,
    },
    Timeout,
    /// The connection could not be made (nothing listens).
    Refused,
    /// The connection broke before the answer (the server went away).
    Broken,
}

impl Got {
    fn from(result: Result<RawAnswer, reqwest::Error>) -> Self {
        match result {
            Ok(a) => {
                let code = if a.status >= 400 {
                    a.body["code"].as_str().unwrap_or_default().to_owned()
                } else {
                    String::new()
                };
                let created = (a.status == 201).then(|| {
                    ["orderId", "code", "investmentId"]
                        .iter()
                        .find_map(|f| a.body.get(*f).cloned())
                        .unwrap_or(Value::Null)
                });
                Self::Answer {
                    status: a.status,
                    code,
                    replayed: a.replayed,
                    created,
                }
            }
            Err(e) if e.is_timeout() => Self::Timeout,
            Err(e) if e.is_connect() => Self::Refused,
            Err(e) => {
                // The first few say why, so that a failed check can be read.
                static SHOWN: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 10 {
                    eprintln!("   broken connection: {e:?}");
                }
                Self::Broken
            }
        }
    }

    /// A definite answer: the request was decided (2xx or a business 4xx).
    fn definite(&self) -> bool {
        matches!(self, Self::Answer { status, code, .. }
            if *status < 500 && !(*status == 409 && code == "IDEMPOTENCY_IN_PROGRESS"))
    }

    /// Served: the request got an answer other than a 5xx.
    fn served(&self) -> bool {
        matches!(self, Self::Answer { status, .. } if *status < 500)
    }

    fn class(&self) -> String {
        match self {
            Self::Answer { status, code, .. } if *status < 300 => format!("{status}"),
            Self::Answer { status, code, .. } if code.is_empty() => format!("{status}"),
            Self::Answer { status, code, .. } => format!("{status} {code}"),
            Self::Timeout => "timeout".to_owned(),
            Self::Refused => "connection refused".to_owned(),
            Self::Broken => "connection broken".to_owned(),
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Self::Answer { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    shot: Shot,
    got: Got,
    sent_ms: u64,
    done_ms: u64,
}

/// What the setup created.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    kind: Kind,
    id: i64,
    /// Initial stock, pool size or target amount.
    size: i64,
}

#[derive(Debug)]
struct Setup {
    shelf: Vec<Target>,
    hot: Vec<Target>,
    campaigns: Vec<Target>,
    invest: Vec<Target>,
    buyers: Vec<String>,
    others: Vec<String>,
}

impl Setup {
    fn targets(&self, kind: Kind) -> &[Target] {
        match kind {
            Kind::Shelf => &self.shelf,
            Kind::Hot => &self.hot,
            Kind::Coupon => &self.campaigns,
            Kind::Invest => &self.invest,
        }
    }

    fn login(&self, shot: &Shot) -> &str {
        match shot.kind {
            Kind::Shelf | Kind::Hot => &self.buyers[shot.user],
            Kind::Coupon | Kind::Invest => &self.others[shot.user],
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn plan(seed: u64, i: usize, setup: &Setup) -> Shot {
    let h = splitmix(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let kind = match h % 100 {
        0..40 => Kind::Shelf,
        40..60 => Kind::Hot,
        60..80 => Kind::Coupon,
        _ => Kind::Invest,
    };
    let users = match kind {
        Kind::Shelf | Kind::Hot => setup.buyers.len(),
        Kind::Coupon | Kind::Invest => setup.others.len(),
    };
    Shot {
        i,
        kind,
        target: ((h >> 8) % setup.targets(kind).len() as u64) as usize,
        user: ((h >> 24) % users as u64) as usize,
        amount: 1 + ((h >> 44) % 1_000) as i64,
    }
}

fn key_of(run: &str, shot: &Shot) -> Option<String> {
    match shot.kind {
        Kind::Shelf | Kind::Hot => Some(format!("{run}-o-{}", shot.i)),
        Kind::Invest => Some(format!("{run}-i-{}", shot.i)),
        Kind::Coupon => None,
    }
}

async fn send(api: &Api, run: &str, setup: &Setup, shot: &Shot) -> Got {
    let target = &setup.targets(shot.kind)[shot.target];
    let login = setup.login(shot);
    let key = key_of(run, shot);
    let result = match shot.kind {
        Kind::Shelf | Kind::Hot => {
            let body = json!({"items": [{"productId": target.id, "quantity": 1}]});
            api.user_raw(
                Method::POST,
                "/api/v1/orders",
                login,
                key.as_deref(),
                Some(&body),
            )
            .await
        }
        Kind::Coupon => {
            api.user_raw(
                Method::POST,
                &format!("/api/v1/coupon-campaigns/{}/issue", target.id),
                login,
                None,
                None,
            )
            .await
        }
        Kind::Invest => {
            let body = json!({"productId": target.id, "investAmount": shot.amount});
            api.user_raw(
                Method::POST,
                "/api/v1/investments",
                login,
                key.as_deref(),
                Some(&body),
            )
            .await
        }
    };
    Got::from(result)
}

/// Creates the products, campaigns, investment products and users.
async fn set_up(ctx: &Ctx) -> anyhow::Result<Setup> {
    let api = &ctx.api;
    let mut shelf = Vec::new();
    for p in 0..20 {
        let id = api
            .create_product(&format!("fault shelf {} {p}", ctx.run), 100, 1_000_000)
            .await?;
        shelf.push(Target {
            kind: Kind::Shelf,
            id,
            size: 1_000_000,
        });
    }
    let mut hot = Vec::new();
    for k in 0..9 {
        let stock = 25_i64 << k;
        let id = api
            .create_product(&format!("fault hot {} {k}", ctx.run), 100, stock)
            .await?;
        hot.push(Target {
            kind: Kind::Hot,
            id,
            size: stock,
        });
    }
    let mut campaigns = Vec::new();
    for k in 0..8 {
        let pool = 25_i64 << k;
        let created = api
            .admin(
                Method::POST,
                "/api/v1/admin/coupon-campaigns",
                Some(&json!({"name": format!("fault {} {k}", ctx.run), "discountType": "AMOUNT", "discountValue": 1_000, "validDays": 7})),
            )
            .await?;
        anyhow::ensure!(created.status == 201, "campaign: {}", created.body);
        let id = created.body["id"].as_i64().context("campaign id")?;
        let generated = api
            .admin(
                Method::POST,
                &format!("/api/v1/admin/coupon-campaigns/{id}/codes"),
                Some(&json!({"count": pool})),
            )
            .await?;
        anyhow::ensure!(generated.status < 300, "codes: {}", generated.body);
        campaigns.push(Target {
            kind: Kind::Coupon,
            id,
            size: pool,
        });
    }
    let mut invest = Vec::new();
    let now = chrono::Utc::now();
    for k in 0..8 {
        let total = 10_000_i64 << k;
        let created = api
            .admin(
                Method::POST,
                "/api/v1/admin/invest-products",
                Some(&json!({
                    "title": format!("fault {} {k}", ctx.run),
                    "totalInvestingAmount": total,
                    "startedAt": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                    "finishedAt": (now + chrono::Duration::days(1)).to_rfc3339(),
                })),
            )
            .await?;
        anyhow::ensure!(created.status == 201, "invest product: {}", created.body);
        invest.push(Target {
            kind: Kind::Invest,
            id: created.body["productId"].as_i64().context("product id")?,
            size: total,
        });
    }
    let buyers = ctx.users("fb", 1_000, Some(1_000_000)).await?;
    let others = ctx.users("fu", 4_000, None).await?;
    Ok(Setup {
        shelf,
        hot,
        campaigns,
        invest,
        buyers,
        others,
    })
}

/// Fires the mix through `connections` workers until `duration` has passed.
async fn fire_for(
    ctx: &Ctx,
    setup: &Arc<Setup>,
    seed: u64,
    duration: Duration,
) -> (Vec<Outcome>, Histogram<u64>) {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..ctx.connections.max(1))
        .map(|_| {
            let (api, setup, next) = (Arc::clone(&ctx.api), Arc::clone(setup), Arc::clone(&next));
            let run = ctx.run.clone();
            tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
                let mut outcomes = Vec::new();
                while Instant::now() < deadline {
                    let shot = plan(seed, next.fetch_add(1, Ordering::Relaxed), &setup);
                    let sent_ms = now_ms();
                    let started = Instant::now();
                    let got = send(&api, &run, &setup, &shot).await;
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = hist.record(micros.max(1));
                    let failed = !got.served();
                    outcomes.push(Outcome {
                        shot,
                        got,
                        sent_ms,
                        done_ms: now_ms(),
                    });
                    if failed {
                        tokio::time::sleep(PAUSE_AFTER_FAILURE).await;
                    }
                }
                (hist, outcomes)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut merged = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    for worker in workers {
        if let Ok((hist, outcomes)) = worker.await {
            let _ = merged.add(&hist);
            all.extend(outcomes);
        }
    }
    all.sort_by_key(|o| o.shot.i);
    (all, merged)
}

/// What happened to the keys whose first answer was in doubt.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyFigures {
    /// Orders and investments sent (one fresh key each).
    sent: usize,
    /// First answer in doubt: 503, timeout, refused or broken connection,
    /// `IDEMPOTENCY_IN_PROGRESS`.
    in_doubt: usize,
    /// Of those, the requests whose connection broke: in flight when the
    /// server went away.
    in_flight_at_break: usize,
    /// Retried and answered with the stored answer (`Idempotent-Replayed`).
    resolved_replayed: usize,
    /// Retried and executed afresh (the first attempt left nothing).
    resolved_fresh: usize,
    /// Still without a definite answer when the settle time ran out.
    stuck: usize,
    /// Retries sent in all.
    retries: usize,
    /// The settled answers of the in-doubt keys, by class.
    resolved_as: BTreeMap<String, usize>,
    /// The in-flight-at-break keys, by how they were resolved.
    in_flight_resolved_as: BTreeMap<String, usize>,
}

/// Retries every in-doubt key until it gets a definite answer; returns the
/// final answer of each retried request (by request number).
async fn settle(
    ctx: &Ctx,
    setup: &Arc<Setup>,
    outcomes: &[Outcome],
    within: Duration,
) -> (BTreeMap<usize, Got>, KeyFigures) {
    let mut figures = KeyFigures::default();
    let doubtful: Vec<Shot> = outcomes
        .iter()
        .filter(|o| key_of(&ctx.run, &o.shot).is_some())
        .inspect(|_| figures.sent += 1)
        .filter(|o| !o.got.definite())
        .map(|o| o.shot)
        .collect();
    figures.in_doubt = doubtful.len();
    let broken: BTreeSet<usize> = outcomes
        .iter()
        .filter(|o| key_of(&ctx.run, &o.shot).is_some() && matches!(o.got, Got::Broken))
        .map(|o| o.shot.i)
        .collect();
    figures.in_flight_at_break = broken.len();
    let deadline = Instant::now() + within;
    let queue = Arc::new(std::sync::Mutex::new(doubtful));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (api, setup, queue) = (Arc::clone(&ctx.api), Arc::clone(setup), Arc::clone(&queue));
            let run = ctx.run.clone();
            tokio::spawn(async move {
                let mut settled = Vec::new();
                // The guard is moved into the closure and dropped there.
                while let Some(shot) = queue.lock().ok().and_then(|mut q| q.pop()) {
                    let mut tries = 0;
                    let got = loop {
                        tries += 1;
                        let got = send(&api, &run, &setup, &shot).await;
                        if got.definite() || Instant::now() >= deadline {
                            break got;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    };
                    settled.push((shot.i, got, tries));
                }
                settled
            })
        })
        .collect();
    let mut finals = BTreeMap::new();
    for worker in workers {
        let Ok(settled) = worker.await else { continue };
        for (i, got, tries) in settled {
            figures.retries += tries;
            if got.definite() {
                match &got {
                    Got::Answer { replayed: true, .. } => figures.resolved_replayed += 1,
                    _ => figures.resolved_fresh += 1,
                }
            } else {
                figures.stuck += 1;
            }
            let class = match &got {
                Got::Answer { replayed: true, .. } => format!("{} (replayed)", got.class()),
                _ => got.class(),
            };
            *figures.resolved_as.entry(class.clone()).or_insert(0) += 1;
            if broken.contains(&i) {
                *figures.in_flight_resolved_as.entry(class).or_insert(0) += 1;
            }
            finals.insert(i, got);
        }
    }
    (finals, figures)
}

/// Answers by class.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Classes {
    #[serde(rename = "2xx")]
    ok_2xx: usize,
    /// "409 OUT_OF_STOCK" → count.
    #[serde(rename = "4xx")]
    client_4xx: BTreeMap<String, usize>,
    #[serde(rename = "503")]
    unavailable_503: usize,
    /// Any 5xx but 503, by status and code.
    #[serde(rename = "other5xx")]
    other_5xx: BTreeMap<String, usize>,
    timeouts: usize,
    refused: usize,
    broken: usize,
}

impl Classes {
    fn add(&mut self, got: &Got) {
        match got {
            Got::Answer { status, .. } if *status < 300 => self.ok_2xx += 1,
            Got::Answer { status, .. } if *status < 500 => {
                *self.client_4xx.entry(got.class()).or_insert(0) += 1;
            }
            Got::Answer { status: 503, .. } => self.unavailable_503 += 1,
            Got::Answer { .. } => *self.other_5xx.entry(got.class()).or_insert(0) += 1,
            Got::Timeout => self.timeouts += 1,
            Got::Refused => self.refused += 1,
            Got::Broken => self.broken += 1,
        }
    }

    fn of<'a>(gots: impl Iterator<Item = &'a Got>) -> Self {
        let mut c = Self::default();
        for g in gots {
            c.add(g);
        }
        c
    }

    fn describe(&self) -> String {
        let mut parts = vec![format!("2xx {}", self.ok_2xx)];
        parts.extend(self.client_4xx.iter().map(|(k, v)| format!("{k} {v}")));
        parts.push(format!("503 {}", self.unavailable_503));
        let other: usize = self.other_5xx.values().sum();
        parts.push(format!("other 5xx {other}"));
        parts.extend(self.other_5xx.iter().map(|(k, v)| format!("({k} {v})")));
        parts.push(format!("timeouts {}", self.timeouts));
        parts.push(format!("refused {}", self.refused));
        parts.push(format!("broken {}", self.broken));
        parts.join(", ")
    }
}

/// One second of the timeline (answers by the time they came back).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Second {
    /// Seconds since the firing started.
    t: u64,
    /// Served: 2xx and 4xx.
    served: usize,
    created: usize,
    unavailable: usize,
    other_5xx: usize,
    /// Timeouts and refused or broken connections.
    errors: usize,
}

/// The figures of the outage and the recovery.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Recovery {
    /// Served answers per second before the fault (after a short warm-up).
    pre_fault_per_s: f64,
    /// `back - fault`, in seconds.
    outage_s: Option<f64>,
    /// From `back` to the start of the first full second with at least 80%
    /// of the pre-fault rate; `None` when it never came back.
    recovery_s: Option<f64>,
    /// The lowest served rate over a full second between `fault` and the
    /// recovery.
    lowest_per_s: Option<f64>,
    /// Answers that came back between `fault` and `back`.
    during_outage: Classes,
    /// The slowest answer sent during the outage, in ms.
    slowest_during_outage_ms: Option<u64>,
    /// Answers to requests sent after `back`: failures here are the
    /// recovery's own (stale pooled connections, a cold start).
    after_return: Classes,
}

fn recovery(
    outcomes: &[Outcome],
    started_ms: u64,
    ended_ms: u64,
    marks: &BTreeMap<String, u64>,
) -> Recovery {
    let n = usize::try_from((ended_ms.saturating_sub(started_ms)) / BUCKET_MS + 1).unwrap_or(0);
    let mut served = vec![0usize; n];
    for o in outcomes.iter().filter(|o| o.got.served()) {
        let b = usize::try_from(o.done_ms.saturating_sub(started_ms) / BUCKET_MS).unwrap_or(0);
        if let Some(slot) = served.get_mut(b) {
            *slot += 1;
        }
    }
    let bucket_of =
        |ms: u64| usize::try_from(ms.saturating_sub(started_ms) / BUCKET_MS).unwrap_or(0);
    let per_bucket_s = 1000 / BUCKET_MS as usize;
    let window = |from: usize| -> Option<usize> {
        (from + per_bucket_s <= n).then(|| served[from..from + per_bucket_s].iter().sum())
    };
    let mut r = Recovery::default();
    let Some(&fault) = marks.get("fault") else {
        return r;
    };
    let fault_b = bucket_of(fault);
    let warm = (fault_b / 3).min(2 * per_bucket_s);
    let pre: usize = served[warm.min(n)..fault_b.min(n)].iter().sum();
    let pre_s = (fault_b.saturating_sub(warm)) as f64 * BUCKET_MS as f64 / 1000.0;
    r.pre_fault_per_s = if pre_s > 0.0 { pre as f64 / pre_s } else { 0.0 };
    let Some(&back) = marks.get("back") else {
        return r;
    };
    r.outage_s = Some(back.saturating_sub(fault) as f64 / 1000.0);
    r.during_outage = Classes::of(
        outcomes
            .iter()
            .filter(|o| o.done_ms >= fault && o.done_ms <= back)
            .map(|o| &o.got),
    );
    r.slowest_during_outage_ms = outcomes
        .iter()
        .filter(|o| o.sent_ms >= fault && o.sent_ms <= back)
        .map(|o| o.done_ms.saturating_sub(o.sent_ms))
        .max();
    r.after_return = Classes::of(outcomes.iter().filter(|o| o.sent_ms > back).map(|o| &o.got));
    // The first 100 ms bucket that starts at or after `back`.
    let first = usize::try_from(back.saturating_sub(started_ms).div_ceil(BUCKET_MS)).unwrap_or(n);
    let wanted = RECOVERED_SHARE * r.pre_fault_per_s;
    let mut lowest: Option<usize> = None;
    for from in fault_b..n {
        let Some(count) = window(from) else { break };
        lowest = Some(lowest.map_or(count, |l| l.min(count)));
        if from >= first && count as f64 >= wanted {
            let start_ms = started_ms + from as u64 * BUCKET_MS;
            r.recovery_s = Some(start_ms.saturating_sub(back) as f64 / 1000.0);
            break;
        }
    }
    r.lowest_per_s = lowest.map(|l| l as f64);
    r
}

/// How long the requests waited for their answers (the client's clock,
/// from sending to the answer or the error).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Waits {
    /// The bound of `--max-wait`, in ms.
    bound_ms: Option<u64>,
    /// The longest wait, in ms (p100).
    max_ms: u64,
    /// Requests that waited longer than the bound.
    over_bound: usize,
    /// The slowest requests: wait, kind, answer, and when they were sent,
    /// relative to the fault (or the firing's start).
    slowest: Vec<String>,
}

fn waits(outcomes: &[Outcome], bound: Option<Duration>, since_ms: u64) -> Waits {
    let wait_of = |o: &Outcome| o.done_ms.saturating_sub(o.sent_ms);
    let bound_ms = bound.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX));
    let mut by_wait: Vec<&Outcome> = outcomes.iter().collect();
    by_wait.sort_by_key(|o| std::cmp::Reverse(wait_of(o)));
    Waits {
        bound_ms,
        max_ms: by_wait.first().map_or(0, |o| wait_of(o)),
        over_bound: bound_ms.map_or(0, |b| outcomes.iter().filter(|o| wait_of(o) > b).count()),
        slowest: by_wait
            .iter()
            .take(5)
            .map(|o| {
                format!(
                    "{} ms {:?} {} sent at {:+.1} s",
                    wait_of(o),
                    o.shot.kind,
                    o.got.class(),
                    (o.sent_ms as f64 - since_ms as f64) / 1000.0
                )
            })
            .collect(),
    }
}

fn timeline(outcomes: &[Outcome], started_ms: u64) -> Vec<Second> {
    let mut seconds: BTreeMap<u64, Second> = BTreeMap::new();
    for o in outcomes {
        let t = o.done_ms.saturating_sub(started_ms) / 1000;
        let s = seconds.entry(t).or_insert(Second {
            t,
            served: 0,
            created: 0,
            unavailable: 0,
            other_5xx: 0,
            errors: 0,
        });
        match o.got.status() {
            Some(201) => {
                s.served += 1;
                s.created += 1;
            }
            Some(status) if status < 500 => s.served += 1,
            Some(503) => s.unavailable += 1,
            Some(_) => s.other_5xx += 1,
            None => s.errors += 1,
        }
    }
    seconds.into_values().collect()
}

fn read_marks(path: Option<&PathBuf>) -> BTreeMap<String, u64> {
    let Some(path) = path else {
        return BTreeMap::new();
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// The business answers each kind may give (besides a 503). A retry may
/// also find its key still in progress.
fn expected(kind: Kind, got: &Got, retry: bool) -> bool {
    let Got::Answer { status, code, .. } = got else {
        return true; // transport failures are judged separately
    };
    if *status >= 500 {
        return true; // judged separately
    }
    let allowed: &[(u16, &str)] = match kind {
        Kind::Shelf | Kind::Hot => &[(201, ""), (409, "OUT_OF_STOCK")],
        Kind::Coupon => &[
            (201, ""),
            (409, "COUPON_SOLD_OUT"),
            (409, "COUPON_ALREADY_ISSUED"),
        ],
        Kind::Invest => &[
            (201, ""),
            (409, "SOLD_OUT"),
            (409, "AMOUNT_EXCEEDS_REMAINING"),
        ],
    };
    allowed.iter().any(|(s, c)| s == status && c == code)
        || (retry && *status == 409 && code == "IDEMPOTENCY_IN_PROGRESS")
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderRecord {
    order_id: Value,
    key: String,
    login: String,
    product_id: i64,
    /// Its 201 came from a retry.
    retried: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CouponRecord {
    code: Value,
    login: String,
    campaign_id: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InvestRecord {
    investment_id: Value,
    key: String,
    login: String,
    product_id: i64,
    amount: i64,
    retried: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FaultReport {
    name: String,
    run: String,
    seed: u64,
    connections: usize,
    timeout_s: f64,
    started_ms: u64,
    ended_ms: u64,
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    waits: Waits,
    answers: Classes,
    by_kind: BTreeMap<String, Classes>,
    marks: BTreeMap<String, u64>,
    recovery: Recovery,
    keys: KeyFigures,
    /// Seconds from the fault to the last stale refusal; `None`: none.
    stale_window_s: Option<f64>,
    coupon_answers_in_doubt: usize,
    timeline: Vec<Second>,
    targets: Vec<Target>,
    orders: Vec<OrderRecord>,
    coupons: Vec<CouponRecord>,
    investments: Vec<InvestRecord>,
    checks: Vec<Check>,
    passed: bool,
}

/// Runs the fault mode; `Ok(false)` when a check failed.
///
/// # Errors
/// When the setup fails or the final state cannot be read.
#[allow(clippy::too_many_lines)] // one report, built in one place
pub async fn run(ctx: &Ctx, opts: &FaultOptions) -> anyhow::Result<bool> {
    let setup = Arc::new(set_up(ctx).await?);
    let seed = splitmix(now_ms());
    eprintln!("== firing fault ({}) for {:?}", opts.name, opts.duration);
    let started_ms = now_ms();
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, format!("{started_ms}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let (outcomes, hist) = fire_for(ctx, &setup, seed, opts.duration).await;
    let ended_ms = now_ms();
    eprintln!("== settling the keys in doubt (up to {:?})", opts.settle);
    let (finals, keys) = settle(ctx, &setup, &outcomes, opts.settle).await;
    let marks = read_marks(opts.marks.as_ref());
    let rec = recovery(&outcomes, started_ms, ended_ms, &marks);

    let answers = Classes::of(outcomes.iter().map(|o| &o.got));
    let mut by_kind: BTreeMap<String, Classes> = BTreeMap::new();
    for o in &outcomes {
        by_kind
            .entry(format!("{:?}", o.shot.kind).to_lowercase())
            .or_default()
            .add(&o.got);
    }
    // The final answer of every request: the retry's when it was retried.
    fn final_of<'a>(finals: &'a BTreeMap<usize, Got>, o: &'a Outcome) -> &'a Got {
        finals.get(&o.shot.i).unwrap_or(&o.got)
    }

    let mut orders = Vec::new();
    let mut coupons = Vec::new();
    let mut investments = Vec::new();
    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    let mut invested: BTreeMap<i64, (i64, BTreeSet<String>)> = BTreeMap::new();
    let mut issued: BTreeMap<i64, usize> = BTreeMap::new();
    let mut coupon_in_doubt: BTreeMap<i64, usize> = BTreeMap::new();
    let mut unexpected: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        let target = &setup.targets(o.shot.kind)[o.shot.target];
        let login = setup.login(&o.shot).to_owned();
        let got = final_of(&finals, o);
        for (g, retry) in [(&o.got, false), (got, true)] {
            if !expected(o.shot.kind, g, retry) {
                *unexpected
                    .entry(format!("{:?} {}", o.shot.kind, g.class()))
                    .or_insert(0) += 1;
            }
        }
        let retried = finals.contains_key(&o.shot.i);
        match (o.shot.kind, got) {
            (
                Kind::Shelf | Kind::Hot,
                Got::Answer {
                    status: 201,
                    created: Some(id),
                    ..
                },
            ) => {
                *sold.entry(target.id).or_insert(0) += 1;
                orders.push(OrderRecord {
                    order_id: id.clone(),
                    key: key_of(&ctx.run, &o.shot).unwrap_or_default(),
                    login,
                    product_id: target.id,
                    retried,
                });
            }
            (
                Kind::Coupon,
                Got::Answer {
                    status: 201,
                    created: Some(code),
                    ..
                },
            ) => {
                *issued.entry(target.id).or_insert(0) += 1;
                coupons.push(CouponRecord {
                    code: code.clone(),
                    login,
                    campaign_id: target.id,
                });
            }
            (Kind::Coupon, g) if !g.definite() => {
                *coupon_in_doubt.entry(target.id).or_insert(0) += 1;
            }
            (
                Kind::Invest,
                Got::Answer {
                    status: 201,
                    created: Some(id),
                    ..
                },
            ) => {
                let entry = invested.entry(target.id).or_default();
                entry.0 += o.shot.amount;
                entry.1.insert(login.clone());
                investments.push(InvestRecord {
                    investment_id: id.clone(),
                    key: key_of(&ctx.run, &o.shot).unwrap_or_default(),
                    login,
                    product_id: target.id,
                    amount: o.shot.amount,
                    retried,
                });
            }
            _ => {}
        }
    }

    let mut checks = Vec::new();
    let other_5xx: usize = answers.other_5xx.values().sum::<usize>()
        + finals
            .values()
            .filter(|g| g.status().is_some_and(|s| s >= 500 && s != 503))
            .count();
    checks.push(Check::that(
        "no 500 (or any 5xx but 503)",
        other_5xx == 0,
        if other_5xx == 0 {
            "none".to_owned()
        } else {
            format!("{other_5xx}: {:?}", answers.other_5xx)
        },
    ));
    checks.push(Check::that(
        &format!(
            "no hang: every request answered within the {:?} client timeout",
            opts.timeout
        ),
        answers.timeouts == 0,
        format!("{} timeouts", answers.timeouts),
    ));
    let waits = waits(
        &outcomes,
        opts.max_wait,
        marks.get("fault").copied().unwrap_or(started_ms),
    );
    if let Some(bound) = opts.max_wait {
        checks.push(Check::that(
            &format!("no request waited longer than {bound:?} (the app's timeouts + 1 s)"),
            waits.over_bound == 0,
            format!(
                "longest {} ms, {} over the bound; slowest: {}",
                waits.max_ms,
                waits.over_bound,
                waits.slowest.join("; ")
            ),
        ));
    }
    if !opts.expect_disconnects {
        let lost = answers.refused + answers.broken;
        checks.push(Check::that(
            "no refused or broken connection (the app stays up)",
            lost == 0,
            format!("{} refused, {} broken", answers.refused, answers.broken),
        ));
    }
    checks.push(Check::that(
        "only expected business answers (2xx, the scenario's 409s, 503)",
        unexpected.is_empty(),
        if unexpected.is_empty() {
            "yes".to_owned()
        } else {
            format!("unexpected: {unexpected:?}")
        },
    ));
    match (rec.outage_s, rec.recovery_s) {
        (None, _) => checks.push(Check::that(
            "the runner marked the fault and the return",
            false,
            format!("marks: {marks:?}"),
        )),
        (Some(_), recovery_s) => checks.push(Check::that(
            &format!(
                "throughput back to {:.0}% of the pre-fault rate within {} s of the return",
                RECOVERED_SHARE * 100.0,
                opts.recovery_within
            ),
            recovery_s.is_some_and(|r| r <= opts.recovery_within),
            match recovery_s {
                Some(r) => format!(
                    "{r:.1} s (pre-fault {:.0}/s, lowest second {:.0}/s)",
                    rec.pre_fault_per_s,
                    rec.lowest_per_s.unwrap_or(0.0)
                ),
                None => format!("never (pre-fault {:.0}/s)", rec.pre_fault_per_s),
            },
        )),
    }
    if let (Some(after), Some(&back)) = (opts.clean_after, marks.get("back")) {
        let from = back + u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let late = Classes::of(outcomes.iter().filter(|o| o.sent_ms > from).map(|o| &o.got));
        let failed = late.unavailable_503
            + late.other_5xx.values().sum::<usize>()
            + late.timeouts
            + late.refused
            + late.broken;
        checks.push(Check::that(
            &format!("every request sent {after:?} after the return is served (no restart needed)"),
            failed == 0,
            late.describe(),
        ));
    }
    if opts.expect_503 {
        checks.push(Check::that(
            "the outage is answered with 503s",
            rec.during_outage.unavailable_503 > 0,
            format!(
                "during the outage: {}; slowest {} ms",
                rec.during_outage.describe(),
                rec.slowest_during_outage_ms.unwrap_or(0)
            ),
        ));
    }
    checks.push(Check::that(
        "every key in doubt got a definite answer on retry (none stuck in progress)",
        keys.stuck == 0,
        format!(
            "{} in doubt ({} in flight when a connection broke): {} replayed, {} run afresh, {} stuck; {:?}",
            keys.in_doubt,
            keys.in_flight_at_break,
            keys.resolved_replayed,
            keys.resolved_fresh,
            keys.stuck,
            keys.resolved_as
        ),
    ));
    // The final state through the API.
    let mut oversold = Vec::new();
    let mut mismatched = Vec::new();
    // What is left of each target at the end (stock, amount, free codes).
    let mut left_at_end: BTreeMap<(Kind, i64), i64> = BTreeMap::new();
    for t in setup.shelf.iter().chain(&setup.hot) {
        let stock = product_stock(&ctx.api, t.id).await?;
        left_at_end.insert((t.kind, t.id), stock);
        let sold_by_201 = sold.get(&t.id).copied().unwrap_or(0);
        if stock < 0 {
            oversold.push(format!("product {} stock {stock}", t.id));
        }
        if t.size - stock != sold_by_201 {
            mismatched.push(format!(
                "product {}: {} taken, {sold_by_201} orders answered 201",
                t.id,
                t.size - stock
            ));
        }
    }
    let hot_sold_out = {
        let mut n = 0;
        for t in &setup.hot {
            if product_stock(&ctx.api, t.id).await? == 0 {
                n += 1;
            }
        }
        n
    };
    checks.push(Check::that(
        "no oversell: stock never below 0",
        oversold.is_empty(),
        format!(
            "{} of {} hot products sold out, none below 0{}",
            hot_sold_out,
            setup.hot.len(),
            if oversold.is_empty() {
                String::new()
            } else {
                format!("; {oversold:?}")
            }
        ),
    ));
    checks.push(Check::that(
        "units taken = orders answered 201 (keys settled), per product",
        mismatched.is_empty(),
        if mismatched.is_empty() {
            format!(
                "{} products, {} orders",
                setup.shelf.len() + setup.hot.len(),
                orders.len()
            )
        } else {
            format!("{mismatched:?}")
        },
    ));
    let mut over_invested = Vec::new();
    let mut invest_mismatch = Vec::new();
    for t in &setup.invest {
        let view = ctx
            .api
            .admin(
                Method::GET,
                &format!("/api/v1/invest-products/{}", t.id),
                None,
            )
            .await?;
        let current = view.body["currentInvestingAmount"]
            .as_i64()
            .context("currentInvestingAmount")?;
        let count = view.body["investingCnt"].as_i64().context("investingCnt")?;
        left_at_end.insert((t.kind, t.id), t.size - current);
        let (sum, investors) = invested
            .get(&t.id)
            .map_or((0, 0), |(s, u)| (*s, u.len() as i64));
        if current > t.size {
            over_invested.push(format!("product {}: {current} of {}", t.id, t.size));
        }
        if current != sum || count != investors {
            invest_mismatch.push(format!(
                "product {}: current {current} vs 201s {sum}; investingCnt {count} vs {investors}",
                t.id
            ));
        }
    }
    let full = {
        let mut n = 0;
        for t in &setup.invest {
            let view = ctx
                .api
                .admin(
                    Method::GET,
                    &format!("/api/v1/invest-products/{}", t.id),
                    None,
                )
                .await?;
            if view.body["investStatus"].as_str() == Some("COMPLETE") {
                n += 1;
            }
        }
        n
    };
    checks.push(Check::that(
        "no over-investment: currentInvestingAmount <= target",
        over_invested.is_empty(),
        format!(
            "{full} of {} products complete{}",
            setup.invest.len(),
            if over_invested.is_empty() {
                String::new()
            } else {
                format!("; {over_invested:?}")
            }
        ),
    ));
    checks.push(Check::that(
        "invested = the 201s' amounts, investingCnt = their investors (keys settled)",
        invest_mismatch.is_empty(),
        if invest_mismatch.is_empty() {
            format!("{} investments", investments.len())
        } else {
            format!("{invest_mismatch:?}")
        },
    ));
    let mut coupon_problems = Vec::new();
    let mut pools_empty = 0;
    for t in &setup.campaigns {
        let view = ctx
            .api
            .admin(
                Method::GET,
                &format!("/api/v1/coupon-campaigns/{}", t.id),
                None,
            )
            .await?;
        let issued_count = view.body["issuedCount"].as_i64().context("issuedCount")?;
        left_at_end.insert((t.kind, t.id), t.size - issued_count);
        let by_201 = issued.get(&t.id).copied().unwrap_or(0) as i64;
        let doubt = coupon_in_doubt.get(&t.id).copied().unwrap_or(0) as i64;
        if issued_count == t.size {
            pools_empty += 1;
        }
        if issued_count > t.size || issued_count < by_201 || issued_count > by_201 + doubt {
            coupon_problems.push(format!(
                "campaign {}: issuedCount {issued_count} of {}, 201s {by_201}, in doubt {doubt}",
                t.id, t.size
            ));
        }
    }
    let codes: BTreeSet<String> = coupons.iter().map(|c| c.code.to_string()).collect();
    let holders: BTreeSet<(String, i64)> = coupons
        .iter()
        .map(|c| (c.login.clone(), c.campaign_id))
        .collect();
    if codes.len() != coupons.len() {
        coupon_problems.push(format!(
            "{} codes answered 201 but only {} distinct",
            coupons.len(),
            codes.len()
        ));
    }
    if holders.len() != coupons.len() {
        coupon_problems.push(format!(
            "{} coupons answered 201 to only {} (user, campaign) pairs",
            coupons.len(),
            holders.len()
        ));
    }
    checks.push(Check::that(
        "no over-issue: issuedCount <= pool, 201s <= issuedCount <= 201s + answers in doubt, each code and user once",
        coupon_problems.is_empty(),
        if coupon_problems.is_empty() {
            format!(
                "{} coupons, {pools_empty} of {} pools empty",
                coupons.len(),
                setup.campaigns.len()
            )
        } else {
            format!("{coupon_problems:?}")
        },
    ));

    let stale = stale_refusals(ctx, &setup, &outcomes, &finals, &left_at_end, &coupons).await?;
    let fault_ms = marks.get("fault").copied();
    let when = |ms: Option<u64>| match (ms, fault_ms) {
        (Some(ms), Some(f)) => format!("{:+.1} s", (ms as f64 - f as f64) / 1000.0),
        _ => "?".to_owned(),
    };
    // The window of stale refusals: from the fault to the last one.
    let stale_window_s = match (stale.last_ms, fault_ms) {
        (Some(last), Some(f)) => Some((last as f64 - f as f64).max(0.0) / 1000.0),
        (Some(_), None) => Some(f64::INFINITY),
        (None, _) => None,
    };
    let (name, stale_ok) = match opts.stale_refusals_within {
        None => (
            "every refusal was true: the resource had no room for it, even at the end".to_owned(),
            stale.by_code.is_empty(),
        ),
        Some(within) => (
            format!(
                "no stale refusal later than {within} s after the fault (the reservations held when it struck are leases)"
            ),
            stale_window_s.is_none_or(|w| w <= within),
        ),
    };
    checks.push(Check::that(
        &name,
        stale_ok,
        if stale.by_code.is_empty() {
            format!("{} refusals checked, none stale", stale.checked)
        } else {
            format!(
                "{} of {} refusals were stale: {:?}, answered from {} to {} after the fault (answers replayed from a key stay wrong)",
                stale.by_code.values().sum::<usize>(),
                stale.checked,
                stale.by_code,
                when(stale.first_ms),
                when(stale.last_ms)
            )
        },
    ));
    let passed = checks.iter().all(Check::ok);
    let seconds = (ended_ms.saturating_sub(started_ms)) as f64 / 1000.0;
    let mut targets: Vec<Target> = Vec::new();
    for kind in [Kind::Shelf, Kind::Hot, Kind::Coupon, Kind::Invest] {
        targets.extend(setup.targets(kind).iter().cloned());
    }
    let report = FaultReport {
        name: opts.name.clone(),
        run: ctx.run.clone(),
        seed,
        connections: ctx.connections,
        timeout_s: opts.timeout.as_secs_f64(),
        started_ms,
        ended_ms,
        requests: outcomes.len(),
        per_second: outcomes.len() as f64 / seconds.max(1e-9),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: hist.max() as f64 / 1000.0,
        waits,
        answers,
        by_kind,
        marks,
        recovery: rec,
        keys,
        stale_window_s,
        coupon_answers_in_doubt: coupon_in_doubt.values().sum(),
        timeline: timeline(&outcomes, started_ms),
        targets,
        orders,
        coupons,
        investments,
        checks,
        passed,
    };
    print(&report);
    if let Some(path) = &opts.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(passed)
}

fn print(r: &FaultReport) {
    println!(
        "== fault {} ({} requests over {:.1} s, {:.0}/s, {} connections, client timeout {:.0} s)",
        r.name,
        r.requests,
        (r.ended_ms.saturating_sub(r.started_ms)) as f64 / 1000.0,
        r.per_second,
        r.connections,
        r.timeout_s
    );
    println!(
        "   latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {}",
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        match r.waits.bound_ms {
            Some(b) => format!("{} over {b} ms", r.waits.over_bound),
            None => "no bound".to_owned(),
        }
    );
    println!("   slowest: {}", r.waits.slowest.join("; "));
    println!("   answers: {}", r.answers.describe());
    for (kind, c) in &r.by_kind {
        println!("     {kind}: {}", c.describe());
    }
    let rec = &r.recovery;
    println!(
        "   outage {}, recovery {}, pre-fault {:.0} served/s, lowest second {}",
        rec.outage_s.map_or("?".to_owned(), |s| format!("{s:.1} s")),
        rec.recovery_s
            .map_or("never".to_owned(), |s| format!("{s:.1} s")),
        rec.pre_fault_per_s,
        rec.lowest_per_s
            .map_or("?".to_owned(), |s| format!("{s:.0}/s")),
    );
    println!(
        "   during the outage: {}; slowest answer {} ms",
        rec.during_outage.describe(),
        rec.slowest_during_outage_ms.unwrap_or(0)
    );
    println!("   sent after the return: {}", rec.after_return.describe());
    let line: Vec<String> = r
        .timeline
        .iter()
        .map(|s| {
            let bad = s.unavailable + s.other_5xx + s.errors;
            if bad > 0 {
                format!("{}:{}/{}!", s.t, s.served, bad)
            } else {
                format!("{}:{}", s.t, s.served)
            }
        })
        .collect();
    println!("   timeline (second:served[/failed!]): {}", line.join(" "));
    println!(
        "   keys: {} sent, {} in doubt, {} in flight at a break, {} retries: {} replayed, {} run afresh, {} stuck",
        r.keys.sent,
        r.keys.in_doubt,
        r.keys.in_flight_at_break,
        r.keys.retries,
        r.keys.resolved_replayed,
        r.keys.resolved_fresh,
        r.keys.stuck
    );
    for c in &r.checks {
        println!(
            "   [{}] {}: {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
}

/// Refusals that the end state proves wrong. Stock, amounts left and free
/// codes only shrink during the run, so a sold-out answer for a target
/// that still has room at the end was already wrong when it was given:
/// `OUT_OF_STOCK` (one unit) with stock left; `SOLD_OUT` with any amount
/// left, `AMOUNT_EXCEEDS_REMAINING` for an amount that is still left;
/// `COUPON_SOLD_OUT` with a free code left, `COUPON_ALREADY_ISSUED` to a
/// user who holds no code of the campaign. This is the property of
/// `docs/concurrency.md` ("a refused amount is larger than what is left at
/// the end"), for every gate.
#[derive(Debug, Default)]
struct Stale {
    checked: usize,
    by_code: BTreeMap<String, usize>,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
}

async fn stale_refusals(
    ctx: &Ctx,
    setup: &Setup,
    outcomes: &[Outcome],
    finals: &BTreeMap<usize, Got>,
    left_at_end: &BTreeMap<(Kind, i64), i64>,
    coupons: &[CouponRecord],
) -> anyhow::Result<Stale> {
    let holders: BTreeSet<(String, i64)> = coupons
        .iter()
        .map(|c| (c.login.clone(), c.campaign_id))
        .collect();
    let mut stale = Stale::default();
    // (login, campaign) told "already issued" without a 201 of ours: asked below.
    let mut ask: BTreeMap<(String, i64), Vec<u64>> = BTreeMap::new();
    let note = |stale: &mut Stale, code: &str, at: u64| {
        *stale.by_code.entry(code.to_owned()).or_insert(0) += 1;
        stale.first_ms = Some(stale.first_ms.map_or(at, |f| f.min(at)));
        stale.last_ms = Some(stale.last_ms.map_or(at, |l| l.max(at)));
    };
    for o in outcomes {
        let target = &setup.targets(o.shot.kind)[o.shot.target];
        let left = left_at_end
            .get(&(o.shot.kind, target.id))
            .copied()
            .unwrap_or(0);
        // Every answer the client saw: the first, and the retry's.
        let answers = std::iter::once(&o.got).chain(finals.get(&o.shot.i));
        for got in answers {
            let Got::Answer {
                status: 409, code, ..
            } = got
            else {
                continue;
            };
            let wrong = match (o.shot.kind, code.as_str()) {
                (Kind::Shelf | Kind::Hot, "OUT_OF_STOCK") => Some(left >= 1),
                (Kind::Invest, "SOLD_OUT") => Some(left >= 1),
                (Kind::Invest, "AMOUNT_EXCEEDS_REMAINING") => Some(left >= o.shot.amount),
                (Kind::Coupon, "COUPON_SOLD_OUT") => Some(left >= 1),
                (Kind::Coupon, "COUPON_ALREADY_ISSUED") => {
                    let login = setup.login(&o.shot).to_owned();
                    if !holders.contains(&(login.clone(), target.id)) {
                        ask.entry((login, target.id)).or_default().push(o.done_ms);
                    }
                    Some(false)
                }
                _ => None,
            };
            if let Some(wrong) = wrong {
                stale.checked += 1;
                if wrong {
                    note(&mut stale, code, o.done_ms);
                }
            }
        }
    }
    for ((login, campaign), times) in ask {
        let mine = ctx
            .api
            .user(Method::GET, "/api/v1/coupons?size=100", &login, None, None)
            .await?;
        let holds = mine.body["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|c| c["campaignId"].as_i64() == Some(campaign))
        });
        if !holds {
            for at in times {
                note(&mut stale, "COUPON_ALREADY_ISSUED", at);
            }
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served_at(done_ms: u64) -> Outcome {
        Outcome {
            shot: Shot {
                i: 0,
                kind: Kind::Shelf,
                target: 0,
                user: 0,
                amount: 1,
            },
            got: Got::Answer {
                status: 201,
                code: String::new(),
                replayed: false,
                created: None,
            },
            sent_ms: done_ms,
            done_ms,
        }
    }

    #[test]
    fn recovery_is_the_first_full_second_back_at_80_percent_after_the_return() {
        // 100 answers a second for 10 s, nothing from 10 s to 13.5 s, then
        // 50 a second until 14.5 s, then 100 a second again.
        let mut outcomes = Vec::new();
        for ms in (0..30_000).step_by(10) {
            let keep =
                ms < 10_000 || (13_500..14_500).contains(&ms) && ms % 20 == 0 || ms >= 14_500;
            if keep {
                outcomes.push(served_at(ms));
            }
        }
        let marks: BTreeMap<String, u64> =
            [("fault".to_owned(), 10_000), ("back".to_owned(), 13_000)].into();
        let r = recovery(&outcomes, 0, 30_000, &marks);
        assert!(
            (r.pre_fault_per_s - 100.0).abs() < 1e-9,
            "{}",
            r.pre_fault_per_s
        );
        assert_eq!(r.outage_s, Some(3.0));
        // [14.0, 15.0) holds 25 + 50 answers; [14.1, 15.1) holds 20 + 60,
        // the first 80: 1.1 s after the return.
        assert_eq!(r.recovery_s, Some(1.1));
        assert_eq!(r.lowest_per_s, Some(0.0));
    }

    #[test]
    fn waits_count_the_requests_over_the_bound_and_name_the_slowest() {
        let mut outcomes: Vec<Outcome> = (0..10).map(|i| served_at(1_000 + i)).collect();
        outcomes[3].sent_ms = 0; // waited 1,003 ms
        outcomes[7].sent_ms = 500; // waited 507 ms
        let w = waits(&outcomes, Some(Duration::from_millis(500)), 400);
        assert_eq!(w.bound_ms, Some(500));
        assert_eq!(w.max_ms, 1_003);
        assert_eq!(w.over_bound, 2);
        assert!(
            w.slowest[0].starts_with("1003 ms Shelf 201 sent at -0.4 s"),
            "{:?}",
            w.slowest
        );
        assert_eq!(waits(&outcomes, None, 0).over_bound, 0);
    }

    #[test]
    fn a_retry_may_find_its_key_in_progress_but_a_first_request_may_not() {
        let in_progress = Got::Answer {
            status: 409,
            code: "IDEMPOTENCY_IN_PROGRESS".to_owned(),
            replayed: false,
            created: None,
        };
        assert!(!in_progress.definite());
        assert!(expected(Kind::Shelf, &in_progress, true));
        assert!(!expected(Kind::Shelf, &in_progress, false));
    }
}
