//! `/health/live` (the process runs) and `/health/ready` (Postgres and Redis
//! answer). Readiness asks every probe at once and bounds each with a short
//! timeout, so a dead dependency is reported in about a second, not a hang.
//! Its `detail` tells a hung dependency (no answer within the timeout) from
//! one that fails (refused, reset, an error).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use domain::health::HealthProbe;
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};

/// The probes behind `/health/ready`.
#[derive(Clone)]
pub struct Readiness {
    pub probes: Vec<Arc<dyn HealthProbe>>,
    /// How long one probe may take before it counts as down.
    pub timeout: Duration,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.probes.iter().map(|p| p.name()).collect();
        f.debug_struct("Readiness")
            .field("probes", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health/live").route(web::get().to(live)))
        .service(web::resource("/health/ready").route(web::get().to(ready)));
}

/// The state of the service or of one dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
enum HealthStatus {
    Up,
    Down,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Liveness)]
struct LiveBody {
    #[schema(inline)]
    status: HealthStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Readiness)]
struct ReadyBody {
    #[schema(inline)]
    status: HealthStatus,
    /// Each dependency by name (`postgres`, `redis`).
    #[schema(value_type = BTreeMap<String, HealthStatus>, example = json!({"postgres": "UP", "redis": "UP"}))]
    checks: BTreeMap<&'static str, HealthStatus>,
}

/// Liveness
///
/// 200 while the process runs; it asks no dependency.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "operations",
    responses((status = 200, description = "The process runs", body = LiveBody)),
)]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(LiveBody {
        status: HealthStatus::Up,
    })
}

/// Readiness
///
/// 200 when Postgres and Redis answer within a short timeout each.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = ReadyBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the problem's `detail` names what is down, and whether it failed or did not answer in time; its `checks` member holds each dependency's state", body = ProblemSchema, content_type = PROBLEM_JSON,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    ),
)]
async fn ready(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    let checks = join_all(readiness.probes.iter().map(|probe| {
        let probe = Arc::clone(probe);
        let timeout = readiness.timeout;
        async move {
            // Why it is down, when it is.
            let why = match tokio::time::timeout(timeout, probe.check()).await {
                Ok(Ok(())) => None,
                Ok(Err(_)) => Some("failed".to_owned()),
                Err(_) => Some(format!("no answer within {timeout:?}")),
            };
            (probe.name(), why)
        }
    }))
    .await;
    let down: Vec<String> = checks
        .iter()
        .filter_map(|(name, why)| why.as_ref().map(|why| format!("{name} ({why})")))
        .collect();
    let checks: BTreeMap<_, _> = checks
        .into_iter()
        .map(|(name, why)| {
            let status = if why.is_none() {
                HealthStatus::Up
            } else {
                HealthStatus::Down
            };
            (name, status)
        })
        .collect();
    if down.is_empty() {
        Ok(HttpResponse::Ok().json(ReadyBody {
            status: HealthStatus::Up,
            checks,
        }))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Not ready",
            format!("unavailable: {}", down.join(", ")),
        )
        .with("checks", json!(checks))
        .with_header(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from_static("1"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use domain::error::Unavailable;

    use super::*;

    /// A probe that answers, fails at once, or never answers.
    struct Probe(&'static str, Option<bool>);

    #[async_trait]
    impl HealthProbe for Probe {
        fn name(&self) -> &'static str {
            self.0
        }

        async fn check(&self) -> Result<(), Unavailable> {
            match self.1 {
                Some(true) => Ok(()),
                Some(false) => Err(Unavailable::new(self.0, "connection refused")),
                None => std::future::pending().await,
            }
        }
    }

    async fn ready_with(probes: Vec<Probe>) -> Result<HttpResponse, ApiError> {
        ready(web::Data::new(Readiness {
            probes: probes
                .into_iter()
                .map(|p| Arc::new(p) as Arc<dyn HealthProbe>)
                .collect(),
            timeout: Duration::from_millis(50),
        }))
        .await
    }

    #[actix_web::test]
    async fn readiness_tells_a_hung_dependency_from_a_failing_one_within_its_timeout() {
        let started = std::time::Instant::now();
        let err = ready_with(vec![Probe("postgres", None), Probe("redis", Some(false))])
            .await
            .expect_err("not ready");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            err.detail(),
            "unavailable: postgres (no answer within 50ms), redis (failed)"
        );

        let err = ready_with(vec![Probe("postgres", Some(true)), Probe("redis", None)])
            .await
            .expect_err("not ready");
        assert_eq!(err.detail(), "unavailable: redis (no answer within 50ms)");

        let ok = ready_with(vec![
            Probe("postgres", Some(true)),
            Probe("redis", Some(true)),
        ])
        .await
        .expect("ready");
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
