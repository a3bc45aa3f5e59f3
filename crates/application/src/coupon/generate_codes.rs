//! An admin fills a campaign's pool with random codes: exactly the count
//! asked for, written in batches, collisions replaced by fresh codes.

use std::sync::Arc;

use domain::coupon::{CampaignId, CodeCount, CodeGenerator, CouponStore, IssueGate};
use domain::error::Unavailable;

use super::{CODE_BATCH, CampaignError};

/// Batches in flight at once: one being written while the next is drawn and
/// sent, so random generation and Postgres' index work overlap.
const IN_FLIGHT: usize = 2;

pub struct GenerateCodes {
    store: Arc<dyn CouponStore>,
    codes: Arc<dyn CodeGenerator>,
    gate: Arc<dyn IssueGate>,
}

impl std::fmt::Debug for GenerateCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GenerateCodes")
    }
}

impl GenerateCodes {
    pub fn new(
        store: Arc<dyn CouponStore>,
        codes: Arc<dyn CodeGenerator>,
        gate: Arc<dyn IssueGate>,
    ) -> Self {
        Self { store, codes, gate }
    }

    /// Adds exactly `count` new random codes to the pool. A code that collides
    /// with an existing one is replaced by a fresh one, not reported.
    ///
    /// # Errors
    /// [`CampaignError::NotFound`] for an unknown id; `Unavailable` when the
    /// store fails (the codes of batches already written stay).
    pub async fn execute(&self, id: CampaignId, count: CodeCount) -> Result<usize, CampaignError> {
        use futures_util::stream::{FuturesUnordered, StreamExt as _};

        let mut generated = 0;
        let mut requested = 0;
        let mut fruitless = 0;
        let mut in_flight = FuturesUnordered::new();
        loop {
            // Keep up to IN_FLIGHT batches going while codes are still missing.
            while in_flight.len() < IN_FLIGHT && requested < count.get() {
                let batch = (count.get() - requested).min(CODE_BATCH);
                requested += batch;
                in_flight.push(self.store.add_codes(id, self.codes.generate(batch)));
            }
            let Some(added) = in_flight.next().await else {
                // The pool grew: the issue gate counts again from Postgres.
                if let Err(err) = self.gate.forget(id).await {
                    tracing::warn!(error = %err, "could not reset the issue gate");
                }
                return Ok(generated);
            };
            let added = added?;
            generated += added.inserted;
            // Collisions are replaced by asking for that many more codes.
            requested -= added.duplicates;
            // 16 random base32 characters collide about once in 10^24; a
            // batch that adds nothing three times over means a broken generator.
            fruitless = if added.inserted == 0 {
                fruitless + 1
            } else {
                0
            };
            if fruitless >= 3 {
                return Err(CampaignError::Unavailable(Unavailable::new(
                    "code-generator",
                    "generated codes keep colliding",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use domain::coupon::{
        AddCodesError, AddedCodes, MockCodeGenerator, MockCouponStore, MockIssueGate,
    };
    use domain::ordering::CouponCode;

    use super::*;

    fn codes(n: usize) -> Vec<CouponCode> {
        (0..n)
            .map(|i| CouponCode::parse(&format!("CODE{i:012}")).expect("valid"))
            .collect()
    }

    #[tokio::test]
    async fn writes_in_batches_and_replaces_collisions_until_the_count_is_reached() {
        let mut generator = MockCodeGenerator::new();
        generator.expect_generate().returning(codes);
        let mut store = MockCouponStore::new();
        let mut calls = 0;
        store.expect_add_codes().returning(move |_, batch| {
            calls += 1;
            assert!(batch.len() <= CODE_BATCH, "batch of {}", batch.len());
            // The first batch collides twice.
            let duplicates = if calls == 1 { 2 } else { 0 };
            Ok(AddedCodes {
                inserted: batch.len() - duplicates,
                duplicates,
            })
        });
        let mut gate = MockIssueGate::new();
        gate.expect_forget().times(1).returning(|_| Ok(()));
        let generate = GenerateCodes::new(Arc::new(store), Arc::new(generator), Arc::new(gate));

        let generated = generate
            .execute(CampaignId::new(1), CodeCount::new(25_000).expect("valid"))
            .await
            .expect("generated");

        assert_eq!(generated, 25_000);
    }

    #[tokio::test]
    async fn an_unknown_campaign_is_not_found() {
        let mut generator = MockCodeGenerator::new();
        generator.expect_generate().returning(codes);
        let mut store = MockCouponStore::new();
        store
            .expect_add_codes()
            .returning(|id, _| Err(AddCodesError::CampaignNotFound(id)));
        let generate = GenerateCodes::new(
            Arc::new(store),
            Arc::new(generator),
            Arc::new(MockIssueGate::new()),
        );

        let result = generate
            .execute(CampaignId::new(9), CodeCount::new(5).expect("valid"))
            .await;

        assert!(matches!(result, Err(CampaignError::NotFound(id)) if id.get() == 9));
    }

    #[tokio::test]
    async fn a_generator_that_only_collides_does_not_loop_forever() {
        let mut generator = MockCodeGenerator::new();
        generator.expect_generate().returning(codes);
        let mut store = MockCouponStore::new();
        store.expect_add_codes().times(3).returning(|_, batch| {
            Ok(AddedCodes {
                inserted: 0,
                duplicates: batch.len(),
            })
        });
        let generate = GenerateCodes::new(
            Arc::new(store),
            Arc::new(generator),
            Arc::new(MockIssueGate::new()),
        );

        let result = generate
            .execute(CampaignId::new(1), CodeCount::new(5).expect("valid"))
            .await;

        assert!(matches!(result, Err(CampaignError::Unavailable(_))));
    }
}
