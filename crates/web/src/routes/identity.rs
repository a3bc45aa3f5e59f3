//! Accounts: sign-up, sign-in, the caller's profile, and the admin user list.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use application::identity::{
    AuthSession, SignIn, SignInCommand, SignUp, SignUpCommand, UserQueries,
};
use chrono::{DateTime, Utc};
use domain::identity::{LoginId, Password, Role, User, UserName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::errors::invalid_credentials;
use crate::extract::{AdminUser, AuthUser, ClientAddr, Json, PageParams, PageQuery};
use crate::problem::{ApiError, PROBLEM_JSON, ProblemSchema};
use crate::routes::PageBody;

/// The identity use cases the routes call.
#[derive(Debug, Clone)]
pub struct IdentityApi {
    pub sign_up: Arc<SignUp>,
    pub sign_in: Arc<SignIn>,
    pub users: Arc<UserQueries>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/signup").route(web::post().to(sign_up)))
        .service(web::resource("/auth/signin").route(web::post().to(sign_in)))
        .service(web::resource("/me").route(web::get().to(me)))
        .service(web::resource("/admin/users").route(web::get().to(list_users)));
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SignUpRequest)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SignUpBody {
    #[schema(
        min_length = 3,
        max_length = 64,
        pattern = "^[A-Za-z0-9_.-]+$",
        example = "alice"
    )]
    login_id: String,
    #[schema(min_length = 8, max_length = 128, example = "correct-horse")]
    password: String,
    #[schema(schema_with = crate::schema::user_name)]
    name: Option<String>,
}

impl SignUpBody {
    fn try_into_domain(self) -> Result<SignUpCommand, ApiError> {
        Ok(SignUpCommand {
            login_id: LoginId::parse(&self.login_id)
                .map_err(|e| ApiError::invalid_field("loginId", e))?,
            password: Password::parse(&self.password)
                .map_err(|e| ApiError::invalid_field("password", e))?,
            name: self
                .name
                .as_deref()
                .map(UserName::parse)
                .transpose()
                .map_err(|e| ApiError::invalid_field("name", e))?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SignInRequest)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SignInBody {
    #[schema(example = "alice")]
    login_id: String,
    #[schema(example = "correct-horse")]
    password: String,
}

impl SignInBody {
    /// Credentials outside the sign-up rules cannot belong to anyone: they get
    /// the same 401 as a wrong password, and reveal nothing about the rules.
    fn try_into_domain(self, client: ClientAddr) -> Result<SignInCommand, ApiError> {
        match (
            LoginId::parse(&self.login_id),
            Password::parse(&self.password),
        ) {
            (Ok(login_id), Ok(password)) => Ok(SignInCommand {
                login_id,
                password,
                client: client.0,
            }),
            _ => Err(invalid_credentials()),
        }
    }
}

/// A signed-in session: the bearer token and when it expires.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    user_id: i64,
    login_id: String,
    /// A JWT for `Authorization: Bearer <token>`.
    token: String,
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    expires_at: DateTime<Utc>,
}

impl From<AuthSession> for SessionBody {
    fn from(session: AuthSession) -> Self {
        Self {
            user_id: session.user.id.get(),
            login_id: session.user.login_id.as_str().to_owned(),
            token: session.token.token,
            token_type: "Bearer",
            expires_at: session.token.expires_at,
        }
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Role)]
#[serde(rename_all = "UPPERCASE")]
enum RoleJson {
    User,
    Admin,
}

impl From<Role> for RoleJson {
    fn from(role: Role) -> Self {
        match role {
            Role::User => Self::User,
            Role::Admin => Self::Admin,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    user_id: i64,
    login_id: String,
    name: String,
    role: RoleJson,
    created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            user_id: user.id.get(),
            login_id: user.login_id.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            role: user.role.into(),
            created_at: user.created_at,
        }
    }
}

/// Sign up
///
/// Creates a USER account and signs it in.
#[utoipa::path(
    post,
    path = "/api/v1/auth/signup",
    operation_id = "signUp",
    tag = "identity",
    request_body = SignUpBody,
    responses(
        (status = 201, description = "Signed up and signed in", body = SessionBody),
        (status = 400, description = "`VALIDATION_FAILED`: loginId 3..=64 of `[A-Za-z0-9_.-]`, password 8..=128 characters", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 409, description = "`LOGIN_ID_TAKEN`", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
)]
async fn sign_up(
    api: web::Data<IdentityApi>,
    Json(body): Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let session = api.sign_up.execute(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(SessionBody::from(session)))
}

/// Sign in
///
/// Exchanges credentials for a bearer token. Failed attempts are limited
/// per login id and per client address (`429 RATE_LIMITED` with
/// `Retry-After`); a successful sign-in does not count.
#[utoipa::path(
    post,
    path = "/api/v1/auth/signin",
    operation_id = "signIn",
    tag = "identity",
    request_body = SignInBody,
    responses(
        (status = 200, description = "Signed in", body = SessionBody),
        (status = 400, description = "`VALIDATION_FAILED`: the body cannot be read", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 401, description = "`INVALID_CREDENTIALS`: the same answer for an unknown login and a wrong password", body = ProblemSchema, content_type = PROBLEM_JSON),
        (status = 429, description = "`RATE_LIMITED`: too many failed sign-ins for this login id or from this address; `Retry-After` gives the seconds to wait", body = ProblemSchema, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds until the next attempt is admitted"))),
    ),
)]
async fn sign_in(
    api: web::Data<IdentityApi>,
    client: ClientAddr,
    Json(body): Json<SignInBody>,
) -> Result<HttpResponse, ApiError> {
    let session = api.sign_in.execute(body.try_into_domain(client)?).await?;
    Ok(HttpResponse::Ok().json(SessionBody::from(session)))
}

/// The caller's profile
#[utoipa::path(
    get,
    path = "/api/v1/me",
    operation_id = "getMe",
    tag = "identity",
    responses((status = 200, description = "The caller", body = UserBody)),
    security(("bearer" = [])),
)]
async fn me(
    api: web::Data<IdentityApi>,
    AuthUser(caller): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let user = api.users.profile(caller.user_id).await?;
    Ok(HttpResponse::Ok().json(UserBody::from(user)))
}

/// List users (admin)
#[utoipa::path(
    get,
    path = "/api/v1/admin/users",
    operation_id = "listUsers",
    tag = "identity",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = PageBody<UserBody>),
        (status = 400, description = "`VALIDATION_FAILED`: page or size out of range", body = ProblemSchema, content_type = PROBLEM_JSON),
    ),
    security(("bearer" = [])),
)]
async fn list_users(
    api: web::Data<IdentityApi>,
    _admin: AdminUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.users.list(page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, UserBody::from)))
}
