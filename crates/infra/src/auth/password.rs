//! The [`PasswordHasher`] with argon2id (RFC 9106) at the OWASP-recommended
//! defaults of the `argon2` crate (19 MiB, 2 passes, 1 lane).
//!
//! Each hash costs tens of milliseconds of CPU and 19 MiB of memory, so it
//! runs on tokio's blocking pool, never on the async executor, and a semaphore
//! bounds how many run at once: a sign-in storm queues instead of exhausting
//! memory or starving request handling.

use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash as Phc;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use async_trait::async_trait;
use domain::error::Unavailable;
use domain::identity::{Password, PasswordHash, PasswordHasher};
use tokio::sync::Semaphore;

const SERVICE: &str = "password-hasher";

#[derive(Debug, Clone)]
pub struct Argon2Hasher {
    permits: Arc<Semaphore>,
    /// How long a hash may wait for a permit before the request gets a 503.
    max_wait: Duration,
    /// A hash of a random password, checked when a login is unknown so that it
    /// costs as much time as a wrong password.
    dummy: Arc<str>,
}

impl Argon2Hasher {
    /// `concurrency` hashes may run at once (at least one); a hash waits at
    /// most `max_wait` for its turn.
    ///
    /// # Panics
    /// When argon2 cannot hash at all (no OS randomness), which would make
    /// every sign-up fail: better to refuse to start.
    pub fn new(concurrency: usize, max_wait: Duration) -> Self {
        let random: [u8; 32] = rand::random();
        let dummy = Argon2::default()
            .hash_password(&random)
            .expect("argon2 can hash with OS randomness")
            .to_string();
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            max_wait,
            dummy: dummy.into(),
        }
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unavailable> {
        let permit = tokio::time::timeout(self.max_wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| Unavailable::new(SERVICE, "too many password hashes queued"))?
            .map_err(|e| Unavailable::new(SERVICE, e))?;
        // The permit moves into the blocking task: if the request is cancelled
        // the hash still runs to the end, and still counts against the limit.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Unavailable::new(SERVICE, e))
    }
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, Unavailable> {
        let password = password.clone();
        let phc = self
            .run_blocking(move || {
                Argon2::default()
                    .hash_password(password.expose().as_bytes())
                    .map(|h: Phc| h.to_string())
            })
            .await?
            .map_err(|e| Unavailable::new(SERVICE, e.to_string()))?;
        Ok(PasswordHash::from_phc(phc))
    }

    async fn verify(
        &self,
        password: &Password,
        hash: Option<PasswordHash>,
    ) -> Result<bool, Unavailable> {
        let password = password.clone();
        let known = hash.is_some();
        let phc = hash.map_or_else(|| self.dummy.to_string(), |h| h.as_str().to_owned());
        let matches = self
            .run_blocking(move || {
                // A stored hash that does not parse matches nothing.
                Phc::new(&phc).is_ok_and(|parsed| {
                    Argon2::default()
                        .verify_password(password.expose().as_bytes(), &parsed)
                        .is_ok()
                })
            })
            .await?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_the_right_password_only() {
        let hasher = Argon2Hasher::new(2, Duration::from_secs(5));
        let right = Password::parse("correct horse battery").expect("valid");
        let wrong = Password::parse("correct horse battery!").expect("valid");

        let hash = hasher.hash(&right).await.expect("hashed");

        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(!hash.as_str().contains("correct"));
        assert!(
            hasher
                .verify(&right, Some(hash.clone()))
                .await
                .expect("ran")
        );
        assert!(!hasher.verify(&wrong, Some(hash)).await.expect("ran"));
    }

    #[tokio::test]
    async fn salts_every_hash() {
        let hasher = Argon2Hasher::new(1, Duration::from_secs(5));
        let pw = Password::parse("same password").expect("valid");
        let a = hasher.hash(&pw).await.expect("hashed");
        let b = hasher.hash(&pw).await.expect("hashed");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_full_queue_is_unavailable_instead_of_waiting_forever() {
        let hasher = Argon2Hasher::new(1, Duration::from_millis(1));
        let held = Arc::clone(&hasher.permits)
            .acquire_owned()
            .await
            .expect("permit");
        let pw = Password::parse("whatever-password").expect("valid");

        let result = hasher.hash(&pw).await;

        assert_eq!(
            result.expect_err("queue is full").service(),
            "password-hasher"
        );
        drop(held);
        assert!(hasher.hash(&pw).await.is_ok());
    }

    #[tokio::test]
    async fn no_hash_never_matches() {
        let hasher = Argon2Hasher::new(1, Duration::from_secs(5));
        let pw = Password::parse("whatever-password").expect("valid");
        assert!(!hasher.verify(&pw, None).await.expect("ran"));
        let garbage = PasswordHash::from_phc("not a phc string".into());
        assert!(!hasher.verify(&pw, Some(garbage)).await.expect("ran"));
    }
}
