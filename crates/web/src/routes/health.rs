//! `/health/live` (the process runs) and `/health/ready` (Postgres and Redis
//! answer). Readiness asks every probe at once and bounds each with a short
//! timeout, so a dead dependency is reported in about a second, not a hang.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use domain::health::HealthProbe;
use futures_util::future::join_all;
use serde_json::json;

use crate::problem::ApiError;

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

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "UP" }))
}

async fn ready(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    let checks = join_all(readiness.probes.iter().map(|probe| {
        let probe = Arc::clone(probe);
        let timeout = readiness.timeout;
        async move {
            let up = matches!(
                tokio::time::timeout(timeout, probe.check()).await,
                Ok(Ok(()))
            );
            (probe.name(), if up { "UP" } else { "DOWN" })
        }
    }))
    .await;
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, s)| *s == "DOWN")
        .map(|(n, _)| *n)
        .collect();
    let checks: BTreeMap<_, _> = checks.into_iter().collect();
    if down.is_empty() {
        Ok(HttpResponse::Ok().json(json!({ "status": "UP", "checks": checks })))
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
