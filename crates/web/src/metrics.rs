//! Prometheus metrics: what the edge and the handlers count, and `GET
//! /metrics`, which samples the pools and the outbox at scrape time.
//!
//! - `http_requests_total` and `http_request_duration_seconds` by method,
//!   route pattern (never the raw path, so ids do not explode the series)
//!   and status;
//! - `pool_connections` by pool (`postgres`, `redis`, the lanes' pools) and
//!   state (`max`, `open`, `idle`, `waiting`); a pool kept per thread
//!   reports the sum of the sets its threads have built;
//! - business counters, counted once per executed write (an idempotent
//!   replay counts nothing): orders paid and refused by code, coupons
//!   issued and refused by code, investments and the amount invested, and
//!   investments refused by code;
//! - `outbox_unpublished_events` and `outbox_oldest_unpublished_age_seconds`
//!   by sink (`stream`; `kafka` when configured): each sink's lag;
//! - `refusals_queued`: gate refusals recorded in Redis and not yet written
//!   to Postgres (`docs/idempotency.md`);
//! - `requests_shed_total` by family (`orders`, `investments`, `charges`,
//!   `coupon_issues`): money writes answered `503` at once because their
//!   family was at its in-flight bound (`admission`), and
//!   `admission_in_flight` by family, sampled at scrape time.
//!
//! Every app has its own [`Metrics`] registry (no globals), so several apps in
//! one test process do not mix their counts.

use std::sync::Arc;

use crate::admission::{Admission, Family};
use crate::problem::ApiError;
use actix_web::{HttpResponse, web};
use application::events::RelayOutbox;
use domain::idempotency::Written;
use domain::invest::InvestError;
use domain::ordering::PlaceOrderError;
use prometheus::{
    Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 1 ms to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric this service exports, in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    pool_connections: IntGaugeVec,
    orders_paid: IntCounter,
    order_refusals: IntCounterVec,
    coupons_issued: IntCounter,
    coupon_refusals: IntCounterVec,
    investments: IntCounter,
    invested_amount: IntCounter,
    investment_refusals: IntCounterVec,
    outbox_unpublished: IntGaugeVec,
    outbox_oldest_age: GaugeVec,
    refusals_queued: IntGauge,
    requests_shed: IntCounterVec,
    admission_in_flight: IntGaugeVec,
    read_cache: IntCounterVec,
    /// Serialises bringing `read_cache` up to the caches' counts, so two
    /// scrapes at once do not both add the same difference.
    read_cache_sync: Arc<std::sync::Mutex<()>>,
}

/// A pool's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub max: usize,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
}

/// Reads a pool's state; the composition root provides one per pool.
pub type PoolStatusFn = Arc<dyn Fn() -> PoolStatus + Send + Sync>;

/// How one shared read cache has answered since the process started, as
/// `(outcome, count)` pairs; the composition root provides one per cache.
pub type CacheCountsFn = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// What `GET /metrics` samples besides the counters.
#[derive(Clone)]
pub struct MetricsApi {
    pub metrics: Metrics,
    pub pools: Vec<(&'static str, PoolStatusFn)>,
    /// One relay per sink; each sink's backlog is sampled at scrape time.
    pub relays: Vec<Arc<RelayOutbox>>,
    /// Reads how many gate refusals wait to be written to Postgres.
    pub refusals_queued: Arc<dyn Fn() -> usize + Send + Sync>,
    /// The shared read caches, by name (none when the cache is off).
    pub caches: Vec<(&'static str, CacheCountsFn)>,
}

impl std::fmt::Debug for MetricsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsApi")
            .field(
                "pools",
                &self.pools.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    ///
    /// # Panics
    /// Never in practice: the names and labels are fixed and valid.
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency, from first byte in to response out",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_seconds.clone()))
            .expect("unique metric");
        let pool_connections = IntGaugeVec::new(
            Opts::new("pool_connections", "Connections of a pool by state"),
            &["pool", "state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(pool_connections.clone()))
            .expect("unique metric");
        let outbox_unpublished = IntGaugeVec::new(
            Opts::new(
                "outbox_unpublished_events",
                "Order events written but not yet in the sink",
            ),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(outbox_unpublished.clone()))
            .expect("unique metric");
        let outbox_oldest_age = GaugeVec::new(
            Opts::new(
                "outbox_oldest_unpublished_age_seconds",
                "Age of the oldest order event not yet in the sink (0 when none)",
            ),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(outbox_oldest_age.clone()))
            .expect("unique metric");
        let refusals_queued = IntGauge::new(
            "refusals_queued",
            "Gate refusals recorded in Redis, not yet written to Postgres",
        )
        .expect("valid metric");
        registry
            .register(Box::new(refusals_queued.clone()))
            .expect("unique metric");
        let requests_shed = counter_vec(
            &registry,
            "requests_shed_total",
            "Money writes answered 503 at once, not run: their family was at its in-flight bound",
            &["family"],
        );
        let admission_in_flight = IntGaugeVec::new(
            Opts::new(
                "admission_in_flight",
                "Money writes in flight, by family (0 for an unbounded family)",
            ),
            &["family"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(admission_in_flight.clone()))
            .expect("unique metric");
        // Every family has its series from the start, so a dashboard shows
        // 0 rather than no data before the first shed request.
        for family in Family::ALL {
            requests_shed.with_label_values(&[family.name()]);
            admission_in_flight.with_label_values(&[family.name()]);
        }
        Self {
            http_requests: counter_vec(
                &registry,
                "http_requests_total",
                "HTTP requests answered",
                &["method", "route", "status"],
            ),
            http_seconds,
            pool_connections,
            orders_paid: counter(&registry, "orders_paid_total", "Orders paid"),
            order_refusals: counter_vec(
                &registry,
                "order_refusals_total",
                "Orders refused, by problem code",
                &["code"],
            ),
            coupons_issued: counter(&registry, "coupons_issued_total", "Coupons issued"),
            coupon_refusals: counter_vec(
                &registry,
                "coupon_issue_refusals_total",
                "Coupon issues refused, by problem code",
                &["code"],
            ),
            investments: counter(&registry, "investments_total", "Investments accepted"),
            invested_amount: counter(
                &registry,
                "invested_amount_total",
                "Amount of the investments accepted",
            ),
            investment_refusals: counter_vec(
                &registry,
                "investment_refusals_total",
                "Investments refused, by problem code",
                &["code"],
            ),
            outbox_unpublished,
            outbox_oldest_age,
            refusals_queued,
            requests_shed,
            admission_in_flight,
            read_cache: counter_vec(
                &registry,
                "read_cache_reads_total",
                "Reads through the shared cache, by cache and outcome (hit, stale, load, \
                 waited, bypassed: Redis failed and the database answered)",
                &["cache", "outcome"],
            ),
            read_cache_sync: Arc::default(),
            registry,
        }
    }

    /// One answered request. `route` is the matched pattern.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_seconds
            .with_label_values(&labels)
            .observe(seconds);
    }

    /// An order write's outcome: paid, refused (by code), or nothing new.
    pub fn record_order<T>(&self, written: &Written<T, PlaceOrderError>) {
        match business_outcome(written) {
            Some(Ok(())) => self.orders_paid.inc(),
            Some(Err(code)) => self.order_refusals.with_label_values(&[code]).inc(),
            None => {}
        }
    }

    /// An investment write's outcome, with the amount asked for.
    pub fn record_investment<T>(&self, written: &Written<T, InvestError>, amount: i64) {
        match business_outcome(written) {
            Some(Ok(())) => {
                self.investments.inc();
                self.invested_amount
                    .inc_by(u64::try_from(amount).unwrap_or(0));
            }
            Some(Err(code)) => self.investment_refusals.with_label_values(&[code]).inc(),
            None => {}
        }
    }

    /// A coupon issue: `None` when issued, else the refusal's code.
    pub fn record_coupon_issue(&self, refusal: Option<&str>) {
        match refusal {
            None => self.coupons_issued.inc(),
            Some(code) => self.coupon_refusals.with_label_values(&[code]).inc(),
        }
    }

    /// A money write shed by admission control.
    pub fn record_shed(&self, family: Family) {
        self.requests_shed.with_label_values(&[family.name()]).inc();
    }

    fn set_admission(&self, admission: &Admission) {
        for family in Family::ALL {
            self.admission_in_flight
                .with_label_values(&[family.name()])
                .set(i64::try_from(admission.in_flight(family)).unwrap_or(i64::MAX));
        }
    }

    /// Brings a cache's counters up to the counts it reports.
    fn set_cache(&self, cache: &str, counts: &[(&'static str, u64)]) {
        let _one_at_a_time = self
            .read_cache_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (outcome, count) in counts {
            let counter = self.read_cache.with_label_values(&[cache, outcome]);
            counter.inc_by(count.saturating_sub(counter.get()));
        }
    }

    fn set_pool(&self, pool: &str, status: PoolStatus) {
        for (state, value) in [
            ("max", status.max),
            ("open", status.open),
            ("idle", status.idle),
            ("waiting", status.waiting),
        ] {
            self.pool_connections
                .with_label_values(&[pool, state])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on a metric we never register.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `Some(Ok)` for a write whose effect committed now, `Some(Err(code))` for
/// one refused now (the refusal's problem code, from the one error map),
/// `None` for replays and key conflicts (nothing new happened).
fn business_outcome<T, E>(written: &Written<T, E>) -> Option<Result<(), &'static str>>
where
    E: Clone + Into<ApiError>,
{
    match written.executed()? {
        Ok(_) => Some(Ok(())),
        Err(refusal) => Some(Err(refusal.clone().into().code())),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(scrape)));
}

/// Prometheus metrics
///
/// HTTP request counts and latency histograms by method, route pattern and
/// status; pool gauges; outbox backlog; business counters.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
async fn scrape(
    api: web::Data<MetricsApi>,
    admission: Option<web::Data<Admission>>,
) -> HttpResponse {
    if let Some(admission) = admission {
        api.metrics.set_admission(&admission);
    }
    for (name, status) in &api.pools {
        api.metrics.set_pool(name, status());
    }
    for (name, counts) in &api.caches {
        api.metrics.set_cache(name, &counts());
    }
    let queued = (api.refusals_queued)();
    api.metrics
        .refusals_queued
        .set(i64::try_from(queued).unwrap_or(i64::MAX));
    // A failed read leaves the last values: the scrape itself still answers.
    for relay in &api.relays {
        let sink = relay.sink().name();
        match relay.backlog().await {
            Ok(backlog) => {
                api.metrics
                    .outbox_unpublished
                    .with_label_values(&[sink])
                    .set(backlog.unpublished);
                api.metrics
                    .outbox_oldest_age
                    .with_label_values(&[sink])
                    .set(backlog.oldest_age_seconds);
            }
            Err(err) => tracing::warn!(sink, error = %err, "could not read the outbox backlog"),
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(api.metrics.render())
}

#[cfg(test)]
mod tests {
    use domain::idempotency::StoredResponse;

    use super::*;

    fn executed<E>(result: Result<(), E>) -> Written<(), E> {
        Written::Executed {
            result,
            response: StoredResponse {
                status: 200,
                content_type: "application/json".into(),
                body: b"{}".to_vec(),
            },
        }
    }

    #[test]
    fn writes_count_once_and_replays_not_at_all() {
        let m = Metrics::new();
        m.record_order(&executed(Ok(())));
        m.record_order(&executed(Err(PlaceOrderError::OutOfStock {
            product_id: domain::catalog::ProductId::new(3),
        })));
        m.record_order::<()>(&Written::Replayed(StoredResponse {
            status: 201,
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        }));
        m.record_order::<()>(&Written::InProgress);
        m.record_investment(&executed(Ok(())), 300);
        m.observe_request("GET", "/api/v1/orders/{id}", 200, 0.003);

        let text = m.render();
        assert!(text.contains("orders_paid_total 1\n"), "{text}");
        assert!(
            text.contains(r#"order_refusals_total{code="OUT_OF_STOCK"} 1"#),
            "{text}"
        );
        assert!(text.contains("invested_amount_total 300\n"), "{text}");
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/api/v1/orders/{id}",status="200"} 1"#
            ),
            "{text}"
        );
    }
}
