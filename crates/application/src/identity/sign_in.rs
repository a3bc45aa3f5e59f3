//! Sign in: check a login id and password, hand out an access token.
//!
//! An unknown login id and a wrong password get the same answer and take the
//! same time (the hasher checks a dummy hash), so sign-in cannot be used to
//! find out which login ids exist.
//!
//! Attempts are throttled per login id and per client address before the
//! password is checked ([`Throttle::sign_in`]); a sign-in that succeeds gives
//! its slots back, so what the limits bound is failed attempts.

use std::net::IpAddr;
use std::sync::Arc;

use domain::clock::Clock;
use domain::error::Unavailable;
use domain::identity::{Caller, LoginId, Password, PasswordHasher, TokenService, UserRepository};
use thiserror::Error;

use super::AuthSession;
use crate::throttle::{RateLimited, Throttle};

#[derive(Debug, Clone)]
pub struct SignInCommand {
    pub login_id: LoginId,
    pub password: Password,
    /// The client's address, when the edge knows it.
    pub client: Option<IpAddr>,
}

#[derive(Debug, Error)]
pub enum SignInError {
    /// Unknown login id, wrong password, or a user who has no password.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failed attempts for this login or from this address.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The sign-in use case.
pub struct SignIn {
    users: Arc<dyn UserRepository>,
    hasher: Arc<dyn PasswordHasher>,
    tokens: Arc<dyn TokenService>,
    clock: Arc<dyn Clock>,
    throttle: Arc<Throttle>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignIn")
    }
}

impl SignIn {
    pub fn new(
        users: Arc<dyn UserRepository>,
        hasher: Arc<dyn PasswordHasher>,
        tokens: Arc<dyn TokenService>,
        clock: Arc<dyn Clock>,
        throttle: Arc<Throttle>,
    ) -> Self {
        Self {
            users,
            hasher,
            tokens,
            clock,
            throttle,
        }
    }

    /// # Errors
    /// [`SignInError::InvalidCredentials`] for an unknown login, a wrong
    /// password, or a gateway-provisioned user without password;
    /// [`SignInError::RateLimited`] over a sign-in quota (nothing checked);
    /// [`SignInError::Unavailable`] when a backing service fails.
    #[tracing::instrument(name = "sign_in", skip_all, fields(login_id = %cmd.login_id))]
    pub async fn execute(&self, cmd: SignInCommand) -> Result<AuthSession, SignInError> {
        let slots = self.throttle.sign_in(&cmd.login_id, cmd.client).await?;
        let outcome = self.check(&cmd).await;
        // Only a wrong password keeps its slots. A success gives them back,
        // and so does a backing-service failure: a 503 is not a guess, and
        // retries during an outage must not lock anyone out afterwards.
        if !matches!(outcome, Err(SignInError::InvalidCredentials)) {
            self.throttle.give_back(slots).await;
        }
        outcome
    }

    async fn check(&self, cmd: &SignInCommand) -> Result<AuthSession, SignInError> {
        let found = self.users.find_credentials(&cmd.login_id).await?;
        let hash = found.as_ref().and_then(|c| c.password_hash.clone());
        // Always run the hasher, even without a hash, so timing reveals nothing.
        let matches = self.hasher.verify(&cmd.password, hash).await?;
        match found {
            Some(credentials) if matches && credentials.password_hash.is_some() => {
                let user = credentials.user;
                let token = self.tokens.issue(&Caller::from(&user), self.clock.now());
                Ok(AuthSession { user, token })
            }
            _ => Err(SignInError::InvalidCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use domain::identity::{
        MockPasswordHasher, MockTokenService, MockUserRepository, PasswordHash, Role,
        UserCredentials,
    };

    use domain::throttle::MockRateLimiter;

    use super::*;
    use crate::identity::fixtures;

    fn command(password: &str) -> SignInCommand {
        SignInCommand {
            login_id: LoginId::parse("alice").expect("valid"),
            password: Password::parse(password).expect("valid"),
            client: None,
        }
    }

    fn users_with(hash: Option<&'static str>) -> MockUserRepository {
        let mut users = MockUserRepository::new();
        users.expect_find_credentials().returning(move |login| {
            Ok(Some(UserCredentials {
                user: fixtures::user(3, login.as_str(), Role::User),
                password_hash: hash.map(|h| PasswordHash::from_phc(h.to_owned())),
            }))
        });
        users
    }

    /// A hasher that accepts exactly "right password" against "$hash".
    fn hasher() -> MockPasswordHasher {
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_verify().times(1).returning(|pw, hash| {
            Ok(hash.as_ref().map(PasswordHash::as_str) == Some("$hash")
                && pw.expose() == "right password")
        });
        hasher
    }

    fn tokens() -> MockTokenService {
        let mut tokens = MockTokenService::new();
        tokens
            .expect_issue()
            .returning(|_, _| fixtures::token("jwt"));
        tokens
    }

    fn use_case(users: MockUserRepository) -> SignIn {
        SignIn::new(
            Arc::new(users),
            Arc::new(hasher()),
            Arc::new(tokens()),
            Arc::new(fixtures::clock()),
            unthrottled(),
        )
    }

    fn unthrottled() -> Arc<Throttle> {
        Arc::new(Throttle::off(Arc::new(MockRateLimiter::new())))
    }

    #[tokio::test]
    async fn the_right_password_gets_a_token() {
        let session = use_case(users_with(Some("$hash")))
            .execute(command("right password"))
            .await
            .expect("signed in");
        assert_eq!(session.user.id.get(), 3);
        assert_eq!(session.token.token, "jwt");
    }

    #[tokio::test]
    async fn a_wrong_password_is_invalid_credentials() {
        let result = use_case(users_with(Some("$hash")))
            .execute(command("wrong password"))
            .await;
        assert!(matches!(result, Err(SignInError::InvalidCredentials)));
    }

    #[tokio::test]
    async fn an_unknown_login_is_invalid_credentials_after_a_dummy_check() {
        let mut users = MockUserRepository::new();
        users.expect_find_credentials().returning(|_| Ok(None));
        // `hasher()` expects exactly one verify call: the dummy check runs.
        let result = use_case(users).execute(command("right password")).await;
        assert!(matches!(result, Err(SignInError::InvalidCredentials)));
    }

    #[tokio::test]
    async fn a_user_without_password_cannot_sign_in_even_if_the_hasher_says_yes() {
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_verify().times(1).returning(|_, _| Ok(true));
        let use_case = SignIn::new(
            Arc::new(users_with(None)),
            Arc::new(hasher),
            Arc::new(tokens()),
            Arc::new(fixtures::clock()),
            unthrottled(),
        );

        let result = use_case.execute(command("right password")).await;

        assert!(matches!(result, Err(SignInError::InvalidCredentials)));
    }

    fn limited_to_one_per_login() -> Arc<Throttle> {
        let quota = domain::throttle::Quota::new(1, std::time::Duration::from_secs(60))
            .expect("valid quota");
        let mut limiter = MockRateLimiter::new();
        let mut taken = 0;
        limiter.expect_admit().returning(move |_, _| {
            taken += 1;
            if taken == 1 {
                domain::throttle::Admission::Admitted
            } else {
                domain::throttle::Admission::Limited {
                    retry_after: std::time::Duration::from_secs(60),
                }
            }
        });
        limiter.expect_release().never();
        Arc::new(Throttle::new(
            Arc::new(limiter),
            crate::throttle::Limits {
                sign_in_per_login: Some(quota),
                ..crate::throttle::Limits::OFF
            },
        ))
    }

    #[tokio::test]
    async fn over_the_quota_no_password_is_checked_and_a_failure_keeps_its_slot() {
        // `hasher()` expects exactly one verify: the first attempt's.
        let use_case = SignIn::new(
            Arc::new(users_with(Some("$hash"))),
            Arc::new(hasher()),
            Arc::new(tokens()),
            Arc::new(fixtures::clock()),
            limited_to_one_per_login(),
        );

        let first = use_case.execute(command("wrong password")).await;
        let second = use_case.execute(command("right password")).await;

        assert!(matches!(first, Err(SignInError::InvalidCredentials)));
        match second {
            Err(SignInError::RateLimited(limited)) => {
                assert_eq!(limited.retry_after, std::time::Duration::from_secs(60));
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failing_backing_service_gives_the_slot_back_and_a_wrong_password_keeps_it() {
        let quota = domain::throttle::Quota::new(10, std::time::Duration::from_secs(60))
            .expect("valid quota");
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_admit()
            .times(2)
            .returning(|_, _| domain::throttle::Admission::Admitted);
        // One give-back: the outage's. The wrong password keeps its slot.
        limiter.expect_release().times(1).return_const(());
        let throttle = Arc::new(Throttle::new(
            Arc::new(limiter),
            crate::throttle::Limits {
                sign_in_per_login: Some(quota),
                ..crate::throttle::Limits::OFF
            },
        ));
        let mut down = MockUserRepository::new();
        down.expect_find_credentials()
            .returning(|_| Err(Unavailable::new("postgres", "connection refused")));
        let outage = SignIn::new(
            Arc::new(down),
            Arc::new(MockPasswordHasher::new()),
            Arc::new(tokens()),
            Arc::new(fixtures::clock()),
            Arc::clone(&throttle),
        );
        let up = SignIn::new(
            Arc::new(users_with(Some("$hash"))),
            Arc::new(hasher()),
            Arc::new(tokens()),
            Arc::new(fixtures::clock()),
            throttle,
        );

        let failed = outage.execute(command("right password")).await;
        let wrong = up.execute(command("wrong password")).await;

        assert!(matches!(failed, Err(SignInError::Unavailable(_))));
        assert!(matches!(wrong, Err(SignInError::InvalidCredentials)));
    }
}
