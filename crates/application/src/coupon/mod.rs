//! Coupon use cases: campaigns and their pools of codes; issuing, listing,
//! using and giving back coupons.

mod expiry;
mod import;
mod issue;

pub use expiry::{Expiry, NOTICE_AHEAD};
pub use import::{ImportError, ImportReport, MAX_LISTED_REJECTIONS, Rejected, import_codes};
pub use issue::{Coupons, IssueCouponError};

use std::sync::Arc;

use domain::coupon::{
    AddCodesError, Campaign, CampaignId, CampaignView, CodeCount, CodeGenerator, CouponStore,
    IssueGate, NewCampaign,
};
use domain::error::Unavailable;
use thiserror::Error;

/// Codes are written in batches of this many, each its own short
/// transaction: a million codes never sit in one transaction's memory.
pub const CODE_BATCH: usize = 10_000;

/// Batches in flight at once: one being written while the next is drawn and
/// sent, so random generation and Postgres' index work overlap.
const IN_FLIGHT: usize = 2;

#[derive(Debug, Error)]
pub enum CampaignError {
    #[error("campaign {0} does not exist")]
    NotFound(CampaignId),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<AddCodesError> for CampaignError {
    fn from(err: AddCodesError) -> Self {
        match err {
            AddCodesError::CampaignNotFound(id) => Self::NotFound(id),
            AddCodesError::Unavailable(u) => Self::Unavailable(u),
        }
    }
}

/// Campaign management.
pub struct Campaigns {
    store: Arc<dyn CouponStore>,
    codes: Arc<dyn CodeGenerator>,
    gate: Arc<dyn IssueGate>,
}

impl std::fmt::Debug for Campaigns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Campaigns")
    }
}

impl Campaigns {
    pub fn new(
        store: Arc<dyn CouponStore>,
        codes: Arc<dyn CodeGenerator>,
        gate: Arc<dyn IssueGate>,
    ) -> Self {
        Self { store, codes, gate }
    }

    /// # Errors
    /// [`Unavailable`] when the store fails.
    pub async fn create(&self, campaign: NewCampaign) -> Result<Campaign, Unavailable> {
        self.store.create_campaign(campaign).await
    }

    /// # Errors
    /// [`CampaignError::NotFound`] for an unknown id.
    pub async fn view(&self, id: CampaignId) -> Result<CampaignView, CampaignError> {
        self.store
            .campaign_view(id)
            .await?
            .ok_or(CampaignError::NotFound(id))
    }

    /// Imports codes from a CSV upload (see [`import_codes`]).
    ///
    /// # Errors
    /// [`ImportError`]; an unknown campaign is refused before any byte is read.
    pub async fn import<S, E>(&self, id: CampaignId, chunks: S) -> Result<ImportReport, ImportError>
    where
        S: futures_util::Stream<Item = Result<Vec<u8>, E>>,
        E: std::fmt::Display,
    {
        if self.store.campaign(id).await?.is_none() {
            return Err(ImportError::CampaignNotFound(id));
        }
        let report = import_codes(&*self.store, id, chunks).await;
        // The pool may have grown even if the import failed halfway.
        if let Err(err) = self.gate.forget(id).await {
            tracing::warn!(error = %err, "could not reset the issue gate");
        }
        report
    }

    /// Adds exactly `count` new random codes to the pool. A code that collides
    /// with an existing one is replaced by a fresh one, not reported.
    ///
    /// # Errors
    /// [`CampaignError::NotFound`] for an unknown id; `Unavailable` when the
    /// store fails (the codes of batches already written stay).
    pub async fn generate(&self, id: CampaignId, count: CodeCount) -> Result<usize, CampaignError> {
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
    use domain::coupon::{AddedCodes, MockCodeGenerator, MockCouponStore, MockIssueGate};
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
        let campaigns = Campaigns::new(Arc::new(store), Arc::new(generator), Arc::new(gate));

        let generated = campaigns
            .generate(CampaignId::new(1), CodeCount::new(25_000).expect("valid"))
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
        let campaigns = Campaigns::new(
            Arc::new(store),
            Arc::new(generator),
            Arc::new(MockIssueGate::new()),
        );

        let result = campaigns
            .generate(CampaignId::new(9), CodeCount::new(5).expect("valid"))
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
        let campaigns = Campaigns::new(
            Arc::new(store),
            Arc::new(generator),
            Arc::new(MockIssueGate::new()),
        );

        let result = campaigns
            .generate(CampaignId::new(1), CodeCount::new(5).expect("valid"))
            .await;

        assert!(matches!(result, Err(CampaignError::Unavailable(_))));
    }
}
