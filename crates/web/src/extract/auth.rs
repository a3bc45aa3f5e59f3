//! Who is calling: `AuthUser` for any signed-in caller, `AdminUser` for admins.
//!
//! A bearer token in `Authorization` is checked without I/O. When trusted-gateway
//! mode is on (`APP_TRUSTED_USER_HEADER`), a request without `Authorization`
//! may instead name its user in that header, but only with the gateway's
//! shared secret in `X-Gateway-Secret` (compared in constant time); the
//! user is provisioned on first sight, and an account with a password is
//! never named by a header. When the mode is off the header is ignored. A
//! bearer token, when present, always wins, so a forged gateway header
//! cannot override it.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderName};
use actix_web::{FromRequest, HttpRequest, web};
use application::identity::Authenticate;
use domain::identity::Caller;
use futures_util::future::LocalBoxFuture;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::problem::ApiError;

/// The header a trusted gateway proves itself with.
pub const GATEWAY_SECRET_HEADER: &str = "x-gateway-secret";

/// The secret a trusted gateway shares with this service
/// (`APP_TRUSTED_GATEWAY_SECRET`): at least 32 bytes, never printed.
#[derive(Clone)]
pub struct GatewaySecret(Vec<u8>);

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySecret(..)")
    }
}

impl GatewaySecret {
    pub const MIN_LEN: usize = 32;

    /// # Errors
    /// A message saying how long it must be, when it is shorter than 32 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, String> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "must be at least {} bytes, got {}",
                Self::MIN_LEN,
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// Whether `presented` is the secret, in time independent of where they
    /// differ and of their lengths (their SHA-256 digests are compared).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = Sha256::digest(&self.0);
        let theirs = Sha256::digest(presented);
        bool::from(ours[..].ct_eq(&theirs[..]))
    }
}

/// Trusted-gateway mode: the header that names the user, and the secret
/// that must come with it.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub user_header: HeaderName,
    pub secret: GatewaySecret,
}

/// What the auth extractors need, registered once as app data.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub authenticate: Arc<Authenticate>,
    /// Trusted-gateway mode, when it is on.
    pub gateway: Option<Gateway>,
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
    if let Some(gateway) = &ctx.gateway
        && let Some(value) = req.headers().get(&gateway.user_header)
    {
        let proven = req
            .headers()
            .get(GATEWAY_SECRET_HEADER)
            .is_some_and(|presented| gateway.secret.matches(presented.as_bytes()));
        if !proven {
            return Err(ApiError::unauthenticated(
                "a gateway user header counts only with the gateway's X-Gateway-Secret",
            ));
        }
        let login_id = value
            .to_str()
            .map_err(|_| ApiError::unauthenticated("the gateway user header is not valid text"))?;
        return Ok(Credentials::Gateway(login_id.trim().to_owned()));
    }
    Err(ApiError::unauthenticated("an access token is required"))
}
