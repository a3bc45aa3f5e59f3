//! The Postgres coupon pool against a real database.

use std::time::Duration;

use domain::coupon::{
    AddCodesError, CampaignId, CampaignName, CouponStore, DiscountKind, DiscountRule, IssueWindow,
    NewCampaign, ValidDays,
};
use domain::ordering::CouponCode;
use infra::postgres::{PgCouponStore, PgPoolSettings, connect_pool};
use testkit::TestDb;

fn codes(raw: &[&str]) -> Vec<CouponCode> {
    raw.iter()
        .map(|c| CouponCode::parse(c).expect("valid"))
        .collect()
}

#[tokio::test]
async fn codes_are_unique_across_campaigns_and_duplicates_are_counted_not_fatal() {
    let db = TestDb::create().await;
    let store = PgCouponStore::new(
        connect_pool(&PgPoolSettings {
            url: db.url.clone(),
            max_size: 2,
            timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        })
        .expect("pool"),
    );
    let new = || NewCampaign {
        name: CampaignName::parse("c").expect("valid"),
        rule: DiscountRule::new(DiscountKind::Amount, 1_000, None, 0).expect("valid"),
        valid_days: ValidDays::new(7).expect("valid"),
        window: IssueWindow::default(),
    };
    let a = store.create_campaign(new()).await.expect("a");
    let b = store.create_campaign(new()).await.expect("b");

    let first = store
        .add_codes(a.id, codes(&["AAAA-0001", "AAAA-0002", "AAAA-0002"]))
        .await
        .expect("added");
    let second = store
        .add_codes(b.id, codes(&["AAAA-0001", "BBBB-0001"]))
        .await
        .expect("added");
    let missing = store
        .add_codes(CampaignId::new(999_999), codes(&["CCCC-0001"]))
        .await;

    assert_eq!(
        (first.inserted, first.duplicates),
        (2, 1),
        "a duplicate within the batch"
    );
    assert_eq!(
        (second.inserted, second.duplicates),
        (1, 1),
        "a duplicate of another campaign's code"
    );
    assert!(matches!(missing, Err(AddCodesError::CampaignNotFound(_))));
    let view_a = store
        .campaign_view(a.id)
        .await
        .expect("view")
        .expect("exists");
    let view_b = store
        .campaign_view(b.id)
        .await
        .expect("view")
        .expect("exists");
    assert_eq!((view_a.total_codes, view_b.total_codes), (2, 1));
    assert_eq!(view_a.remaining(), 2);
}
