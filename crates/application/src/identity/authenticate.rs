//! Authenticate a request: a bearer token, or (in trusted-gateway mode) a
//! login id that the gateway in front of us has already authenticated.
//!
//! A bearer token is verified without I/O. A gateway login id needs the store
//! once, to find or provision its user; the result is then kept in a bounded
//! in-process cache (login id → user id), so a repeated gateway login costs no
//! round trip. Caching is safe because what it holds never goes stale: a login
//! id's user id never changes once provisioned (users are never deleted and
//! login ids never renamed), and a gateway caller is always `Role::User`, so a
//! later promotion (`upsert_admin`) changes nothing the cache answers. Only
//! successful resolutions are cached: an invalid login id is refused before
//! the cache, and a store failure is returned and asked again next time.
//! Bearer tokens never touch the cache. The cache lives in this process (each
//! instance has its own) and assumes the users table is never emptied under a
//! running service: after resetting a database, restart the service.

use std::sync::Arc;

use domain::clock::Clock;
use domain::error::Unavailable;
use domain::identity::{Caller, LoginId, Role, TokenError, TokenService, UserId, UserRepository};
use quick_cache::sync::Cache;
use thiserror::Error;

/// How many gateway logins [`Authenticate`] remembers.
///
/// An entry is the key's `String`, the user id and the cache's table and
/// eviction bookkeeping, so the memory it takes when full is bounded
/// whatever the traffic (`docs/performance.md` has the measured size). It
/// holds several times the users the load generator provisions. Past the bound the least useful entries are evicted and simply
/// resolved again from the store. Memory grows as entries arrive; nothing is
/// allocated up front.
pub const DEFAULT_GATEWAY_CACHE_CAPACITY: usize = 100_000;

#[derive(Debug, Error)]
pub enum AuthenticateError {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The gateway header does not hold a valid login id.
    #[error("gateway identity is not a valid login id")]
    InvalidGatewayIdentity,
    /// The gateway header names an account that has a password: such an
    /// account comes in only with its token.
    #[error("a gateway header cannot name an account with a password")]
    PasswordAccount,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Turns request credentials into a [`Caller`].
pub struct Authenticate {
    users: Arc<dyn UserRepository>,
    tokens: Arc<dyn TokenService>,
    clock: Arc<dyn Clock>,
    /// Gateway logins already resolved: login id → user id. The caller is
    /// rebuilt from the two (the role is always USER), which keeps an entry
    /// small.
    gateway_users: Cache<LoginId, UserId>,
}

impl std::fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticate")
    }
}

impl Authenticate {
    pub fn new(
        users: Arc<dyn UserRepository>,
        tokens: Arc<dyn TokenService>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            tokens,
            clock,
            gateway_users: Cache::new(DEFAULT_GATEWAY_CACHE_CAPACITY),
        }
    }

    /// The caller a bearer token was issued to. Pure computation: no I/O, so
    /// authenticated requests cost no database round trip.
    ///
    /// # Errors
    /// [`AuthenticateError::Token`] when the token is refused.
    pub fn bearer(&self, token: &str) -> Result<Caller, AuthenticateError> {
        Ok(self.tokens.verify(token, self.clock.now())?)
    }

    /// The caller a trusted gateway vouches for, provisioned (role USER, no
    /// password) on first sight. A login id that belongs to an account with
    /// a password is refused ([`AuthenticateError::PasswordAccount`], never
    /// remembered): a header cannot stand in for a password, an admin's
    /// least of all.
    ///
    /// The first call for a login id asks the store; later ones are answered
    /// from memory (see the module docs for why that is safe). Concurrent
    /// first calls for one login id share a single store call. A failure is
    /// not remembered.
    ///
    /// # Errors
    /// [`AuthenticateError::InvalidGatewayIdentity`] when the value is not a
    /// login id; [`AuthenticateError::PasswordAccount`] when its account has
    /// a password; [`AuthenticateError::Unavailable`] when the store fails.
    pub async fn gateway(&self, login_id: &str) -> Result<Caller, AuthenticateError> {
        let login_id =
            LoginId::parse(login_id).map_err(|_| AuthenticateError::InvalidGatewayIdentity)?;
        let user_id = self
            .gateway_users
            .get_or_insert_async(&login_id, async {
                match self.users.find_or_provision(&login_id).await? {
                    Some(user) => Ok(user.id),
                    None => Err(AuthenticateError::PasswordAccount),
                }
            })
            .await?;
        Ok(Caller {
            user_id,
            login_id,
            role: Role::User,
        })
    }
}

#[cfg(test)]
mod tests {
    use domain::identity::{MockTokenService, MockUserRepository};
    use mockall::Sequence;

    use super::*;
    use crate::identity::fixtures;

    #[test]
    fn a_valid_token_yields_its_caller_checked_against_the_clock() {
        let mut tokens = MockTokenService::new();
        tokens
            .expect_verify()
            .withf(|token, now| token == "good" && *now == fixtures::at())
            .returning(|_, _| Ok(Caller::from(&fixtures::user(5, "bob", Role::Admin))));
        let auth = Authenticate::new(
            Arc::new(MockUserRepository::new()),
            Arc::new(tokens),
            Arc::new(fixtures::clock()),
        );

        let caller = auth.bearer("good").expect("accepted");

        assert_eq!(caller.user_id.get(), 5);
        assert!(caller.is_admin());
    }

    #[test]
    fn a_refused_token_says_why() {
        let mut tokens = MockTokenService::new();
        tokens
            .expect_verify()
            .returning(|_, _| Err(TokenError::Expired));
        let auth = Authenticate::new(
            Arc::new(MockUserRepository::new()),
            Arc::new(tokens),
            Arc::new(fixtures::clock()),
        );

        let result = auth.bearer("old");

        assert!(matches!(
            result,
            Err(AuthenticateError::Token(TokenError::Expired))
        ));
    }

    #[tokio::test]
    async fn the_gateway_identity_is_provisioned_as_a_user() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_or_provision()
            .withf(|login| login.as_str() == "gw-user")
            .times(1)
            .returning(|login| Ok(Some(fixtures::user(9, login.as_str(), Role::User))));
        let auth = Authenticate::new(
            Arc::new(users),
            Arc::new(MockTokenService::new()),
            Arc::new(fixtures::clock()),
        );

        let caller = auth.gateway("gw-user").await.expect("provisioned");

        assert_eq!((caller.user_id.get(), caller.role), (9, Role::User));
    }

    #[tokio::test]
    async fn the_gateway_never_names_a_password_account_and_the_refusal_is_not_kept() {
        // The store answers None for an account with a password (an admin's,
        // a signed-up user's), every time it is asked.
        let mut users = MockUserRepository::new();
        users
            .expect_find_or_provision()
            .times(2)
            .returning(|_| Ok(None));
        let auth = Authenticate::new(
            Arc::new(users),
            Arc::new(MockTokenService::new()),
            Arc::new(fixtures::clock()),
        );

        for _ in 0..2 {
            assert!(matches!(
                auth.gateway("admin").await,
                Err(AuthenticateError::PasswordAccount)
            ));
        }
    }

    #[tokio::test]
    async fn a_malformed_gateway_identity_touches_no_store() {
        let mut users = MockUserRepository::new();
        users.expect_find_or_provision().never();
        let auth = Authenticate::new(
            Arc::new(users),
            Arc::new(MockTokenService::new()),
            Arc::new(fixtures::clock()),
        );

        let result = auth.gateway("no spaces allowed").await;

        assert!(matches!(
            result,
            Err(AuthenticateError::InvalidGatewayIdentity)
        ));
    }

    fn gateway_auth(users: MockUserRepository) -> Authenticate {
        Authenticate::new(
            Arc::new(users),
            Arc::new(MockTokenService::new()),
            Arc::new(fixtures::clock()),
        )
    }

    #[tokio::test]
    async fn a_repeated_gateway_login_asks_the_store_once() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_or_provision()
            .withf(|login| login.as_str() == "gw-user")
            .times(1)
            .returning(|login| Ok(Some(fixtures::user(9, login.as_str(), Role::User))));
        let auth = gateway_auth(users);

        let first = auth.gateway("gw-user").await.expect("provisioned");
        let second = auth.gateway("gw-user").await.expect("cached");

        assert_eq!(first, second);
        assert_eq!(
            (second.user_id.get(), second.login_id.as_str(), second.role),
            (9, "gw-user", Role::User)
        );
    }

    #[tokio::test]
    async fn a_store_failure_is_not_cached() {
        let mut users = MockUserRepository::new();
        let mut calls = Sequence::new();
        users
            .expect_find_or_provision()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_| Err(Unavailable::new("postgres", "connection refused")));
        users
            .expect_find_or_provision()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|login| Ok(Some(fixtures::user(9, login.as_str(), Role::User))));
        let auth = gateway_auth(users);

        let failed = auth.gateway("gw-user").await;
        let retried = auth.gateway("gw-user").await.expect("store is back");
        let cached = auth.gateway("gw-user").await.expect("cached");

        assert!(matches!(failed, Err(AuthenticateError::Unavailable(_))));
        assert_eq!(retried.user_id.get(), 9);
        assert_eq!(cached, retried);
    }

    #[tokio::test]
    async fn different_gateway_logins_are_resolved_separately() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_or_provision()
            .withf(|login| login.as_str() == "alice")
            .times(1)
            .returning(|login| Ok(Some(fixtures::user(1, login.as_str(), Role::User))));
        users
            .expect_find_or_provision()
            .withf(|login| login.as_str() == "bob")
            .times(1)
            .returning(|login| Ok(Some(fixtures::user(2, login.as_str(), Role::User))));
        let auth = gateway_auth(users);

        let alice = auth.gateway("alice").await.expect("alice");
        let bob = auth.gateway("bob").await.expect("bob");
        let alice_again = auth.gateway("alice").await.expect("alice, cached");
        let bob_again = auth.gateway("bob").await.expect("bob, cached");

        assert_eq!((alice.user_id.get(), alice.login_id.as_str()), (1, "alice"));
        assert_eq!((bob.user_id.get(), bob.login_id.as_str()), (2, "bob"));
        assert_eq!((alice_again, bob_again), (alice, bob));
    }

    #[tokio::test]
    async fn a_cached_admin_login_still_acts_as_a_user() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_or_provision()
            .times(1)
            .returning(|login| Ok(Some(fixtures::user(1, login.as_str(), Role::Admin))));
        let auth = gateway_auth(users);

        let first = auth.gateway("admin").await.expect("known user");
        let second = auth.gateway("admin").await.expect("cached");

        assert_eq!((first.role, second.role), (Role::User, Role::User));
    }

    #[test]
    fn a_bearer_token_is_verified_on_every_call() {
        let mut tokens = MockTokenService::new();
        tokens
            .expect_verify()
            .times(2)
            .returning(|_, _| Ok(Caller::from(&fixtures::user(5, "bob", Role::User))));
        let mut users = MockUserRepository::new();
        users.expect_find_or_provision().never();
        let auth = Authenticate::new(
            Arc::new(users),
            Arc::new(tokens),
            Arc::new(fixtures::clock()),
        );

        auth.bearer("good").expect("accepted");
        auth.bearer("good").expect("verified again, not cached");

        assert!(auth.gateway_users.is_empty());
    }
}
