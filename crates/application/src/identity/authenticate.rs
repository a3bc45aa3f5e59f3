//! Authenticate a request: a bearer token, or (in trusted-gateway mode) a
//! login id that the gateway in front of us has already authenticated.

use std::sync::Arc;

use domain::clock::Clock;
use domain::error::Unavailable;
use domain::identity::{Caller, LoginId, Role, TokenError, TokenService, UserRepository};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuthenticateError {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The gateway header does not hold a valid login id.
    #[error("gateway identity is not a valid login id")]
    InvalidGatewayIdentity,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Turns request credentials into a [`Caller`].
pub struct Authenticate {
    users: Arc<dyn UserRepository>,
    tokens: Arc<dyn TokenService>,
    clock: Arc<dyn Clock>,
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
    /// password) on first sight. A gateway caller always acts as a USER, even
    /// when the login id belongs to an admin: admin rights need a token, so
    /// a header cannot grant them.
    ///
    /// # Errors
    /// [`AuthenticateError::InvalidGatewayIdentity`] when the value is not a
    /// login id; [`AuthenticateError::Unavailable`] when the store fails.
    pub async fn gateway(&self, login_id: &str) -> Result<Caller, AuthenticateError> {
        let login_id =
            LoginId::parse(login_id).map_err(|_| AuthenticateError::InvalidGatewayIdentity)?;
        let user = self.users.find_or_provision(&login_id).await?;
        Ok(Caller {
            role: Role::User,
            ..Caller::from(&user)
        })
    }
}

#[cfg(test)]
mod tests {
    use domain::identity::{MockTokenService, MockUserRepository};

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
            .returning(|login| Ok(fixtures::user(9, login.as_str(), Role::User)));
        let auth = Authenticate::new(
            Arc::new(users),
            Arc::new(MockTokenService::new()),
            Arc::new(fixtures::clock()),
        );

        let caller = auth.gateway("gw-user").await.expect("provisioned");

        assert_eq!((caller.user_id.get(), caller.role), (9, Role::User));
    }

    #[tokio::test]
    async fn the_gateway_never_grants_admin_rights() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_or_provision()
            .returning(|login| Ok(fixtures::user(1, login.as_str(), Role::Admin)));
        let auth = Authenticate::new(
            Arc::new(users),
            Arc::new(MockTokenService::new()),
            Arc::new(fixtures::clock()),
        );

        let caller = auth.gateway("admin").await.expect("known user");

        assert_eq!((caller.user_id.get(), caller.role), (1, Role::User));
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
}
