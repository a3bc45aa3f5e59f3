//! Charge points: add a prepaid amount to the caller's balance, at most once
//! per idempotency key.
//!
//! The amount is checked before anything runs (a refused amount is not stored
//! under the key, as with Stripe's validation errors). The balance cap is
//! enforced by the store's guarded update, because only the store sees the
//! balance at the moment of the write; its refusal is stored and replayed.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::idempotency::{IdempotentOutcome, IdempotentRequest};
use domain::points::{ChargeAmount, ChargeError, ChargeReceipt, InvalidChargeAmount, PointsStore};
use thiserror::Error;

/// Why a charge did not run at all.
#[derive(Debug, Error)]
pub enum ChargeRejected {
    #[error(transparent)]
    InvalidAmount(#[from] InvalidChargeAmount),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

pub struct ChargePoints {
    store: Arc<dyn PointsStore>,
}

impl std::fmt::Debug for ChargePoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChargePoints")
    }
}

impl ChargePoints {
    pub fn new(store: Arc<dyn PointsStore>) -> Self {
        Self { store }
    }

    /// # Errors
    /// [`ChargeRejected::InvalidAmount`] outside 1,000..=1,000,000 (nothing
    /// runs, nothing is stored); [`ChargeRejected::Unavailable`] when the store
    /// fails (nothing is stored, a retry runs again).
    #[tracing::instrument(name = "charge_points", skip_all, fields(user_id = %request.user_id, amount))]
    pub async fn execute(
        &self,
        amount: i64,
        request: IdempotentRequest<ChargeReceipt, ChargeError>,
    ) -> Result<IdempotentOutcome, ChargeRejected> {
        let amount = ChargeAmount::new(amount)?;
        Ok(self.store.charge(amount, request).await?)
    }
}

#[cfg(test)]
mod tests {
    use domain::idempotency::{Fingerprint, IdempotencyKey, StoredResponse};
    use domain::identity::UserId;
    use domain::money::Points;
    use domain::points::{MAX_BALANCE, MockPointsStore};

    use super::*;

    /// Renders the outcome as "ok:<balance>" or "err:<cap>".
    fn request() -> IdempotentRequest<ChargeReceipt, ChargeError> {
        IdempotentRequest {
            user_id: UserId::new(1),
            key: IdempotencyKey::parse("k-1").expect("valid"),
            fingerprint: Fingerprint::new("f".into()),
            render: Arc::new(|result| {
                let body = match result {
                    Ok(r) => format!("ok:{}", r.balance),
                    Err(ChargeError::BalanceLimitExceeded { max }) => format!("err:{max}"),
                };
                StoredResponse {
                    status: if result.is_ok() { 200 } else { 409 },
                    content_type: "text/plain".into(),
                    body: body.into_bytes(),
                }
            }),
        }
    }

    #[tokio::test]
    async fn amounts_outside_the_limits_never_reach_the_store() {
        let mut store = MockPointsStore::new();
        store.expect_charge().never();
        let use_case = ChargePoints::new(Arc::new(store));

        for amount in [0, 999, 1_000_001, -1_000] {
            let result = use_case.execute(amount, request()).await;
            assert!(
                matches!(result, Err(ChargeRejected::InvalidAmount(_))),
                "{amount}"
            );
        }
    }

    #[tokio::test]
    async fn the_limits_themselves_are_accepted_and_charged() {
        let mut store = MockPointsStore::new();
        store
            .expect_charge()
            .withf(|amount, req| {
                [1_000, 1_000_000].contains(&amount.points().get()) && req.key.as_str() == "k-1"
            })
            .times(2)
            .returning(|amount, req| {
                let receipt = ChargeReceipt {
                    user_id: req.user_id,
                    balance: amount.points(),
                    charged: amount.points(),
                };
                Ok(IdempotentOutcome::Executed((req.render)(&Ok(receipt))))
            });
        let use_case = ChargePoints::new(Arc::new(store));

        for amount in [1_000, 1_000_000] {
            let outcome = use_case.execute(amount, request()).await.expect("charged");
            let IdempotentOutcome::Executed(response) = outcome else {
                panic!("expected a fresh execution");
            };
            assert_eq!(response.body, format!("ok:{amount}").into_bytes());
        }
    }

    #[tokio::test]
    async fn a_refusal_at_the_cap_is_rendered_and_passed_on_for_replay() {
        let mut store = MockPointsStore::new();
        store.expect_charge().returning(|_, req| {
            let refusal = Err(ChargeError::BalanceLimitExceeded {
                max: MAX_BALANCE.get(),
            });
            Ok(IdempotentOutcome::Executed((req.render)(&refusal)))
        });
        let use_case = ChargePoints::new(Arc::new(store));

        let outcome = use_case.execute(5_000, request()).await.expect("ran");

        assert_eq!(
            outcome,
            IdempotentOutcome::Executed(StoredResponse {
                status: 409,
                content_type: "text/plain".into(),
                body: b"err:100000000".to_vec(),
            })
        );
        assert_eq!(Points::new(100_000_000), Some(MAX_BALANCE));
    }

    #[tokio::test]
    async fn a_failing_store_is_unavailable_and_nothing_is_claimed() {
        let mut store = MockPointsStore::new();
        store
            .expect_charge()
            .returning(|_, _| Err(Unavailable::new("postgres", "connection reset")));
        let use_case = ChargePoints::new(Arc::new(store));

        let result = use_case.execute(5_000, request()).await;

        assert!(matches!(result, Err(ChargeRejected::Unavailable(u)) if u.service() == "postgres"));
    }
}
