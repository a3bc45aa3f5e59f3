//! Accounts: sign-up, sign-in, the caller's profile, and the admin user list.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use application::identity::{
    AuthSession, SignIn, SignInCommand, SignUp, SignUpCommand, UserQueries,
};
use chrono::{DateTime, Utc};
use domain::identity::{LoginId, Password, User, UserName};
use serde::{Deserialize, Serialize};

use crate::errors::invalid_credentials;
use crate::extract::{AdminUser, AuthUser, Json, PageParams};
use crate::problem::ApiError;
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignUpBody {
    login_id: String,
    password: String,
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignInBody {
    login_id: String,
    password: String,
}

impl SignInBody {
    /// Credentials outside the sign-up rules cannot belong to anyone: they get
    /// the same 401 as a wrong password, and reveal nothing about the rules.
    fn try_into_domain(self) -> Result<SignInCommand, ApiError> {
        match (
            LoginId::parse(&self.login_id),
            Password::parse(&self.password),
        ) {
            (Ok(login_id), Ok(password)) => Ok(SignInCommand { login_id, password }),
            _ => Err(invalid_credentials()),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    user_id: i64,
    login_id: String,
    token: String,
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    user_id: i64,
    login_id: String,
    name: String,
    role: &'static str,
    created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            user_id: user.id.get(),
            login_id: user.login_id.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            role: user.role.as_str(),
            created_at: user.created_at,
        }
    }
}

async fn sign_up(
    api: web::Data<IdentityApi>,
    Json(body): Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let session = api.sign_up.execute(body.try_into_domain()?).await?;
    Ok(HttpResponse::Created().json(SessionBody::from(session)))
}

async fn sign_in(
    api: web::Data<IdentityApi>,
    Json(body): Json<SignInBody>,
) -> Result<HttpResponse, ApiError> {
    let session = api.sign_in.execute(body.try_into_domain()?).await?;
    Ok(HttpResponse::Ok().json(SessionBody::from(session)))
}

async fn me(
    api: web::Data<IdentityApi>,
    AuthUser(caller): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let user = api.users.profile(caller.user_id).await?;
    Ok(HttpResponse::Ok().json(UserBody::from(user)))
}

async fn list_users(
    api: web::Data<IdentityApi>,
    _admin: AdminUser,
    PageParams(page): PageParams,
) -> Result<HttpResponse, ApiError> {
    let page = api.users.list(page).await?;
    Ok(HttpResponse::Ok().json(PageBody::from_page(page, UserBody::from)))
}
