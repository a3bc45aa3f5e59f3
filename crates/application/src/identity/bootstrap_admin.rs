//! Make sure the configured admin account exists (`APP_ADMIN_LOGIN_ID` and
//! `APP_ADMIN_PASSWORD`), run once at start-up by every instance.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::identity::{LoginId, Password, PasswordHasher, Role, User, UserRepository};

pub struct BootstrapAdmin {
    users: Arc<dyn UserRepository>,
    hasher: Arc<dyn PasswordHasher>,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapAdmin")
    }
}

impl BootstrapAdmin {
    pub fn new(users: Arc<dyn UserRepository>, hasher: Arc<dyn PasswordHasher>) -> Self {
        Self { users, hasher }
    }

    /// Leaves an admin whose password already matches untouched (so that many
    /// instances starting at once do not rewrite it); otherwise creates the
    /// admin, or promotes the user and sets the configured password.
    ///
    /// # Errors
    /// [`Unavailable`] when a backing service fails.
    pub async fn execute(
        &self,
        login_id: &LoginId,
        password: &Password,
    ) -> Result<User, Unavailable> {
        if let Some(existing) = self.users.find_credentials(login_id).await? {
            let is_admin = existing.user.role == Role::Admin;
            if is_admin
                && existing.password_hash.is_some()
                && self
                    .hasher
                    .verify(password, existing.password_hash.clone())
                    .await?
            {
                return Ok(existing.user);
            }
        }
        let hash = self.hasher.hash(password).await?;
        let admin = self.users.upsert_admin(login_id, &hash).await?;
        tracing::info!(login_id = %admin.login_id, "admin account ensured");
        Ok(admin)
    }
}

#[cfg(test)]
mod tests {
    use domain::identity::{MockPasswordHasher, MockUserRepository, PasswordHash, UserCredentials};

    use super::*;
    use crate::identity::fixtures;

    fn login() -> LoginId {
        LoginId::parse("admin").expect("valid")
    }

    fn password() -> Password {
        Password::parse("admin-password").expect("valid")
    }

    #[tokio::test]
    async fn creates_the_admin_when_missing() {
        let mut users = MockUserRepository::new();
        users.expect_find_credentials().returning(|_| Ok(None));
        users
            .expect_upsert_admin()
            .times(1)
            .returning(|login, _| Ok(fixtures::user(1, login.as_str(), Role::Admin)));
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .times(1)
            .returning(|_| Ok(PasswordHash::from_phc("$new".into())));

        let admin = BootstrapAdmin::new(Arc::new(users), Arc::new(hasher))
            .execute(&login(), &password())
            .await
            .expect("ensured");

        assert_eq!(admin.role, Role::Admin);
    }

    #[tokio::test]
    async fn leaves_an_admin_with_the_right_password_alone() {
        let mut users = MockUserRepository::new();
        users.expect_find_credentials().returning(|login| {
            Ok(Some(UserCredentials {
                user: fixtures::user(1, login.as_str(), Role::Admin),
                password_hash: Some(PasswordHash::from_phc("$old".into())),
            }))
        });
        users.expect_upsert_admin().never();
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_verify().returning(|_, _| Ok(true));
        hasher.expect_hash().never();

        let result = BootstrapAdmin::new(Arc::new(users), Arc::new(hasher))
            .execute(&login(), &password())
            .await;

        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn promotes_a_plain_user_with_that_login() {
        let mut users = MockUserRepository::new();
        users.expect_find_credentials().returning(|login| {
            Ok(Some(UserCredentials {
                user: fixtures::user(4, login.as_str(), Role::User),
                password_hash: Some(PasswordHash::from_phc("$other".into())),
            }))
        });
        users
            .expect_upsert_admin()
            .times(1)
            .returning(|login, _| Ok(fixtures::user(4, login.as_str(), Role::Admin)));
        let mut hasher = MockPasswordHasher::new();
        hasher
            .expect_hash()
            .returning(|_| Ok(PasswordHash::from_phc("$new".into())));

        let admin = BootstrapAdmin::new(Arc::new(users), Arc::new(hasher))
            .execute(&login(), &password())
            .await
            .expect("ensured");

        assert_eq!((admin.id.get(), admin.role), (4, Role::Admin));
    }
}
