//! Admission control for the money writes: a bound on the requests of each
//! family (orders, investments, charges, coupon issues) in flight at once
//! on this instance, and an early `503` for those over it.
//!
//! Without a bound, a burst far over what the instance can serve queues
//! inside it: every request takes a pool connection or a lane slot in turn,
//! and those that wait longer than `APP_DEPENDENCY_TIMEOUT` answer `503`
//! after seconds of waiting, having taken a gate reservation and claimed
//! their key meanwhile. With one, a request over the bound waits at most
//! `APP_ADMISSION_WAIT` for a place and is then answered at once: `503
//! SERVICE_UNAVAILABLE` with `Retry-After: 1`, before any extractor runs, so
//! before authentication, the attempt quota, the idempotency key's claim
//! and any gate reservation. Nothing of it is stored, and a retry with the
//! same key runs as if it were the first (`docs/reliability.md`,
//! "Overload").
//!
//! An admitted request runs within its time budget
//! ([`AdmissionLimits::budget`], `domain::deadline`): its calls to Redis
//! and Postgres, one after another (the gate, the write, settling the
//! reservation), together wait at most that long, not each its own timeout.
//!
//! The bound is a [`tokio::sync::Semaphore`] per family, shared by every
//! worker thread; a request holds a permit until its handler has answered.
//! Each money-write route is wrapped in [`bounded`] (see the route modules);
//! reads are not bounded. The bounds are `APP_MAX_IN_FLIGHT_*`
//! (`app::config`); a route whose app has no [`Admission`] is unbounded.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{Error, HttpResponse, ResponseError as _, web};
use futures_util::future::{LocalBoxFuture, Ready, ready};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::metrics::Metrics;
use crate::problem::ApiError;

/// A kind of money write, bounded on its own: a rush on one does not shed
/// the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Orders,
    Investments,
    Charges,
    CouponIssues,
}

impl Family {
    pub const ALL: [Self; 4] = [
        Self::Orders,
        Self::Investments,
        Self::Charges,
        Self::CouponIssues,
    ];

    /// The `family` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Investments => "investments",
            Self::Charges => "charges",
            Self::CouponIssues => "coupon_issues",
        }
    }

    /// What the problem's detail calls these requests.
    fn what(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Investments => "investments",
            Self::Charges => "point charges",
            Self::CouponIssues => "coupon issues",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Orders => 0,
            Self::Investments => 1,
            Self::Charges => 2,
            Self::CouponIssues => 3,
        }
    }
}

/// The configured bounds: requests in flight per family (`None`: unbounded)
/// and how long a request over the bound waits for a place before it is
/// shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub orders: Option<usize>,
    pub investments: Option<usize>,
    pub charges: Option<usize>,
    pub coupon_issues: Option<usize>,
    pub wait: Duration,
    /// The time an admitted request has in all for its calls to Postgres
    /// and Redis (`domain::deadline`): `APP_DEPENDENCY_TIMEOUT` +
    /// `APP_STATEMENT_TIMEOUT`, what one Postgres operation may take.
    /// `None`: each call is bounded on its own only.
    pub budget: Option<Duration>,
}

impl AdmissionLimits {
    /// The bound of `family`.
    pub fn of(&self, family: Family) -> Option<usize> {
        match family {
            Family::Orders => self.orders,
            Family::Investments => self.investments,
            Family::Charges => self.charges,
            Family::CouponIssues => self.coupon_issues,
        }
    }
}

/// The bounds in force: one semaphore per bounded family, shared by every
/// worker thread (cloning shares them).
#[derive(Debug, Clone)]
pub struct Admission {
    limits: AdmissionLimits,
    permits: Arc<[Option<Arc<Semaphore>>; 4]>,
}

/// A request over its family's bound: not run.
#[derive(Debug)]
pub struct Shed(Family);

impl From<Shed> for ApiError {
    fn from(Shed(family): Shed) -> Self {
        ApiError::overloaded(family.what())
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        let permits = Family::ALL.map(|f| limits.of(f).map(|n| Arc::new(Semaphore::new(n))));
        Self {
            limits,
            permits: Arc::new(permits),
        }
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Requests of `family` holding a place now (0 when unbounded).
    pub fn in_flight(&self, family: Family) -> usize {
        match (&self.permits[family.index()], self.limits.of(family)) {
            (Some(permits), Some(limit)) => limit.saturating_sub(permits.available_permits()),
            _ => 0,
        }
    }

    /// A place for one request of `family` (`None` when unbounded), taken
    /// at once or within the configured wait.
    ///
    /// # Errors
    /// [`Shed`] when no place came free in time.
    pub async fn enter(&self, family: Family) -> Result<Option<OwnedSemaphorePermit>, Shed> {
        let Some(permits) = &self.permits[family.index()] else {
            return Ok(None);
        };
        // `try_acquire` fails while others wait, so the waiting keep their
        // turn (the semaphore is fair).
        match Arc::clone(permits).try_acquire_owned() {
            Ok(permit) => return Ok(Some(permit)),
            Err(TryAcquireError::Closed) => return Err(Shed(family)),
            Err(TryAcquireError::NoPermits) if self.limits.wait.is_zero() => {
                return Err(Shed(family));
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        match tokio::time::timeout(self.limits.wait, Arc::clone(permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Shed(family)),
        }
    }
}

/// How a shed request is answered: a problem, or a route's own shape (the
/// first-generation envelope).
pub type RenderShed = fn(&ApiError) -> HttpResponse;

/// The middleware of one money-write route: see the module header.
/// `web::post().to(place).wrap(admission::bounded(Family::Orders))`.
pub fn bounded(family: Family) -> Bounded {
    Bounded {
        family,
        render: |err| err.error_response(),
    }
}

/// [`bounded`]'s middleware factory.
#[derive(Debug, Clone, Copy)]
pub struct Bounded {
    family: Family,
    render: RenderShed,
}

impl Bounded {
    /// Answers a shed request with `render` instead of a problem.
    #[must_use]
    pub fn rendered_by(mut self, render: RenderShed) -> Self {
        self.render = render;
        self
    }
}

impl<S> Transform<S, ServiceRequest> for Bounded
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = Error> + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = BoundedService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(BoundedService {
            service: Rc::new(service),
            family: self.family,
            render: self.render,
        }))
    }
}

/// [`Bounded`] around one route's handler.
#[derive(Debug)]
pub struct BoundedService<S> {
    service: Rc<S>,
    family: Family,
    render: RenderShed,
}

impl<S> Service<ServiceRequest> for BoundedService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = Error> + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let (family, render) = (self.family, self.render);
        Box::pin(async move {
            let Some(admission) = req.app_data::<web::Data<Admission>>().cloned() else {
                return service.call(req).await;
            };
            match admission.enter(family).await {
                Ok(permit) => {
                    let call = service.call(req);
                    let res = match admission.limits().budget {
                        Some(budget) => domain::deadline::within(budget, call).await,
                        None => call.await,
                    };
                    drop(permit);
                    res
                }
                Err(shed) => {
                    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
                        metrics.record_shed(family);
                    }
                    let res = render(&ApiError::from(shed));
                    Ok(req.into_response(res))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::http::header;
    use actix_web::{App, test};

    use super::*;

    fn limits(orders: Option<usize>, wait_ms: u64) -> AdmissionLimits {
        AdmissionLimits {
            orders,
            investments: None,
            charges: None,
            coupon_issues: None,
            wait: Duration::from_millis(wait_ms),
            budget: None,
        }
    }

    #[tokio::test]
    async fn a_request_over_the_bound_is_shed_and_a_freed_place_is_taken_again() {
        let admission = Admission::new(limits(Some(2), 0));

        let first = admission.enter(Family::Orders).await.expect("admitted");
        let second = admission.enter(Family::Orders).await.expect("admitted");
        assert_eq!(admission.in_flight(Family::Orders), 2);
        assert!(admission.enter(Family::Orders).await.is_err(), "over");
        assert!(
            admission.enter(Family::Investments).await.is_ok(),
            "other families are not affected"
        );
        drop(first);

        assert!(admission.enter(Family::Orders).await.is_ok());
        drop(second);
    }

    #[tokio::test]
    async fn a_request_waits_up_to_the_wait_for_a_place() {
        let admission = Admission::new(limits(Some(1), 200));
        let held = admission.enter(Family::Orders).await.expect("admitted");
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });

        assert!(
            admission.enter(Family::Orders).await.is_ok(),
            "freed in time"
        );
        let _ = release.await;

        let short = Admission::new(limits(Some(1), 10));
        let _held = short.enter(Family::Orders).await.expect("admitted");
        let started = std::time::Instant::now();
        assert!(short.enter(Family::Orders).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[actix_web::test]
    async fn a_shed_request_is_answered_503_with_retry_after_and_never_reaches_the_handler() {
        let admission = Admission::new(limits(Some(1), 0));
        let held = admission.enter(Family::Orders).await.expect("admitted");
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(admission.clone()))
                .app_data(web::Data::new(Metrics::new()))
                .route(
                    "/orders",
                    web::post()
                        .to(|| async { HttpResponse::Created().finish() })
                        .wrap(bounded(Family::Orders)),
                ),
        )
        .await;

        let res =
            test::call_service(&app, test::TestRequest::post().uri("/orders").to_request()).await;

        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not run")),
            "{body}"
        );
        drop(held);
        let res =
            test::call_service(&app, test::TestRequest::post().uri("/orders").to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(
            admission.in_flight(Family::Orders),
            0,
            "the place is given back"
        );
    }
}
