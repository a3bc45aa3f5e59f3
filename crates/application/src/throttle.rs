//! Abuse limits: the policy over the [`RateLimiter`] port.
//!
//! - **Sign-in**, per login id and per client address: each attempt takes a
//!   slot of both quotas before the password is checked, and a sign-in that
//!   succeeds gives both back. What the quotas bound is therefore failed
//!   attempts (plus those in flight), so a password-guessing script is
//!   stopped while a busy office behind one address signs in freely.
//! - **Attempts**, per user and per kind (order, coupon issue, investment):
//!   every attempt counts. The default (300 a minute, then 5 a second) is far
//!   above what a person clicking "buy" in a flash sale can send, and stops a
//!   script that hammers the endpoint.
//!
//! A quota of `None` switches that limit off.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use domain::identity::{LoginId, UserId};
use domain::throttle::{Admission, Quota, RateLimiter};
use thiserror::Error;

/// The quotas; `None` switches one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub sign_in_per_login: Option<Quota>,
    pub sign_in_per_address: Option<Quota>,
    pub attempts_per_user: Option<Quota>,
}

impl Limits {
    /// No limit at all.
    pub const OFF: Self = Self {
        sign_in_per_login: None,
        sign_in_per_address: None,
        attempts_per_user: None,
    };
}

/// The kinds of attempt counted per user, each with its own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Order,
    CouponIssue,
    Investment,
}

impl Attempt {
    fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::CouponIssue => "issue",
            Self::Investment => "invest",
        }
    }
}

/// Over a quota: try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("too many attempts; retry after {retry_after:?}")]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// The slots one sign-in attempt holds; give them back with
/// [`Throttle::give_back`] unless the password was wrong.
#[derive(Debug)]
#[must_use]
pub struct SignInSlots {
    held: Vec<(String, Quota)>,
}

/// Applies [`Limits`] through a [`RateLimiter`] (sign-ins) and, when given,
/// another one for attempts (see [`Throttle::with_attempt_limiter`]).
pub struct Throttle {
    limiter: Arc<dyn RateLimiter>,
    attempts: Arc<dyn RateLimiter>,
    limits: Limits,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    pub fn new(limiter: Arc<dyn RateLimiter>, limits: Limits) -> Self {
        Self {
            attempts: Arc::clone(&limiter),
            limiter,
            limits,
        }
    }

    /// Counts attempts with `attempts` instead. The service counts them in
    /// process: an attempt is on the hot path of a flash sale, where one
    /// more Redis round trip per request costs throughput that matters
    /// (`docs/performance.md`), while a sign-in's cost is the password hash.
    #[must_use]
    pub fn with_attempt_limiter(mut self, attempts: Arc<dyn RateLimiter>) -> Self {
        self.attempts = attempts;
        self
    }

    /// A throttle that admits everything and asks no limiter.
    pub fn off(limiter: Arc<dyn RateLimiter>) -> Self {
        Self::new(limiter, Limits::OFF)
    }

    /// Counts one `what` by `user`.
    ///
    /// # Errors
    /// [`RateLimited`] when the user is over the quota.
    pub async fn attempt(&self, user: UserId, what: Attempt) -> Result<(), RateLimited> {
        let Some(quota) = self.limits.attempts_per_user else {
            return Ok(());
        };
        let key = format!("{}:{}", what.name(), user.get());
        match self.attempts.admit(&key, quota).await {
            Admission::Admitted => Ok(()),
            Admission::Limited { retry_after } => {
                tracing::info!(
                    user_id = user.get(),
                    attempt = what.name(),
                    ?retry_after,
                    "attempt rate-limited"
                );
                Err(RateLimited { retry_after })
            }
        }
    }

    /// Takes a slot for one sign-in attempt by `login` from `address` (when
    /// known), the address's first.
    ///
    /// # Errors
    /// [`RateLimited`] when either quota is used up; the other one's slot is
    /// given back, since the attempt is not made.
    pub async fn sign_in(
        &self,
        login: &LoginId,
        address: Option<IpAddr>,
    ) -> Result<SignInSlots, RateLimited> {
        let mut wanted = Vec::with_capacity(2);
        if let (Some(quota), Some(address)) = (self.limits.sign_in_per_address, address) {
            wanted.push((format!("signin-addr:{}", subject_of(address)), quota));
        }
        if let Some(quota) = self.limits.sign_in_per_login {
            wanted.push((format!("signin-login:{}", login.as_str()), quota));
        }
        let mut held = SignInSlots {
            held: Vec::with_capacity(wanted.len()),
        };
        for (key, quota) in wanted {
            match self.limiter.admit(&key, quota).await {
                Admission::Admitted => held.held.push((key, quota)),
                Admission::Limited { retry_after } => {
                    tracing::info!(login_id = %login, ?retry_after, limit = %key.split(':').next().unwrap_or(""), "sign-in rate-limited");
                    self.give_back(held).await;
                    return Err(RateLimited { retry_after });
                }
            }
        }
        Ok(held)
    }

    /// Gives back the slots of a sign-in that did not fail on its password.
    pub async fn give_back(&self, slots: SignInSlots) {
        for (key, quota) in slots.held {
            self.limiter.release(&key, quota).await;
        }
    }
}

/// What one client address counts as: an IPv4 address, or the /64 network of
/// an IPv6 one (one host usually holds a whole /64, and could rotate through it).
fn subject_of(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use domain::throttle::MockRateLimiter;
    use mockall::predicate::eq;

    use super::*;

    fn quota(limit: u32) -> Quota {
        Quota::new(limit, Duration::from_secs(60)).expect("valid")
    }

    fn login(raw: &str) -> LoginId {
        LoginId::parse(raw).expect("valid")
    }

    /// A limiter that counts slots per key, without time.
    #[derive(Default)]
    struct Counting(Mutex<HashMap<String, u32>>);

    #[async_trait]
    impl RateLimiter for Counting {
        async fn admit(&self, key: &str, quota: Quota) -> Admission {
            let mut held = self.0.lock().expect("lock");
            let n = held.entry(key.to_owned()).or_default();
            if *n < quota.limit() {
                *n += 1;
                Admission::Admitted
            } else {
                Admission::Limited {
                    retry_after: Duration::from_secs(6),
                }
            }
        }

        async fn release(&self, key: &str, _: Quota) {
            if let Some(n) = self.0.lock().expect("lock").get_mut(key) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn throttle(limits: Limits) -> (Throttle, Arc<Counting>) {
        let limiter = Arc::new(Counting::default());
        (Throttle::new(limiter.clone(), limits), limiter)
    }

    #[tokio::test]
    async fn failed_sign_ins_are_limited_per_login_and_successful_ones_give_their_slot_back() {
        let (throttle, _) = throttle(Limits {
            sign_in_per_login: Some(quota(3)),
            ..Limits::OFF
        });
        let alice = login("alice");
        for _ in 0..10 {
            let slots = throttle.sign_in(&alice, None).await.expect("admitted");
            throttle.give_back(slots).await;
        }
        for _ in 0..3 {
            let _failed = throttle.sign_in(&alice, None).await.expect("admitted");
        }
        let limited = throttle.sign_in(&alice, None).await.expect_err("limited");
        assert_eq!(limited.retry_after, Duration::from_secs(6));
        // Another login is counted on its own.
        let _ = throttle
            .sign_in(&login("bob"), None)
            .await
            .expect("admitted");
    }

    #[tokio::test]
    async fn an_address_is_limited_across_logins_and_a_refused_login_does_not_use_up_the_address() {
        let (throttle, limiter) = throttle(Limits {
            sign_in_per_login: Some(quota(1)),
            sign_in_per_address: Some(quota(3)),
            attempts_per_user: None,
        });
        let here: IpAddr = "203.0.113.9".parse().expect("ip");
        let _ = throttle
            .sign_in(&login("carol"), Some(here))
            .await
            .expect("admitted");
        // carol's own quota is used up: refused, and the address slot comes back.
        throttle
            .sign_in(&login("carol"), Some(here))
            .await
            .expect_err("login limited");
        assert_eq!(
            limiter.0.lock().expect("lock")["signin-addr:203.0.113.9"],
            1
        );
        for name in ["dave", "erin"] {
            let _ = throttle
                .sign_in(&login(name), Some(here))
                .await
                .expect("admitted");
        }
        throttle
            .sign_in(&login("frank"), Some(here))
            .await
            .expect_err("address limited");
        let elsewhere: IpAddr = "198.51.100.1".parse().expect("ip");
        let _ = throttle
            .sign_in(&login("frank"), Some(elsewhere))
            .await
            .expect("admitted");
    }

    #[tokio::test]
    async fn ipv6_addresses_count_per_64_network_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            subject_of("2001:db8:1:2:aaaa::1".parse().expect("ip")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            subject_of("2001:db8:1:2:ffff::9".parse().expect("ip")),
            subject_of("2001:db8:1:2::1".parse().expect("ip"))
        );
        assert_eq!(
            subject_of("::ffff:192.0.2.7".parse().expect("ip")),
            "192.0.2.7"
        );
    }

    #[tokio::test]
    async fn attempts_are_counted_per_user_and_kind() {
        let (throttle, _) = throttle(Limits {
            attempts_per_user: Some(quota(2)),
            ..Limits::OFF
        });
        let user = UserId::new(7);
        for _ in 0..2 {
            throttle
                .attempt(user, Attempt::Order)
                .await
                .expect("admitted");
        }
        throttle
            .attempt(user, Attempt::Order)
            .await
            .expect_err("limited");
        throttle
            .attempt(user, Attempt::Investment)
            .await
            .expect("its own quota");
        throttle
            .attempt(UserId::new(8), Attempt::Order)
            .await
            .expect("another user");
    }

    #[tokio::test]
    async fn switched_off_limits_never_ask_the_limiter() {
        // A mock without expectations panics when called.
        let throttle = Throttle::off(Arc::new(MockRateLimiter::new()));
        for _ in 0..1_000 {
            throttle
                .attempt(UserId::new(1), Attempt::CouponIssue)
                .await
                .expect("off");
            let slots = throttle.sign_in(&login("alice"), None).await.expect("off");
            throttle.give_back(slots).await;
        }
    }

    #[tokio::test]
    async fn attempts_go_to_their_own_limiter_and_sign_ins_to_the_first() {
        let attempts = Arc::new(Counting::default());
        let mut sign_ins = MockRateLimiter::new();
        sign_ins
            .expect_admit()
            .with(eq("signin-login:alice"), eq(quota(1)))
            .times(1)
            .returning(|_, _| Admission::Admitted);
        let throttle = Throttle::new(
            Arc::new(sign_ins),
            Limits {
                sign_in_per_login: Some(quota(1)),
                sign_in_per_address: None,
                attempts_per_user: Some(quota(1)),
            },
        )
        .with_attempt_limiter(attempts.clone());

        throttle
            .attempt(UserId::new(3), Attempt::Order)
            .await
            .expect("admitted");
        let _slots = throttle
            .sign_in(&login("alice"), None)
            .await
            .expect("admitted");

        assert_eq!(attempts.0.lock().expect("lock")["order:3"], 1);
    }

    #[tokio::test]
    async fn the_limiter_sees_one_key_per_user_and_kind() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_admit()
            .with(eq("issue:42"), eq(quota(5)))
            .times(1)
            .returning(|_, _| Admission::Admitted);
        let throttle = Throttle::new(
            Arc::new(limiter),
            Limits {
                attempts_per_user: Some(quota(5)),
                ..Limits::OFF
            },
        );
        throttle
            .attempt(UserId::new(42), Attempt::CouponIssue)
            .await
            .expect("admitted");
    }
}
