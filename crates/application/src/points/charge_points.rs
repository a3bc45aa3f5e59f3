//! Charge points: add a prepaid amount to the caller's balance, at most once
//! per idempotency key.
//!
//! An amount outside the limits is refused without touching the balance, and
//! the refusal is stored under the key like any business answer (API.md:
//! every 4xx is replayed). The balance cap is enforced by the store's guarded
//! update, because only the store sees the balance at the moment of the write.
//! Charging has no gate; it runs through the same [`Pipeline`] as every
//! other keyed write.

use std::sync::Arc;

use async_trait::async_trait;
use domain::error::Unavailable;
use domain::idempotency::{IdempotencyStore, IdempotentRequest, Written};
use domain::points::{ChargeAmount, ChargeError, ChargeReceipt, PointsStore};

use crate::pipeline::{GatedWrite, KeyedWrite, Pipeline};

pub struct ChargePoints {
    store: Arc<dyn PointsStore>,
    pipeline: Pipeline,
}

impl std::fmt::Debug for ChargePoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChargePoints")
    }
}

impl ChargePoints {
    pub fn new(store: Arc<dyn PointsStore>, idempotency: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            // No gate: every refusal is stored in Postgres at once.
            pipeline: Pipeline::new(idempotency, None),
        }
    }

    /// # Errors
    /// [`Unavailable`] when a store fails; nothing is stored then, so a retry
    /// with the same key runs again.
    #[tracing::instrument(name = "charge_points", skip_all, fields(user_id = %request.user_id, amount))]
    pub async fn execute(
        &self,
        amount: i64,
        request: IdempotentRequest<ChargeReceipt, ChargeError>,
    ) -> Result<Written<ChargeReceipt, ChargeError>, Unavailable> {
        let charge = Charge {
            store: &*self.store,
            amount,
        };
        self.pipeline.keyed(&charge, request).await
    }
}

/// One charge in the pipeline.
struct Charge<'a> {
    store: &'a dyn PointsStore,
    amount: i64,
}

#[async_trait]
impl GatedWrite for Charge<'_> {
    type Value = ChargeReceipt;
    type Refusal = ChargeError;
    type Ready = ChargeAmount;

    async fn prepare(&self) -> Result<Result<ChargeAmount, ChargeError>, Unavailable> {
        Ok(ChargeAmount::new(self.amount).map_err(ChargeError::InvalidAmount))
    }
}

#[async_trait]
impl KeyedWrite for Charge<'_> {
    async fn run(
        &self,
        amount: ChargeAmount,
        request: IdempotentRequest<ChargeReceipt, ChargeError>,
    ) -> Result<Written<ChargeReceipt, ChargeError>, Unavailable> {
        self.store.charge(amount, request).await
    }
}

#[cfg(test)]
mod tests {
    use domain::idempotency::{
        Fingerprint, IdempotencyKey, IdempotentOutcome, MockIdempotencyStore, StoredResponse,
    };
    use domain::identity::UserId;
    use domain::points::MockPointsStore;

    use super::*;

    /// Renders "ok:<balance>" or the error's text, so tests can see which ran.
    fn request() -> IdempotentRequest<ChargeReceipt, ChargeError> {
        IdempotentRequest {
            user_id: UserId::new(1),
            key: IdempotencyKey::parse("k-1").expect("valid"),
            fingerprint: Fingerprint::new("f".into()),
            render: Arc::new(|result| StoredResponse {
                status: if result.is_ok() { 200 } else { 400 },
                content_type: "text/plain".into(),
                body: match result {
                    Ok(r) => format!("ok:{}", r.balance).into_bytes(),
                    Err(e) => e.to_string().into_bytes(),
                },
            }),
        }
    }

    fn charged(
        amount: ChargeAmount,
        req: &IdempotentRequest<ChargeReceipt, ChargeError>,
    ) -> Written<ChargeReceipt, ChargeError> {
        let receipt = ChargeReceipt {
            user_id: req.user_id,
            balance: amount.points(),
            charged: amount.points(),
        };
        let result = Ok(receipt);
        let response = req.render(&result);
        Written::Executed { result, response }
    }

    #[tokio::test]
    async fn an_amount_outside_the_limits_is_refused_and_stored_without_touching_the_balance() {
        let mut store = MockPointsStore::new();
        store.expect_charge().never();
        let mut idempotency = MockIdempotencyStore::new();
        idempotency
            .expect_refuse()
            .withf(|user, key, _, response| {
                user.get() == 1
                    && key.as_str() == "k-1"
                    && response.status == 400
                    && response.body == b"a charge must be between 1000 and 1000000 points"
            })
            .times(4)
            .returning(|_, _, _, response| Ok(IdempotentOutcome::Executed(response)));
        let use_case = ChargePoints::new(Arc::new(store), Arc::new(idempotency));

        for amount in [0, 999, 1_000_001, -1_000] {
            let written = use_case.execute(amount, request()).await.expect("answered");
            assert!(
                matches!(
                    written,
                    Written::Executed { result: Err(ChargeError::InvalidAmount(_)), ref response }
                        if response.status == 400
                ),
                "{amount}"
            );
        }
    }

    #[tokio::test]
    async fn the_limits_themselves_are_charged() {
        let mut store = MockPointsStore::new();
        store
            .expect_charge()
            .withf(|amount, _| [1_000, 1_000_000].contains(&amount.points().get()))
            .times(2)
            .returning(|amount, req| Ok(charged(amount, &req)));
        let mut idempotency = MockIdempotencyStore::new();
        idempotency.expect_refuse().never();
        let use_case = ChargePoints::new(Arc::new(store), Arc::new(idempotency));

        for amount in [1_000, 1_000_000] {
            let written = use_case.execute(amount, request()).await.expect("charged");
            assert!(written.committed());
            assert_eq!(
                written.response().map(|r| r.body.clone()),
                Some(format!("ok:{amount}").into_bytes())
            );
        }
    }

    #[tokio::test]
    async fn the_store_decides_the_cap_and_its_outcome_is_passed_on() {
        let mut store = MockPointsStore::new();
        store
            .expect_charge()
            .returning(|_, _| Ok(Written::InProgress));
        let use_case = ChargePoints::new(Arc::new(store), Arc::new(MockIdempotencyStore::new()));

        let written = use_case.execute(5_000, request()).await.expect("answered");

        assert_eq!(written, Written::InProgress);
    }

    #[tokio::test]
    async fn a_failing_store_is_unavailable() {
        let mut store = MockPointsStore::new();
        store
            .expect_charge()
            .returning(|_, _| Err(Unavailable::new("postgres", "connection reset")));
        let use_case = ChargePoints::new(Arc::new(store), Arc::new(MockIdempotencyStore::new()));

        let result = use_case.execute(5_000, request()).await;

        assert!(matches!(result, Err(u) if u.service() == "postgres"));
    }
}
