//! Sign up: create a USER with an argon2id password hash and sign them in.

use std::sync::Arc;

use domain::clock::Clock;
use domain::error::Unavailable;
use domain::identity::{
    Caller, CreateUserError, LoginId, NewUser, Password, PasswordHasher, Role, TokenService,
    UserName, UserRepository,
};
use thiserror::Error;

use super::AuthSession;

/// A validated sign-up request.
#[derive(Debug, Clone)]
pub struct SignUpCommand {
    pub login_id: LoginId,
    pub password: Password,
    /// Defaults to the login id.
    pub name: Option<UserName>,
}

#[derive(Debug, Error)]
pub enum SignUpError {
    #[error("login id is taken")]
    LoginIdTaken,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The sign-up use case.
pub struct SignUp {
    users: Arc<dyn UserRepository>,
    hasher: Arc<dyn PasswordHasher>,
    tokens: Arc<dyn TokenService>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SignUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignUp")
    }
}

impl SignUp {
    pub fn new(
        users: Arc<dyn UserRepository>,
        hasher: Arc<dyn PasswordHasher>,
        tokens: Arc<dyn TokenService>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            hasher,
            tokens,
            clock,
        }
    }

    /// Creates the user and issues their first token.
    ///
    /// # Errors
    /// [`SignUpError::LoginIdTaken`] when the login id exists (the store's
    /// unique constraint decides); [`SignUpError::Unavailable`] when a backing
    /// service fails, in which case no user was created.
    #[tracing::instrument(name = "sign_up", skip_all, fields(login_id = %cmd.login_id))]
    pub async fn execute(&self, cmd: SignUpCommand) -> Result<AuthSession, SignUpError> {
        let password_hash = self.hasher.hash(&cmd.password).await?;
        let name = cmd
            .name
            .unwrap_or_else(|| UserName::from_login_id(&cmd.login_id));
        let user = self
            .users
            .create(NewUser {
                login_id: cmd.login_id,
                name,
                password_hash: Some(password_hash),
                role: Role::User,
            })
            .await
            .map_err(|e| match e {
                CreateUserError::LoginIdTaken => SignUpError::LoginIdTaken,
                CreateUserError::Unavailable(u) => SignUpError::Unavailable(u),
            })?;
        let token = self.tokens.issue(&Caller::from(&user), self.clock.now());
        Ok(AuthSession { user, token })
    }
}

#[cfg(test)]
mod tests {
    use domain::identity::{
        MockPasswordHasher, MockTokenService, MockUserRepository, PasswordHash,
    };
    use mockall::predicate::always;

    use super::*;
    use crate::identity::fixtures;

    fn command(name: Option<&str>) -> SignUpCommand {
        SignUpCommand {
            login_id: LoginId::parse("alice").expect("valid"),
            password: Password::parse("correct horse").expect("valid"),
            name: name.map(|n| UserName::parse(n).expect("valid")),
        }
    }

    fn hasher() -> MockPasswordHasher {
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .returning(|_| Ok(PasswordHash::from_phc("$argon2id$hash".into())));
        hasher
    }

    #[tokio::test]
    async fn stores_a_user_with_the_hash_never_the_password_and_issues_a_token() {
        let mut users = MockUserRepository::new();
        users
            .expect_create()
            .withf(|u| {
                u.password_hash.as_ref().map(PasswordHash::as_str) == Some("$argon2id$hash")
                    && u.role == Role::User
                    && u.name.as_str() == "Alice Kim"
            })
            .times(1)
            .returning(|u| Ok(fixtures::user(7, u.login_id.as_str(), u.role)));
        let mut tokens = MockTokenService::new();
        tokens
            .expect_issue()
            .withf(|caller, now| caller.user_id.get() == 7 && *now == fixtures::at())
            .returning(|_, _| fixtures::token("signed"));
        let use_case = SignUp::new(
            Arc::new(users),
            Arc::new(hasher()),
            Arc::new(tokens),
            Arc::new(fixtures::clock()),
        );

        let session = use_case
            .execute(command(Some("Alice Kim")))
            .await
            .expect("signed up");

        assert_eq!(session.user.id.get(), 7);
        assert_eq!(session.token.token, "signed");
    }

    #[tokio::test]
    async fn name_defaults_to_the_login_id() {
        let mut users = MockUserRepository::new();
        users
            .expect_create()
            .withf(|u| u.name.as_str() == "alice")
            .returning(|u| Ok(fixtures::user(1, u.login_id.as_str(), u.role)));
        let mut tokens = MockTokenService::new();
        tokens.expect_issue().returning(|_, _| fixtures::token("t"));
        let use_case = SignUp::new(
            Arc::new(users),
            Arc::new(hasher()),
            Arc::new(tokens),
            Arc::new(fixtures::clock()),
        );

        assert!(use_case.execute(command(None)).await.is_ok());
    }

    #[tokio::test]
    async fn a_taken_login_id_is_reported_and_no_token_is_issued() {
        let mut users = MockUserRepository::new();
        users
            .expect_create()
            .returning(|_| Err(CreateUserError::LoginIdTaken));
        let mut tokens = MockTokenService::new();
        tokens.expect_issue().with(always(), always()).never();
        let use_case = SignUp::new(
            Arc::new(users),
            Arc::new(hasher()),
            Arc::new(tokens),
            Arc::new(fixtures::clock()),
        );

        let result = use_case.execute(command(None)).await;

        assert!(matches!(result, Err(SignUpError::LoginIdTaken)));
    }

    #[tokio::test]
    async fn a_failing_store_is_unavailable() {
        let mut users = MockUserRepository::new();
        users.expect_create().returning(|_| {
            Err(CreateUserError::Unavailable(Unavailable::new(
                "postgres", "down",
            )))
        });
        let use_case = SignUp::new(
            Arc::new(users),
            Arc::new(hasher()),
            Arc::new(MockTokenService::new()),
            Arc::new(fixtures::clock()),
        );

        let result = use_case.execute(command(None)).await;

        assert!(matches!(result, Err(SignUpError::Unavailable(u)) if u.service() == "postgres"));
    }
}
