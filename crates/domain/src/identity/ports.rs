//! What the identity use cases need from the outside world.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::models::{
    AccessToken, Caller, LoginId, NewUser, Password, PasswordHash, User, UserCredentials, UserId,
};
use crate::error::Unavailable;
use crate::paging::{Page, PageRequest};

/// Why a user could not be created.
#[derive(Debug, Error)]
pub enum CreateUserError {
    /// Another user already has this login id.
    #[error("login id is taken")]
    LoginIdTaken,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Storage of users.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Stores a new user.
    ///
    /// # Errors
    /// [`CreateUserError::LoginIdTaken`] when the login id exists; decided by the
    /// store's unique constraint, so two concurrent sign-ups cannot both win.
    /// [`CreateUserError::Unavailable`] when the store fails.
    async fn create(&self, user: NewUser) -> Result<User, CreateUserError>;

    /// The user with this login id and their password hash, if any.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn find_credentials(
        &self,
        login_id: &LoginId,
    ) -> Result<Option<UserCredentials>, Unavailable>;

    /// The user with this id, if any.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, Unavailable>;

    /// The user with this login id, created with role USER, no password and
    /// the login id as name when missing. Concurrent calls for one login id all
    /// return the same user. `None` when the login id belongs to an account
    /// with a password: a gateway header never names one.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn find_or_provision(&self, login_id: &LoginId) -> Result<Option<User>, Unavailable>;

    /// Makes sure an ADMIN with this login id and password hash exists: creates
    /// it, or promotes the existing user and replaces their password hash.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn upsert_admin(
        &self,
        login_id: &LoginId,
        hash: &PasswordHash,
    ) -> Result<User, Unavailable>;

    /// Users ordered by id.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn list(&self, page: PageRequest) -> Result<Page<User>, Unavailable>;
}

/// Password hashing (argon2id in production). Slow on purpose, so adapters
/// must keep it off the async executor and bound how many run at once.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    /// A salted hash of the password.
    ///
    /// # Errors
    /// [`Unavailable`] when the hashing worker cannot run.
    async fn hash(&self, password: &Password) -> Result<PasswordHash, Unavailable>;

    /// Whether the password matches the hash, in constant time. With `None`
    /// it checks against a fixed dummy hash and returns `false`, so that an
    /// unknown login takes as long as a wrong password.
    ///
    /// # Errors
    /// [`Unavailable`] when the hashing worker cannot run.
    async fn verify(
        &self,
        password: &Password,
        hash: Option<PasswordHash>,
    ) -> Result<bool, Unavailable>;
}

/// Why a presented access token was refused. All of these become
/// `401 UNAUTHENTICATED`; the variants exist for logs and tests.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature, algorithm, issuer or audience is wrong")]
    Invalid,
    #[error("token has expired")]
    Expired,
}

/// Signs and checks access tokens (HS256 JWTs in production).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TokenService: Send + Sync {
    /// A token for the caller, valid from `now` for the configured lifetime.
    fn issue(&self, caller: &Caller, now: DateTime<Utc>) -> AccessToken;

    /// The caller a token was issued to.
    ///
    /// # Errors
    /// [`TokenError`] when the token is malformed, forged, for another issuer or
    /// audience, signed with another algorithm (including `none`), or expired at `now`.
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Caller, TokenError>;
}
