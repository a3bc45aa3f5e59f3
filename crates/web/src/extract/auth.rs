//! Who is calling: `AuthUser` for any signed-in caller, `AdminUser` for admins.
//!
//! A bearer token in `Authorization` is checked without I/O. When trusted-gateway
//! mode is on (`APP_TRUSTED_USER_HEADER`), a request without `Authorization`
//! may instead name its user in that header; the user is provisioned on first
//! sight. When the mode is off the header is ignored. A bearer token, when
//! present, always wins, so a forged gateway header cannot override it.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderName};
use actix_web::{FromRequest, HttpRequest, web};
use application::identity::Authenticate;
use domain::identity::Caller;
use futures_util::future::LocalBoxFuture;

use crate::problem::ApiError;

/// What the auth extractors need, registered once as app data.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub authenticate: Arc<Authenticate>,
    /// The trusted-gateway header, when that mode is on.
    pub trusted_user_header: Option<HeaderName>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Caller);

/// An authenticated caller with the ADMIN role (401 without credentials, 403 for users).
#[derive(Debug, Clone)]
pub struct AdminUser(pub Caller);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(ctx) = req.app_data::<web::Data<AuthContext>>().cloned() else {
            tracing::error!("AuthContext is not registered as app data");
            return Box::pin(async { Err(ApiError::internal()) });
        };
        let credentials = credentials(req, &ctx);
        Box::pin(async move {
            let caller = match credentials? {
                Credentials::Bearer(token) => ctx.authenticate.bearer(&token)?,
                Credentials::Gateway(login_id) => ctx.authenticate.gateway(&login_id).await?,
            };
            Ok(AuthUser(caller))
        })
    }
}

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = AuthUser::from_request(req, payload);
        Box::pin(async move {
            let AuthUser(caller) = user.await?;
            if caller.is_admin() {
                Ok(AdminUser(caller))
            } else {
                Err(ApiError::forbidden())
            }
        })
    }
}

enum Credentials {
    Bearer(String),
    Gateway(String),
}

fn credentials(req: &HttpRequest, ctx: &AuthContext) -> Result<Credentials, ApiError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthenticated("the Authorization header is not valid text"))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::unauthenticated(
                "use 'Authorization: Bearer <token>'",
            ));
        }
        return Ok(Credentials::Bearer(token.to_owned()));
    }
    if let Some(name) = &ctx.trusted_user_header
        && let Some(value) = req.headers().get(name)
    {
        let login_id = value
            .to_str()
            .map_err(|_| ApiError::unauthenticated("the gateway user header is not valid text"))?;
        return Ok(Credentials::Gateway(login_id.trim().to_owned()));
    }
    Err(ApiError::unauthenticated("an access token is required"))
}
