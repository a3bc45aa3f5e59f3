//! The HTTP edge on actix-web: routes, extractors, problem+json errors, the
//! request-id/access-log middleware and the money writes' in-flight bounds
//! ([`admission`]).
//!
//! Handlers are thin: they turn a request into a validated command
//! (`try_into_domain`), call one use case from `application`, and turn the
//! result into JSON. Error mapping lives in [`errors`], the error shape in
//! [`problem`], the OpenAPI document and `/docs` in [`openapi`] (request
//! patterns that need more than an attribute in [`schema`]). `app` builds
//! a [`WebState`] and serves [`app`].

pub mod admission;
pub mod edge;
pub mod errors;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod schema;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, web};

pub use admission::{Admission, AdmissionLimits};
pub use extract::{AuthContext, JsonLimit, ProxyHops};
pub use metrics::{CacheCountsFn, Metrics, MetricsApi, PoolStatus, PoolStatusFn};
pub use routes::catalog::CatalogApi;
pub use routes::coupon::CouponApi;
pub use routes::health::Readiness;
pub use routes::identity::IdentityApi;
pub use routes::invest::InvestApi;
pub use routes::legacy_invest::LegacyInvest;
pub use routes::ordering::OrderingApi;
pub use routes::points::PointsApi;

use crate::problem::ApiError;

/// Everything the routes need, cloned into each actix worker.
#[derive(Debug, Clone)]
pub struct WebState {
    pub identity: IdentityApi,
    pub points: PointsApi,
    pub catalog: CatalogApi,
    pub ordering: OrderingApi,
    pub coupon: CouponApi,
    pub invest: InvestApi,
    pub metrics: MetricsApi,
    pub auth: AuthContext,
    pub readiness: Readiness,
    pub json_limit: JsonLimit,
    pub proxy_hops: ProxyHops,
    /// The per-user attempt limits of orders, coupon issues and investments.
    pub throttle: std::sync::Arc<application::throttle::Throttle>,
    /// The in-flight bounds of the money writes (`admission`).
    pub admission: Admission,
    /// The first-generation investment routes (`APP_LEGACY_INVEST_API`),
    /// when they are on.
    pub legacy_invest: Option<LegacyInvest>,
}

/// The complete application: state, routes, middleware and the problem
/// answers for unknown routes and unreadable paths or queries.
pub fn app(
    state: WebState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let legacy = state.legacy_invest.clone();
    let mut app = App::new();
    if let Some(legacy) = &legacy {
        app = app.app_data(web::Data::new(legacy.clone()));
    }
    app.app_data(web::Data::new(state.identity))
        .app_data(web::Data::new(state.points))
        .app_data(web::Data::new(state.catalog))
        .app_data(web::Data::new(state.ordering))
        .app_data(web::Data::new(state.coupon))
        .app_data(web::Data::new(state.invest))
        .app_data(web::Data::new(state.metrics.metrics.clone()))
        .app_data(web::Data::new(state.metrics))
        .app_data(web::Data::new(state.auth))
        .app_data(web::Data::new(state.readiness))
        .app_data(state.json_limit)
        .app_data(state.proxy_hops)
        .app_data(web::Data::from(state.throttle))
        .app_data(web::Data::new(state.admission))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::validation(format!("invalid path parameter: {err}")).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::validation(format!("invalid query string: {err}")).into()
        }))
        .app_data(
            web::JsonConfig::default()
                .limit(state.json_limit.0)
                .error_handler(|err, _| {
                    ApiError::validation(format!("invalid JSON body: {err}")).into()
                }),
        )
        .app_data(web::PayloadConfig::new(state.json_limit.0))
        .configure(routes::health::routes)
        .configure(metrics::routes)
        .configure(openapi::routes)
        .service(
            web::scope("/api/v1")
                .configure(routes::identity::routes)
                .configure(routes::points::routes)
                .configure(routes::catalog::routes)
                .configure(routes::ordering::routes)
                .configure(routes::coupon::routes)
                .configure(routes::invest::routes),
        )
        .configure(|cfg| {
            if legacy.is_some() {
                routes::legacy_invest::routes(cfg);
            }
        })
        .default_service(web::to(not_found))
        .wrap(from_fn(edge::edge))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "NOT_FOUND",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
