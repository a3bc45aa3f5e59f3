//! The Postgres coupon pool against a real database, and the issue window
//! and expiry judged by Postgres' clock at the moment the row is decided.

use std::time::Duration;

use diesel::QueryableByName;
use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};
use domain::coupon::{
    AddCodesError, CampaignId, CampaignName, CouponStore, DiscountKind, DiscountRule, IssueError,
    IssueWindow, NewCampaign, RedeemError, ValidDays,
};
use domain::identity::UserId;
use domain::ordering::CouponCode;
use domain::paging::PageRequest;
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

async fn user(db: &TestDb, login: &str) -> UserId {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let mut conn = db.connect().await;
    let row: Id = diesel::sql_query(format!(
        "INSERT INTO users (login_id, name) VALUES ('{login}', 'U') RETURNING id"
    ))
    .get_result(&mut conn)
    .await
    .expect("user");
    UserId::new(row.id)
}

fn store_of(db: &TestDb) -> PgCouponStore {
    PgCouponStore::new(
        connect_pool(&PgPoolSettings {
            url: db.url.clone(),
            max_size: 4,
            timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        })
        .expect("pool"),
    )
}

fn campaign_in(window: IssueWindow) -> NewCampaign {
    NewCampaign {
        name: CampaignName::parse("c").expect("valid"),
        rule: DiscountRule::new(DiscountKind::Amount, 1_000, None, 0).expect("valid"),
        valid_days: ValidDays::new(7).expect("valid"),
        window,
    }
}

#[tokio::test]
async fn a_use_that_waited_on_the_coupon_past_its_expiry_is_refused_and_leaves_it_unused() {
    let db = TestDb::create().await;
    let store = store_of(&db);
    let owner = user(&db, "late").await;
    let campaign = store
        .create_campaign(campaign_in(IssueWindow::default()))
        .await
        .expect("campaign");
    store
        .add_codes(campaign.id, codes(&["LATE-0001"]))
        .await
        .expect("added");
    let coupon = store.issue(&campaign, owner).await.expect("issued");
    let mut holder = db.connect().await;
    holder
        .batch_execute(
            "UPDATE coupons SET expires_at = clock_timestamp() + interval '1 second' \
              WHERE code = 'LATE-0001'; \
             BEGIN; SELECT id FROM coupons WHERE code = 'LATE-0001' FOR UPDATE;",
        )
        .await
        .expect("holding the coupon");

    // Asked for while the coupon is valid, the use waits on the held row.
    let using = tokio::spawn({
        let store = store.clone();
        let code = coupon.code.clone();
        async move { store.redeem(owner, &code).await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let waited = !using.is_finished();
    holder.batch_execute("COMMIT").await.expect("released");
    let used = using.await.expect("ran").expect("answered");

    assert!(waited, "the use waited for the row");
    assert_eq!(used.map(|_| ()), Err(RedeemError::Expired));
    let mine = store
        .mine(
            owner,
            None,
            chrono::Utc::now(),
            PageRequest::new(None, None).expect("valid"),
        )
        .await
        .expect("listed");
    assert_eq!(mine.items[0].used_at, None, "the coupon stays unused");
}

#[tokio::test]
async fn an_issue_that_reaches_postgres_after_the_window_closed_is_not_active_and_takes_no_code() {
    let db = TestDb::create().await;
    let store = store_of(&db);
    let (early, late) = (user(&db, "early").await, user(&db, "late").await);
    let closes = chrono::Utc::now() + chrono::Duration::seconds(1);
    let campaign = store
        .create_campaign(campaign_in(
            IssueWindow::new(None, Some(closes)).expect("valid"),
        ))
        .await
        .expect("campaign");
    store
        .add_codes(campaign.id, codes(&["WIN-0001", "WIN-0002"]))
        .await
        .expect("added");

    let inside = store.issue(&campaign, early).await.expect("issued");
    // The app's own check passed a moment ago; Postgres sees the close.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let after = store.issue(&campaign, late).await;

    assert!(inside.issued_at < closes);
    assert_eq!(
        inside.expires_at - inside.issued_at,
        chrono::Duration::days(7),
        "a coupon expires valid days after the instant it was issued"
    );
    assert!(matches!(after, Err(IssueError::NotActive)), "{after:?}");
    let view = store
        .campaign_view(campaign.id)
        .await
        .expect("view")
        .expect("exists");
    assert_eq!(view.issued_count, 1, "the closed window handed out nothing");
}
