//! Issue a coupon, first come first served: at most one per user per
//! campaign, never more than the pool, only inside the campaign's window.

use std::sync::Arc;

use async_trait::async_trait;
use domain::clock::Clock;
use domain::coupon::{
    Campaign, CampaignId, Coupon, CouponStore, IssueError, IssueGate, IssueRefusal,
};
use domain::error::Unavailable;
use domain::gate::{Admission, Holder};
use domain::identity::UserId;
use thiserror::Error;

use crate::pipeline::{self, GatedWrite, UnkeyedWrite};

#[derive(Debug, Error)]
pub enum IssueCouponError {
    #[error("campaign {0} does not exist")]
    CampaignNotFound(CampaignId),
    #[error("the campaign is not issuing codes now")]
    NotActive,
    #[error("no code is left")]
    SoldOut,
    #[error("you already hold a code of this campaign")]
    AlreadyIssued,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

pub struct IssueCoupon {
    store: Arc<dyn CouponStore>,
    gate: Arc<dyn IssueGate>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for IssueCoupon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssueCoupon")
    }
}

impl IssueCoupon {
    pub fn new(
        store: Arc<dyn CouponStore>,
        gate: Arc<dyn IssueGate>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, gate, clock }
    }

    /// Issues a code through the gated-write pipeline: the issue gate holds
    /// one code for the user (or refuses the rush's late majority and a
    /// user's second issue), the campaign's window is checked, and Postgres
    /// hands out the code.
    ///
    /// # Errors
    /// [`IssueCouponError`] naming why no code was issued.
    pub async fn execute(
        &self,
        campaign: CampaignId,
        user: UserId,
    ) -> Result<Coupon, IssueCouponError> {
        let issuing = Issuing {
            use_case: self,
            campaign,
            user,
        };
        pipeline::gated(&issuing, Holder::user(user)).await?
    }
}

/// One coupon issue in the pipeline.
struct Issuing<'a> {
    use_case: &'a IssueCoupon,
    campaign: CampaignId,
    user: UserId,
}

#[async_trait]
impl GatedWrite for Issuing<'_> {
    type Value = Coupon;
    type Refusal = IssueCouponError;
    type Ready = Campaign;
    const RULES_OUTRANK_GATE: bool = true;

    async fn reserve(
        &self,
        holder: Holder<'_>,
    ) -> Result<Admission<IssueCouponError>, Unavailable> {
        let admission = self.use_case.gate.reserve(holder, self.campaign).await?;
        Ok(admission.map_refusal(|refusal| match refusal {
            IssueRefusal::SoldOut => IssueCouponError::SoldOut,
            IssueRefusal::AlreadyIssued => IssueCouponError::AlreadyIssued,
        }))
    }

    async fn release(&self, holder: Holder<'_>) -> Result<(), Unavailable> {
        self.use_case.gate.release(holder, self.campaign).await
    }

    async fn confirm(&self, holder: Holder<'_>) -> Result<(), Unavailable> {
        self.use_case.gate.confirm(holder, self.campaign).await
    }

    async fn forget(&self, refusal: &IssueCouponError) -> Result<(), Unavailable> {
        match refusal {
            // The gate admitted what Postgres refused: rebuild it from Postgres.
            IssueCouponError::SoldOut | IssueCouponError::AlreadyIssued => {
                self.use_case.gate.forget(self.campaign).await
            }
            IssueCouponError::CampaignNotFound(_)
            | IssueCouponError::NotActive
            | IssueCouponError::Unavailable(_) => Ok(()),
        }
    }

    async fn prepare(&self) -> Result<Result<Campaign, IssueCouponError>, Unavailable> {
        let Some(campaign) = self.use_case.store.campaign(self.campaign).await? else {
            return Ok(Err(IssueCouponError::CampaignNotFound(self.campaign)));
        };
        if !campaign.window.is_open(self.use_case.clock.now()) {
            return Ok(Err(IssueCouponError::NotActive));
        }
        Ok(Ok(campaign))
    }
}

#[async_trait]
impl UnkeyedWrite for Issuing<'_> {
    async fn run(
        &self,
        campaign: Campaign,
    ) -> Result<Result<Coupon, IssueCouponError>, Unavailable> {
        // The window was the fast refusal in `prepare`; the store checks it
        // again at its own clock, which also stamps the coupon.
        match self.use_case.store.issue(&campaign, self.user).await {
            Ok(coupon) => Ok(Ok(coupon)),
            Err(IssueError::NotActive) => Ok(Err(IssueCouponError::NotActive)),
            Err(IssueError::SoldOut) => Ok(Err(IssueCouponError::SoldOut)),
            Err(IssueError::AlreadyIssued) => Ok(Err(IssueCouponError::AlreadyIssued)),
            Err(IssueError::Unavailable(u)) => Err(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use domain::clock::MockClock;
    use domain::coupon::{
        Campaign, CampaignName, DiscountKind, DiscountRule, IssueWindow, MockCouponStore,
        MockIssueGate, ValidDays,
    };

    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0)
            .single()
            .expect("valid")
    }

    fn clock(now: DateTime<Utc>) -> MockClock {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(now);
        clock
    }

    fn campaign(window: IssueWindow) -> Campaign {
        Campaign {
            id: CampaignId::new(4),
            name: CampaignName::parse("Winter").expect("valid"),
            rule: DiscountRule::new(DiscountKind::Amount, 1_000, None, 0).expect("valid"),
            valid_days: ValidDays::new(7).expect("valid"),
            window,
        }
    }

    /// A gate that leaves every decision to Postgres.
    fn bypass() -> Arc<MockIssueGate> {
        let mut gate = MockIssueGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(Admission::Bypass));
        gate.expect_release().returning(|_, _| Ok(()));
        Arc::new(gate)
    }

    fn store_with(window: IssueWindow) -> MockCouponStore {
        let mut store = MockCouponStore::new();
        store
            .expect_campaign()
            .returning(move |_| Ok(Some(campaign(window))));
        store
    }

    #[tokio::test]
    async fn outside_the_window_nothing_is_issued() {
        let window = IssueWindow::new(Some(at(23, 9)), Some(at(23, 18))).expect("valid");
        for now in [at(23, 8), at(23, 18)] {
            let mut store = store_with(window);
            store.expect_issue().never();
            let issue = IssueCoupon::new(Arc::new(store), bypass(), Arc::new(clock(now)));

            let result = issue.execute(CampaignId::new(4), UserId::new(1)).await;

            assert!(matches!(result, Err(IssueCouponError::NotActive)), "{now}");
        }
    }

    #[tokio::test]
    async fn inside_the_window_the_store_decides_and_its_window_refusal_is_not_active() {
        let mut store = store_with(IssueWindow::default());
        store
            .expect_issue()
            .withf(|campaign, user| campaign.id.get() == 4 && user.get() == 1)
            .times(1)
            .returning(|_, _| Err(IssueError::NotActive));
        let issue = IssueCoupon::new(Arc::new(store), bypass(), Arc::new(clock(at(23, 12))));

        let result = issue.execute(CampaignId::new(4), UserId::new(1)).await;

        assert!(matches!(result, Err(IssueCouponError::NotActive)));
    }

    #[tokio::test]
    async fn an_unknown_campaign_is_not_found_and_already_issued_is_passed_on() {
        let mut store = MockCouponStore::new();
        store.expect_campaign().returning(|_| Ok(None));
        let issue = IssueCoupon::new(Arc::new(store), bypass(), Arc::new(clock(at(23, 12))));
        assert!(matches!(
            issue.execute(CampaignId::new(9), UserId::new(1)).await,
            Err(IssueCouponError::CampaignNotFound(id)) if id.get() == 9
        ));

        let mut store = store_with(IssueWindow::default());
        store
            .expect_issue()
            .returning(|_, _| Err(IssueError::AlreadyIssued));
        let issue = IssueCoupon::new(Arc::new(store), bypass(), Arc::new(clock(at(23, 12))));
        assert!(matches!(
            issue.execute(CampaignId::new(4), UserId::new(1)).await,
            Err(IssueCouponError::AlreadyIssued)
        ));
    }

    #[tokio::test]
    async fn the_gate_refuses_without_issuing_a_code() {
        for (decision, expected) in [
            (IssueRefusal::SoldOut, "no code is left"),
            (
                IssueRefusal::AlreadyIssued,
                "you already hold a code of this campaign",
            ),
        ] {
            let mut store = store_with(IssueWindow::default());
            store.expect_issue().never();
            let mut gate = MockIssueGate::new();
            gate.expect_reserve()
                .returning(move |_, _| Ok(Admission::Refused(decision)));
            gate.expect_release().never();
            let issue =
                IssueCoupon::new(Arc::new(store), Arc::new(gate), Arc::new(clock(at(23, 12))));

            let result = issue.execute(CampaignId::new(4), UserId::new(1)).await;

            assert_eq!(
                result.map(|_| ()).map_err(|e| e.to_string()),
                Err(expected.to_owned())
            );
        }
    }

    #[tokio::test]
    async fn an_admission_postgres_refuses_resets_the_gate_and_a_failure_gives_it_back() {
        let mut store = store_with(IssueWindow::default());
        store
            .expect_issue()
            .times(1)
            .returning(|_, _| Err(IssueError::SoldOut));
        let mut gate = MockIssueGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(Admission::Reserved));
        gate.expect_forget()
            .withf(|c| c.get() == 4)
            .times(1)
            .returning(|_| Ok(()));
        gate.expect_release().times(1).returning(|_, _| Ok(()));
        let issue = IssueCoupon::new(Arc::new(store), Arc::new(gate), Arc::new(clock(at(23, 12))));
        assert!(matches!(
            issue.execute(CampaignId::new(4), UserId::new(1)).await,
            Err(IssueCouponError::SoldOut)
        ));

        let mut store = store_with(IssueWindow::default());
        store.expect_issue().returning(|_, _| {
            Err(IssueError::Unavailable(Unavailable::new(
                "postgres", "down",
            )))
        });
        let mut gate = MockIssueGate::new();
        gate.expect_reserve()
            .returning(|_, _| Ok(Admission::Reserved));
        gate.expect_release()
            .withf(|holder, c| c.get() == 4 && *holder == Holder::user(UserId::new(1)))
            .times(1)
            .returning(|_, _| Ok(()));
        gate.expect_confirm().never();
        gate.expect_forget().never();
        let issue = IssueCoupon::new(Arc::new(store), Arc::new(gate), Arc::new(clock(at(23, 12))));
        assert!(
            issue
                .execute(CampaignId::new(4), UserId::new(1))
                .await
                .is_err()
        );
    }
}
