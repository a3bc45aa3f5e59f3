//! Identity use cases: sign up, sign in, authenticate a request, read
//! profiles, and make sure the configured admin exists.

mod authenticate;
mod bootstrap_admin;
mod sign_in;
mod sign_up;
mod user_queries;

pub use authenticate::{Authenticate, AuthenticateError};
pub use bootstrap_admin::BootstrapAdmin;
pub use sign_in::{SignIn, SignInCommand, SignInError};
pub use sign_up::{SignUp, SignUpCommand, SignUpError};
pub use user_queries::{ProfileError, UserQueries};

use domain::identity::{AccessToken, User};

/// What sign-up and sign-in hand back: the user and a fresh access token.
#[derive(Debug, Clone)]
pub struct AuthSession {
    pub user: User,
    pub token: AccessToken,
}

#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::{DateTime, TimeZone, Utc};
    use domain::clock::MockClock;
    use domain::identity::{AccessToken, LoginId, Role, User, UserId, UserName};

    pub fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    pub fn clock() -> MockClock {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(at());
        clock
    }

    pub fn user(id: i64, login: &str, role: Role) -> User {
        let login_id = LoginId::parse(login).expect("valid login id");
        User {
            id: UserId::new(id),
            name: UserName::from_login_id(&login_id),
            login_id,
            role,
            created_at: at(),
        }
    }

    pub fn token(text: &str) -> AccessToken {
        AccessToken {
            token: text.to_owned(),
            expires_at: at() + chrono::Duration::hours(1),
        }
    }
}
